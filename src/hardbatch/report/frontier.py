"""Uniform training's compute frontier: its runs at several budgets (each its schedule decayed within its own budget)
as accuracy against cost, and where another arm lies against it at the cost that arm spent."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hardbatch.metrics import Interval, line_weights, mean_interval, mean_std
from hardbatch.report.groups import Arm, Group

FRONTIER_POLICY = "uniform"  # ordinary reshuffled SGD: the training every other arm must beat at equal compute
# The costs the frontier is drawn in: summary.json's cost total -> how tables name it.
FRONTIER_COSTS = {"samples_backprop": "samples back-propagated", "cpu_seconds": "CPU seconds"}


def mean_cost(arm: Arm, column: str) -> float:
    """The arm's total ``column`` (summary.json's ``cost``), mean over its runs."""
    return mean_std([run.summary["cost"][column] for run in arm.runs.values()])[0]


def clipped(values: list[float]) -> Interval:
    """The 95% t interval of the mean of accuracies, clipped to [0, 1] (no accuracy lies outside)."""
    ci = mean_interval(values)
    return Interval(ci.mean, max(0.0, ci.low), min(1.0, ci.high), ci.n) if ci.has_interval else ci


@dataclass(frozen=True)
class Point:
    """One budget of the frontier: uniform's runs at that fraction of the epochs."""

    budget: float
    epochs: int  # the epochs its runs trained
    cost: float  # mean over seeds
    acc: Interval  # mean final accuracy (fraction) with its clipped 95% t interval over seeds
    finals: dict[int, float] = field(repr=False)  # final accuracy by seed


@dataclass(frozen=True)
class Placement:
    """An arm against the frontier at the cost it spent (its mean over seeds).

    ``d``: the seed-paired difference arm − frontier in points (n = 0 where the cost lies outside the frontier);
    ``line``: the frontier's mean accuracy at that cost (NaN outside); ``between``: the budgets it lies between.
    """

    cost: float
    inside: bool
    line: float = math.nan
    d: Interval = field(default_factory=Interval)
    between: tuple[float, ...] = ()


@dataclass(frozen=True)
class Frontier:
    """Uniform's budgets in one cost, ascending in cost; between two neighbouring budgets a straight line in cost,
    none beyond the smallest and largest."""

    column: str
    points: tuple[Point, ...]

    def place(self, finals: dict[int, float], cost: float) -> Placement:
        """Where an arm with these final accuracies (by seed) lies at ``cost``: per seed s, the frontier of seed s
        is the same straight line through uniform's seed-s runs at the two neighbouring budgets (the weights of the
        mean costs, the same for every seed), and d_s = arm_s − frontier_s; the mean of d with its 95% t interval
        over the seeds the arm and those budgets share."""
        weights = line_weights([p.cost for p in self.points], cost)
        if weights is None:
            return Placement(cost, inside=False)
        used = [(self.points[i], w) for i, w in weights]
        seeds = sorted(set(finals).intersection(*(p.finals for p, _ in used)))
        diffs = [finals[s] - sum(w * p.finals[s] for p, w in used) for s in seeds]
        return Placement(
            cost,
            True,
            sum(w * p.acc.mean for p, w in used),
            mean_interval(diffs).scaled(100),
            tuple(p.budget for p, _ in used),
        )


def frontier_arms(group: Group) -> list[Arm]:
    """Uniform's arms (at its defaults), one per budget, when the group holds two budgets or more; else none."""
    arms = [a for a in group.arms if a.policy == FRONTIER_POLICY and not a.params]
    return sorted(arms, key=lambda a: a.budget) if len(arms) >= 2 else []


def frontiers(group: Group, metric: str = "acc") -> dict[str, Frontier]:
    """The group's frontier in each of FRONTIER_COSTS (judged on ``metric``); empty without two budgets of uniform."""
    arms = frontier_arms(group)
    result = {}
    for column in FRONTIER_COSTS if arms else ():
        points = [
            Point(
                a.budget,
                max(r.config.trained_epochs for r in a.runs.values()),
                mean_cost(a, column),
                clipped(list(a.finals(metric).values())),
                a.finals(metric),
            )
            for a in arms
        ]
        result[column] = Frontier(column, tuple(sorted(points, key=lambda p: (p.cost, p.budget))))
    return result


def placements(group: Group, arm: Arm, fronts: dict[str, Frontier], metric: str = "acc") -> dict[str, Placement]:
    """``arm`` against each frontier; empty for uniform's own arms (they are the frontier)."""
    if any(arm is a for a in frontier_arms(group)):
        return {}
    return {column: f.place(arm.finals(metric), mean_cost(arm, column)) for column, f in fronts.items()}
