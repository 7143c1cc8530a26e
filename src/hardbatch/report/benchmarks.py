"""The evidence page (docs/evidence.md): benchmarks whose arms each ran at a learning rate chosen on validation,
rendered from their saved runs as verdict, learning-rate and cost tables, with each benchmark's full report beside it.

What it reads of a benchmark (``Benchmark``) is what scripts/evidence.py declares: its name, title, settings, arms,
learning-rate grid and seeds, and the half-width its rule's comparisons should reach.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from hardbatch.errors import UsageError
from hardbatch.fileio import atomic_write_text, read_json
from hardbatch.metrics import POWER, Interval, paired_difference, seeds_for_half_width
from hardbatch.records import find_runs
from hardbatch.report.groups import REFERENCE_POLICY, Comparison, arm_label, group_runs, run_label
from hardbatch.report.load import DAMAGED, Run, load_runs
from hardbatch.report.machines import machines, packages
from hardbatch.report.page import build_report
from hardbatch.report.stats import ArmStats, arm_stats
from hardbatch.report.wording import DASH, difference, number, verdict

MARKERS = ("<!-- evidence:begin -->", "<!-- evidence:end -->")  # the README block the verdict table goes between
COMMAND = "make evidence"
DOC_DIR_NAME = "evidence"  # the reports and plots, beside the page: docs/evidence/BENCH/
PER_ARM = ("lr",)  # the one setting chosen per arm; report --per-arm lr groups such runs as the page does
COLLAPSE_POINTS = 10  # a seed "collapsed" when its final test top-1 is this many points below its arm's median


class Benchmark(Protocol):
    """What the page reads of a benchmark declaration (scripts/evidence.py's ``Benchmark``)."""

    name: str
    title: str
    settings: dict
    arms: Sequence
    lrs: Sequence[float]
    seeds: int
    tune_seeds: int
    target: float | None  # the half-width (points) the rule's comparisons should reach, or None


def references(rule_delta: float) -> dict[str, str]:
    """The references the rule is compared with (``Comparison.reference`` -> how the page names it)."""
    return {"hardbatch@1": "δ = 1", "uniform": "uniform", f"random@{rule_delta:g}": f"random δ = {rule_delta:g}"}


@dataclass
class Result:
    """One benchmark's finished runs, summarised as ``hardbatch report --per-arm lr`` does, against each reference."""

    bench: Benchmark
    choice: dict  # lr_choice.json
    stats: dict[str, list[ArmStats]]  # reference ("hardbatch@1", "uniform", "random@0.5") -> per-arm stats
    runs: list[Run] = field(default_factory=list)
    slug: str = ""
    rule_delta: float = 0.5

    def arm(self, reference: str, label: str) -> ArmStats | None:
        return next((s for s in self.stats.get(reference, []) if s.arm == label), None)


def summarise(bench: Benchmark, root: Path, doc_dir: Path, rule_delta: float) -> Result:
    """The benchmark's statistics from ``root/BENCH/main`` and ``root/BENCH/lr_choice.json``, and its full report
    with plots written to ``doc_dir/BENCH``; UsageError naming a damaged run. A run that failed (it diverged at its
    learning rate) is not on the page, and its report lists it as unfinished."""
    main = root / bench.name / "main"
    runs, left_out = load_runs(main)
    if damaged := [item for item in left_out if item.kind == DAMAGED]:
        raise UsageError(f"{main}: damaged run {damaged[0].path}: {damaged[0].why}")
    build_report(main, doc_dir / bench.name, per_arm=PER_ARM)
    (group,) = group_runs(runs, REFERENCE_POLICY, PER_ARM)
    stats = {}
    for ref in references(rule_delta):
        if group.reference_for(Comparison(REFERENCE_POLICY, ref)) is not None:
            stats[ref] = arm_stats(group, comparison=Comparison(REFERENCE_POLICY, ref))
    return Result(bench, read_json(root / bench.name / "lr_choice.json"), stats, runs, group.slug, rule_delta)


def training_cpu_minutes(bench: Benchmark, root: Path) -> float:
    """The training CPU time (each run's ``cost.cpu_seconds``) of the benchmark's runs, every tuning run and the main
    runs beyond the tuning seeds (those below are copies of tuning runs); evaluation and process overhead excluded."""
    tuning = find_runs(root / bench.name / "tune")
    main = [run for run in find_runs(root / bench.name / "main") if run.config().seed >= bench.tune_seeds]
    return sum(run.summary()["cost"]["cpu_seconds"] for run in [*tuning, *main]) / 60


# ---- seeds that collapsed, and what the interval would be without them --------------------------------------


def _finals(result: Result, label: str) -> dict[int, float]:
    """Final test top-1 (points) of arm ``label``'s runs, by seed."""
    return {run.config.seed: 100 * run.summary["final_test_acc"] for run in result.runs
            if run_label(run.config) == label}


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


def target_text(d: Interval, target: float | None, clean: Interval | None = None) -> str:
    """Whether the half-width of difference ``d`` reached ``target`` (points); if not, by how much and how many seeds
    would reach it, at the observed spread and (``clean``: the difference over the seeds where neither arm
    collapsed) at that spread."""
    if target is None:
        return DASH
    if not d.has_interval:
        return "no interval"
    half = d.half_width
    if half <= target:
        return f"met (≤ {target:g})"
    need = seeds_for_half_width(half, d.n, target)
    text = f"missed by {half - target:.2f}" + (f"; about {need} seeds would reach it" if need else "")
    if clean is not None and clean.has_interval:
        clean_need = seeds_for_half_width(clean.half_width, clean.n, target)
        text += (f" (without the collapsed seeds: ±{clean.half_width:.2f} over {clean.n}, "
                 + ("met" if clean.half_width <= target else f"about {clean_need} seeds") + ")")
    return text


# ---- the tables ------------------------------------------------------------------------------------------------


def comparisons(result: Result) -> list[tuple[str, str, ArmStats]]:
    """(arm, reference) pairs the verdict table shows: the rule against δ = 1, uniform and random; every other arm
    against uniform."""
    refs = references(result.rule_delta)
    rule = arm_label(REFERENCE_POLICY, result.rule_delta)
    rows = [(rule, ref, result.arm(ref, rule)) for ref in refs]
    rows += [(s.arm, "uniform", s) for s in result.stats.get("uniform", []) if s.arm != rule and s.policy != "uniform"]
    return [(a, refs.get(ref, ref), s) for a, ref, s in rows if s is not None]


def verdict_table(results: list[Result]) -> str:
    lines = ["| benchmark | arm | against | n | Δ final top-1, points ±half-width [95% CI] | detectable Δ "
             f"({100 * POWER:.0f}% power) | half-width target | collapsed seeds (arm, against) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for arm, ref, s in comparisons(r):
            d = s.vs_reference
            target = r.bench.target if arm == arm_label(REFERENCE_POLICY, r.rule_delta) else None
            lines.append(f"| {r.bench.name} | {arm} | {ref} | {d.n} | {difference(d)} | {number(d.detectable)} | "
                         f"{target_text(d, target, target and without_collapsed(r, arm, ref))} | "
                         f"{collapsed(r, arm)[0]}, {collapsed(r, ref)[0]} | {verdict(d)} |")
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
    samples, cpu = stats[0].at_budget["samples_backprop"].budget, stats[0].at_budget["cpu_seconds"].budget
    lines = ["| arm | lr | final top-1 % | steps | samples back-propagated | CPU s | "
             f"top-1 % at {samples:,.0f} samples back-propagated | top-1 % at {cpu:.1f} CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    lrs = {label: arm["lr"] for label, arm in result.choice["arms"].items()}
    for s in stats:
        lines.append(f"| {s.arm} | {lrs.get(s.arm, float('nan')):g} | {100 * s.final.mean:.2f} | "
                     f"{s.cost.optimizer_steps:,.0f} | {s.cost.samples_backpropagated:,.0f} | "
                     f"{s.cost.cpu_seconds:.1f} | {100 * s.at_budget['samples_backprop'].acc:.2f} | "
                     f"{100 * s.at_budget['cpu_seconds'].acc:.2f} |")
    return "\n".join(lines)


def irreducible_text(result: Result) -> str:
    """What `rho-loss`'s irreducible-loss models reached on the training split they never saw (summary.json's
    ``irreducible_model``), the first number to read when rho-loss trails `uniform`; "" without rho-loss runs."""
    rho = [run for run in result.runs if run.config.policy == "rho-loss"]
    quality = [run.summary["irreducible_model"] for run in rho if run.summary.get("irreducible_model")]
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


# ---- the page --------------------------------------------------------------------------------------------------


def section(result: Result) -> str:
    b, rel = result.bench, f"{DOC_DIR_NAME}/{result.bench.name}"
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


def protocol(rule_delta: float) -> str:
    """The page's "Protocol" section."""
    return f"""## Protocol

- **Arms**: the paper's rule (`hardbatch`) at δ = {rule_delta:g} and δ = 1, its controls `random` and `cyclic` at
  δ = {rule_delta:g} (same steps, no loss signal), ordinary reshuffled SGD (`uniform`), and every peer at its
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


def _minutes(value: float) -> str:
    return f"{value:.{0 if value >= 10 else 1}f}"


def page(results: list[Result], minutes: float, quick: bool, missing: Sequence[str] = (), training: float = 0.0) -> str:
    """The page; ``minutes`` the CPU minutes the regeneration's processes recorded, ``training`` the training CPU
    minutes of the runs on it, ``missing`` the benchmarks this regeneration did not cover (``--benchmarks``)."""
    runs = [run for r in results for run in r.runs]
    tuning = sum(len(r.bench.arms) * len(r.bench.lrs) * r.bench.tune_seeds for r in results)
    head = ("# Evidence (quick check: not the page)" if quick else
            "# Evidence: does training on hard batches help? Every policy, one protocol, the power stated")
    command = COMMAND if not missing else \
        f"python scripts/evidence.py --benchmarks {' '.join(r.bench.name for r in results)}"
    return "\n".join([
        head, "",
        f"Regenerated by `{command}` ({dt.date.today().isoformat()}): {len(runs)} runs on the page, {tuning} tuning "
        f"runs to choose learning rates (those at the chosen rate reused), **{_minutes(minutes)} CPU minutes** in all "
        f"(one thread per process, `scripts/evidence.py`; the runs' own training CPU time, evaluation excluded: "
        f"{_minutes(training)} minutes). Every number below is computed from the saved runs.", "",
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
        protocol(results[0].rule_delta if results else 0.5),
        *[section(r) for r in results],
        "## Reproduce", "",
        f"`{COMMAND}` (or `python scripts/evidence.py`, with `--shard 0/2` and `--shard 1/2` in two processes) trains "
        "every run into `runs/evidence/` and rewrites this page, its reports under `docs/evidence/` and the README's "
        "block. Rerunning skips finished runs and resumes interrupted ones.", "",
        "Machine: " + "; ".join(machines(runs)) + ". Packages: " + "; ".join(packages(runs)) + ". The same "
        "commit, packages (`constraints.txt` pins them) and CPU kernels give the same digits; another CPU can round "
        "differently, which a run near its learning rate's edge of stability amplifies.", "",
    ])


def check_readme(readme: Path) -> None:
    """UsageError unless ``readme`` holds the MARKERS the verdicts go between (checked before any training)."""
    try:
        text = readme.read_text()
    except OSError as e:
        raise UsageError(f"cannot read {readme}: {e.strerror or e}") from None
    if MARKERS[0] not in text or MARKERS[1] not in text:
        raise UsageError(f"{readme}: no {MARKERS[0]} ... {MARKERS[1]} markers to put the verdicts between")


def write_readme(readme: Path, results: list[Result], doc: Path) -> None:
    """Put the verdict table and a link to the page between ``readme``'s MARKERS."""
    check_readme(readme)
    head, rest = readme.read_text().split(MARKERS[0], 1)
    tail = rest.split(MARKERS[1], 1)[1]
    block = f"{verdict_table(results)}\n\nMethod, power and plots: [`{doc.as_posix()}`]({doc.as_posix()})."
    atomic_write_text(readme, f"{head}{MARKERS[0]}\n{block}\n{MARKERS[1]}{tail}")

