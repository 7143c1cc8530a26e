"""Regenerate docs/evidence.md: every policy on MNIST-1D and Fashion-MNIST under one protocol, with the power of every
verdict stated.

Usage: python scripts/evidence.py [--out runs/evidence] [--doc docs/evidence.md] [--readme README.md] [--shard I/N]
                                  [--quick] [--plan-only] [--data-dir DIR] [--records DIR] [--from-records]

The protocol, for each benchmark (``BENCHMARKS``): each arm's learning rate is chosen from the benchmark's grid on the
validation split (mean final validation top-1 over its first ``tune_seeds`` seeds; the same grid, seeds and budget for
every arm), recorded in ``OUT/BENCH/lr_choice.json``; then every arm runs all ``seeds`` at its chosen rate (the tuning
runs at that rate are reused, not trained again) into ``OUT/BENCH/main``, which ``hardbatch report OUT/BENCH/main
--per-arm lr`` reads as the page does. Every run goes through hardbatch's own plan/execute machinery in this process:
finished runs are skipped and interrupted ones resumed, so rerunning the same command continues where it stopped.
This script declares the benchmarks and the protocol, plans and trains; then every run's compact record (settings,
seed, per-epoch accuracy and cost, the commit) goes into ``--records`` (default docs/evidence/records/, committed with
the page), and the page, each benchmark's report and the README block are rendered from those records by
``hardbatch.report.evidence``. ``--from-records`` renders them again from the records alone: no training, no run
folders. ``--out``, ``--doc`` and ``--readme`` are checked before any training.

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
import datetime
import json
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import hardbatch  # noqa: F401 - only whether it imports: an installed package, or the checkout's src below
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hardbatch.config import DELTA_POLICIES, RunConfig
from hardbatch.errors import UsageError
from hardbatch.fileio import LOCK, atomic_write_json, atomic_write_text, ensure_writable_dir, read_json
from hardbatch.records import RunDir
from hardbatch.report.benchmarks import COLLAPSE_POINTS, DOC_DIR_NAME
from hardbatch.report.compact import archive_folders, write_records
from hardbatch.report.evidence import RECORDS, check_readme, render
from hardbatch.report.groups import run_label
from hardbatch.run.plan import PlannedRun, check_plan, execute, parse_shard, plan_compare, shard
from hardbatch.version import __version__

RULE_DELTA = 0.5  # the rule's δ, and its controls' (the demo's; δ is not tuned: every arm gets the same lr grid only)
WAIT_SECONDS = 30  # between looks at runs another process is training
FAILED = "evidence-failed.txt"  # in a run folder whose training failed (diverged at a too-high lr): not retried
# RS2 at half the data per epoch: each epoch a random half, drawn without replacement across epochs (its authors'
# default, 10%, trains a tenth of what every other arm trains; half sits between the peers that prune).
RS2_FRACTION = 0.5
# CPU time of one run of each policy relative to `uniform`, measured here on both benchmarks (benchmarks/README.md,
# "bench_runs.py"); the plan's estimate only.
POLICY_COST = {
    "rho-loss": 3.2,
    "selective-backprop": 1.15,
    "infobatch": 0.85,
    "seta": 0.8,
    "bls": 0.85,
    "rs2": RS2_FRACTION,
}
TUNE_SEEDS = 5  # the learning-rate rule's seeds: at least 5 (issue 25 item 4)


@dataclass(frozen=True)
class Arm:
    """One arm of a benchmark: a policy at its defaults (the paper's rule and its controls at ``delta``; ``params``:
    hyper-parameters away from their defaults) and the fractions of the epoch budget it also trains at (the compute
    frontier: each run its schedule decayed within its own budget, at the arm's chosen learning rate)."""

    policy: str
    delta: float = 1.0
    params: tuple[tuple[str, float], ...] = ()
    budgets: tuple[float, ...] = ()

    @property
    def label(self) -> str:
        """The report's label of the arm's runs at the full budget: "δ = 0.5", "uniform", "rs2 fraction = 0.5"."""
        params = {**dict(self.params), **({"delta": self.delta} if self.policy in DELTA_POLICIES else {})}
        return run_label(RunConfig(policy=self.policy, params=params))


# Uniform's frontier, and the paper's rule and δ = 1 at the same shorter budgets (does the rule generalize in fewer
# epochs?): 1/4, 1/2 and 3/4 of the epochs, beside the whole budget every arm trains.
BUDGETS = (0.25, 0.5, 0.75)
ALL_ARMS = (
    Arm("hardbatch", RULE_DELTA, budgets=BUDGETS),
    Arm("hardbatch", 1.0, budgets=BUDGETS),
    Arm("random", RULE_DELTA),
    Arm("cyclic", RULE_DELTA),
    Arm("uniform", budgets=BUDGETS),
    Arm("rs2", params=(("fraction", RS2_FRACTION),)),
    Arm("selective-backprop"),
    Arm("composer-sb"),
    Arm("infobatch"),
    Arm("seta"),
    Arm("ies"),
    Arm("rho-loss"),
    Arm("bls"),
)
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
    metric: str = "acc"  # what decides the lr and the verdicts: "acc" (top-1), or "bacc" (balanced, long-tailed)

    def base(self) -> RunConfig:
        return RunConfig(**self.settings)


# 20 epochs (720 steps): at 10 a pilot's paired differences to `uniform` spread 2.6 points (seed sd, lr 0.1), at 20
# 1.4, so 50 seeds reach the 0.5-point half-width where 10 epochs would need over 100. 64 seeds: at 50 the rule's
# differences to δ = 1 and `uniform` came out ±0.53 and ±0.55 with no collapsed seed (the page's own estimate: 57 and
# 61 seeds at that spread), so the regeneration of 2026-12-02 added seeds 50-63 to every MNIST-1D arm.
MNIST1D = dict(
    dataset="mnist1d", model="cnn1d", batch_size=100, epochs=20, momentum=0.9, val_fraction=0.1, device="cpu"
)
FASHION = dict(
    dataset="fashion-mnist",
    model="lenet",
    batch_size=64,
    epochs=10,
    momentum=0.9,
    val_fraction=0.05,
    train_subset=10_000,
    device="cpu",
)

LONG_TAIL = 10  # the largest class 10 times the smallest (--imbalance 10), judged on balanced accuracy
BENCHMARKS = (
    Benchmark(
        "mnist1d",
        "MNIST-1D, cnn1d, cosine schedule",
        {**MNIST1D, "schedule": "cosine"},
        ALL_ARMS,
        (0.05, 0.1, 0.2, 0.4),
        seeds=64,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=4.0,
        target=0.5,
    ),
    Benchmark(
        "mnist1d-noise20",
        "MNIST-1D, cnn1d, 20% label noise, cosine schedule",
        {**MNIST1D, "schedule": "cosine", "label_noise": 0.2},
        ALL_ARMS,
        (0.05, 0.1, 0.2, 0.4),
        seeds=24,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=4.0,
    ),
    Benchmark(
        "mnist1d-lt10",
        "MNIST-1D, cnn1d, long-tailed (imbalance 10), cosine schedule, balanced accuracy",
        {**MNIST1D, "schedule": "cosine", "imbalance": LONG_TAIL},
        ALL_ARMS,
        (0.05, 0.1, 0.2, 0.4),
        seeds=24,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=2.0,
        metric="bacc",
    ),
    Benchmark(
        "mnist1d-constant",
        "MNIST-1D, cnn1d, constant rate (the paper's setting)",
        {**MNIST1D, "schedule": "constant"},
        RULE_ARMS,
        (0.05, 0.1, 0.2, 0.4),
        seeds=64,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=4.0,
        target=0.5,
    ),
    Benchmark(
        "fashion-clean",
        "Fashion-MNIST, LeNet-5, clean labels, cosine schedule",
        {**FASHION, "schedule": "cosine"},
        ALL_ARMS,
        (0.02, 0.05, 0.1),
        seeds=10,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=15.0,
    ),
    Benchmark(
        "fashion-noise20",
        "Fashion-MNIST, LeNet-5, 20% label noise, cosine schedule",
        {**FASHION, "schedule": "cosine", "label_noise": 0.2},
        ALL_ARMS,
        (0.02, 0.05, 0.1),
        seeds=10,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=15.0,
    ),
    Benchmark(
        "fashion-lt10",
        "Fashion-MNIST, LeNet-5, long-tailed (imbalance 10), cosine schedule, balanced accuracy",
        {**FASHION, "schedule": "cosine", "imbalance": LONG_TAIL},
        ALL_ARMS,
        (0.02, 0.05, 0.1),
        seeds=10,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=7.0,
        metric="bacc",
    ),
    Benchmark(
        "fashion-clean-constant",
        "Fashion-MNIST, LeNet-5, clean labels, constant rate (the paper's setting)",
        {**FASHION, "schedule": "constant"},
        RULE_ARMS,
        (0.02, 0.05, 0.1),
        seeds=10,
        tune_seeds=TUNE_SEEDS,
        run_cpu_s=15.0,
    ),
)
QUICK = (  # --quick: the same protocol on digits in seconds, for the test
    Benchmark(
        "digits",
        "digits, mlp, cosine schedule (quick)",
        dict(dataset="digits", model="mlp", batch_size=64, epochs=2, val_fraction=0.2, schedule="cosine", device="cpu"),
        (
            Arm("hardbatch", RULE_DELTA, budgets=(0.5,)),
            Arm("hardbatch", 1.0, budgets=(0.5,)),
            Arm("random", RULE_DELTA),
            Arm("uniform", budgets=(0.5,)),
            Arm("rs2", params=(("fraction", RS2_FRACTION),)),
            Arm("infobatch"),
        ),
        (0.03, 0.1, 0.3),
        seeds=3,
        tune_seeds=2,
        run_cpu_s=0.2,
        target=0.5,
    ),
    Benchmark(
        "digits-constant",
        "digits, mlp, constant rate (quick)",
        dict(
            dataset="digits", model="mlp", batch_size=64, epochs=2, val_fraction=0.2, schedule="constant", device="cpu"
        ),
        RULE_ARMS,
        (0.03, 0.1, 0.3),
        seeds=3,
        tune_seeds=2,
        run_cpu_s=0.2,
    ),
)


# ---- the plan ------------------------------------------------------------------------------------------------


def _runs(
    bench: Benchmark, arm: Arm, lr: float, seeds: range, out: Path, budgets: tuple[float, ...] = ()
) -> list[PlannedRun]:
    cfg = bench.base().replace(lr=lr, params=dict(arm.params))
    return plan_compare(
        cfg, [arm.delta], list(seeds), out, policies=[arm.policy], budgets=budgets, budget_policies=[arm.policy]
    )


def tune_plan(bench: Benchmark, root: Path) -> list[PlannedRun]:
    """Every arm at every learning rate of the grid, on the first ``tune_seeds`` seeds, in ``root/BENCH/tune/lr-LR``."""
    return [
        run
        for arm in bench.arms
        for lr in bench.lrs
        for run in _runs(bench, arm, lr, range(bench.tune_seeds), root / bench.name / "tune" / f"lr-{lr:g}")
    ]


def main_plan(bench: Benchmark, root: Path, chosen: dict[str, float]) -> list[PlannedRun]:
    """Every arm at its chosen learning rate on all seeds, with its shorter budgets, in ``root/BENCH/main``."""
    return [
        run
        for arm in bench.arms
        for run in _runs(bench, arm, chosen[arm.label], range(bench.seeds), root / bench.name / "main", arm.budgets)
    ]


def finished(run: PlannedRun) -> bool:
    return RunDir(run.path).finished


def failed(run: PlannedRun) -> str | None:
    """Why ``run`` failed (it diverged at its learning rate, say), as recorded; None if it did not."""
    marker = run.path / FAILED
    return marker.read_text().strip() if marker.exists() else None


def estimated_cpu_minutes(bench: Benchmark, runs: list[PlannedRun]) -> float:
    """CPU minutes the runs still to train would take with one thread, from the benchmark's measured run cost."""
    return sum(bench.run_cpu_s * POLICY_COST.get(run.cfg.policy, 1.0) * run.cfg.budget for run in runs) / 60


def full_plan_size(bench: Benchmark) -> tuple[int, float]:
    """(runs, estimated CPU minutes) of the whole benchmark, tuning and main runs, reused tuning runs counted once;
    a run of a shorter budget costs its fraction."""
    tuning = len(bench.arms) * len(bench.lrs) * bench.tune_seeds
    main = sum(1 + len(arm.budgets) for arm in bench.arms) * bench.seeds - len(bench.arms) * bench.tune_seeds
    per_arm = [POLICY_COST.get(arm.policy, 1.0) for arm in bench.arms]
    budgeted = [POLICY_COST.get(arm.policy, 1.0) * sum(arm.budgets) for arm in bench.arms]
    minutes = (
        bench.run_cpu_s
        * (
            sum(per_arm) * (len(bench.lrs) * bench.tune_seeds + bench.seeds - bench.tune_seeds)
            + sum(budgeted) * bench.seeds
        )
        / 60
    )
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


LR_RULE = (
    "the highest median final validation {metric} over the tuning seeds, among the grid rates at which no "
    "tuning seed collapsed (failed, or {points:g} points or more below that rate's median); if every rate has "
    "a collapse, the rate with the fewest, then the highest median; ties go to the lower rate"
)


def choose_lrs(bench: Benchmark, root: Path, plan: list[PlannedRun]) -> dict:
    """Each arm's learning rate by ``LR_RULE``, stated before any run: the median over at least 5 tuning seeds, the
    rates at which a tuning seed collapses excluded (a failed run scores 0 and collapses); written with each rate's
    median and collapse count to ``root/BENCH/lr_choice.json`` and returned."""
    metric = "balanced top-1" if bench.metric == "bacc" else "top-1"
    choice = {
        "rule": LR_RULE.format(metric=metric, points=COLLAPSE_POINTS),
        "seeds": list(range(bench.tune_seeds)),
        "grid": list(bench.lrs),
        "metric": bench.metric,
        "arms": {},
    }
    key = "final_val_bacc" if bench.metric == "bacc" else "final_val_acc"
    for arm in bench.arms:
        runs = [r for r in plan if run_label(r.cfg) == arm.label]
        medians, collapses = {}, {}
        for lr in bench.lrs:
            scores = [100 * RunDir(r.path).summary()[key] if finished(r) else 0.0 for r in runs if r.cfg.lr == lr]
            medians[lr] = statistics.median(scores)
            collapses[lr] = sum(score <= medians[lr] - COLLAPSE_POINTS for score in scores)
        best = min(bench.lrs, key=lambda lr: (collapses[lr], -medians[lr], lr))
        choice["arms"][arm.label] = {
            "policy": arm.policy,
            "delta": arm.delta,
            "lr": best,
            "val_median": {f"{lr:g}": medians[lr] for lr in bench.lrs},
            "collapsed": {f"{lr:g}": collapses[lr] for lr in bench.lrs},
            "failed": [f"lr {r.cfg.lr:g} seed {r.cfg.seed}: {failed(r)}" for r in runs if failed(r)],
        }
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


# ---- main --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/evidence"), help="where the runs go (runs/evidence)")
    parser.add_argument("--doc", type=Path, default=Path("docs/evidence.md"), help="the page (docs/evidence.md)")
    parser.add_argument(
        "--readme",
        type=Path,
        help="a README whose block between <!-- evidence:begin --> and <!-- evidence:end --> gets the verdicts",
    )
    parser.add_argument("--shard", default="0/1", help="I/N: train every N-th run first (default 0/1)")
    parser.add_argument("--quick", action="store_true", help="a tiny version on digits (seconds), for tests")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and its estimated CPU minutes")
    parser.add_argument("--data-dir", help="--data-dir for every run (the data sets' files and MNIST-1D's cache)")
    parser.add_argument(
        "--records",
        type=Path,
        help="where the compact records go, and are read from with "
        "--from-records (default: beside the page, DOC_DIR/evidence/"
        "records)",
    )
    parser.add_argument(
        "--from-records",
        action="store_true",
        help="rewrite the page, its reports and plots and the README block from the records alone: "
        "no training, no run folders",
    )
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        metavar="NAME",
        help="train and report only these benchmarks (default: all: "
        f"{', '.join(b.name for b in BENCHMARKS)}); the page then says which are still to run",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv[:-1]):  # "--shard -1/2": a value argparse would take for a flag
        if arg == "--shard" and argv[i + 1].startswith("-"):
            argv[i : i + 2] = [f"--shard={argv[i + 1]}"]
            break
    return parser.parse_args(argv)


def records_dir(args: argparse.Namespace) -> Path:
    """--records, or beside the page: DOC_DIR/evidence/records."""
    return args.records or args.doc.parent / DOC_DIR_NAME / RECORDS


def check_outputs(args: argparse.Namespace) -> None:
    """Where the runs, the records, the page and the README block go, checked before any training (UsageError, one
    line)."""
    if not args.from_records:
        ensure_writable_dir(args.out)
        ensure_writable_dir(records_dir(args))
    ensure_writable_dir(args.doc.parent)
    if args.doc.is_dir():
        raise UsageError(f"--doc {str(args.doc)!r} is a directory; give the page's file name")
    if args.readme:
        check_readme(args.readme)


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
    records = records_dir(args)
    if args.from_records:
        try:
            check_outputs(args)
            render(records, args.doc, args.readme)
        except UsageError as e:
            print(f"evidence: error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.doc} and its reports under {args.doc.parent / DOC_DIR_NAME} from {records}")
        return 0
    benches = QUICK if args.quick else BENCHMARKS
    if args.benchmarks:
        unknown = [name for name in args.benchmarks if name not in {b.name for b in benches}]
        if unknown:
            print(
                f"evidence: error: unknown benchmark {unknown[0]!r}; choose from {', '.join(b.name for b in benches)}",
                file=sys.stderr,
            )
            return 2
        missing = [b.name for b in benches if b.name not in args.benchmarks]
        benches = [b for b in benches if b.name in args.benchmarks]
    else:
        missing = []
    if args.data_dir:
        benches = [Benchmark(**{**b.__dict__, "settings": {**b.settings, "data_dir": args.data_dir}}) for b in benches]
    total_runs = sum(full_plan_size(b)[0] for b in benches)
    print(
        f"plan: {total_runs} runs in {len(benches)} benchmarks, about "
        f"{sum(full_plan_size(b)[1] for b in benches):.0f} CPU minutes in all with one thread "
        f"(2 shards in parallel: about {sum(full_plan_size(b)[1] for b in benches) / 120:.1f} h)",
        flush=True,
    )
    for b in benches:
        runs, minutes = full_plan_size(b)
        print(
            f"  {b.name}: {len(b.arms)} arms x {len(b.lrs)} lr x {b.tune_seeds} seeds to tune, then {b.seeds} seeds "
            f"per arm: {runs} runs, about {minutes:.0f} CPU minutes",
            flush=True,
        )
    if args.plan_only:
        return 0
    try:
        check_outputs(args)
    except UsageError as e:
        print(f"evidence: error: {e}", file=sys.stderr)
        return 2
    try:
        for b in benches:
            tuning = tune_plan(b, args.out)
            left = [r for r in tuning if not finished(r)]
            print(
                f"{b.name}: tuning, {len(left)} of {len(tuning)} runs to train, about "
                f"{estimated_cpu_minutes(b, left):.0f} CPU minutes",
                flush=True,
            )
            data = check_plan(tuning)
            train(tuning, index, count, data)
            chosen = {label: arm["lr"] for label, arm in choose_lrs(b, args.out, tuning)["arms"].items()}
            main_runs = main_plan(b, args.out, chosen)
            reuse_tuning_runs(tuning, main_runs)
            left = [r for r in main_runs if not finished(r)]
            print(
                f"{b.name}: lr chosen {chosen}; {len(left)} of {len(main_runs)} runs to train, about "
                f"{estimated_cpu_minutes(b, left):.0f} CPU minutes",
                flush=True,
            )
            train(main_runs, index, count, data)
    except UsageError as e:
        print(f"evidence: error: {e}", file=sys.stderr)
        return 2
    finally:
        add_cpu_seconds(args.out, f"shard-{index}-of-{count}", time.process_time() - started)
    meta = {
        "benchmarks": [b.name for b in benches],
        "missing": missing,
        "quick": args.quick,
        "date": datetime.date.today().isoformat(),
        "version": __version__,
        "cpu_minutes": cpu_minutes_spent(args.out),
        "rule_delta": RULE_DELTA,
    }
    try:
        write_records(records, [archive_folders(b, args.out) for b in benches], meta)
        render(records, args.doc, args.readme)
    except UsageError as e:
        print(f"evidence: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {records}, and {args.doc} and its reports under {args.doc.parent / DOC_DIR_NAME} from them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
