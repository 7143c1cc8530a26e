"""Regenerate docs/evidence.md: every policy on MNIST-1D and Fashion-MNIST under one protocol, with the power of every
verdict stated.

Usage: python scripts/evidence.py [--out runs/evidence] [--doc docs/evidence.md] [--readme README.md] [--shard I/N]
                                  [--quick] [--plan-only] [--data-dir DIR]

The protocol, for each benchmark (``BENCHMARKS``): each arm's learning rate is chosen from the benchmark's grid on the
validation split (mean final validation top-1 over its first ``tune_seeds`` seeds; the same grid, seeds and budget for
every arm), recorded in ``OUT/BENCH/lr_choice.json``; then every arm runs all ``seeds`` at its chosen rate (the tuning
runs at that rate are reused, not trained again) into ``OUT/BENCH/main``, which ``hardbatch report OUT/BENCH/main
--per-arm lr`` reads as the page does. Every run goes through hardbatch's own plan/execute machinery in this process:
finished runs are skipped and interrupted ones resumed, so rerunning the same command continues where it stopped.

``--shard I/N`` trains every N-th run of each phase; a shard that is done with its share trains what the others have
not started (runs another process is training are locked and skipped), waits for those to finish, and moves on, so
any number of shards, started in any order, finish the whole. The page is written by the process that finds every
run finished. Before training, the plan's estimated CPU minutes are printed (``--plan-only``: only that); each
process adds its CPU time to ``OUT/cpu-seconds-*.json``, and the page states the total.

Sizing (one thread, CPU seconds per run; ``run_cpu_s`` and ``POLICY_COST`` are the plan's estimate only). Measured on
the first development VM: MNIST-1D cnn1d, 3,600 training signals, batch 100, 10 epochs: 3.0 for `uniform` (hardbatch
2.9 to 3.2, selective-backprop 3.7, infobatch 2.6, composer-sb 3.1, seta 2.4, ies 3.1, rho-loss 8.9), so about 6.5 at
the 20 epochs used; Fashion-MNIST LeNet-5, batch 64: about 6.5 per epoch on 20,000 training images for `uniform` and
the peers (infobatch, composer-sb, seta, ies within 15%), 3.3x that for rho-loss. The benchmarks use 10,000 (with
20,000 the whole did not fit one 3-hour working session beside MNIST-1D), and the plan comes to about 310 CPU minutes
by those figures (``--plan-only``). The VM of the regeneration on the page (AMD EPYC, AVX512) trained the same runs
about 2.5x faster (training CPU of `uniform`: 2.6 s on MNIST-1D at 20 epochs, 12 s on Fashion-MNIST): the page states
what the regeneration actually took. ``make evidence`` runs ``--shard 0/2`` and ``--shard 1/2`` in two one-thread
processes, one training at a time in each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import hardbatch  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hardbatch.config import DELTA_POLICIES, RunConfig
from hardbatch.errors import UsageError
from hardbatch.run.plan import check_plan, execute, parse_shard, plan_compare, PlannedRun, shard
from hardbatch.report.build import (
    REFERENCE_POLICY, ArmStats, Comparison, arm_label, arm_stats, build_report, group_runs, load_runs, machines,
)
from hardbatch.fileio import LOCK, atomic_write_json, atomic_write_text, read_json
from hardbatch.metrics import POWER, has_interval, Interval, paired_difference, seeds_for_half_width
from hardbatch.records import CONFIG, RunDir

MARKERS = ("<!-- evidence:begin -->", "<!-- evidence:end -->")
COMMAND = "make evidence"
DOC_DIR_NAME = Path("evidence")  # the reports and plots, beside the page: docs/evidence/BENCH/
PER_ARM = ("lr",)  # the one setting chosen per arm; report --per-arm lr groups such runs as the page does
RULE_DELTA = 0.5  # the rule's δ, and its controls' (the demo's; δ is not tuned: every arm gets the same lr grid only)
COLLAPSE_POINTS = 10  # a seed "collapsed" when its final test top-1 is this many points below its arm's median
WAIT_SECONDS = 30  # between looks at runs another process is training
FAILED = "evidence-failed.txt"  # in a run folder whose training failed (diverged at a too-high lr): not retried
# CPU time of one run of each policy relative to `uniform`, measured here on both benchmarks (benchmarks/README.md,
# "bench_runs.py"); the plan's estimate only.
POLICY_COST = {"rho-loss": 3.2, "selective-backprop": 1.15, "infobatch": 0.85, "seta": 0.8}


@dataclass(frozen=True)
class Arm:
    """One arm of a benchmark: a policy at its defaults (the paper's rule and its controls at ``delta``)."""

    policy: str
    delta: float = 1.0

    @property
    def label(self) -> str:
        return arm_label(self.policy, self.delta if self.policy in DELTA_POLICIES else None)


ALL_ARMS = (Arm("hardbatch", RULE_DELTA), Arm("hardbatch", 1.0), Arm("random", RULE_DELTA), Arm("cyclic", RULE_DELTA),
            Arm("uniform"), Arm("selective-backprop"), Arm("infobatch"), Arm("composer-sb"), Arm("seta"), Arm("ies"),
            Arm("rho-loss"))
RULE_ARMS = (Arm("hardbatch", RULE_DELTA), Arm("hardbatch", 1.0))


@dataclass(frozen=True)
class Benchmark:
    """One data set x network x schedule: its settings, arms, learning-rate grid and seeds.

    ``run_cpu_s``: CPU seconds of one `uniform` run, measured here with one thread (the plan's estimate);
    ``target``: the half-width the rule's comparisons should reach (points), or None.
    """

    name: str
    title: str
    settings: dict
    arms: tuple[Arm, ...]
    lrs: tuple[float, ...]
    seeds: int
    tune_seeds: int
    run_cpu_s: float
    target: float | None = None

    def base(self) -> RunConfig:
        return RunConfig(**self.settings)


# 20 epochs (720 steps): at 10 a pilot's paired differences to `uniform` spread 2.6 points (seed sd, lr 0.1), at 20
# 1.4, so 50 seeds reach the 0.5-point half-width where 10 epochs would need over 100. 64 seeds: at 50 the rule's
# differences to δ = 1 and `uniform` came out ±0.53 and ±0.55 with no collapsed seed (the page's own estimate: 57 and
# 61 seeds at that spread), so the regeneration of 2026-12-02 added seeds 50-63 to every MNIST-1D arm.
MNIST1D = dict(dataset="mnist1d", model="cnn1d", batch_size=100, epochs=20, momentum=0.9, val_fraction=0.1, device="cpu")
FASHION = dict(dataset="fashion-mnist", model="lenet", batch_size=64, epochs=10, momentum=0.9, val_fraction=0.05,
               train_subset=10_000, device="cpu")

BENCHMARKS = (
    Benchmark("mnist1d", "MNIST-1D, cnn1d, cosine schedule", {**MNIST1D, "schedule": "cosine"}, ALL_ARMS,
              (0.05, 0.1, 0.2, 0.4), seeds=64, tune_seeds=3, run_cpu_s=6.5, target=0.5),
    Benchmark("mnist1d-constant", "MNIST-1D, cnn1d, constant rate (the paper's setting)",
              {**MNIST1D, "schedule": "constant"}, RULE_ARMS, (0.05, 0.1, 0.2, 0.4), seeds=64, tune_seeds=3,
              run_cpu_s=6.5, target=0.5),
    Benchmark("fashion-clean", "Fashion-MNIST, LeNet-5, clean labels, cosine schedule",
              {**FASHION, "schedule": "cosine"}, ALL_ARMS, (0.02, 0.05, 0.1), seeds=10, tune_seeds=2, run_cpu_s=33.0),
    Benchmark("fashion-noise20", "Fashion-MNIST, LeNet-5, 20% label noise, cosine schedule",
              {**FASHION, "schedule": "cosine", "label_noise": 0.2}, ALL_ARMS, (0.02, 0.05, 0.1), seeds=10,
              tune_seeds=2, run_cpu_s=33.0),
    Benchmark("fashion-clean-constant", "Fashion-MNIST, LeNet-5, clean labels, constant rate (the paper's setting)",
              {**FASHION, "schedule": "constant"}, RULE_ARMS, (0.02, 0.05, 0.1), seeds=10, tune_seeds=2,
              run_cpu_s=33.0),
)
QUICK = (  # --quick: the same protocol on digits in seconds, for the test
    Benchmark("digits", "digits, mlp, cosine schedule (quick)",
              dict(dataset="digits", model="mlp", batch_size=64, epochs=2, val_fraction=0.2, schedule="cosine",
                   device="cpu"),
              (Arm("hardbatch", RULE_DELTA), Arm("hardbatch", 1.0), Arm("random", RULE_DELTA), Arm("uniform"),
               Arm("infobatch")), (0.03, 0.1, 0.3), seeds=3, tune_seeds=2, run_cpu_s=0.2, target=0.5),
    Benchmark("digits-constant", "digits, mlp, constant rate (quick)",
              dict(dataset="digits", model="mlp", batch_size=64, epochs=2, val_fraction=0.2, schedule="constant",
                   device="cpu"), RULE_ARMS, (0.03, 0.1, 0.3), seeds=3, tune_seeds=2, run_cpu_s=0.2),
)


# ---- the plan ------------------------------------------------------------------------------------------------


def _runs(bench: Benchmark, arm: Arm, lr: float, seeds: range, out: Path) -> list[PlannedRun]:
    cfg = bench.base().replace(lr=lr)
    return plan_compare(cfg, [arm.delta], list(seeds), out, policies=[arm.policy])


def tune_plan(bench: Benchmark, root: Path) -> list[PlannedRun]:
    """Every arm at every learning rate of the grid, on the first ``tune_seeds`` seeds, in ``root/BENCH/tune/lr-LR``."""
    return [run for arm in bench.arms for lr in bench.lrs
            for run in _runs(bench, arm, lr, range(bench.tune_seeds), root / bench.name / "tune" / f"lr-{lr:g}")]


def main_plan(bench: Benchmark, root: Path, chosen: dict[str, float]) -> list[PlannedRun]:
    """Every arm at its chosen learning rate on all seeds, in ``root/BENCH/main``."""
    return [run for arm in bench.arms for run in _runs(bench, arm, chosen[arm.label], range(bench.seeds),
                                                       root / bench.name / "main")]


def finished(run: PlannedRun) -> bool:
    return RunDir(run.path).finished


def failed(run: PlannedRun) -> str | None:
    """Why ``run`` failed (it diverged at its learning rate, say), as recorded; None if it did not."""
    marker = run.path / FAILED
    return marker.read_text().strip() if marker.exists() else None


def estimated_cpu_minutes(bench: Benchmark, runs: list[PlannedRun]) -> float:
    """CPU minutes the runs still to train would take with one thread, from the benchmark's measured run cost."""
    return sum(bench.run_cpu_s * POLICY_COST.get(run.cfg.policy, 1.0) for run in runs) / 60


def full_plan_size(bench: Benchmark) -> tuple[int, float]:
    """(runs, estimated CPU minutes) of the whole benchmark, tuning and main runs, reused tuning runs counted once."""
    tuning = len(bench.arms) * len(bench.lrs) * bench.tune_seeds
    main = len(bench.arms) * (bench.seeds - bench.tune_seeds)
    per_arm = [POLICY_COST.get(arm.policy, 1.0) for arm in bench.arms]
    minutes = bench.run_cpu_s * sum(per_arm) * (len(bench.lrs) * bench.tune_seeds + bench.seeds - bench.tune_seeds) / 60
    return tuning + main, minutes


# ---- training ----------------------------------------------------------------------------------------------


def unsettled(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs neither finished nor failed."""
    return [r for r in runs if not finished(r) and failed(r) is None]


def _execute(runs: list[PlannedRun], data) -> None:
    """Train ``runs`` (skipping those another process is training); a run that fails is marked FAILED, not retried."""
    for run, reason in execute(unsettled(runs), progress=True, keep_going=True, data=data):
        if reason.startswith("failed"):
            atomic_write_text(run.path / FAILED, reason + "\n")


def train(plan: list[PlannedRun], index: int, count: int, data) -> None:
    """This shard's runs of ``plan``, then what is left of the others' (last first), then wait for the runs other
    processes are training (and train any whose process died).

    The shares are cut from the whole plan, not from what is left of it: shards that reach the plan at different
    moments (one still waiting for tuning runs, the other already training) then still hold disjoint runs."""
    _execute(shard(plan, index, count), data)
    _execute(plan[::-1], data)
    while busy := unsettled(plan):
        print(f"waiting for {len(busy)} run(s) another process is training, e.g. {busy[0].path}", file=sys.stderr)
        time.sleep(WAIT_SECONDS)
        _execute(busy, data)


def choose_lrs(bench: Benchmark, root: Path, plan: list[PlannedRun]) -> dict:
    """Each arm's learning rate: the highest mean final validation top-1 over the tuning seeds (a failed run counts
    as 0; ties go to the lower rate); written to ``root/BENCH/lr_choice.json`` and returned."""
    choice = {"rule": "highest mean final validation top-1 over the tuning seeds; a failed run counts as 0",
              "seeds": list(range(bench.tune_seeds)), "grid": list(bench.lrs), "arms": {}}
    for arm in bench.arms:
        runs = [r for r in plan if r.cfg.policy == arm.policy and r.cfg.delta == arm.delta]
        scores = {}
        for lr in bench.lrs:
            accs = [RunDir(r.path).summary()["final_val_acc"] if finished(r) else 0.0 for r in runs if r.cfg.lr == lr]
            scores[lr] = sum(accs) / len(accs)
        best = max(bench.lrs, key=lambda lr: (scores[lr], -lr))
        choice["arms"][arm.label] = {"policy": arm.policy, "delta": arm.delta, "lr": best,
                                     "val_acc": {f"{lr:g}": scores[lr] for lr in bench.lrs},
                                     "failed": [f"lr {r.cfg.lr:g} seed {r.cfg.seed}: {failed(r)}" for r in runs if failed(r)]}
    atomic_write_json(root / bench.name / "lr_choice.json", choice)
    return choice


def reuse_tuning_runs(tuning: list[PlannedRun], main: list[PlannedRun]) -> None:
    """Copy each finished tuning run that the main plan would train again (same settings, same seed) into its folder."""
    done = {(json.dumps(r.cfg.to_dict(), sort_keys=True)): r.path for r in tuning if finished(r)}
    for run in main:
        source = done.get(json.dumps(run.cfg.to_dict(), sort_keys=True))
        if source is None or RunDir(run.path).started:
            continue
        partial = run.path.with_name(f".{run.path.name}.copying")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(LOCK))
        partial.rename(run.path)


def add_cpu_seconds(root: Path, label: str, seconds: float) -> None:
    """Add this process's CPU time to its own ledger file (one per shard, so shards never write the same file)."""
    path = root / f"cpu-seconds-{label}.json"
    before = read_json(path).get("seconds", 0.0) if path.exists() else 0.0
    atomic_write_json(path, {"seconds": before + seconds})


def cpu_minutes_spent(root: Path) -> float:
    """What the processes of the regeneration spent, from their ledgers (each writes its own when it stops)."""
    return sum(read_json(p).get("seconds", 0.0) for p in root.glob("cpu-seconds-*.json")) / 60


def training_cpu_minutes(bench: Benchmark, root: Path) -> float:
    """The training CPU time (each run's ``cost.cpu_seconds``) of the benchmark's runs, every tuning run and the main
    runs beyond the tuning seeds (those below are copies of tuning runs); evaluation and process overhead excluded."""
    tuning = list((root / bench.name / "tune").rglob("summary.json"))
    main = [p for p in (root / bench.name / "main").rglob("summary.json")
            if read_json(p.parent / "config.json")["config"]["seed"] >= bench.tune_seeds]
    return sum(read_json(p)["cost"].get("cpu_seconds", 0.0) for p in [*tuning, *main]) / 60


# ---- the page ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One benchmark's finished runs, summarised as ``hardbatch report --per-arm lr`` does, against each reference."""

    bench: Benchmark
    choice: dict
    stats: dict[str, list[ArmStats]]  # reference ("hardbatch@1", "uniform", "random@0.5") -> per-arm stats
    runs: list = field(default_factory=list)
    slug: str = ""

    def arm(self, reference: str, label: str) -> ArmStats | None:
        return next((s for s in self.stats.get(reference, []) if s.arm == label), None)


REFERENCES = {"hardbatch@1": "δ = 1", "uniform": "uniform", f"random@{RULE_DELTA:g}": f"random δ = {RULE_DELTA:g}"}


def summarise(bench: Benchmark, root: Path, doc_dir: Path) -> Result:
    """The benchmark's statistics, and its full report with plots written to ``doc_dir/BENCH``."""
    main = root / bench.name / "main"
    build_report(main, doc_dir / bench.name, per_arm=PER_ARM)
    runs, damaged = load_runs(main)
    if damaged:
        raise SystemExit(f"{main}: damaged runs: {damaged[0][1]}")
    (group,) = group_runs(runs, REFERENCE_POLICY, PER_ARM)
    stats = {}
    for ref in REFERENCES:
        if group.reference_for(Comparison(REFERENCE_POLICY, ref)) is not None:
            stats[ref] = arm_stats(group, comparison=Comparison(REFERENCE_POLICY, ref))
    choice = read_json(root / bench.name / "lr_choice.json")
    return Result(bench, choice, stats, runs, group.slug)


def _finals(result: Result, label: str) -> dict[int, float]:
    """Final test top-1 (points) of arm ``label``'s runs, by seed."""
    return {run.config.seed: 100 * run.summary["final_test_acc"] for run in result.runs
            if Arm(run.config.policy, run.config.delta).label == label}


def _collapsed_seeds(finals: dict[int, float]) -> set[int]:
    accs = sorted(finals.values())
    if not accs:
        return set()
    median = (accs[(len(accs) - 1) // 2] + accs[len(accs) // 2]) / 2
    return {seed for seed, acc in finals.items() if acc <= median - COLLAPSE_POINTS}


def collapsed(result: Result, label: str) -> tuple[int, int]:
    """(seeds of arm ``label`` whose final test top-1 is COLLAPSE_POINTS or more below the arm's median, seeds): the
    few diverged or stalled runs that widen an interval far beyond what the other seeds' spread would."""
    finals = _finals(result, label)
    return len(_collapsed_seeds(finals)), len(finals)


def without_collapsed(result: Result, arm: str, reference: str) -> Interval | None:
    """The paired difference arm − reference (points) over the seeds where neither collapsed; None if none did."""
    a, r = _finals(result, arm), _finals(result, reference)
    dropped = _collapsed_seeds(a) | _collapsed_seeds(r)
    if not dropped:
        return None
    seeds = sorted(set(a) & set(r) - dropped)
    return paired_difference([a[s] for s in seeds], [r[s] for s in seeds])


def pts(value: float, signed: bool = True) -> str:
    return "—" if value is None or math.isnan(value) else (f"{value:+.2f}" if signed else f"{value:.2f}")


def interval_text(s: ArmStats) -> str:
    if not has_interval(s.diff_low, s.diff_high):
        return f"{pts(s.diff_points)} (no interval)"
    return f"{pts(s.diff_points)} ±{(s.diff_high - s.diff_low) / 2:.2f} [{pts(s.diff_low)}, {pts(s.diff_high)}]"


def verdict(s: ArmStats) -> str:
    """higher / lower when the interval excludes 0; otherwise no measurable difference; without an interval,
    identical when every seed pair differs by exactly 0 (an arm that trained what its reference trained: cyclic at
    δ = 1/2 is δ = 1's order, a peer that never pruned is uniform), else undecided."""
    if not has_interval(s.diff_low, s.diff_high):
        if s.diff_pairs >= 2 and s.diff_points == 0:
            return "identical in every seed (the same training)"
        return "undecided (no interval)"
    if s.diff_low > 0:
        return "**higher**"
    if s.diff_high < 0:
        return "**lower**"
    return f"no measurable difference (detectable: ±{s.diff_detectable:.2f})"


def target_text(s: ArmStats, target: float | None, clean: Interval | None = None) -> str:
    """Whether the half-width reached ``target`` (points); if not, by how much and how many seeds would reach it, at
    the observed spread and (``clean``: the difference over the seeds where neither arm collapsed) at that spread."""
    if target is None:
        return "—"
    if not has_interval(s.diff_low, s.diff_high):
        return "no interval"
    half = (s.diff_high - s.diff_low) / 2
    if half <= target:
        return f"met (≤ {target:g})"
    need = seeds_for_half_width(half, s.diff_pairs, target)
    text = f"missed by {half - target:.2f}; about {need} seeds would reach it" if need else f"missed by {half - target:.2f}"
    if clean is not None and has_interval(clean.low, clean.high):
        n, clean_half = clean.n, (clean.high - clean.low) / 2
        clean_need = seeds_for_half_width(clean_half, n, target)
        text += (f" (without the collapsed seeds: ±{clean_half:.2f} over {n}, "
                 + ("met" if clean_half <= target else f"about {clean_need} seeds") + ")")
    return text


def comparisons(result: Result) -> list[tuple[str, str, ArmStats]]:
    """(arm, reference) pairs the verdict table shows: the rule against δ = 1, uniform and random; every other arm
    against uniform."""
    rule = arm_label(REFERENCE_POLICY, RULE_DELTA)
    rows = [(rule, ref, result.arm(ref, rule)) for ref in REFERENCES]
    rows += [(s.arm, "uniform", s) for s in result.stats.get("uniform", []) if s.arm != rule and s.policy != "uniform"]
    return [(a, REFERENCES[ref] if ref in REFERENCES else ref, s) for a, ref, s in rows if s is not None]


def verdict_table(results: list[Result]) -> str:
    lines = ["| benchmark | arm | against | n | Δ final top-1, points ±half-width [95% CI] | detectable Δ "
             f"({100 * POWER:.0f}% power) | half-width target | collapsed seeds (arm, against) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for arm, ref, s in comparisons(r):
            target = r.bench.target if arm == arm_label(REFERENCE_POLICY, RULE_DELTA) else None
            lines.append(f"| {r.bench.name} | {arm} | {ref} | {s.diff_pairs} | {interval_text(s)} | "
                         f"{pts(s.diff_detectable, False)} | "
                         f"{target_text(s, target, target and without_collapsed(r, arm, ref))} | "
                         f"{collapsed(r, arm)[0]}, {collapsed(r, ref)[0]} | {verdict(s)} |")
    return "\n".join(lines)


def lr_table(result: Result) -> str:
    grid = result.choice["grid"]
    lines = ["| arm | " + " | ".join(f"val top-1 % at lr {lr:g}" for lr in grid) + " | chosen lr |",
             "|---|" + "---|" * (len(grid) + 1)]
    for label, arm in result.choice["arms"].items():
        cells = [f"{100 * arm['val_acc'][f'{lr:g}']:.2f}" for lr in grid]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | **{arm['lr']:g}** |")
    return "\n".join(lines)


def cost_table(result: Result) -> str:
    stats = result.stats.get("uniform") or next(iter(result.stats.values()))
    first = stats[0]
    lines = ["| arm | lr | final top-1 % | steps | samples back-propagated | CPU s | "
             f"top-1 % at {first.budget_samples_backprop:,.0f} samples back-propagated | "
             f"top-1 % at {first.budget_cpu_seconds:.1f} CPU s |", "|---|---|---|---|---|---|---|---|"]
    lrs = {label: arm["lr"] for label, arm in result.choice["arms"].items()}
    for s in stats:
        lines.append(f"| {s.arm} | {lrs.get(s.arm, float('nan')):g} | {100 * s.final_acc_mean:.2f} | "
                     f"{s.optimizer_steps_mean:,.0f} | {s.samples_backpropagated_mean:,.0f} | {s.cpu_seconds_mean:.1f} | "
                     f"{100 * s.acc_at_equal_samples_backprop:.2f} | {100 * s.acc_at_equal_cpu_seconds:.2f} |")
    return "\n".join(lines)


def irreducible_text(result: Result) -> str:
    """What `rho-loss`'s irreducible-loss models reached on the training split they never saw (summary.json's
    ``irreducible_model``), the first number to read when rho-loss trails `uniform`; "" without rho-loss runs."""
    rho = [run for run in result.runs if run.config.policy == "rho-loss"]
    quality = [run.summary["irreducible_model"] for run in rho if "irreducible_model" in run.summary]
    if not quality:
        return ""
    top1 = [100 * q["train_top1"] for q in quality]
    sizes = "/".join(f"{n:,}" for n in sorted({q["holdout_samples"] for q in quality}))
    uniform = [100 * run.summary["final_test_acc"] for run in result.runs if run.config.policy == "uniform"]
    against = f"; `uniform`'s final test top-1 is {statistics.fmean(uniform):.1f}%" if uniform else ""
    return (f"`rho-loss`'s irreducible-loss model, trained before each run on the {sizes} validation samples: "
            f"top-1 {statistics.fmean(top1):.1f}% (from {min(top1):.1f} to {max(top1):.1f}) on the training split "
            f"it never saw, over {len(quality)} of {len(rho)} rho-loss runs{against}. Its irreducible "
            "losses are only as good as that model: a sample it gets wrong has a high irreducible loss, so rho-loss "
            "puts it last, whether its label is noisy or the IL model has not learnt its kind.")


def section(result: Result, doc_dir: Path) -> str:
    b, rel = result.bench, f"{doc_dir.name}/{result.bench.name}"
    settings = ", ".join(f"{k} {v}" for k, v in b.settings.items() if k != "device")
    parts = [f"## {b.title}", "", f"{len(result.runs)} runs ({b.seeds} seeds per arm; {settings}). Full report: "
             f"[`{rel}/report.md`]({rel}/report.md).", "", "Learning rate chosen per arm on the validation split "
             f"(mean final validation top-1 over seeds {', '.join(map(str, result.choice['seeds']))}):", "",
             lr_table(result), ""]
    if "uniform" in result.stats:
        parts += ["Cost, and accuracy at equal cost (each run's last evaluation within the budget, the smallest total "
                  "any run of the benchmark spent):", "", cost_table(result), "",
                  f"![paired difference to uniform]({rel}/{result.slug}_forest.png)", ""]
    if il := irreducible_text(result):
        parts += [il, ""]
    parts += [f"![accuracy against back-propagated samples]({rel}/{result.slug}_accuracy_vs_samples.png)", ""]
    return "\n".join(parts)


PROTOCOL = f"""## Protocol

- **Arms**: the paper's rule (`hardbatch`) at δ = {RULE_DELTA:g} and δ = 1, its controls `random` and `cyclic` at
  δ = {RULE_DELTA:g} (same steps, no loss signal), ordinary reshuffled SGD (`uniform`), and every peer at its
  defaults: `selective-backprop`, `infobatch`, `composer-sb`, `seta`, `ies`, `rho-loss` (docs/policies/). The
  constant-rate benchmarks (the paper's own setting) run the rule against δ = 1 only.
- **Budget**: the same number of epochs for every arm: E·N optimizer steps for the rule, its controls and the peers
  whose epoch is N steps; the peers that prune (`infobatch`, `seta`, `ies`) or skip samples (`selective-backprop`,
  `composer-sb`, `rho-loss`) train less within it, which the cost table shows, with each arm's accuracy at the
  samples back-propagated and the process CPU seconds that the cheapest run spent. That view reads a longer run at
  an earlier evaluation, before its schedule has decayed, so it favours the arms that train less.
- **Learning rate**: chosen per arm from the same grid on the validation split (`--val-fraction`; the test split
  never decides anything), on the first seeds, then every seed runs at it; `lr_choice.json` beside the runs and the
  tables below record the choice. δ and the peers' own settings are not tuned.
- **Seeds**: paired: seed s of every arm shares its data order, partition, initial weights and (with label noise)
  its relabelled samples.
- **Half-width**: each difference carries the half-width of its two-sided 95% Student-t interval over the seed pairs
  (±). **Detectable Δ** is the smallest true difference the comparison could have detected: the minimum
  detectable effect at {100 * POWER:.0f}% power, (t₀.₉₇₅ + t₀.₈₀) × SE with n − 1 degrees of freedom and
  SE = half-width / t₀.₉₇₅ (`hardbatch.metrics.detectable_difference`; `hardbatch report` shows it too). "No
  measurable difference" therefore rules out differences of about that size or more, not smaller ones.
- **Target**: half-width ≤ 0.5 points on MNIST-1D for the rule against δ = 1, `uniform` and `random`; where it is
  missed, the table says by how much and how many seeds would reach it at the observed spread.
"""


def page(results: list[Result], minutes: float, quick: bool, missing: list[str] = (), training: float = 0.0) -> str:
    """The page; ``missing`` names the benchmarks this regeneration did not cover (``--benchmarks``), ``training``
    the training CPU minutes of the runs on it."""
    runs = [run for r in results for run in r.runs]
    tuning = sum(len(r.bench.arms) * len(r.bench.lrs) * r.bench.tune_seeds for r in results)
    head = ("# Evidence (quick check: not the page)" if quick else
            "# Evidence: does training on hard batches help? Every policy, one protocol, the power stated")
    command = COMMAND if not missing else \
        f"python scripts/evidence.py --benchmarks {' '.join(r.bench.name for r in results)}"
    return "\n".join([
        head, "",
        f"Regenerated by `{command}` ({dt.date.today().isoformat()}): {len(runs)} runs on the page, {tuning} tuning "
        f"runs to choose learning rates (those at the chosen rate reused), **{minutes:.{0 if minutes >= 10 else 1}f} CPU minutes** in all "
        f"(one thread per process, `scripts/evidence.py`; the runs' own training CPU time, evaluation excluded: "
        f"{training:.{0 if training >= 10 else 1}f} minutes). Every number below is computed from the saved runs.", "",
        *([f"**Partial**: this page covers {', '.join(r.bench.name for r in results)} only; still to run: "
           f"{', '.join(missing)} (`{COMMAND}` trains them and rewrites the page). The CPU minutes above are those "
           "the regeneration's processes have recorded so far: each records its own when it stops, so processes "
           "still running count 0 there; the runs' training CPU time is complete for the benchmarks on this page.",
           ""] if missing else []),
        "## Verdicts", "", verdict_table(results), "",
        "Δ is the seed-paired difference of final test top-1 (points). An arm is **higher** or **lower** when the "
        "95% interval excludes 0. **Collapsed seeds**: seeds whose final test top-1 is "
        f"{COLLAPSE_POINTS} points or more below their arm's median (a run that diverged or stalled at the arm's "
        "learning rate); one such seed widens an interval far beyond what the others' spread would, and the seeds "
        "the target column asks for are those the observed spread, collapses included, needs.", "",
        PROTOCOL,
        *[section(r, DOC_DIR_NAME) for r in results],
        "## Reproduce", "",
        f"`{COMMAND}` (or `python scripts/evidence.py`, with `--shard 0/2` and `--shard 1/2` in two processes) trains "
        "every run into `runs/evidence/` and rewrites this page, its reports under `docs/evidence/` and the README's "
        "block. Rerunning skips finished runs and resumes interrupted ones.", "",
        "Machine: " + "; ".join(machines(runs)) + ". Packages: " + "; ".join(packages(runs)) + ". The same "
        "commit, packages (`constraints.txt` pins them) and CPU kernels give the same digits; another CPU can round "
        "differently, which a run near its learning rate's edge of stability amplifies.", "",
    ])


def packages(runs: list) -> list[str]:
    """The package versions ``runs`` recorded in config.json ("torch 2.14.1, numpy 2.4.6, ... (k runs)"), most
    common first; "not recorded" for what older runs lack."""
    counts: dict[str, int] = {}
    for run in runs:
        versions = read_json(run.path / CONFIG).get("versions") or {}
        key = ", ".join(f"{name} {versions.get(name) or 'not recorded'}"
                        for name in ("torch", "torchvision", "numpy", "scipy", "mnist1d"))
        counts[key] = counts.get(key, 0) + 1
    return [f"{key} ({n} runs)" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])]


def write_readme(readme: Path, results: list[Result], doc: Path) -> None:
    text = readme.read_text()
    if MARKERS[0] not in text or MARKERS[1] not in text:
        raise SystemExit(f"{readme}: no {MARKERS[0]} ... {MARKERS[1]} markers to put the verdicts between")
    head, rest = text.split(MARKERS[0], 1)
    tail = rest.split(MARKERS[1], 1)[1]
    block = f"{verdict_table(results)}\n\nMethod, power and plots: [`{doc.as_posix()}`]({doc.as_posix()})."
    atomic_write_text(readme, f"{head}{MARKERS[0]}\n{block}\n{MARKERS[1]}{tail}")


# ---- main --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/evidence"), help="where the runs go (runs/evidence)")
    parser.add_argument("--doc", type=Path, default=Path("docs/evidence.md"), help="the page (docs/evidence.md)")
    parser.add_argument("--readme", type=Path, help=f"a README whose block between {MARKERS[0]} and {MARKERS[1]} "
                                                    "gets the verdicts")
    parser.add_argument("--shard", default="0/1", help="I/N: train every N-th run first (default 0/1)")
    parser.add_argument("--quick", action="store_true", help="a tiny version on digits (seconds), for tests")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and its estimated CPU minutes")
    parser.add_argument("--data-dir", help="--data-dir for every run (the data sets' files and MNIST-1D's cache)")
    parser.add_argument("--benchmarks", nargs="+", metavar="NAME",
                        help="train and report only these benchmarks (default: all: "
                             f"{', '.join(b.name for b in BENCHMARKS)}); the page then says which are still to run")
    return parser.parse_args(argv)


def _stopped(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.process_time()
    signal.signal(signal.SIGTERM, _stopped)  # `kill` stops it as Ctrl-C does: its CPU time still reaches the ledger
    try:
        index, count = parse_shard(args.shard)
    except UsageError as e:
        print(f"evidence: error: {e}", file=sys.stderr)
        return 2
    benches = QUICK if args.quick else BENCHMARKS
    if args.benchmarks:
        unknown = [name for name in args.benchmarks if name not in {b.name for b in benches}]
        if unknown:
            print(f"evidence: error: unknown benchmark {unknown[0]!r}; choose from "
                  f"{', '.join(b.name for b in benches)}", file=sys.stderr)
            return 2
        missing = [b.name for b in benches if b.name not in args.benchmarks]
        benches = [b for b in benches if b.name in args.benchmarks]
    else:
        missing = []
    if args.data_dir:
        benches = [Benchmark(**{**b.__dict__, "settings": {**b.settings, "data_dir": args.data_dir}}) for b in benches]
    total_runs = sum(full_plan_size(b)[0] for b in benches)
    print(f"plan: {total_runs} runs in {len(benches)} benchmarks, about "
          f"{sum(full_plan_size(b)[1] for b in benches):.0f} CPU minutes in all with one thread "
          f"(2 shards in parallel: about {sum(full_plan_size(b)[1] for b in benches) / 120:.1f} h)", flush=True)
    for b in benches:
        runs, minutes = full_plan_size(b)
        print(f"  {b.name}: {len(b.arms)} arms x {len(b.lrs)} lr x {b.tune_seeds} seeds to tune, then {b.seeds} seeds "
              f"per arm: {runs} runs, about {minutes:.0f} CPU minutes", flush=True)
    if args.plan_only:
        return 0
    try:
        for b in benches:
            tuning = tune_plan(b, args.out)
            left = [r for r in tuning if not finished(r)]
            print(f"{b.name}: tuning, {len(left)} of {len(tuning)} runs to train, about "
                  f"{estimated_cpu_minutes(b, left):.0f} CPU minutes", flush=True)
            data = check_plan(tuning)
            train(tuning, index, count, data)
            chosen = {label: arm["lr"] for label, arm in choose_lrs(b, args.out, tuning)["arms"].items()}
            main_runs = main_plan(b, args.out, chosen)
            reuse_tuning_runs(tuning, main_runs)
            left = [r for r in main_runs if not finished(r)]
            print(f"{b.name}: lr chosen {chosen}; {len(left)} of {len(main_runs)} runs to train, about "
                  f"{estimated_cpu_minutes(b, left):.0f} CPU minutes", flush=True)
            train(main_runs, index, count, data)
    except UsageError as e:
        print(f"evidence: error: {e}", file=sys.stderr)
        return 2
    finally:
        add_cpu_seconds(args.out, f"shard-{index}-of-{count}", time.process_time() - started)
    results = [summarise(b, args.out, args.doc.parent / DOC_DIR_NAME) for b in benches]
    training = sum(training_cpu_minutes(b, args.out) for b in benches)
    atomic_write_text(args.doc, page(results, cpu_minutes_spent(args.out), args.quick, missing, training))
    if args.readme:
        write_readme(args.readme, results, args.doc)
    print(f"wrote {args.doc} and its reports under {args.doc.parent / DOC_DIR_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
