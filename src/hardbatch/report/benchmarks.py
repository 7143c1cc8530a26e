"""One benchmark of the evidence page, summarised from its runs: its statistics against each reference and uniform's
frontier, collapsed seeds, and its verdict, learning-rate and cost tables (``report.evidence`` assembles the page).

What it reads of a benchmark (``Benchmark``) is what scripts/evidence.py declares and its records keep: its name,
title, settings, arms, learning-rate grid, seeds, the half-width its rule's comparisons should reach and the metric
it is judged on.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hardbatch.config import RUNTIME_KEYS
from hardbatch.errors import UsageError
from hardbatch.metrics import POWER, Interval, paired_difference, seeds_for_half_width
from hardbatch.report.compact import Archive
from hardbatch.report.frontier import FRONTIER_COSTS, FRONTIER_POLICY
from hardbatch.report.groups import (
    REFERENCE_POLICY,
    Comparison,
    arm_label,
    group_runs,
    run_label,
)
from hardbatch.report.load import METRICS, Run
from hardbatch.report.page import write_report
from hardbatch.report.stats import ArmStats, arm_stats
from hardbatch.report.tables import fewer_epochs_answers, fewer_epochs_table
from hardbatch.report.wording import DASH, difference, frontier_verdict, number, verdict

DOC_DIR_NAME = "evidence"  # the reports and plots, beside the page: docs/evidence/BENCH/
PER_ARM = ("lr",)  # the one setting chosen per arm; report --per-arm lr groups such runs as the page does
COLLAPSE_POINTS = 10  # a seed "collapsed" when its final accuracy is this many points below its arm's median
FRONTIER = "uniform's frontier"  # how the verdict table names the frontier as a reference


class Benchmark(Protocol):
    """What the page reads of a benchmark declaration (scripts/evidence.py's ``Benchmark``, ``compact.Declared``)."""

    # Read-only (properties), so that a declaration whose fields are narrower (a tuple of labels) satisfies it.
    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def settings(self) -> dict: ...
    @property
    def arms(self) -> Sequence: ...
    @property
    def lrs(self) -> Sequence[float]: ...
    @property
    def seeds(self) -> int: ...
    @property
    def tune_seeds(self) -> int: ...
    @property
    def target(self) -> float | None:
        """The half-width (points) the rule's comparisons should reach, or None."""

    @property
    def metric(self) -> str:
        """What decides the lr and the verdicts: "acc" (top-1) or "bacc" (balanced top-1)."""


def references(rule_delta: float, rs2: float | None = None) -> list[str]:
    """The references every arm is compared with (``Comparison.reference``): δ = 1, uniform, random at the rule's δ,
    and rs2 at ``rs2`` (the fraction it ran at; None: not run)."""
    return ["hardbatch@1", "uniform", f"random@{rule_delta:g}", *([f"rs2@{rs2:g}"] if rs2 is not None else [])]


@dataclass
class Result:
    """One benchmark's finished runs, summarised as ``hardbatch report --per-arm lr`` does, against each reference."""

    bench: Benchmark
    choice: dict  # lr_choice.json
    stats: dict[str, list[ArmStats]]  # reference ("hardbatch@1", "uniform", "random@0.5", "rs2@0.5") -> per-arm stats
    runs: list[Run] = field(default_factory=list)
    slug: str = ""
    rule_delta: float = 0.5
    tune: list[Run] = field(default_factory=list)  # the tuning runs (their CPU time is the page's too)

    @property
    def metric(self) -> str:
        return getattr(self.bench, "metric", "acc")

    @property
    def any_stats(self) -> list[ArmStats]:
        """Per-arm statistics that do not depend on the reference (accuracy, cost, the frontier)."""
        return self.stats.get("uniform") or next(iter(self.stats.values()), [])


def summarise(archive: Archive, doc_dir: Path, rule_delta: float, built: str | None = None) -> Result:
    """The benchmark's statistics from its main runs (``archive``: from run folders or records) against each
    reference, and its full report with plots written to ``doc_dir/BENCH`` (``built``: what its header says). A run
    that failed (it diverged at its learning rate) is not on the page, and its report lists it as unfinished."""
    bench, runs = archive.bench, archive.main
    metric = getattr(bench, "metric", "acc")
    if not runs:
        raise UsageError(f"{archive.root}: no finished main runs of benchmark {bench.name!r}")
    write_report(
        runs,
        archive.left_out,
        Path(archive.root) / "main",
        doc_dir / bench.name,
        per_arm=PER_ARM,
        metric=metric,
        built=built,
    )
    groups = group_runs(runs, REFERENCE_POLICY, PER_ARM)
    if len(groups) != 1:
        raise UsageError(
            f"{archive.root}: the main runs of {bench.name!r} form {len(groups)} groups (settings other "
            f"than the arm's differ): {'; '.join(g.title for g in groups)}"
        )
    (group,) = groups
    rs2 = group.arm("rs2")
    stats = {}
    for ref in references(rule_delta, rs2.value if rs2 is not None else None):
        if group.reference_for(Comparison(REFERENCE_POLICY, ref)) is not None:
            stats[ref] = arm_stats(group, comparison=Comparison(REFERENCE_POLICY, ref), metric=metric)
    return Result(bench, archive.choice, stats, runs, group.slug, rule_delta, archive.tune)


def training_cpu_minutes(result: Result) -> float:
    """The training CPU time (each run's ``cost.cpu_seconds``) of the benchmark's runs, every tuning run and the main
    runs beyond the tuning seeds (those below are copies of tuning runs); evaluation and process overhead excluded."""
    main = [run for run in result.runs if run.config.seed >= result.bench.tune_seeds]
    return sum(run.summary["cost"]["cpu_seconds"] for run in [*result.tune, *main]) / 60


# ---- seeds that collapsed, and what the interval would be without them --------------------------------------


def _finals(result: Result, label: str) -> dict[int, float]:
    """Final accuracy (the benchmark's metric, points) of arm ``label``'s runs, by seed."""
    return {run.config.seed: 100 * run.final(result.metric) for run in result.runs if run_label(run.config) == label}


def _collapsed_seeds(finals: dict[int, float]) -> set[int]:
    accs = sorted(finals.values())
    if not accs:
        return set()
    median = (accs[(len(accs) - 1) // 2] + accs[len(accs) // 2]) / 2
    return {seed for seed, acc in finals.items() if acc <= median - COLLAPSE_POINTS}


def collapsed(result: Result, label: str) -> tuple[int, int]:
    """(seeds of arm ``label`` whose final accuracy is COLLAPSE_POINTS or more below the arm's median, seeds): the
    few diverged or stalled runs that widen an interval far beyond what the other seeds' spread would."""
    finals = _finals(result, label)
    return len(_collapsed_seeds(finals)), len(finals)


def frontier_collapsed(result: Result) -> int:
    """Collapsed seeds of uniform's runs over all the budgets of its frontier."""
    labels = {run_label(run.config) for run in result.runs if run.config.policy == FRONTIER_POLICY}
    return sum(collapsed(result, label)[0] for label in sorted(labels))


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
        text += (
            f" (without the collapsed seeds: ±{clean.half_width:.2f} over {clean.n}, "
            + ("met" if clean.half_width <= target else f"about {clean_need} seeds")
            + ")"
        )
    return text


# ---- the verdicts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One row of the verdict table: an arm against one reference (an arm, or uniform's frontier in one cost)."""

    arm: str
    against: str
    d: Interval  # the seed-paired difference arm − reference, points
    verdict: str
    target: str
    collapsed: tuple[int, int]  # collapsed seeds of the arm, and of the reference


def rule_label(result: Result) -> str:
    return arm_label(REFERENCE_POLICY, result.rule_delta)


def verdicts(result: Result, rule_only: bool = False) -> list[Verdict]:
    """Every arm at the full budget (``rule_only``: the rule alone) against δ = 1, uniform, random at the rule's δ,
    rs2 (each that was run; an arm is not compared with itself) and uniform's frontier in each cost."""
    rows = []
    rule, full = rule_label(result), max(r.budget for r in result.any_stats)
    for s in result.any_stats:
        if s.budget != full or (rule_only and s.arm != rule):
            continue
        target = result.bench.target if s.arm == rule else None
        for ref, stats in result.stats.items():
            mine = next(r for r in stats if r.arm == s.arm)
            if mine.is_reference:
                continue
            against = Comparison(REFERENCE_POLICY, ref).reference_label
            clean = without_collapsed(result, s.arm, against) if target is not None else None
            rows.append(
                Verdict(
                    s.arm,
                    against,
                    mine.vs_reference,
                    verdict(mine.vs_reference),
                    target_text(mine.vs_reference, target, clean),
                    (collapsed(result, s.arm)[0], collapsed(result, against)[0]),
                )
            )
        for column, place in s.vs_frontier.items():
            rows.append(
                Verdict(
                    s.arm,
                    f"{FRONTIER} ({FRONTIER_COSTS[column]})",
                    place.d,
                    frontier_verdict(place.d, place.inside),
                    target_text(place.d, target) if place.inside else DASH,
                    (collapsed(result, s.arm)[0], frontier_collapsed(result)),
                )
            )
    return rows


def verdict_table(results: list[Result], rule_only: bool = False) -> str:
    """The verdicts of ``results`` in one table, a benchmark column first (``verdicts``)."""
    lines = [
        "| benchmark | arm | against | n | Δ final accuracy, points ±half-width [95% CI] | detectable Δ "
        f"({100 * POWER:.0f}% power) | half-width target | collapsed seeds (arm, against) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for v in verdicts(r, rule_only):
            shown = difference(v.d) if v.d.n else DASH
            lines.append(
                f"| {r.bench.name} | {v.arm} | {v.against} | {v.d.n} | {shown} | "
                f"{number(v.d.detectable)} | {v.target} | {v.collapsed[0]}, {v.collapsed[1]} | {v.verdict} |"
            )
    return "\n".join(lines)


# ---- the benchmark's other tables ----------------------------------------------------------------------------


def lr_table(result: Result) -> str:
    """Each arm's median final validation accuracy over the tuning seeds at each rate of the grid, with the seeds
    that collapsed there (lr_choice.json), and the rate chosen."""
    grid = result.choice["grid"]
    name = METRICS[result.choice.get("metric", "acc")]
    lines = [
        "| arm | "
        + " | ".join(f"median val {name} % at lr {lr:g} (collapsed seeds)" for lr in grid)
        + " | chosen lr |",
        "|---|" + "---|" * (len(grid) + 1),
    ]
    for label, arm in result.choice["arms"].items():
        cells = [f"{arm['val_median'][f'{lr:g}']:.2f} ({arm['collapsed'][f'{lr:g}']})" for lr in grid]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | **{arm['lr']:g}** |")
    return "\n".join(lines)


def cost_table(result: Result) -> str:
    stats = result.any_stats
    name = stats[0].metric_name
    samples, cpu = stats[0].at_budget["samples_backprop"].budget, stats[0].at_budget["cpu_seconds"].budget
    lines = [
        f"| arm | lr | final {name} % | steps | samples back-propagated | CPU s | "
        f"{name} % at {samples:,.0f} samples back-propagated | {name} % at {cpu:.1f} CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lrs = {run_label(run.config): run.config.lr for run in result.runs}
    for s in stats:
        lines.append(
            f"| {s.arm} | {lrs.get(s.arm, float('nan')):g} | {100 * s.final.mean:.2f} | "
            f"{s.cost.optimizer_steps:,.0f} | {s.cost.samples_backpropagated:,.0f} | "
            f"{s.cost.cpu_seconds:.1f} | {number(s.at_budget['samples_backprop'].acc, scale=100)} | "
            f"{number(s.at_budget['cpu_seconds'].acc, scale=100)} |"
        )
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
    uniform = [
        100 * run.summary["final_test_acc"]
        for run in result.runs
        if run.config.policy == "uniform" and run.config.budget == 1.0
    ]
    against = f"; `uniform`'s final test top-1 is {statistics.fmean(uniform):.1f}%" if uniform else ""
    return (
        f"`rho-loss`'s irreducible-loss model, trained before each run on the {sizes} validation samples: "
        f"top-1 {statistics.fmean(top1):.1f}% (from {min(top1):.1f} to {max(top1):.1f}) on the training split "
        f"it never saw, over {len(quality)} of {len(rho)} rho-loss runs{against}. Its irreducible "
        "losses are only as good as that model: a sample it gets wrong has a high irreducible loss, so rho-loss "
        "puts it last, whether its label is noisy or the IL model has not learnt its kind."
    )


def section(result: Result) -> str:
    """The benchmark's section of the page: its runs, learning rates, cost, the forest plot, uniform's frontier and
    whether the rule generalizes in fewer epochs."""
    b, rel = result.bench, f"{DOC_DIR_NAME}/{result.bench.name}"
    settings = ", ".join(f"{k} {v}" for k, v in b.settings.items() if k not in RUNTIME_KEYS)
    judged = "" if result.metric == "acc" else f" Judged on {METRICS[result.metric]} accuracy."
    parts = [
        f"## {b.title}",
        "",
        f"{len(result.runs)} runs ({b.seeds} seeds per arm; {settings}). Full report: "
        f"[`{rel}/report.md`]({rel}/report.md).{judged}",
        "",
        "Learning rate chosen per arm on the validation "
        f"split by the rule of the protocol, over tuning seeds {', '.join(map(str, result.choice['seeds']))}:",
        "",
        lr_table(result),
        "",
    ]
    if "uniform" in result.stats:
        parts += [
            "Cost, and accuracy at equal cost (each run's last evaluation within the budget, the smallest total "
            "any full-budget run of the benchmark spent):",
            "",
            cost_table(result),
            "",
            f"![paired difference to uniform]({rel}/{result.slug}_forest.png)",
            "",
        ]
    if any(s.vs_frontier for s in result.any_stats):
        parts += [f"![accuracy against cost with uniform's frontier]({rel}/{result.slug}_frontier.png)", ""]
    if (table := fewer_epochs_table(result.any_stats)) is not None:
        parts += [
            "Does the rule generalize in fewer epochs? The rule and δ = 1 at shorter budgets against "
            "uniform's frontier:",
            "",
            table,
            "",
            *(f"**{answer}**" for answer in fewer_epochs_answers(result.any_stats)),
            "",
        ]
    if il := irreducible_text(result):
        parts += [il, ""]
    parts += [f"![accuracy against back-propagated samples]({rel}/{result.slug}_accuracy_vs_samples.png)", ""]
    return "\n".join(parts)
