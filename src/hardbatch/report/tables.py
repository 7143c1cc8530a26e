"""The Markdown tables of report.md (also readable in a terminal), each drawn from per-arm statistics."""

from __future__ import annotations

import math

from hardbatch.config import AXIS_SYMBOLS
from hardbatch.metrics import POWER
from hardbatch.report.groups import LAST_EPOCHS, PAPER, Comparison, Group
from hardbatch.report.stats import ArmStats, AtBudget, Spread
from hardbatch.report.wording import DASH, difference, level, mean_std, number

MAX_CLASS_COLUMNS = 20  # per-class tables only for data sets with at most this many classes
REFERENCE = "reference"  # what the reference arm's own difference cells say


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_table(stats: list[ArmStats], comparison: Comparison = PAPER) -> str:
    """The per-arm table: final top-1, the difference to the reference (and its power), the last-epochs mean, epochs
    to the target, plateau and seconds."""
    ref = comparison.reference_text
    header = ["arm", "n", "final top-1 % (mean ± std)", "balanced top-1 %", f"Δ vs {ref}, points [95% CI]",
              f"detectable Δ ({100 * POWER:.0f}% power)", "Δ relative %",
              f"last-{LAST_EPOCHS} mean %", f"Δ last-{LAST_EPOCHS} vs {ref} [95% CI]", "epochs to T (reached)",
              "fewer epochs %", "epochs to plateau", "train s to T", "train s"]
    rows = [[
        r.arm, str(r.n),
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
    ] for r in stats]
    return _table(header, rows)


def cost_table(stats: list[ArmStats], comparison: Comparison = PAPER) -> str:
    """What each arm spent, its differences to `uniform` and to the reference, and its top-1 at equal cost."""
    budget = {c: (stats[0].at_budget.get(c) if stats else None) or AtBudget() for c in
              ("samples_backprop", "train_seconds", "cpu_seconds")}
    header = ["arm", "n", "final top-1 % [95% CI]", "Δ vs uniform", f"Δ vs {comparison.reference_text}", "steps",
              "backprop samples", "no-grad samples", "train s", "CPU s", "choose s",
              f"top-1 % at {number(budget['samples_backprop'].budget, 0)} backprop samples",
              f"top-1 % at {number(budget['train_seconds'].budget, 1)} train s",
              f"top-1 % at {number(budget['cpu_seconds'].budget, 1)} CPU s"]
    rows = [[
        r.arm, str(r.n), level(r.final_ci),
        REFERENCE if r.policy == "uniform" else DASH if r.vs_uniform.n == 0 else difference(r.vs_uniform),
        REFERENCE if r.is_reference else difference(r.vs_reference),
        number(r.cost.optimizer_steps, 0), number(r.cost.samples_backpropagated, 0),
        number(r.cost.samples_forward_nograd, 0), number(r.cost.train_seconds, 1), number(r.cost.cpu_seconds, 1),
        number(r.cost.choose_seconds, 2),
        *(number(r.at_budget[c].acc, scale=100) for c in ("samples_backprop", "train_seconds", "cpu_seconds")),
    ] for r in stats]
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
    rows = [[label] + [number(Spread.of(math.nan if v[c] is None else v[c] for v in runs).mean, 1, 100)
                       for c in range(classes)] for label, runs in per_arm.items()]
    return _table(["arm"] + [str(c) for c in range(classes)], rows)


def noise_table(stats: list[ArmStats]) -> str:
    """Per arm: the share of relabelled samples among the samples trained, against their share of the training split."""
    header = ["arm", "mislabelled % of back-propagated samples", "after the first epoch", "% of the training split",
              "ratio after the first epoch"]
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
        rows.append([label] + [f"{number(cells[v].final.mean, scale=100)} ± {number(cells[v].final.std, scale=100)} "
                               f"({cells[v].n})" if v in cells else DASH for v in values])
    return _table(["network"] + [f"{symbol} = {v:g}" for v in values], rows)
