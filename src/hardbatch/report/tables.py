"""The Markdown tables of report.md (also readable in a terminal), each drawn from per-arm statistics."""

from __future__ import annotations

import math

from hardbatch.config import AXIS_SYMBOLS
from hardbatch.metrics import POWER
from hardbatch.report.frontier import FRONTIER_COSTS, Frontier
from hardbatch.report.groups import (
    LAST_EPOCHS,
    PAPER,
    REFERENCE_DELTA,
    REFERENCE_POLICY,
    Comparison,
    Group,
    arm_label,
)
from hardbatch.report.load import METRICS
from hardbatch.report.stats import ArmStats, AtBudget, Spread, rule_budgets
from hardbatch.report.wording import (
    ABOVE,
    DASH,
    difference,
    fewer_epochs_answer,
    frontier_verdict,
    level,
    mean_std,
    number,
)

MAX_CLASS_COLUMNS = 20  # per-class tables only for data sets with at most this many classes
REFERENCE = "reference"  # what the reference arm's own difference cells say


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_table(stats: list[ArmStats], comparison: Comparison = PAPER) -> str:
    """The per-arm table: final top-1, the difference to the reference (and its power), the last-epochs mean, epochs
    to the target, plateau and seconds."""
    ref = comparison.reference_text
    name = stats[0].metric_name if stats else "top-1"
    header = [
        "arm",
        "n",
        f"final {name} % (mean ± std)",
        "balanced top-1 %",
        f"Δ vs {ref}, points [95% CI]",
        f"detectable Δ ({100 * POWER:.0f}% power)",
        "Δ relative %",
        f"last-{LAST_EPOCHS} mean %",
        f"Δ last-{LAST_EPOCHS} vs {ref} [95% CI]",
        "epochs to T (reached)",
        "fewer epochs %",
        "epochs to plateau",
        "train s to T",
        "train s",
    ]
    rows = [
        [
            r.arm,
            str(r.n),
            f"{number(r.final.mean, scale=100)} ± {number(r.final.std, scale=100)}",
            mean_std(r.balanced.mean, r.balanced.std),
            REFERENCE if r.is_reference else difference(r.vs_reference),
            DASH if r.is_reference else number(r.vs_reference.detectable),
            DASH if r.is_reference else number(r.relative_pct, signed=True),
            number(r.last.mean, scale=100),
            REFERENCE if r.is_reference else difference(r.last_vs_reference),
            f"{number(r.target.epochs, 1)} ({r.target.reached}/{r.n})",
            number(r.target.fewer_epochs_pct, 1, signed=True),
            number(r.epochs_to_plateau, 1),
            number(r.target.seconds, 1),
            number(r.cost.train_seconds, 1),
        ]
        for r in stats
    ]
    return _table(header, rows)


def cost_table(stats: list[ArmStats], comparison: Comparison = PAPER) -> str:
    """What each arm spent, its differences to `uniform` and to the reference, and its top-1 at equal cost."""
    budget = {
        c: (stats[0].at_budget.get(c) if stats else None) or AtBudget()
        for c in ("samples_backprop", "train_seconds", "cpu_seconds")
    }
    name = stats[0].metric_name if stats else "top-1"
    header = [
        "arm",
        "n",
        f"final {name} % [95% CI]",
        "Δ vs uniform",
        f"Δ vs {comparison.reference_text}",
        "steps",
        "backprop samples",
        "no-grad samples",
        "train s",
        "CPU s",
        "choose s",
        f"{name} % at {number(budget['samples_backprop'].budget, 0)} backprop samples",
        f"{name} % at {number(budget['train_seconds'].budget, 1)} train s",
        f"{name} % at {number(budget['cpu_seconds'].budget, 1)} CPU s",
    ]
    rows = [
        [
            r.arm,
            str(r.n),
            level(r.final_ci),
            REFERENCE if r.policy == "uniform" else DASH if r.vs_uniform.n == 0 else difference(r.vs_uniform),
            REFERENCE if r.is_reference else difference(r.vs_reference),
            number(r.cost.optimizer_steps, 0),
            number(r.cost.samples_backpropagated, 0),
            number(r.cost.samples_forward_nograd, 0),
            number(r.cost.train_seconds, 1),
            number(r.cost.cpu_seconds, 1),
            number(r.cost.choose_seconds, 2),
            *(number(r.at_budget[c].acc, scale=100) for c in ("samples_backprop", "train_seconds", "cpu_seconds")),
        ]
        for r in stats
    ]
    return _table(header, rows)


def per_class_table(group: Group) -> str | None:
    """Final test top-1 % of each class, mean over seeds, one line per arm; None when runs lack it or classes abound."""
    per_arm = {arm.label: [r.summary.get("final_test_per_class_acc") for r in arm.runs.values()] for arm in group.arms}
    lengths = {len(v) for runs in per_arm.values() for v in runs if v}
    if not lengths or any(v is None for runs in per_arm.values() for v in runs) or len(lengths) > 1:
        return None
    (classes,) = lengths
    if classes > MAX_CLASS_COLUMNS:
        return None
    rows = [
        [label]
        + [
            number(Spread.of(math.nan if v[c] is None else v[c] for v in runs if v is not None).mean, 1, 100)
            for c in range(classes)
        ]
        for label, runs in per_arm.items()
    ]
    return _table(["arm"] + [str(c) for c in range(classes)], rows)


def noise_table(stats: list[ArmStats]) -> str:
    """Per arm: the share of relabelled samples among the samples trained, against their share of the training split."""
    header = [
        "arm",
        "mislabelled % of back-propagated samples",
        "after the first epoch",
        "% of the training split",
        "ratio after the first epoch",
    ]
    rows = []
    for r in stats:
        trained, after, data = (r.mislabelled.get(k, math.nan) for k in ("trained", "trained_after_warmup", "in_data"))
        ratio = after / data if data and not math.isnan(after) else math.nan
        rows.append([r.arm, number(trained, 1, 100), number(after, 1, 100), number(data, 1, 100), number(ratio, 2)])
    return _table(header, rows)


def overview_table(groups: list[Group], stats: dict[str, list[ArmStats]], comparison: Comparison = PAPER) -> str:
    """The paper-style table: one line per network, one column per value of the method's axis (δ for the paper),
    final top-1 mean ± std (n); the reference arm's column included."""

    def shown(r: ArmStats) -> bool:
        return r.is_method or (r.is_reference and r.policy == comparison.method)

    values = sorted({r.value for g in groups for r in stats[g.title] if shown(r) and r.value is not None})
    symbol = AXIS_SYMBOLS.get(comparison.axis or "", comparison.method)
    models = [g.settings["model"] for g in groups]
    rows = []
    for g in groups:
        cells = {r.value: r for r in stats[g.title] if shown(r)}
        label = g.settings["model"] if models.count(g.settings["model"]) == 1 else g.title
        rows.append(
            [label]
            + [
                f"{number(cells[v].final.mean, scale=100)} ± {number(cells[v].final.std, scale=100)} ({cells[v].n})"
                if v in cells
                else DASH
                for v in values
            ]
        )
    return _table(["network"] + [f"{symbol} = {v:g}" for v in values], rows)


# ---- uniform's compute frontier --------------------------------------------------------------------------------


def _cost(column: str, value: float) -> str:
    """A cost as the frontier's tables show it: whole samples, CPU seconds to 0.01."""
    return number(value, 0 if column == "samples_backprop" else 2)


def frontier_table(fronts: dict[str, Frontier], metric: str = "acc") -> str:
    """Uniform's budgets, the frontier's points: epochs, final accuracy with its 95% interval, and the mean cost in
    each of FRONTIER_COSTS."""
    by_cost = {column: {p.budget: p for p in f.points} for column, f in fronts.items()}
    first = next(iter(by_cost.values()))
    header = [
        "uniform at budget",
        "epochs",
        "n",
        f"final {METRICS[metric]} % [95% CI]",
        *(FRONTIER_COSTS[c] for c in by_cost),
    ]
    rows = [
        [f"{b:g}", str(p.epochs), str(p.acc.n), level(p.acc), *(_cost(c, by_cost[c][b].cost) for c in by_cost)]
        for b, p in sorted(first.items())
    ]
    return _table(header, rows)


def placement_table(stats: list[ArmStats]) -> str:
    """Each arm (uniform's own aside) against the frontier at the cost it spent, per cost: that cost, the seed-paired
    difference to the frontier with its interval, the detectable difference and the verdict."""
    columns = [c for c in FRONTIER_COSTS if any(c in r.vs_frontier for r in stats)]
    header = ["arm", "n"]
    for c in columns:
        header += [
            FRONTIER_COSTS[c],
            "Δ vs frontier, points [95% CI]",
            f"detectable Δ ({100 * POWER:.0f}% power)",
            "verdict",
        ]
    rows = []
    for r in stats:
        if not r.vs_frontier:
            continue
        row = [r.arm, str(r.n)]
        for c in columns:
            place = r.vs_frontier[c]
            row += [
                _cost(c, place.cost),
                difference(place.d) if place.inside else DASH,
                number(place.d.detectable) if place.inside else DASH,
                frontier_verdict(place.d, place.inside),
            ]
        rows.append(row)
    return _table(header, rows)


def fewer_epochs_table(stats: list[ArmStats]) -> str | None:
    """ "Does the rule generalize in fewer epochs?": at each budget the rule's (δ < 1) and δ = 1's final accuracy,
    cost and verdict against uniform's frontier in each cost; None where the rule ran at no shorter budget or the
    group has no frontier (``stats.rule_budgets``)."""
    arms = rule_budgets(stats)
    if not arms:
        return None
    name = stats[0].metric_name
    header = ["budget", "epochs", "arm", f"final {name} % [95% CI]"]
    for c in FRONTIER_COSTS:
        header += [FRONTIER_COSTS[c], f"vs uniform's frontier ({FRONTIER_COSTS[c]})"]
    budgets = sorted({b for by_budget in arms.values() for b in by_budget})
    rows = []
    for b in budgets:
        for r in (by_budget[b] for by_budget in arms.values() if b in by_budget):
            row = [f"{b:g}", str(r.epochs), arm_label(r.policy, r.value), level(r.final_ci)]
            for c in FRONTIER_COSTS:
                place = r.vs_frontier.get(c)
                verdict = DASH if place is None else frontier_verdict(place.d, place.inside)
                shown = verdict if place is None or not place.inside else f"{difference(place.d)}: {verdict}"
                row += [_cost(c, place.cost) if place else DASH, shown]
            rows.append(row)
    return _table(header, rows)


def fewer_epochs_answers(stats: list[ArmStats]) -> list[str]:
    """One sentence per δ < 1 of ``rule_budgets``: at which budgets, if any, the rule is above uniform's frontier in
    each cost."""
    arms = rule_budgets(stats)
    return [
        fewer_epochs_answer(
            arm_label(REFERENCE_POLICY, delta),
            {
                FRONTIER_COSTS[c]: [
                    b
                    for b, r in by_budget.items()
                    if c in r.vs_frontier and r.vs_frontier[c].inside and frontier_verdict(r.vs_frontier[c].d) == ABOVE
                ]
                for c in FRONTIER_COSTS
            },
        )
        for delta, by_budget in arms.items()
        if delta < REFERENCE_DELTA
    ]
