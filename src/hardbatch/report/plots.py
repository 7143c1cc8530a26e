"""A report's figures: what to draw computed from a group's runs and statistics, then drawn on a matplotlib Axes
(``ax=None``: a new figure) and saved as PNG. matplotlib is imported only with this module."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hardbatch.fileio import space_for
from hardbatch.metrics import mean_std
from hardbatch.report.frontier import FRONTIER_COSTS, Frontier, frontiers
from hardbatch.report.glossary import epoch_axis_label
from hardbatch.report.groups import PAPER, Comparison, Group
from hardbatch.report.load import Run
from hardbatch.report.stats import ArmStats, forest_points


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else Figure(figsize=(6.4, 4.2), layout="constrained").subplots()


def _finish(ax: Axes, xlabel: str, ylabel: str, title: str | None, legend: bool = True) -> Axes:
    """Labels, a light grid, the legend and the title: what every line plot here ends with."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    ax: Axes | None = None,
    ylabel: str = "test top-1 accuracy (%)",
    title: str | None = None,
    xlabel: str = "epoch",
) -> Axes:
    """One line per label: ``(mean, low, high)`` per epoch, the band between low and high shaded."""
    ax = _axes(ax)
    for label, (mean, low, high) in curves.items():
        epochs = range(1, len(mean) + 1)
        (line,) = ax.plot(epochs, mean, label=label, linewidth=1.5)
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return _finish(ax, xlabel, ylabel, title)


def plot_final_vs_delta(
    deltas: Sequence[float],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    baseline: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    ylabel: str = "final test top-1 accuracy (%)",
) -> Axes:
    """Final test accuracy in % against delta: the mean over seeds with a bar from ``lows`` to ``highs`` (the report
    passes the 95% t-interval, clipped to [0, 100]; NaN: no bar); ``baseline`` as a dashed line."""
    ax = _axes(ax)
    below = [m - lo if lo == lo else 0.0 for m, lo in zip(means, lows, strict=True)]  # lo == lo: not NaN
    above = [hi - m if hi == hi else 0.0 for m, hi in zip(means, highs, strict=True)]
    ax.errorbar(deltas, means, yerr=[below, above], marker="o", capsize=4, linewidth=1.5)
    if baseline is not None:
        ax.axhline(baseline, linestyle="--", color="gray", linewidth=1, label="δ = 1 (ordinary training)")
    return _finish(ax, "δ (fraction of mini-batches trained per round)", ylabel, title, legend=baseline is not None)


def plot_batch_visits(visits: Mapping[str, Sequence[float]], ax: Axes | None = None, title: str | None = None) -> Axes:
    """How often each mini-batch was trained, sorted from least to most; flat lines mean even use.

    Batches stuck at the left near 1 were trained in the warm-up only: the stale ranking starved them.
    """
    ax = _axes(ax)
    for label, counts in visits.items():
        ax.plot(range(len(counts)), sorted(counts), label=label, linewidth=1.5)
    return _finish(ax, "mini-batches, sorted by times trained", "times trained (mean over seeds)", title)


def save_figure(ax: Axes, path: Path | str) -> Path:
    """Write the Axes' figure as PNG atomically (temporary file, then rename); a full disk raises NoSpaceLeft."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        with space_for(path):
            cast(Figure, ax.figure).savefig(tmp, dpi=120)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def plot_cost_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
    xlabel: str,
    ax: Axes | None = None,
    title: str | None = None,
    ylabel: str = "test top-1 accuracy (%)",
) -> Axes:
    """Test accuracy against cumulative cost, one line and band per arm: ``(cost, mean, low, high)`` per epoch."""
    ax = _axes(ax)
    for label, (xs, mean, low, high) in curves.items():
        (line,) = ax.plot(xs, mean, label=label, linewidth=1.5, marker=".")
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return _finish(ax, xlabel, ylabel, title)


def plot_front(
    points: dict[str, tuple[float, float, float, float, float]],
    title: str | None = None,
    ylabel: str = "final test top-1 accuracy (%)",
) -> Axes:
    """Final accuracy against total cost, one point per arm with its 95% interval (clipped to [0, 100]).

    ``points[label] = (backprop samples, train seconds, mean %, low %, high %)``; two panels, one per cost.
    """
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = ((axes[0], 0, "samples back-propagated (total)"), (axes[1], 1, "training seconds (total)"))
    for ax, index, xlabel in panels:
        for label, values in points.items():
            mean, low, high = values[2], values[3], values[4]
            if low != low:  # NaN: a single seed has no interval
                low = high = mean
            low, high = max(0.0, low), min(100.0, high)
            ax.errorbar([values[index]], [mean], yerr=[[mean - low], [high - mean]], marker="o", capsize=4, label=label)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[1].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return axes[0]


def plot_frontier(
    lines: Mapping[str, tuple[Sequence[float], ...]],
    points: Mapping[str, Mapping[str, tuple[float, ...]]],
    axes: Sequence[Axes] | None = None,
    ylabel: str = "final test top-1 accuracy (%)",
    title: str | None = None,
) -> Axes:
    """Accuracy against cost, one panel per cost (FRONTIER_COSTS): uniform's frontier as a line through its budgets
    with the band of its 95% intervals, each budget marked, and each other arm as a point with its interval.

    ``lines[cost] = (budgets, costs, means %, lows %, highs %)`` in ascending cost; ``points[label][cost] = (cost,
    mean %, low %, high %)`` (NaN ends: no bar); ``axes``: one Axes per cost (None: a new figure, panels side by
    side). Returns the first panel's Axes.
    """
    if axes is None:
        fig = Figure(figsize=(11, 4.6), layout="constrained")
        axes = fig.subplots(1, len(lines), sharey=True, squeeze=False)[0]
    for ax, (column, (budgets, xs, mean, low, high)) in zip(axes, lines.items(), strict=True):
        ax.plot(xs, mean, color="black", marker="s", linewidth=1.5, label="uniform's frontier")
        ax.fill_between(
            xs,
            [lo if lo == lo else m for lo, m in zip(low, mean, strict=True)],
            [hi if hi == hi else m for hi, m in zip(high, mean, strict=True)],
            color="gray",
            alpha=0.25,
            linewidth=0,
        )
        for b, x, m in zip(budgets, xs, mean, strict=True):
            ax.annotate(f"{b:g}", (x, m), textcoords="offset points", xytext=(0, -12), ha="center", fontsize="x-small")
        for label, by_cost in points.items():
            if column not in by_cost:
                continue
            x, m, lo, hi = by_cost[column]
            ax.errorbar(
                [x],
                [m],
                yerr=[[m - lo if lo == lo else 0.0], [hi - m if hi == hi else 0.0]],
                marker="o",
                capsize=3,
                linewidth=1.2,
                label=label,
            )
        ax.set_xlabel(f"{FRONTIER_COSTS[column]} (total, mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize="x-small")
    if title:
        axes[0].figure.suptitle(title)
    return axes[0]


def plot_forest(
    differences: dict[str, tuple[float, float, float]],
    reference: str,
    ax: Axes | None = None,
    title: str | None = None,
    what: str = "final test top-1",
) -> Axes:
    """A forest plot: one row per arm, its difference to ``reference`` in points as a dot with a bar over its 95%
    interval (``differences[label] = (mean, low, high)``; NaN ends: no bar), and a line at 0."""
    ax = ax if ax is not None else Figure(figsize=(6.4, 0.9 + 0.35 * len(differences)), layout="constrained").subplots()
    labels = list(differences)
    rows = range(len(labels), 0, -1)  # the first arm at the top
    means = [differences[label][0] for label in labels]
    # lo == lo: not NaN
    below = [m - lo if lo == lo else 0.0 for m, (_, lo, _) in zip(means, differences.values(), strict=True)]
    above = [hi - m if hi == hi else 0.0 for m, (_, _, hi) in zip(means, differences.values(), strict=True)]
    ax.errorbar(means, list(rows), xerr=[below, above], fmt="o", capsize=3, linewidth=1.5)
    ax.axvline(0.0, linestyle="--", color="gray", linewidth=1)
    ax.set_yticks(list(rows), labels)
    return _finish(ax, f"{what}, difference to {reference} (points, 95% interval)", "", title, legend=False)


# ---- what a report draws: values computed from a group's runs and statistics -----------------------------------


def _curve_band(runs: list[Run], metric: str = "acc") -> tuple[list[float], list[float], list[float]]:
    """Mean ± std (in %) of test ``metric`` per epoch over runs; epochs beyond the shortest run are dropped."""
    length = min(len(r.history) for r in runs)
    mean, low, high = [], [], []
    for e in range(length):
        m, s = mean_std([r.curve(metric)[e] for r in runs])
        mean.append(100 * m)
        low.append(100 * (m - s))
        high.append(100 * (m + s))
    return mean, low, high


def _cost_band(
    runs: list[Run], column: str, metric: str = "acc"
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per epoch over runs: mean cumulative cost, and mean ± std of test ``metric`` (%)."""
    length = min(len(r.history) for r in runs)
    xs = [mean_std([r.cost(column)[e] for r in runs])[0] for e in range(length)]
    mean, low, high = _curve_band(runs, metric)
    return xs, mean[:length], low[:length], high[:length]


def draw_group_plots(group: Group, stats: list[ArmStats], out_dir: Path, comparison: Comparison = PAPER) -> list[Path]:
    """Accuracy curves, final accuracy along the method's axis, and batch-visit counts for one group; returns the
    PNGs."""
    metric, name = (stats[0].metric, stats[0].metric_name) if stats else ("acc", "top-1")
    curves = {arm.label: _curve_band(list(arm.runs.values()), metric) for arm in group.arms}
    ax = plot_curves(curves, title=group.title, xlabel=epoch_axis_label(), ylabel=f"test {name} accuracy (%)")
    paths = [save_figure(ax, out_dir / f"{group.slug}_accuracy.png")]
    ours = [
        r for r in stats if (r.is_method or (r.is_reference and r.policy == comparison.method)) and r.value is not None
    ]
    if ours and comparison.axis == "delta":
        ref = next((r for r in stats if r.is_reference), None)
        # The 95% t-interval of the mean over seeds, clipped (ArmStats.final_ci): no accuracy lies outside [0, 100].
        ax = plot_final_vs_delta(
            [r.value for r in ours if r.value is not None],
            [100 * r.final.mean for r in ours],
            [100 * r.final_ci.low for r in ours],
            [100 * r.final_ci.high for r in ours],
            baseline=100 * ref.final.mean if ref else None,
            title=group.title,
            ylabel=f"final test {name} accuracy (%)",
        )
        paths.append(save_figure(ax, out_dir / f"{group.slug}_final_vs_delta.png"))
    visits = {}
    for arm in group.arms:
        # Sorted per seed before averaging: with a shuffled partition, batch i differs between seeds.
        per_seed = [sorted(run.summary["batch_visits"]) for run in arm.runs.values()]
        visits[arm.label] = [sum(v) / len(per_seed) for v in zip(*per_seed, strict=True)]
    paths.append(
        save_figure(
            plot_batch_visits(visits, title=f"{group.title}: selection"), out_dir / f"{group.slug}_batch_visits.png"
        )
    )
    return paths


def frontier_lines(fronts: dict[str, Frontier]) -> dict[str, tuple[list[float], ...]]:
    """What plot_frontier draws of uniform's frontier, per cost: (budgets, costs, means %, lows %, highs %)."""
    return {
        column: (
            [p.budget for p in f.points],
            [p.cost for p in f.points],
            [100 * p.acc.mean for p in f.points],
            [100 * p.acc.low for p in f.points],
            [100 * p.acc.high for p in f.points],
        )
        for column, f in fronts.items()
    }


def frontier_points(stats: list[ArmStats]) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """What plot_frontier draws of every other arm: per cost, (its mean cost, final accuracy %, the clipped 95%
    interval's ends %)."""
    return {
        r.arm: {
            c: (p.cost, 100 * r.final_ci.mean, 100 * r.final_ci.low, 100 * r.final_ci.high)
            for c, p in r.vs_frontier.items()
        }
        for r in stats
        if r.vs_frontier
    }


def draw_frontier(group: Group, stats: list[ArmStats], out_dir: Path) -> Path | None:
    """Accuracy against cost with uniform's frontier (``plot_frontier``); None when the group has no frontier."""
    fronts = frontiers(group, stats[0].metric) if stats else {}
    if not fronts:
        return None
    ax = plot_frontier(
        frontier_lines(fronts),
        frontier_points(stats),
        title=f"{group.title}: uniform's frontier",
        ylabel=f"final test {stats[0].metric_name} accuracy (%)",
    )
    return save_figure(ax, out_dir / f"{group.slug}_frontier.png")


def draw_cost_plots(group: Group, stats: list[ArmStats], out_dir: Path) -> list[Path]:
    """Test accuracy against cumulative back-propagated samples and training seconds, the forest plot of every
    arm's paired difference to `uniform` (with a `uniform` arm), and the final accuracy against total cost (the
    speed-accuracy front); returns the PNGs (``draw_frontier`` draws uniform's frontier)."""
    paths = []
    metric, what = (stats[0].metric, stats[0].metric_name) if stats else ("acc", "top-1")
    for column, xlabel, name in (
        ("samples_backprop", "cumulative samples back-propagated", "vs_samples"),
        ("train_seconds", "cumulative training seconds", "vs_seconds"),
    ):
        curves = {arm.label: _cost_band(list(arm.runs.values()), column, metric) for arm in group.arms}
        ax = plot_cost_curves(curves, xlabel=xlabel, title=group.title, ylabel=f"test {what} accuracy (%)")
        paths.append(save_figure(ax, out_dir / f"{group.slug}_accuracy_{name}.png"))
    if differences := forest_points(stats):
        ax = plot_forest(
            differences, "uniform", title=f"{group.title}: paired difference to uniform", what=f"final test {what}"
        )
        paths.append(save_figure(ax, out_dir / f"{group.slug}_forest.png"))
    points = {
        r.arm: (
            r.cost.samples_backpropagated,
            r.cost.train_seconds,
            100 * r.final.mean,
            100 * r.final_ci.low,
            100 * r.final_ci.high,
        )
        for r in stats
    }
    paths.append(
        save_figure(
            plot_front(points, title=f"{group.title}: speed-accuracy front", ylabel=f"final test {what} accuracy (%)"),
            out_dir / f"{group.slug}_front.png",
        )
    )
    return paths
