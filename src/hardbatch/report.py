"""Tables, CSVs, plots and report.md computed from saved run directories, never from training state."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from hardbatch import __version__
from hardbatch.config import DELTA_POLICIES, RUNTIME_KEYS, RunConfig, UsageError
from hardbatch.results import (
    CONFIG, HISTORY, PLATEAU_POINTS, SUMMARY, TARGET_FRACTION, MislabelledExposure, RunDir, atomic_write_text,
    csv_text, cumulative, epochs_to_plateau, epochs_to_target, ensure_writable_dir, find_runs, mean_interval, mean_std,
    mislabelled_exposure, no_interval_reason, paired_difference, value_at_budget,
)

# Settings that tell arms apart inside a group, and settings that never split groups.
ARM_KEYS = ("policy", "delta")
NOT_GROUPING = ARM_KEYS + ("seed",) + RUNTIME_KEYS
LAST_EPOCHS = 3  # "last-3 mean": test top-1 averaged over a run's last 3 epochs, which epoch-to-epoch swings do not decide
REFERENCE_DELTA = 1.0  # every policy trains every batch at δ = 1: ordinary mini-batch training
REFERENCE_POLICY = "hardbatch"  # the paper's baseline is its own rule at δ = 1, never a peer that records δ = 1
NO_BASELINE = "no baseline"  # what the Δ-vs-δ=1 cells say in a group without the paper's rule at δ = 1


# What a report reads from summary.json (batch_visits aside).
SUMMARY_NUMBERS = ("final_test_acc", "best_test_acc", "train_seconds", "samples_backpropagated")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Run:
    """One finished run as saved on disk."""

    path: Path
    config: RunConfig
    summary: dict
    accs: list[float]  # test top-1 per epoch
    seconds: list[float]  # training wall-clock per epoch
    history: list[dict] = field(default_factory=list, repr=False)
    exposure: MislabelledExposure | None = None  # runs with label noise: how much training was on relabelled samples

    @classmethod
    def load(cls, run: RunDir) -> "Run":
        """The run's files, checked to hold what reports read; UsageError naming the file and what is wrong."""
        config, summary, history = run.config(), run.summary(), run.history()
        for key, kind in (("dataset", str), ("model", str), ("policy", str), ("delta", (int, float)), ("seed", int)):
            if not isinstance(getattr(config, key), kind) or isinstance(getattr(config, key), bool):
                raise UsageError(f"cannot read {run.file(CONFIG)}: {key} is {getattr(config, key)!r}")
        if not isinstance(summary, dict):
            raise UsageError(f"cannot read {run.file(SUMMARY)}: not a JSON object")
        for key in SUMMARY_NUMBERS:
            if not _is_number(summary.get(key)):
                raise UsageError(f"cannot read {run.file(SUMMARY)}: {key} is {summary.get(key, 'missing')!r}, not a number")
        if not (isinstance(summary.get("batch_visits"), list) and all(map(_is_number, summary["batch_visits"]))):
            raise UsageError(f"cannot read {run.file(SUMMARY)}: batch_visits is not a list of numbers")
        if not history:
            raise UsageError(f"cannot read {run.file(HISTORY)}: no epochs in it")
        for i, row in enumerate(history, start=1):
            if not all(_is_number(row.get(k)) for k in ("test_acc", "train_seconds")):
                raise UsageError(f"cannot read {run.file(HISTORY)}: row {i} lacks a test_acc or train_seconds number")
        return cls(run.path, config, summary, [row["test_acc"] for row in history],
                   [row["train_seconds"] for row in history], history,
                   mislabelled_exposure(run) if config.label_noise else None)

    def cost(self, column: str) -> list[float]:
        """Cumulative cost at the end of each epoch: ``samples_backprop``, ``train_seconds``, ..."""
        return cumulative(self.history, column)

    def seconds_to(self, target: float) -> float | None:
        """Training wall-clock until the end of the first epoch at or above ``target``."""
        epoch = epochs_to_target(self.accs, target)
        return None if epoch is None else sum(self.seconds[:epoch])


def arm_label(policy: str, delta: float) -> str:
    """"δ = 0.5" for the paper's rule, "random δ = 0.5" for a control, the bare name for policies without δ."""
    if policy not in DELTA_POLICIES:
        return policy
    return f"δ = {delta:g}" if policy == "hardbatch" else f"{policy} δ = {delta:g}"


@dataclass
class Arm:
    """The runs of one policy and delta within a group, keyed by seed."""

    policy: str
    delta: float
    runs: dict[int, Run] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return arm_label(self.policy, self.delta)


    def values(self, key: str) -> dict[int, float]:
        return {seed: run.summary[key] for seed, run in self.runs.items()}

    def last_accs(self) -> dict[int, float]:
        """Test top-1 averaged over each run's last LAST_EPOCHS epochs, by seed."""
        return {seed: sum(run.accs[-LAST_EPOCHS:]) / len(run.accs[-LAST_EPOCHS:]) for seed, run in self.runs.items()}


@dataclass
class Group:
    """Runs that share every setting except policy, delta and seed."""

    title: str
    settings: dict
    arms: list[Arm]

    @property
    def reference(self) -> Arm | None:
        """The paper's baseline: its rule at δ = 1 (ordinary training in fixed order); None when it was not run.

        Peers record δ = 1 too (it does not apply to them), so the policy decides, not the recorded δ.
        """
        return next((arm for arm in self.arms if arm.policy == REFERENCE_POLICY and arm.delta == REFERENCE_DELTA), None)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.title).strip("-")


def group_runs(runs: list[Run]) -> list[Group]:
    """Group runs by their settings; within a group, one arm per (policy, delta), arms sorted by delta."""
    groups: dict[tuple, dict[tuple, Arm]] = {}
    settings: dict[tuple, dict] = {}
    for run in runs:
        cfg = run.config.to_dict()
        key = tuple((k, repr(v)) for k, v in cfg.items() if k not in NOT_GROUPING)
        settings[key] = {k: v for k, v in cfg.items() if k not in NOT_GROUPING}
        arms = groups.setdefault(key, {})
        arm = arms.setdefault((run.config.policy, run.config.delta), Arm(run.config.policy, run.config.delta))
        if run.config.seed in arm.runs:
            raise UsageError(f"two runs of {arm.label} seed {run.config.seed}: {arm.runs[run.config.seed].path} and {run.path}")
        arm.runs[run.config.seed] = run
    # Titles name data set and model, plus the settings that differ between groups of the same pair.
    result = []
    for key, arms in groups.items():
        s = settings[key]
        same_pair = [settings[k] for k in groups if settings[k]["dataset"] == s["dataset"] and settings[k]["model"] == s["model"]]
        differing = sorted({k for other in same_pair for k in s if other[k] != s[k]})
        title = f"{s['dataset']} / {s['model']}" + "".join(f", {k}={s[k]}" for k in differing)
        result.append(Group(title, s, sorted(arms.values(), key=lambda a: (a.policy != "hardbatch", a.delta, a.policy))))
    return sorted(result, key=lambda g: g.title)


def by_protocol(groups: list[Group]) -> dict[str, list[Group]]:
    """Groups keyed by protocol name ("" for runs without a preset), protocols in sorted order."""
    keyed: dict[str, list[Group]] = {}
    for g in groups:
        keyed.setdefault(g.settings.get("protocol") or "", []).append(g)
    return dict(sorted(keyed.items()))


def target_accuracy(group: Group, target: float | None = None) -> tuple[float | None, str]:
    """T for epochs-to-target: ``target`` if given, else the runs' configured target, else 0.99 x the
    reference's mean best accuracy."""
    if target is not None:
        return target, "given to report --target-acc"
    ref = group.reference
    configured = {run.config.target_acc for arm in group.arms for run in arm.runs.values()}
    if len(configured) == 1 and None not in configured:
        return configured.pop(), "given by --target-acc"
    if ref is None:
        return None, "no runs of the paper's rule at δ = 1 to define it"
    best, _ = mean_std(list(ref.values("best_test_acc").values()))
    return TARGET_FRACTION * best, f"{TARGET_FRACTION:g} × mean best test accuracy of δ = 1 over seeds"


def _fmt(value: float | None, digits: int = 2, scale: float = 1.0, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * scale:+.{digits}f}" if signed else f"{value * scale:.{digits}f}"


def _censored_epochs(run: Run, target: float) -> int:
    """Epochs to T; a run that never reaches T counts as its budget + 1 (censored: the truth is later)."""
    epoch = epochs_to_target(run.accs, target)
    return epoch if epoch is not None else len(run.accs) + 1


def _censored_seconds(run: Run, target: float) -> float:
    seconds = run.seconds_to(target)
    return seconds if seconds is not None else sum(run.seconds)


def arm_rows(group: Group, target: float | None = None) -> list[dict]:
    """One numeric row per arm: accuracy, paired difference to delta = 1, epochs to target, time."""
    target, _ = target_accuracy(group, target)
    ref = group.reference
    ref_epochs = None
    if ref is not None and target is not None:
        ref_epochs = mean_std([_censored_epochs(r, target) for r in ref.runs.values()])[0]
    rows = []
    for arm in group.arms:
        final = arm.values("final_test_acc")
        mean, std = mean_std(list(final.values()))
        row = {
            "group": group.title, "policy": arm.policy, "delta": arm.delta, "n": len(arm.runs),
            "is_reference": arm is ref,
            "final_acc_mean": mean, "final_acc_std": std,
            **_mean_std_of("final_bacc", [r.summary.get("final_test_bacc") for r in arm.runs.values()]),
            "best_acc_mean": mean_std(list(arm.values("best_test_acc").values()))[0],
            "diff_points": math.nan, "diff_low": math.nan, "diff_high": math.nan, "diff_pairs": 0, "diff_relative_pct": math.nan,
            "target_acc": target if target is not None else math.nan,
            "epochs_to_target_mean": math.nan, "target_reached": 0, "fewer_epochs_pct": math.nan,
            "epochs_to_plateau_mean": mean_std([epochs_to_plateau(r.accs) for r in arm.runs.values()])[0],
            "train_seconds_mean": mean_std(list(arm.values("train_seconds").values()))[0],
            "seconds_to_target_mean": math.nan,
            "final_val_acc_mean": mean_std([r.summary.get("final_val_acc", math.nan) for r in arm.runs.values()])[0],
            "samples_backpropagated_mean": mean_std(list(arm.values("samples_backpropagated").values()))[0],
            **_exposure_means(arm),
            **_mean_std_of("last_acc", list(arm.last_accs().values())),
            "last_diff_points": math.nan, "last_diff_low": math.nan, "last_diff_high": math.nan,
        }
        if ref is not None:
            seeds = sorted(set(final) & set(ref.runs))
            ref_final = ref.values("final_test_acc")
            diff = paired_difference([final[s] for s in seeds], [ref_final[s] for s in seeds])
            ref_mean = mean_std([ref_final[s] for s in seeds])[0]
            row.update(diff_points=100 * diff.mean, diff_low=100 * diff.low, diff_high=100 * diff.high, diff_pairs=diff.n,
                       diff_relative_pct=100 * diff.mean / ref_mean if ref_mean else math.nan)
            last, ref_last = arm.last_accs(), ref.last_accs()
            diff = paired_difference([last[s] for s in seeds], [ref_last[s] for s in seeds])
            row.update(last_diff_points=100 * diff.mean, last_diff_low=100 * diff.low, last_diff_high=100 * diff.high)
        if target is not None:
            runs = list(arm.runs.values())
            row["target_reached"] = sum(epochs_to_target(r.accs, target) is not None for r in runs)
            row["epochs_to_target_mean"] = mean_std([_censored_epochs(r, target) for r in runs])[0]
            row["seconds_to_target_mean"] = mean_std([_censored_seconds(r, target) for r in runs])[0]
            if ref_epochs:
                row["fewer_epochs_pct"] = 100.0 * (1.0 - row["epochs_to_target_mean"] / ref_epochs)
        rows.append(row)
    return rows


def _mean_std_of(name: str, values: list[float | None]) -> dict:
    """``name_mean`` and ``name_std`` over the values present (older runs may lack a number: None)."""
    mean, std = mean_std([math.nan if v is None else v for v in values])
    return {f"{name}_mean": mean, f"{name}_std": std}


def _exposure_means(arm: Arm) -> dict:
    """Mean over seeds of the share of relabelled samples among those trained, and in the data (label-noise runs)."""
    exposures = [r.exposure for r in arm.runs.values() if r.exposure is not None]
    return {f"mislabelled_{key}_mean": mean_std([getattr(e, key) for e in exposures])[0]
            for key in ("trained", "trained_after_warmup", "in_data")}


def markdown_table(rows: list[dict]) -> str:
    """The per-arm table as Markdown (also readable in a terminal)."""
    header = ["arm", "n", "final top-1 % (mean ± std)", "balanced top-1 %", "Δ vs δ=1, points [95% CI]", "Δ relative %",
              f"last-{LAST_EPOCHS} mean %", f"Δ last-{LAST_EPOCHS} vs δ=1 [95% CI]", "epochs to T (reached)", "fewer epochs %", "epochs to plateau", "train s to T", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        label = arm_label(r["policy"], r["delta"])
        if r["is_reference"]:
            diff, rel = "reference", "—"
        else:
            diff = _interval(r["diff_points"], r["diff_low"], r["diff_high"], r["diff_pairs"])
            rel = _fmt(r["diff_relative_pct"], signed=True)
        lines.append("| " + " | ".join([
            label, str(r["n"]),
            f"{_fmt(r['final_acc_mean'], scale=100)} ± {_fmt(r['final_acc_std'], scale=100)}",
            _mean_pm_std(r["final_bacc_mean"], r["final_bacc_std"]),
            diff, rel,
            _fmt(r["last_acc_mean"], scale=100),
            "reference" if r["is_reference"] else _interval(r["last_diff_points"], r["last_diff_low"], r["last_diff_high"],
                                                            r["diff_pairs"]),
            f"{_fmt(r['epochs_to_target_mean'], 1)} ({r['target_reached']}/{r['n']})",
            _fmt(r["fewer_epochs_pct"], 1, signed=True),
            _fmt(r["epochs_to_plateau_mean"], 1),
            _fmt(r["seconds_to_target_mean"], 1),
            _fmt(r["train_seconds_mean"], 1),
        ]) + " |")
    return "\n".join(lines)


def _interval(mean: float, low: float, high: float, pairs: int, scale: float = 1.0, signed: bool = True) -> str:
    """"+1.23 ±1.33 [-0.10, +2.56]" for a difference (``signed``: its t-interval is symmetric, so the half-width
    says how sure it is), "91.20 [90.10, 92.30]" for a level (clipped, so no half-width); "+1.23 (no CI: 2 pairs,
    needs 3)" or "(no CI: zero spread)" where there is no interval; NO_BASELINE for a difference to an arm that
    was not run (no pairs)."""
    if pairs == 0:
        return NO_BASELINE
    reason = no_interval_reason(pairs, low, high)
    if reason:
        return f"{_fmt(mean, scale=scale, signed=signed)} ({reason})"
    half = f" ±{_fmt((high - low) / 2, scale=scale)}" if signed else ""
    return (f"{_fmt(mean, scale=scale, signed=signed)}{half} "
            f"[{_fmt(low, scale=scale, signed=signed)}, {_fmt(high, scale=scale, signed=signed)}]")


MAX_CLASS_COLUMNS = 20  # per-class tables only for data sets with at most this many classes


def per_class_table(group: Group) -> str | None:
    """Final test top-1 % of each class, mean over seeds, one line per arm; None when runs lack it or classes abound."""
    per_arm = {arm.label: [r.summary.get("final_test_per_class_acc") for r in arm.runs.values()] for arm in group.arms}
    lengths = {len(v) for runs in per_arm.values() for v in runs if v}
    if not lengths or any(v is None for runs in per_arm.values() for v in runs) or len(lengths) > 1:
        return None
    (classes,) = lengths
    if classes > MAX_CLASS_COLUMNS:
        return None
    lines = ["| arm | " + " | ".join(str(c) for c in range(classes)) + " |", "|---|" + "---|" * classes]
    for label, runs in per_arm.items():
        means = [mean_std([math.nan if v[c] is None else v[c] for v in runs])[0] for c in range(classes)]
        lines.append(f"| {label} | " + " | ".join(_fmt(m, 1, 100) for m in means) + " |")
    return "\n".join(lines)


def _mean_pm_std(mean: float, std: float) -> str:
    """"mean ± std" in %, or "—" for runs that did not record the number."""
    return "—" if math.isnan(mean) else f"{_fmt(mean, scale=100)} ± {_fmt(std, scale=100)}"


def noise_table(rows: list[dict]) -> str:
    """Per arm: the share of relabelled samples among the samples trained, against their share of the training split."""
    lines = ["| arm | mislabelled % of back-propagated samples | after the first epoch | % of the training split | ratio after the first epoch |",
             "|---|---|---|---|---|"]
    for r in rows:
        label = arm_label(r["policy"], r["delta"])
        trained, after, data = r["mislabelled_trained_mean"], r["mislabelled_trained_after_warmup_mean"], r["mislabelled_in_data_mean"]
        ratio = after / data if data and not math.isnan(after) else math.nan
        lines.append(f"| {label} | {_fmt(trained, 1, 100)} | {_fmt(after, 1, 100)} | {_fmt(data, 1, 100)} | {_fmt(ratio, 2)} |")
    return "\n".join(lines)


def choose_delta(rows: list[dict], on: str = "validation") -> dict | None:
    """The hardbatch arm with delta < 1 of highest mean final accuracy on ``on`` ("validation" or "test")."""
    key = "final_val_acc_mean" if on == "validation" else "final_acc_mean"
    ours = [r for r in rows if r["policy"] == "hardbatch" and r["delta"] < 1 and not math.isnan(r[key])]
    return max(ours, key=lambda r: r[key]) if ours else None


def overview_table(groups: list[Group], rows: dict[str, list[dict]]) -> str:
    """The paper-style table: one line per network, one column per delta, final top-1 mean ± std (n)."""
    deltas = sorted({r["delta"] for g in groups for r in rows[g.title] if r["policy"] == "hardbatch"})
    lines = ["| network | " + " | ".join(f"δ = {d:g}" for d in deltas) + " |", "|---|" + "---|" * len(deltas)]
    models = [g.settings["model"] for g in groups]
    for g in groups:
        cells = {r["delta"]: r for r in rows[g.title] if r["policy"] == "hardbatch"}
        label = g.settings["model"] if models.count(g.settings["model"]) == 1 else g.title
        lines.append(f"| {label} | " + " | ".join(
            f"{_fmt(cells[d]['final_acc_mean'], scale=100)} ± {_fmt(cells[d]['final_acc_std'], scale=100)} ({cells[d]['n']})"
            if d in cells else "—" for d in deltas) + " |")
    return "\n".join(lines)


def _curve_band(runs: list[Run]) -> tuple[list[float], list[float], list[float]]:
    """Mean ± std (in %) per epoch over runs; epochs beyond the shortest run are dropped."""
    length = min(len(r.accs) for r in runs)
    mean, low, high = [], [], []
    for e in range(length):
        m, s = mean_std([r.accs[e] for r in runs])
        mean.append(100 * m), low.append(100 * (m - s)), high.append(100 * (m + s))
    return mean, low, high


def draw_group_plots(group: Group, rows: list[dict], out_dir: Path) -> list[Path]:
    """Accuracy curves, final accuracy vs delta, and batch-visit counts for one group; returns the PNGs."""
    from hardbatch.plots import plot_batch_visits, plot_curves, plot_final_vs_delta, save_figure

    curves = {arm.label: _curve_band(list(arm.runs.values())) for arm in group.arms}
    paths = [save_figure(plot_curves(curves, title=group.title), out_dir / f"{group.slug}_accuracy.png")]
    ours = [(arm, row) for arm, row in zip(group.arms, rows) if arm.policy == "hardbatch"]
    if ours:
        ref = next((row for row in rows if row["is_reference"]), None)
        # The 95% t-interval of the mean over seeds, clipped: no accuracy lies outside [0, 100].
        intervals = [mean_interval([100 * v for v in arm.values("final_test_acc").values()]) for arm, _ in ours]
        ax = plot_final_vs_delta(
            [arm.delta for arm, _ in ours], [ci.mean for ci in intervals],
            [max(ci.low, 0.0) for ci in intervals], [min(ci.high, 100.0) for ci in intervals],
            baseline=100 * ref["final_acc_mean"] if ref else None, title=group.title,
        )
        paths.append(save_figure(ax, out_dir / f"{group.slug}_final_vs_delta.png"))
    visits = {}
    for arm in group.arms:
        # Sorted per seed before averaging: with a shuffled partition, batch i differs between seeds.
        per_seed = [sorted(run.summary["batch_visits"]) for run in arm.runs.values()]
        visits[arm.label] = [sum(v) / len(per_seed) for v in zip(*per_seed)]
    paths.append(save_figure(plot_batch_visits(visits, title=f"{group.title}: selection"), out_dir / f"{group.slug}_batch_visits.png"))
    return paths


# ---- cost: what each arm spent, and accuracy at equal cost ------------------------------------------------------

COST_KEYS = ("optimizer_steps", "samples_loaded", "samples_forward_nograd", "samples_backprop", "train_seconds",
             "choose_seconds")


def _arm_named(group: Group, policy: str, delta: float | None = None) -> Arm | None:
    return next((a for a in group.arms if a.policy == policy and (delta is None or a.delta == delta)), None)


def _paired(arm: Arm, ref: Arm | None) -> tuple[float, float, float, int]:
    """Seed-paired difference of final top-1 (points) to ``ref``, with its 95% interval and pair count."""
    if ref is None or ref is arm:
        return math.nan, math.nan, math.nan, 0
    a, b = arm.values("final_test_acc"), ref.values("final_test_acc")
    seeds = sorted(set(a) & set(b))
    d = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return 100 * d.mean, 100 * d.low, 100 * d.high, d.n


def equal_budget(group: Group, column: str) -> float:
    """The largest cost every run of the group has spent: the budget at which all arms can be compared."""
    totals = [run.cost(column)[-1] for arm in group.arms for run in arm.runs.values() if run.history]
    return min(totals) if totals else math.nan


def cost_rows(group: Group) -> list[dict]:
    """One row per arm: final top-1 with its 95% CI, paired differences to uniform and to δ = 1, cost totals
    (means over seeds) and test top-1 at the group's equal back-propagated-samples and equal-seconds budgets."""
    uniform, ordinary = _arm_named(group, "uniform"), group.reference
    budgets = {column: equal_budget(group, column) for column in ("samples_backprop", "train_seconds")}
    rows = []
    for arm in group.arms:
        runs = list(arm.runs.values())
        interval = mean_interval([r.summary["final_test_acc"] for r in runs])
        mean, low, high = interval.mean, interval.low, interval.high
        if low == low:  # an accuracy interval never leaves [0, 1]; NaN (one seed) stays NaN
            low, high = max(0.0, low), min(1.0, high)
        row = {"group": group.title, "arm": arm.label, "policy": arm.policy, "delta": arm.delta, "n": len(runs),
               "is_delta1": arm is ordinary,
               "final_acc_mean": mean, "final_acc_low": low, "final_acc_high": high}
        for name, ref in (("uniform", uniform), ("delta1", ordinary)):
            d, lo, hi, n = _paired(arm, ref)
            row.update({f"diff_{name}": d, f"diff_{name}_low": lo, f"diff_{name}_high": hi, f"diff_{name}_pairs": n})
        for key in COST_KEYS:
            row[key] = mean_std([r.summary.get("cost", {}).get(key, math.nan) for r in runs])[0]
        for column, budget in budgets.items():
            at = [value_at_budget(r.cost(column), r.accs, budget) for r in runs]
            row[f"acc_at_equal_{column}"] = mean_std(at)[0]
            row[f"budget_{column}"] = budget
        rows.append(row)
    return rows


def _diff_cell(row: dict, name: str) -> str:
    if row[f"diff_{name}_pairs"] == 0:
        return "—" if name == "uniform" else NO_BASELINE  # no such reference arm in the group
    return _interval(row[f"diff_{name}"], row[f"diff_{name}_low"], row[f"diff_{name}_high"], row[f"diff_{name}_pairs"])


def cost_table(rows: list[dict]) -> str:
    """The cost table as Markdown."""
    budget_b = rows[0]["budget_samples_backprop"] if rows else math.nan
    budget_s = rows[0]["budget_train_seconds"] if rows else math.nan
    header = ["arm", "n", "final top-1 % [95% CI]", "Δ vs uniform", "Δ vs δ=1", "steps", "backprop samples",
              "no-grad samples", "train s", "choose s",
              f"top-1 % at {_fmt(budget_b, 0)} backprop samples", f"top-1 % at {_fmt(budget_s, 1)} train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["arm"], str(r["n"]), _interval(r["final_acc_mean"], r["final_acc_low"], r["final_acc_high"], r["n"], 100, False),
            "reference" if r["policy"] == "uniform" else _diff_cell(r, "uniform"),
            "reference" if r["is_delta1"] else _diff_cell(r, "delta1"),
            _fmt(r["optimizer_steps"], 0), _fmt(r["samples_backprop"], 0), _fmt(r["samples_forward_nograd"], 0),
            _fmt(r["train_seconds"], 1), _fmt(r["choose_seconds"], 2),
            _fmt(r["acc_at_equal_samples_backprop"], scale=100), _fmt(r["acc_at_equal_train_seconds"], scale=100),
        ]) + " |")
    return "\n".join(lines)


def _cost_band(runs: list[Run], column: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per epoch over runs: mean cumulative cost, and mean ± std of test top-1 (%)."""
    length = min(len(r.accs) for r in runs)
    xs = [mean_std([r.cost(column)[e] for r in runs])[0] for e in range(length)]
    mean, low, high = _curve_band(runs)
    return xs, mean[:length], low[:length], high[:length]


def draw_cost_plots(group: Group, rows: list[dict], out_dir: Path) -> list[Path]:
    """Test accuracy against cumulative back-propagated samples and training seconds, and the final
    accuracy against total cost (the speed-accuracy front); returns the PNGs."""
    from hardbatch.plots import plot_cost_curves, plot_front, save_figure

    paths = []
    for column, xlabel, name in (("samples_backprop", "cumulative samples back-propagated", "vs_samples"),
                                 ("train_seconds", "cumulative training seconds", "vs_seconds")):
        curves = {arm.label: _cost_band(list(arm.runs.values()), column) for arm in group.arms}
        ax = plot_cost_curves(curves, xlabel=xlabel, title=group.title)
        paths.append(save_figure(ax, out_dir / f"{group.slug}_accuracy_{name}.png"))
    points = {r["arm"]: (r["samples_backprop"], r["train_seconds"], 100 * r["final_acc_mean"],
                         100 * r["final_acc_low"], 100 * r["final_acc_high"]) for r in rows}
    paths.append(save_figure(plot_front(points, title=f"{group.title}: speed-accuracy front"),
                             out_dir / f"{group.slug}_front.png"))
    return paths


def _cost_section(group: Group, plot_dir: Path | None) -> str:
    rows = cost_rows(group)
    if all(math.isnan(r["samples_backprop"]) for r in rows):
        return ""  # runs from before cost was counted
    section = [f"### Cost and accuracy at equal cost: {group.title}", "", cost_table(rows), ""]
    if plot_dir is not None:
        for path in draw_cost_plots(group, rows, plot_dir):
            section += [f"![{path.stem}]({path.name})", ""]
    return "\n".join(section)


def _overview_section(groups: list[Group], rows: dict[str, list[dict]], protocol: str) -> str:
    by_dataset: dict[str, list[Group]] = {}
    for g in groups:
        by_dataset.setdefault(g.settings["dataset"], []).append(g)
    parts = [f"## Overview{f' — protocol {protocol}' if protocol else ''}: final test top-1 %, mean ± std (n seeds)", ""]
    for dataset, members in by_dataset.items():
        parts += [f"### {dataset}", "", overview_table(members, rows), ""]
    return "\n".join(parts)


def _group_section(group: Group, rows: list[dict], plot_dir: Path | None, target: float | None = None) -> str:
    target, how = target_accuracy(group, target)
    settings = ", ".join(f"{k} {v}" for k, v in group.settings.items() if k not in ("dataset", "model"))
    section = [f"## {group.title}", "", f"Settings: {settings}.", "",
               f"Target T = {_fmt(target, 2, 100)}% test top-1 ({how}).", "", markdown_table(rows), ""]
    on_val, on_test = choose_delta(rows, "validation"), choose_delta(rows, "test")
    if on_val is not None:
        section.append(f"Best δ < 1 chosen on the validation split: **δ = {on_val['delta']:g}** "
                       f"(validation {_fmt(on_val['final_val_acc_mean'], scale=100)}%, test "
                       f"{_fmt(on_val['final_acc_mean'], scale=100)}%).")
    else:
        section.append("Best δ < 1 on a validation split: not available (runs without --val-fraction).")
    if on_test is not None:
        section += ["", f"Best δ < 1 chosen on test (optimistic, as the released code did): δ = {on_test['delta']:g} "
                        f"({_fmt(on_test['final_acc_mean'], scale=100)}%)."]
    section.append("")
    if (table := per_class_table(group)) is not None:
        section += ["Final test top-1 % per class, mean over seeds:", "", table, ""]
    if group.settings.get("label_noise"):
        section += [f"Label noise {group.settings['label_noise']:g}: relabelled samples among those each arm trained "
                    "(mean over seeds).", "", noise_table(rows), ""]
    if plot_dir is not None:
        for path in draw_group_plots(group, rows, plot_dir):
            section += [f"![{path.stem}]({path.name})", ""]
    section.append(_cost_section(group, plot_dir))
    return "\n".join(section)


def _claims_section(groups: list[Group], rows: dict[str, list[dict]]) -> str:
    from hardbatch.claims import GroupResult, check_claims, claims_markdown

    parts = ["## Claims of the paper, checked", "",
             "Each claim is judged at the best δ < 1 chosen on the validation split (on test where no split "
             "exists, marked), against the paper's rule at δ = 1 (its baseline) with the same seeds. held = in "
             "every group run; partly held = in some; not run = no runs for it; no baseline = no group ran the "
             "rule at δ = 1; undecided = no group had a 95% interval to judge by (fewer than 3 seed pairs, or zero "
             "spread).", ""]
    for protocol, members in by_protocol(groups).items():
        results, missing = [], []
        for g in members:
            if g.reference is None:
                missing.append(g.title)
                continue
            chosen, on = choose_delta(rows[g.title], "validation"), "validation"
            if chosen is None:
                chosen, on = choose_delta(rows[g.title], "test"), "test"
            results.append(GroupResult(g.settings["dataset"], g.settings["model"], rows[g.title], chosen, on))
        parts += [f"### Protocol: {protocol or 'custom (no preset)'}", ""]
        if missing:
            parts += [f"The baseline (the paper's rule, `hardbatch`, at δ = 1) is missing in {', '.join(missing)}: "
                      "those groups are not judged.", ""]
        parts += [claims_markdown(check_claims(results, missing)), ""]
    return "\n".join(parts)


DEFINITIONS = f"""## Definitions
- **Epoch** = N optimizer steps, N = ⌊training samples / batch size⌋ fixed mini-batches, for every δ and every
  policy but `infobatch`, whose epoch is one pass over the samples it did not prune (fewer steps; history.csv
  records each epoch's steps). Evaluation runs at the end of every epoch. For δ < 1 an epoch need not touch every
  sample.
- **Final top-1**: test accuracy after the last epoch; mean ± sample standard deviation over seeds (n runs).
- **Δ vs δ=1**: final top-1 of the arm minus that of ordinary training (δ = 1) with the same seed, in percentage
  points; the interval is a two-sided 95% Student-t interval over the seed-paired differences, shown as its
  half-width (±) and its ends [low, high]. Fewer than 3 pairs,
  or differences that are all equal, give no interval ("no CI: ..."), and such a difference decides no claim.
  The baseline is the paper's rule (`hardbatch`) at δ = 1 only, never a peer; a group without it says "no baseline".
  **Δ relative %** = 100 × Δ / mean final top-1 of δ = 1 over the same seeds.
- **Epochs to T**: the first epoch whose test accuracy is ≥ T, averaged over all runs; a run that never reaches T
  counts as its budget + 1 (censored: the truth is later), and (reached/n) says how many did.
  **Fewer epochs %** = 100 × (1 − epochs to T / epochs to T of δ = 1), both so averaged.
- **Balanced top-1**: the mean over classes of each class's final test top-1 accuracy; it weighs a rare class as
  much as a common one (the test split is never reshaped, so on a balanced test split it differs from top-1 only by
  how evenly errors spread over classes).
- **Mislabelled % of trained samples** (runs with --label-noise): of all samples trained, summed over steps, the
  share whose label the noise replaced, from trace.csv's batch column and relabelled.json; "after the warm-up" counts
  rounds ≥ 1 only (the warm-up trains every batch once). A ratio above 1 means the arm trained mislabelled samples
  more often than their share of the data.
- **Last-{LAST_EPOCHS} mean**: test top-1 averaged over each run's last {LAST_EPOCHS} epochs (then over seeds), with its seed-paired
  difference to δ = 1. At a constant learning rate, test accuracy can swing by points from one epoch to the next;
  this figure is not decided by where the last epoch happened to land.
- **Epochs to plateau**: the first epoch within {100 * PLATEAU_POINTS:g} point of the run's own best test accuracy.
- **Train s**: wall-clock seconds spent in training steps (evaluation excluded), mean over seeds. **Train s to T**:
  the same, up to the end of the first epoch at or above T (the whole run's, for a run that never reaches T).
- **Cost** (README "Cost"): optimizer steps, samples back-propagated, samples forwarded without gradient (scoring),
  training seconds (evaluation excluded; choosing included) and seconds spent choosing, means over seeds.
  **Δ vs uniform** / **Δ vs δ=1**: seed-paired differences of final top-1 (points, 95% t interval) to the
  `uniform` arm (ordinary SGD reshuffled every epoch) and to the paper's δ = 1 (fixed order).
  **Top-1 at equal cost**: each run's test top-1 at its last evaluation within the budget, the budget being the
  smallest total that every run of the group spent (no interpolation), mean over seeds.
- **Best δ chosen on validation**: the δ < 1 with the highest mean final accuracy on the held-out validation split
  (--val-fraction); its test accuracy is then an honest estimate. Chosen on test, it is optimistic.
"""


def load_runs(root: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """The finished runs under ``root`` that can be read, and (path, reason) for those that cannot."""
    runs, damaged = [], []
    for run_dir in find_runs(root):
        try:
            runs.append(Run.load(run_dir))
        except UsageError as e:
            damaged.append((run_dir.path, str(e)))
    return runs, damaged


def build_report(root: Path | str, out_dir: Path | str | None = None, plots: bool = True,
                 target: float | None = None, damaged: list[tuple[Path, str]] | None = None) -> tuple[Path, str]:
    """Write report.md, summary.csv (one row per arm), runs.csv and PNG plots for all runs under ``root``.

    Damaged runs are left out and listed at the end of report.md; pass a list as ``damaged`` to receive
    their (path, reason). Returns the report's path and the per-group tables as text for the terminal.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"no such directory: {str(root)!r}")
    runs, skipped = load_runs(root)
    if damaged is not None:
        damaged.extend(skipped)
    if not runs:
        detail = f"; {len(skipped)} damaged, the first: {skipped[0][1]}" if skipped else ""
        raise UsageError(f"no readable finished runs (directories with summary.json) under {str(root)!r}{detail}")
    if target is not None and not (0.0 < target <= 1.0):
        raise UsageError(f"target accuracy must be a fraction in (0, 1], got {target}")
    out_dir = ensure_writable_dir(Path(out_dir) if out_dir is not None else root)
    groups = group_runs(runs)
    rows = {g.title: arm_rows(g, target) for g in groups}
    all_rows = [row for g in groups for row in rows[g.title]]
    tables = [f"{g.title}\n{markdown_table(rows[g.title])}" for g in groups]
    sections = []
    for protocol, members in by_protocol(groups).items():
        if len(members) > 1:
            sections.append(_overview_section(members, rows, protocol))
    for group in groups:
        sections.append(_group_section(group, rows[group.title], out_dir if plots else None, target))
    sections.append(_claims_section(groups, rows))
    if skipped:
        sections.append("\n".join(["## Damaged runs, left out", "",
                                    f"{len(skipped)} finished run(s) could not be read and are not in any table:", ""]
                                   + [f"- `{path}`: {reason}" for path, reason in skipped]) + "\n")
    header = (f"# hardbatch report\n\n{len(runs)} finished runs under `{root}`, {len(groups)} group(s)"
              + (f", {len(skipped)} damaged run(s) left out (listed at the end)" if skipped else "")
              + f"; built {dt.datetime.now().isoformat(timespec='seconds')} by hardbatch {__version__}.\n")
    report = "\n".join([header, *sections, DEFINITIONS])
    atomic_write_text(out_dir / "summary.csv", csv_text(all_rows, list(all_rows[0])))
    run_fields = ["path", "dataset", "model", "policy", "delta", "seed", "final_test_acc", "final_test_bacc", "best_test_acc",
                  "epochs_to_plateau", "optimizer_steps", "train_seconds"]
    run_rows = [{"path": str(r.path.relative_to(root)) if r.path != root else ".", **r.config.to_dict(), **r.summary} for r in runs]
    atomic_write_text(out_dir / "runs.csv", csv_text(run_rows, run_fields))
    path = out_dir / "report.md"
    atomic_write_text(path, report)
    return path, "\n\n".join(tables)
