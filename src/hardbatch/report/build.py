"""Tables, CSVs, plots and report.md computed from saved run directories, never from training state."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hardbatch import __version__
from hardbatch.config import (
    AXIS_SYMBOLS,
    POLICY_AXES,
    POLICY_NAMES,
    RUNTIME_KEYS,
    RunConfig,
)
from hardbatch.errors import UsageError
from hardbatch.policies import defaults as policy_defaults
from hardbatch.policies.registry import shared_fields
from hardbatch.fileio import atomic_write_text, csv_text, ensure_writable_dir, read_json
from hardbatch.metrics import (
    PLATEAU_POINTS,
    POWER,
    Interval,
    cumulative,
    epochs_to_plateau,
    epochs_to_target,
    mean_interval,
    mean_std,
    no_interval_reason,
    paired_difference,
    value_at_budget,
)
from hardbatch.records import (
    CONFIG,
    HISTORY,
    SUMMARY,
    TARGET_FRACTION,
    MislabelledExposure,
    RunDir,
    find_runs,
    mislabelled_exposure,
)

# Settings that tell arms apart inside a group (the policy and the value of its axis), and settings that never
# split groups.
ARM_KEYS = ("policy",) + tuple(sorted(set(POLICY_AXES.values())))
NOT_GROUPING = ARM_KEYS + ("seed",) + RUNTIME_KEYS
DEFAULT_CONFIG = RunConfig()
LAST_EPOCHS = 3  # "last-3 mean": test top-1 averaged over a run's last 3 epochs, which epoch-to-epoch swings do not decide
REFERENCE_DELTA = 1.0  # every policy trains every batch at δ = 1: ordinary mini-batch training
REFERENCE_POLICY = "hardbatch"  # the paper's baseline is its own rule at δ = 1, never a peer that records δ = 1
NO_BASELINE = "no baseline"  # what the Δ-vs-reference cells say in a group without the reference arm


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


def axis_value(cfg: RunConfig) -> float | None:
    """The value of the hyper-parameter ``cfg.policy`` sweeps (its axis: δ, β, the prune ratio), or None."""
    axis = POLICY_AXES.get(cfg.policy)
    return None if axis is None else cfg.policy_params().get(axis)


def arm_label(policy: str, value: float | None) -> str:
    """"δ = 0.5" for the paper's rule, "random δ = 0.5" for a control, "infobatch r = 0.3" for a peer away from
    its default, the bare name for a peer at its default or a policy without an axis."""
    axis = POLICY_AXES.get(policy)
    if axis is None or value is None:
        return policy
    if axis != "delta" and value == policy_defaults(policy)[axis]:
        return policy
    name = f"{AXIS_SYMBOLS.get(axis, axis)} = {value:g}"
    return name if policy == REFERENCE_POLICY else f"{policy} {name}"


@dataclass
class Arm:
    """The runs of one policy at one value of its axis within a group, keyed by seed."""

    policy: str
    value: float | None  # the axis value (δ for δ policies); None for a policy without an axis
    delta: float  # the recorded δ (1 for policies that ignore it)
    runs: dict[int, Run] = field(default_factory=dict)
    tuned: dict = field(default_factory=dict)  # settings chosen per arm (group_runs' per_arm), e.g. {"lr": 0.1}

    @property
    def label(self) -> str:
        return arm_label(self.policy, self.value)

    def values(self, key: str) -> dict[int, float]:
        return {seed: run.summary[key] for seed, run in self.runs.items()}

    def last_accs(self) -> dict[int, float]:
        """Test top-1 averaged over each run's last LAST_EPOCHS epochs, by seed."""
        return {seed: sum(run.accs[-LAST_EPOCHS:]) / len(run.accs[-LAST_EPOCHS:]) for seed, run in self.runs.items()}


@dataclass(frozen=True)
class Comparison:
    """Which arm is the method a report judges and which is its reference.

    ``method``: a policy name; its arms (but the reference) are the method's settings along its axis.
    ``reference``: ``POLICY`` or ``POLICY@VALUE``; a δ policy without a value means δ = 1 (ordinary training),
    another policy its default value, a policy without an axis its one arm. The default is the paper's own
    comparison: its rule against its rule at δ = 1.
    """

    method: str = REFERENCE_POLICY
    reference: str = REFERENCE_POLICY

    def __post_init__(self):
        for what, name in (("method", self.method), ("reference", self.reference_policy)):
            if name not in POLICY_NAMES:
                raise UsageError(f"unknown {what} policy {name!r}; valid: {', '.join(POLICY_NAMES)}")
        value = self.reference.partition("@")[2]
        if value:
            if POLICY_AXES.get(self.reference_policy) is None:
                raise UsageError(f"reference {self.reference!r}: policy {self.reference_policy!r} has no "
                                 f"hyper-parameter to set; give it as {self.reference_policy!r}")
            try:
                float(value)
            except ValueError:
                raise UsageError(f"reference {self.reference!r}: {value!r} is not a number; give POLICY or "
                                 f"POLICY@VALUE, e.g. hardbatch@1 or infobatch@0.3") from None

    @property
    def reference_policy(self) -> str:
        return self.reference.partition("@")[0]

    @property
    def reference_value(self) -> float | None:
        """The reference arm's axis value: the one given, δ = 1 for δ policies, else the policy's default."""
        policy, _, value = self.reference.partition("@")
        axis = POLICY_AXES.get(policy)
        if axis is None:
            return None
        if value:
            return float(value)
        return REFERENCE_DELTA if axis == "delta" else policy_defaults(policy)[axis]

    @property
    def is_paper(self) -> bool:
        """The paper's own comparison: its rule against δ = 1."""
        return self.method == REFERENCE_POLICY and self.reference_policy == REFERENCE_POLICY \
            and self.reference_value == REFERENCE_DELTA

    @property
    def reference_text(self) -> str:
        """How tables name the reference: "δ=1" for the paper's baseline, else the arm's label."""
        if self.reference_policy == REFERENCE_POLICY and self.reference_value == REFERENCE_DELTA:
            return "δ=1"
        return arm_label(self.reference_policy, self.reference_value)

    @property
    def reference_label(self) -> str:
        """The reference arm's label in prose: "δ = 1", "uniform", "infobatch r = 0.3"."""
        return arm_label(self.reference_policy, self.reference_value)

    @property
    def axis(self) -> str | None:
        return POLICY_AXES.get(self.method)


PAPER = Comparison()


@dataclass
class Group:
    """Runs that share every setting except policy, its axis value and seed."""

    title: str
    settings: dict
    arms: list[Arm]

    def arm(self, policy: str, value: float | None = None) -> Arm | None:
        """The arm of ``policy`` at axis ``value`` (any value when None)."""
        return next((a for a in self.arms if a.policy == policy and (value is None or a.value == value)), None)

    def reference_for(self, comparison: Comparison) -> Arm | None:
        """The comparison's reference arm; None when it was not run. Peers record δ = 1 too (it does not apply
        to them), so the policy decides, never the recorded δ alone. The paper's baseline, its rule at δ = 1, may
        be stood in for by a control at δ = 1 (`random`, `cyclic`): at δ = 1 they train exactly the rule's batches
        in the rule's order."""
        arm = self.arm(comparison.reference_policy, comparison.reference_value)
        if arm is None and comparison.reference_policy == REFERENCE_POLICY and comparison.reference_value == REFERENCE_DELTA:
            arm = next((a for a in self.arms if POLICY_AXES.get(a.policy) == "delta" and a.value == REFERENCE_DELTA), None)
        return arm

    @property
    def reference(self) -> Arm | None:
        """The paper's baseline: its rule at δ = 1 (ordinary training in fixed order); None when it was not run."""
        return self.reference_for(PAPER)

    def method_arms(self, comparison: Comparison) -> list[Arm]:
        """The method's arms other than the reference (for the paper: its rule at δ < 1)."""
        ref = self.reference_for(comparison)
        return [a for a in self.arms if a.policy == comparison.method and a is not ref]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.title).strip("-")


def flat_settings(cfg: RunConfig) -> dict:
    """A run's settings as one flat dict: config.json's settings but ``params``, then every registered policy's
    hyper-parameters, the run's own policy's as it ran and the others' at their defaults (so runs of different
    policies compare setting by setting)."""
    flat = {k: v for k, v in cfg.to_dict().items() if k != "params"}
    own = cfg.policy_params()
    for name, (f, _) in shared_fields().items():
        flat[name] = own.get(name, f.default)
    return flat


def group_runs(runs: list[Run], method: str = REFERENCE_POLICY, per_arm: tuple[str, ...] = ()) -> list[Group]:
    """Group runs by their settings; within a group, one arm per (policy, axis value); the method's arms first,
    each policy's arms in axis order.

    ``per_arm``: settings chosen for each arm (a learning rate tuned per arm, say), which then do not split groups;
    all runs of one arm must share their values (``Arm.tuned``), else UsageError.
    """
    unknown = [k for k in per_arm if k not in DEFAULT_CONFIG.to_dict() or k in NOT_GROUPING + ("params",)]
    if unknown:
        raise UsageError(f"cannot choose {unknown[0]!r} per arm; valid: the settings of config.json (lr, epochs, ...) "
                         f"but the policy, its axis ({', '.join(ARM_KEYS[1:])}), the seed and runtime settings")
    groups: dict[tuple, dict[tuple, Arm]] = {}
    settings: dict[tuple, dict] = {}
    for run in runs:
        cfg = flat_settings(run.config)
        key = tuple((k, repr(v)) for k, v in cfg.items() if k not in NOT_GROUPING + per_arm)
        settings[key] = {k: v for k, v in cfg.items() if k not in NOT_GROUPING + per_arm}
        arms = groups.setdefault(key, {})
        value = axis_value(run.config)
        tuned = {k: cfg[k] for k in per_arm}
        arm = arms.setdefault((run.config.policy, value), Arm(run.config.policy, value, run.config.delta, tuned=tuned))
        if run.config.seed in arm.runs:
            raise UsageError(f"two runs of {arm.label} seed {run.config.seed}: {arm.runs[run.config.seed].path} and {run.path}")
        if tuned != arm.tuned:
            other = next(iter(arm.runs.values())).path
            raise UsageError(f"{arm.label} holds runs with other per-arm settings: {arm.tuned} in {other}, {tuned} in "
                             f"{run.path}; one value per arm")
        arm.runs[run.config.seed] = run
    # Titles name data set and model, plus the settings that differ between groups of the same pair.
    result = []
    for key, arms in groups.items():
        s = settings[key]
        same_pair = [settings[k] for k in groups if settings[k]["dataset"] == s["dataset"] and settings[k]["model"] == s["model"]]
        differing = sorted({k for other in same_pair for k in s if other[k] != s[k]})
        title = f"{s['dataset']} / {s['model']}" + "".join(f", {k}={s[k]}" for k in differing)
        order = sorted(arms.values(), key=lambda a: (a.policy != method, a.value if a.value is not None else 0.0, a.policy))
        result.append(Group(title, s, order))
    return sorted(result, key=lambda g: g.title)


def by_protocol(groups: list[Group]) -> dict[str, list[Group]]:
    """Groups keyed by protocol name ("" for runs without a preset), protocols in sorted order."""
    keyed: dict[str, list[Group]] = {}
    for g in groups:
        keyed.setdefault(g.settings.get("protocol") or "", []).append(g)
    return dict(sorted(keyed.items()))


def target_accuracy(group: Group, target: float | None = None, comparison: Comparison = PAPER) -> tuple[float | None, str]:
    """T for epochs-to-target: ``target`` if given, else the runs' configured target, else 0.99 x the
    reference's mean best accuracy."""
    if target is not None:
        return target, "given to report --target-acc"
    ref = group.reference_for(comparison)
    configured = {run.config.target_acc for arm in group.arms for run in arm.runs.values()}
    if len(configured) == 1 and None not in configured:
        return configured.pop(), "given by --target-acc"
    if ref is None:
        return None, f"no runs of the reference ({comparison.reference_label}) to define it"
    best, _ = mean_std(list(ref.values("best_test_acc").values()))
    return TARGET_FRACTION * best, f"{TARGET_FRACTION:g} × mean best test accuracy of {comparison.reference_label} over seeds"


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


# ---- per-arm statistics: computed once, read by every table, the claims and the results page ---------------


NAN = math.nan


@dataclass
class ArmStats:
    """Everything the report says about one arm, computed once from its runs (``arm_stats``).

    Accuracies are fractions; differences are in percentage points, seed-paired, with a 95% t interval whose ends
    are NaN where there is none (``results.MIN_PAIRS``); ``*_pairs`` = 0: the other arm was not run;
    ``*_detectable``: the smallest difference that comparison could have detected (``results.detectable_difference``,
    points). Cost figures are means over seeds; ``acc_at_equal_*``: test top-1 at the group's equal-cost budget
    ``budget_*``.
    """

    group: str
    arm: str
    policy: str
    axis: str | None
    value: float | None
    delta: float
    n: int
    is_reference: bool = False
    is_method: bool = False
    final_acc_mean: float = NAN
    final_acc_std: float = NAN
    final_acc_low: float = NAN
    final_acc_high: float = NAN
    final_bacc_mean: float = NAN
    final_bacc_std: float = NAN
    best_acc_mean: float = NAN
    final_val_acc_mean: float = NAN
    # to the comparison's reference: final top-1, and the last-LAST_EPOCHS mean
    diff_points: float = NAN
    diff_low: float = NAN
    diff_high: float = NAN
    diff_pairs: int = 0
    diff_detectable: float = NAN
    diff_relative_pct: float = NAN
    last_acc_mean: float = NAN
    last_acc_std: float = NAN
    last_diff_points: float = NAN
    last_diff_low: float = NAN
    last_diff_high: float = NAN
    last_diff_detectable: float = NAN
    # to `uniform` (ordinary reshuffled SGD), final top-1
    uniform_diff_points: float = NAN
    uniform_diff_low: float = NAN
    uniform_diff_high: float = NAN
    uniform_diff_pairs: int = 0
    uniform_diff_detectable: float = NAN
    target_acc: float = NAN
    epochs_to_target_mean: float = NAN
    target_reached: int = 0
    fewer_epochs_pct: float = NAN
    epochs_to_plateau_mean: float = NAN
    seconds_to_target_mean: float = NAN
    train_seconds_mean: float = NAN
    samples_backpropagated_mean: float = NAN
    optimizer_steps_mean: float = NAN
    samples_loaded_mean: float = NAN
    samples_forward_nograd_mean: float = NAN
    choose_seconds_mean: float = NAN
    cpu_seconds_mean: float = NAN
    acc_at_equal_samples_backprop: float = NAN
    acc_at_equal_train_seconds: float = NAN
    acc_at_equal_cpu_seconds: float = NAN
    budget_samples_backprop: float = NAN
    budget_train_seconds: float = NAN
    budget_cpu_seconds: float = NAN
    mislabelled_trained_mean: float = NAN
    mislabelled_trained_after_warmup_mean: float = NAN
    mislabelled_in_data_mean: float = NAN

    def row(self) -> dict:
        """The record as one summary.csv row."""
        return asdict(self)


def _paired_points(a: dict[int, float], b: dict[int, float]) -> Interval:
    """Seed-paired difference a − b over the seeds both have, in points."""
    seeds = sorted(set(a) & set(b))
    d = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return Interval(100 * d.mean, 100 * d.low, 100 * d.high, d.n)


def equal_budget(group: Group, column: str) -> float:
    """The largest cost every run of the group has spent: the budget at which all arms can be compared; NaN when
    a run did not count it (written before the column existed)."""
    totals = [run.cost(column)[-1] for arm in group.arms for run in arm.runs.values() if run.history]
    return min(totals) if totals and not any(math.isnan(t) for t in totals) else math.nan


COST_MEANS = {"optimizer_steps_mean": "optimizer_steps", "samples_loaded_mean": "samples_loaded",
              "samples_forward_nograd_mean": "samples_forward_nograd", "choose_seconds_mean": "choose_seconds",
              "cpu_seconds_mean": "cpu_seconds"}
EQUAL_COST = ("samples_backprop", "train_seconds", "cpu_seconds")  # the costs at whose equal budget arms are compared


def arm_stats(group: Group, target: float | None = None, comparison: Comparison = PAPER) -> list[ArmStats]:
    """One ArmStats per arm of ``group``: accuracy, differences to the comparison's reference and to uniform,
    epochs to target, cost and accuracy at equal cost."""
    target, _ = target_accuracy(group, target, comparison)
    ref, uniform = group.reference_for(comparison), group.arm("uniform")
    method = group.method_arms(comparison)
    ref_epochs = None
    if ref is not None and target is not None:
        ref_epochs = mean_std([_censored_epochs(r, target) for r in ref.runs.values()])[0]
    budgets = {column: equal_budget(group, column) for column in EQUAL_COST}
    stats = []
    for arm in group.arms:
        runs = list(arm.runs.values())
        final = arm.values("final_test_acc")
        interval = mean_interval(list(final.values()))
        low, high = interval.low, interval.high
        if interval.has_interval:  # an accuracy interval never leaves [0, 1]
            low, high = max(0.0, low), min(1.0, high)
        s = ArmStats(
            group=group.title, arm=arm.label, policy=arm.policy, axis=POLICY_AXES.get(arm.policy), value=arm.value,
            delta=arm.delta, n=len(runs), is_reference=arm is ref, is_method=arm in method,
            final_acc_mean=mean_std(list(final.values()))[0], final_acc_std=mean_std(list(final.values()))[1],
            final_acc_low=low, final_acc_high=high,
            best_acc_mean=mean_std(list(arm.values("best_test_acc").values()))[0],
            final_val_acc_mean=mean_std([r.summary.get("final_val_acc", math.nan) for r in runs])[0],
            target_acc=target if target is not None else math.nan,
            epochs_to_plateau_mean=mean_std([epochs_to_plateau(r.accs) for r in runs])[0],
            train_seconds_mean=mean_std(list(arm.values("train_seconds").values()))[0],
            samples_backpropagated_mean=mean_std(list(arm.values("samples_backpropagated").values()))[0],
        )
        s.final_bacc_mean, s.final_bacc_std = mean_std([_nan(r.summary.get("final_test_bacc")) for r in runs])
        s.last_acc_mean, s.last_acc_std = mean_std(list(arm.last_accs().values()))
        for name, key in COST_MEANS.items():
            setattr(s, name, mean_std([r.summary.get("cost", {}).get(key, math.nan) for r in runs])[0])
        for column, budget in budgets.items():
            setattr(s, f"acc_at_equal_{column}", mean_std([value_at_budget(r.cost(column), r.accs, budget) for r in runs])[0])
            setattr(s, f"budget_{column}", budget)
        exposures = [r.exposure for r in runs if r.exposure is not None]
        for key in ("trained", "trained_after_warmup", "in_data"):
            setattr(s, f"mislabelled_{key}_mean", mean_std([getattr(e, key) for e in exposures])[0])
        if ref is not None:  # the reference's own difference is 0 over its n pairs, with no interval
            d = _paired_points(final, ref.values("final_test_acc"))
            ref_final = ref.values("final_test_acc")
            ref_mean = mean_std([ref_final[seed] for seed in sorted(set(final) & set(ref_final))])[0]
            s.diff_points, s.diff_low, s.diff_high, s.diff_pairs = d.mean, d.low, d.high, d.n
            s.diff_detectable = d.detectable
            s.diff_relative_pct = d.mean / ref_mean if ref_mean else math.nan
            d = _paired_points(arm.last_accs(), ref.last_accs())
            s.last_diff_points, s.last_diff_low, s.last_diff_high = d.mean, d.low, d.high
            s.last_diff_detectable = d.detectable
        if uniform is not None:
            d = _paired_points(final, uniform.values("final_test_acc"))
            s.uniform_diff_points, s.uniform_diff_low, s.uniform_diff_high, s.uniform_diff_pairs = d.mean, d.low, d.high, d.n
            s.uniform_diff_detectable = d.detectable
        if target is not None:
            s.target_reached = sum(epochs_to_target(r.accs, target) is not None for r in runs)
            s.epochs_to_target_mean = mean_std([_censored_epochs(r, target) for r in runs])[0]
            s.seconds_to_target_mean = mean_std([_censored_seconds(r, target) for r in runs])[0]
            if ref_epochs:
                s.fewer_epochs_pct = 100.0 * (1.0 - s.epochs_to_target_mean / ref_epochs)
        stats.append(s)
    return stats


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def markdown_table(stats: list[ArmStats], comparison: Comparison = PAPER) -> str:
    """The per-arm table as Markdown (also readable in a terminal)."""
    ref = comparison.reference_text
    header = ["arm", "n", "final top-1 % (mean ± std)", "balanced top-1 %", f"Δ vs {ref}, points [95% CI]",
              f"detectable Δ ({100 * POWER:.0f}% power)", "Δ relative %",
              f"last-{LAST_EPOCHS} mean %", f"Δ last-{LAST_EPOCHS} vs {ref} [95% CI]", "epochs to T (reached)",
              "fewer epochs %", "epochs to plateau", "train s to T", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in stats:
        lines.append("| " + " | ".join([
            r.arm, str(r.n),
            f"{_fmt(r.final_acc_mean, scale=100)} ± {_fmt(r.final_acc_std, scale=100)}",
            _mean_pm_std(r.final_bacc_mean, r.final_bacc_std),
            "reference" if r.is_reference else _interval(r.diff_points, r.diff_low, r.diff_high, r.diff_pairs),
            "—" if r.is_reference else _fmt(r.diff_detectable),
            "—" if r.is_reference else _fmt(r.diff_relative_pct, signed=True),
            _fmt(r.last_acc_mean, scale=100),
            "reference" if r.is_reference else _interval(r.last_diff_points, r.last_diff_low, r.last_diff_high, r.diff_pairs),
            f"{_fmt(r.epochs_to_target_mean, 1)} ({r.target_reached}/{r.n})",
            _fmt(r.fewer_epochs_pct, 1, signed=True),
            _fmt(r.epochs_to_plateau_mean, 1),
            _fmt(r.seconds_to_target_mean, 1),
            _fmt(r.train_seconds_mean, 1),
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


def noise_table(stats: list[ArmStats]) -> str:
    """Per arm: the share of relabelled samples among the samples trained, against their share of the training split."""
    lines = ["| arm | mislabelled % of back-propagated samples | after the first epoch | % of the training split | ratio after the first epoch |",
             "|---|---|---|---|---|"]
    for r in stats:
        trained, after, data = r.mislabelled_trained_mean, r.mislabelled_trained_after_warmup_mean, r.mislabelled_in_data_mean
        ratio = after / data if data and not math.isnan(after) else math.nan
        lines.append(f"| {r.arm} | {_fmt(trained, 1, 100)} | {_fmt(after, 1, 100)} | {_fmt(data, 1, 100)} | {_fmt(ratio, 2)} |")
    return "\n".join(lines)


def choose_arm(stats: list[ArmStats], on: str = "validation") -> ArmStats | None:
    """The method's arm (its reference aside) of highest mean final accuracy on ``on`` ("validation" or "test");
    for the paper, its best δ < 1."""
    key = "final_val_acc_mean" if on == "validation" else "final_acc_mean"
    ours = [r for r in stats if r.is_method and not math.isnan(getattr(r, key))]
    return max(ours, key=lambda r: getattr(r, key)) if ours else None


def chosen_arm(stats: list[ArmStats]) -> tuple[ArmStats | None, str]:
    """The method's arm chosen on validation, or on test where no run had a validation split; and which."""
    chosen = choose_arm(stats, "validation")
    return (chosen, "validation") if chosen is not None else (choose_arm(stats, "test"), "test")


def overview_table(groups: list[Group], stats: dict[str, list[ArmStats]], comparison: Comparison = PAPER) -> str:
    """The paper-style table: one line per network, one column per value of the method's axis (δ for the paper),
    final top-1 mean ± std (n); the reference arm's column included."""
    shown = lambda r: r.is_method or (r.is_reference and r.policy == comparison.method)  # noqa: E731
    values = sorted({r.value for g in groups for r in stats[g.title] if shown(r) and r.value is not None})
    symbol = AXIS_SYMBOLS.get(comparison.axis or "", comparison.method)
    lines = ["| network | " + " | ".join(f"{symbol} = {v:g}" for v in values) + " |", "|---|" + "---|" * len(values)]
    models = [g.settings["model"] for g in groups]
    for g in groups:
        cells = {r.value: r for r in stats[g.title] if shown(r)}
        label = g.settings["model"] if models.count(g.settings["model"]) == 1 else g.title
        lines.append(f"| {label} | " + " | ".join(
            f"{_fmt(cells[v].final_acc_mean, scale=100)} ± {_fmt(cells[v].final_acc_std, scale=100)} ({cells[v].n})"
            if v in cells else "—" for v in values) + " |")
    return "\n".join(lines)


def _curve_band(runs: list[Run]) -> tuple[list[float], list[float], list[float]]:
    """Mean ± std (in %) per epoch over runs; epochs beyond the shortest run are dropped."""
    length = min(len(r.accs) for r in runs)
    mean, low, high = [], [], []
    for e in range(length):
        m, s = mean_std([r.accs[e] for r in runs])
        mean.append(100 * m), low.append(100 * (m - s)), high.append(100 * (m + s))
    return mean, low, high


def draw_group_plots(group: Group, stats: list[ArmStats], out_dir: Path, comparison: Comparison = PAPER) -> list[Path]:
    """Accuracy curves, final accuracy along the method's axis, and batch-visit counts for one group; returns the PNGs."""
    from hardbatch.report.plots import (
        plot_batch_visits,
        plot_curves,
        plot_final_vs_delta,
        save_figure,
    )

    curves = {arm.label: _curve_band(list(arm.runs.values())) for arm in group.arms}
    paths = [save_figure(plot_curves(curves, title=group.title), out_dir / f"{group.slug}_accuracy.png")]
    ours = [r for r in stats if (r.is_method or (r.is_reference and r.policy == comparison.method)) and r.value is not None]
    if ours and comparison.axis == "delta":
        ref = next((r for r in stats if r.is_reference), None)
        # The 95% t-interval of the mean over seeds, clipped (ArmStats): no accuracy lies outside [0, 100].
        ax = plot_final_vs_delta(
            [r.value for r in ours], [100 * r.final_acc_mean for r in ours],
            [100 * r.final_acc_low for r in ours], [100 * r.final_acc_high for r in ours],
            baseline=100 * ref.final_acc_mean if ref else None, title=group.title,
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


def cost_table(stats: list[ArmStats], comparison: Comparison = PAPER) -> str:
    """The cost table as Markdown."""
    budget_b = stats[0].budget_samples_backprop if stats else math.nan
    budget_s = stats[0].budget_train_seconds if stats else math.nan
    budget_c = stats[0].budget_cpu_seconds if stats else math.nan
    header = ["arm", "n", "final top-1 % [95% CI]", "Δ vs uniform", f"Δ vs {comparison.reference_text}", "steps",
              "backprop samples", "no-grad samples", "train s", "CPU s", "choose s",
              f"top-1 % at {_fmt(budget_b, 0)} backprop samples", f"top-1 % at {_fmt(budget_s, 1)} train s",
              f"top-1 % at {_fmt(budget_c, 1)} CPU s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in stats:
        lines.append("| " + " | ".join([
            r.arm, str(r.n), _interval(r.final_acc_mean, r.final_acc_low, r.final_acc_high, r.n, 100, False),
            "reference" if r.policy == "uniform" else
            "—" if r.uniform_diff_pairs == 0 else
            _interval(r.uniform_diff_points, r.uniform_diff_low, r.uniform_diff_high, r.uniform_diff_pairs),
            "reference" if r.is_reference else _interval(r.diff_points, r.diff_low, r.diff_high, r.diff_pairs),
            _fmt(r.optimizer_steps_mean, 0), _fmt(r.samples_backpropagated_mean, 0), _fmt(r.samples_forward_nograd_mean, 0),
            _fmt(r.train_seconds_mean, 1), _fmt(r.cpu_seconds_mean, 1), _fmt(r.choose_seconds_mean, 2),
            _fmt(r.acc_at_equal_samples_backprop, scale=100), _fmt(r.acc_at_equal_train_seconds, scale=100),
            _fmt(r.acc_at_equal_cpu_seconds, scale=100),
        ]) + " |")
    return "\n".join(lines)


def _cost_band(runs: list[Run], column: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per epoch over runs: mean cumulative cost, and mean ± std of test top-1 (%)."""
    length = min(len(r.accs) for r in runs)
    xs = [mean_std([r.cost(column)[e] for r in runs])[0] for e in range(length)]
    mean, low, high = _curve_band(runs)
    return xs, mean[:length], low[:length], high[:length]


def forest_points(stats: list[ArmStats]) -> dict[str, tuple[float, float, float]]:
    """Each arm's seed-paired difference of final top-1 to `uniform` (points: mean, low, high; NaN ends without an
    interval), `uniform` itself and arms without pairs aside; empty without a `uniform` arm. What the forest plot draws."""
    return {r.arm: (r.uniform_diff_points, r.uniform_diff_low, r.uniform_diff_high) for r in stats
            if r.policy != "uniform" and r.uniform_diff_pairs > 0}


def draw_cost_plots(group: Group, stats: list[ArmStats], out_dir: Path) -> list[Path]:
    """Test accuracy against cumulative back-propagated samples and training seconds, the forest plot of every
    arm's paired difference to `uniform` (with a `uniform` arm), and the final accuracy against total cost (the
    speed-accuracy front); returns the PNGs."""
    from hardbatch.report.plots import (
        plot_cost_curves,
        plot_forest,
        plot_front,
        save_figure,
    )

    paths = []
    for column, xlabel, name in (("samples_backprop", "cumulative samples back-propagated", "vs_samples"),
                                 ("train_seconds", "cumulative training seconds", "vs_seconds")):
        curves = {arm.label: _cost_band(list(arm.runs.values()), column) for arm in group.arms}
        ax = plot_cost_curves(curves, xlabel=xlabel, title=group.title)
        paths.append(save_figure(ax, out_dir / f"{group.slug}_accuracy_{name}.png"))
    if (differences := forest_points(stats)):
        paths.append(save_figure(plot_forest(differences, "uniform", title=f"{group.title}: paired difference to uniform"),
                                 out_dir / f"{group.slug}_forest.png"))
    points = {r.arm: (r.samples_backpropagated_mean, r.train_seconds_mean, 100 * r.final_acc_mean,
                      100 * r.final_acc_low, 100 * r.final_acc_high) for r in stats}
    paths.append(save_figure(plot_front(points, title=f"{group.title}: speed-accuracy front"),
                             out_dir / f"{group.slug}_front.png"))
    return paths


def _cost_section(group: Group, stats: list[ArmStats], plot_dir: Path | None, comparison: Comparison) -> str:
    if all(math.isnan(r.optimizer_steps_mean) for r in stats):
        return ""  # runs from before cost was counted
    section = [f"### Cost and accuracy at equal cost: {group.title}", "", cost_table(stats, comparison), ""]
    if plot_dir is not None:
        for path in draw_cost_plots(group, stats, plot_dir):
            section += [f"![{path.stem}]({path.name})", ""]
    return "\n".join(section)


def _overview_section(groups: list[Group], stats: dict[str, list[ArmStats]], protocol: str, comparison: Comparison) -> str:
    by_dataset: dict[str, list[Group]] = {}
    for g in groups:
        by_dataset.setdefault(g.settings["dataset"], []).append(g)
    parts = [f"## Overview{f' — protocol {protocol}' if protocol else ''}: final test top-1 %, mean ± std (n seeds)", ""]
    for dataset, members in by_dataset.items():
        parts += [f"### {dataset}", "", overview_table(members, stats, comparison), ""]
    return "\n".join(parts)


def machines(runs: list[Run]) -> list[str]:
    """The machines ``runs`` ran on with how many runs each, most first, from each config.json: "CPU <model>,
    capability <kernels>, <n> threads (k runs)", with ", GPU <name>" for CUDA runs; "unknown" for what older runs lack.
    """
    counts: dict[str, int] = {}
    for run in runs:
        try:
            device = read_json(run.path / CONFIG).get("device")
        except (OSError, ValueError, AttributeError):
            device = None
        device = device if isinstance(device, dict) else {}
        known = {k: "unknown" if device.get(k) in (None, "") else device[k]
                 for k in ("cpu", "cpu_capability", "threads", "name")}
        threads = f"{known['threads']} thread{'' if known['threads'] == 1 else 's'}"
        machine = f"CPU {known['cpu']}, capability {known['cpu_capability']}, {threads}"
        machine += f", GPU {known['name']}" if device.get("type") == "cuda" else ""
        counts[machine] = counts.get(machine, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [f"{machine} ({n} run{'s' if n > 1 else ''})" for machine, n in ranked]


def machine_note(group: Group) -> str | None:
    """One paragraph when ``group``'s runs come from more than one machine (see ``machines``); None otherwise."""
    seen = machines([run for arm in group.arms for run in arm.runs.values()])
    if len(seen) < 2:
        return None
    return (f"**Runs from {len(seen)} machines** (CPU model, kernel capability, threads): {'; '.join(seen)}. Float "
            "rounding differs between them and training amplifies it: the same settings give other digits on another "
            "machine, so read differences between these runs against the seed spread.")


def _chosen_text(comparison: Comparison) -> str:
    """How sections name the method's chosen arm: "δ < 1" for the paper's rule, else the method's setting."""
    return "δ < 1" if comparison.is_paper else f"`{comparison.method}` setting"


def _tuned_text(group: Group) -> str:
    """" Chosen per arm: δ = 0.5 lr 0.1, uniform lr 0.3." for settings chosen per arm; "" when there are none."""
    chosen = [f"{a.label} {k} {v}" for a in group.arms for k, v in a.tuned.items()]
    return f" Chosen per arm: {', '.join(chosen)}." if chosen else ""


def _group_section(group: Group, stats: list[ArmStats], plot_dir: Path | None, target: float | None,
                   comparison: Comparison) -> str:
    target, how = target_accuracy(group, target, comparison)
    settings = ", ".join(f"{k} {v}" for k, v in group.settings.items() if k not in ("dataset", "model"))
    section = [f"## {group.title}", "", f"Settings: {settings}.{_tuned_text(group)}", "",
               f"Target T = {_fmt(target, 2, 100)}% test top-1 ({how}).", "", markdown_table(stats, comparison), ""]
    on_val, on_test = choose_arm(stats, "validation"), choose_arm(stats, "test")
    what = _chosen_text(comparison)
    if on_val is not None:
        section.append(f"Best {what} chosen on the validation split: **{on_val.arm}** "
                       f"(validation {_fmt(on_val.final_val_acc_mean, scale=100)}%, test "
                       f"{_fmt(on_val.final_acc_mean, scale=100)}%).")
    else:
        section.append(f"Best {what} on a validation split: not available (runs without --val-fraction).")
    if on_test is not None:
        section += ["", f"Best {what} chosen on test (optimistic, as the released code did): {on_test.arm} "
                        f"({_fmt(on_test.final_acc_mean, scale=100)}%)."]
    section.append("")
    if (note := machine_note(group)) is not None:
        section += [note, ""]
    if (table := per_class_table(group)) is not None:
        section += ["Final test top-1 % per class, mean over seeds:", "", table, ""]
    if group.settings.get("label_noise"):
        section += [f"Label noise {group.settings['label_noise']:g}: relabelled samples among those each arm trained "
                    "(mean over seeds).", "", noise_table(stats), ""]
    if plot_dir is not None:
        for path in draw_group_plots(group, stats, plot_dir, comparison):
            section += [f"![{path.stem}]({path.name})", ""]
    section.append(_cost_section(group, stats, plot_dir, comparison))
    return "\n".join(section)


def group_results(groups: list[Group], stats: dict[str, list[ArmStats]], comparison: Comparison = PAPER):
    """What the claims read: one GroupResult per group that holds the reference, and the titles of those without."""
    from hardbatch.report.claims import GroupResult

    results, missing = [], []
    for g in groups:
        if g.reference_for(comparison) is None:
            missing.append(g.title)
            continue
        chosen, on = chosen_arm(stats[g.title])
        results.append(GroupResult(g.settings["dataset"], g.settings["model"], stats[g.title], chosen, on))
    return results, missing


def _claims_section(groups: list[Group], stats: dict[str, list[ArmStats]], comparison: Comparison) -> str:
    from hardbatch.report.claims import check_claims, claims_markdown

    judged = ("the best δ < 1 chosen on the validation split (on test where no split exists, marked), against the "
              "paper's rule at δ = 1 (its baseline)") if comparison.is_paper else (
              f"the best `{comparison.method}` setting chosen on the validation split (on test where no split exists, "
              f"marked), against {comparison.reference_label} (the reference given to the report)")
    parts = ["## Claims of the paper, checked", "",
             f"Each claim is judged at {judged} with the same seeds. held = in every group run; partly held = in "
             "some; not run = no runs for it; no baseline = no group ran the reference; undecided = no group had a "
             "95% interval to judge by (fewer than 3 seed pairs, or zero spread).", ""]
    for protocol, members in by_protocol(groups).items():
        results, missing = group_results(members, stats, comparison)
        parts += [f"### Protocol: {protocol or 'custom (no preset)'}", ""]
        if missing:
            what = "the paper's rule, `hardbatch`, at δ = 1" if comparison.is_paper else comparison.reference_label
            parts += [f"The baseline ({what}) is missing in {', '.join(missing)}: those groups are not judged.", ""]
        parts += [claims_markdown(check_claims(results, missing, comparison)), ""]
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
- **Detectable Δ ({100 * POWER:.0f}% power)**: the smallest true difference the comparison could have detected, the
  minimum detectable effect (t₀.₉₇₅ + t₀.₈₀) × SE, both Student-t quantiles with n − 1 degrees of freedom over the n
  seed pairs and SE = half-width / t₀.₉₇₅ their standard error: a true difference this large has its 95%
  interval exclude 0 with about {100 * POWER:.0f}% probability. An interval that contains 0 rules out differences of
  about this size or more, not smaller ones.
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
  training seconds (evaluation excluded; choosing included), the process's CPU seconds over the same span (all its
  threads; other jobs on the machine do not inflate them) and seconds spent choosing, means over seeds.
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
                 target: float | None = None, damaged: list[tuple[Path, str]] | None = None,
                 comparison: Comparison = PAPER, per_arm: tuple[str, ...] = ()) -> tuple[Path, str]:
    """Write report.md, summary.csv (one row per arm), runs.csv and PNG plots for all runs under ``root``.

    ``comparison`` names the method judged and its reference (default: the paper's rule against δ = 1);
    ``per_arm``: settings chosen per arm, which do not split groups (``group_runs``). Damaged runs are left out and listed at the end of report.md; pass a list as ``damaged`` to receive
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
    groups = group_runs(runs, comparison.method, tuple(per_arm))
    stats = {g.title: arm_stats(g, target, comparison) for g in groups}
    all_stats = [s for g in groups for s in stats[g.title]]
    tables = [f"{g.title}\n{markdown_table(stats[g.title], comparison)}"
              + (f"\n{note}" if (note := machine_note(g)) else "") for g in groups]
    sections = []
    for protocol, members in by_protocol(groups).items():
        if len(members) > 1:
            sections.append(_overview_section(members, stats, protocol, comparison))
    for group in groups:
        sections.append(_group_section(group, stats[group.title], out_dir if plots else None, target, comparison))
    sections.append(_claims_section(groups, stats, comparison))
    if skipped:
        sections.append("\n".join(["## Damaged runs, left out", "",
                                    f"{len(skipped)} finished run(s) could not be read and are not in any table:", ""]
                                   + [f"- `{path}`: {reason}" for path, reason in skipped]) + "\n")
    judged = "" if comparison.is_paper else f"; method `{comparison.method}` against {comparison.reference_label}"
    header = (f"# hardbatch report\n\n{len(runs)} finished runs under `{root}`, {len(groups)} group(s)"
              + (f", {len(skipped)} damaged run(s) left out (listed at the end)" if skipped else "")
              + f"{judged}; built {dt.datetime.now().isoformat(timespec='seconds')} by hardbatch {__version__}.\n")
    report = "\n".join([header, *sections, DEFINITIONS])
    rows = [s.row() for s in all_stats]
    atomic_write_text(out_dir / "summary.csv", csv_text(rows, list(rows[0])))
    run_fields = ["path", "dataset", "model", "policy", "delta", "seed", "final_test_acc", "final_test_bacc", "best_test_acc",
                  "epochs_to_plateau", "optimizer_steps", "train_seconds"]
    run_rows = [{"path": str(r.path.relative_to(root)) if r.path != root else ".", **flat_settings(r.config), **r.summary} for r in runs]
    atomic_write_text(out_dir / "runs.csv", csv_text(run_rows, run_fields))
    path = out_dir / "report.md"
    atomic_write_text(path, report)
    return path, "\n\n".join(tables)
