"""Numbers derived from saved curves and seeds: epochs to a target, 95% intervals, the power of a comparison.

Pure functions of floats that import nothing of hardbatch; the Student-t intervals and quantiles come from
scipy (the ``cli`` extra), imported where one is needed, so the core install runs without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PLATEAU_POINTS = 0.01  # "within 1 percentage point of the run's own best"


def epochs_to_target(accuracies: Sequence[float], target: float) -> int | None:
    """First epoch (1-based) whose accuracy is >= ``target``; None if never reached."""
    for epoch, acc in enumerate(accuracies, start=1):
        if acc >= target - 1e-12:
            return epoch
    return None


def epochs_to_plateau(accuracies: Sequence[float], points: float = PLATEAU_POINTS) -> int | None:
    """First epoch (1-based) within ``points`` (a fraction: 0.01 = 1 pp) of the run's own best accuracy."""
    if not accuracies:
        return None
    return epochs_to_target(accuracies, max(accuracies) - points)


MIN_PAIRS = 3  # fewer values than this give no interval: a t-interval over 2 pairs is too wide to use, or empty
POWER = 0.8  # the power at which reports state the smallest difference a comparison could have detected


@dataclass
class Interval:
    """A mean with its two-sided 95% t interval (of values, or of paired differences method - reference).

    ``low``/``high`` are NaN when there is no interval: fewer than MIN_PAIRS values, or all equal (zero spread,
    which is no evidence of precision). ``n`` = 0: nothing to compare (the other arm was not run).
    """

    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n: int = 0

    @property
    def has_interval(self) -> bool:
        return has_interval(self.low, self.high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2 if self.has_interval else math.nan

    @property
    def detectable(self) -> float:
        """The smallest difference this comparison could have detected (``detectable_difference``); NaN without
        an interval."""
        return detectable_difference(self.half_width, self.n)

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (fractions x 100 = percentage points)."""
        return Interval(factor * self.mean, factor * self.low, factor * self.high, self.n)


def has_interval(low: float, high: float) -> bool:
    """Whether (low, high) is a usable interval: both ends finite (reports store NaN for "no interval")."""
    return math.isfinite(low) and math.isfinite(high)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with a two-sided Student-t interval (``scipy.stats.t.interval``); no interval (NaN ends)
    for fewer than MIN_PAIRS values or for values that are all equal."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(values) / n
    if n < MIN_PAIRS:
        return Interval(mean, math.nan, math.nan, n)
    from scipy import stats

    sem = float(stats.sem(values))
    if not sem * math.sqrt(n) > 1e-12 * max(1.0, abs(mean)):  # zero spread (up to rounding): no evidence
        return Interval(mean, math.nan, math.nan, n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n)


def paired_difference(method: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> Interval:
    """Differences paired by position (by seed); no interval (NaN ends) as ``mean_interval`` says."""
    if len(method) != len(reference):
        raise ValueError("paired values need equal lengths")
    return mean_interval([m - r for m, r in zip(method, reference, strict=True)], confidence)


def _t(quantile: float, df: Any) -> Any:
    """Student-t quantile(s) with ``df`` degrees of freedom (scipy, imported when first needed)."""
    from scipy import stats

    return stats.t.ppf(quantile, df)


def detectable_difference(half_width: float, n: int, power: float = POWER, confidence: float = 0.95) -> float:
    """The minimum detectable effect of a mean (or seed-paired difference) over ``n`` values whose two-sided
    ``confidence`` t interval has ``half_width``: (t_{(1+c)/2, n-1} + t_{power, n-1}) x SE, with the standard error
    SE = half_width / t_{(1+c)/2, n-1}. A true difference this large is detected (its interval excludes 0) with
    about ``power`` probability; NaN where there is no interval (NaN half-width, fewer than 2 values)."""
    if not (n >= 2 and math.isfinite(half_width)):
        return math.nan
    crit = float(_t(0.5 + confidence / 2, n - 1))
    return (crit + float(_t(power, n - 1))) * half_width / crit


def seeds_for_half_width(
    half_width: float, n: int, target: float, confidence: float = 0.95, most: int = 10_000
) -> int | None:
    """How many values (at least MIN_PAIRS) would bring a ``confidence`` t interval that has ``half_width`` over ``n``
    values down to ``target``, at the same spread: the standard deviation sd = half_width x sqrt(n) / t_{(1+c)/2, n-1},
    then the fewest m with t_{(1+c)/2, m-1} x sd / sqrt(m) <= target. None without an interval (NaN half-width, n < 2)
    or if more than ``most`` would be needed."""
    if not (n >= 2 and math.isfinite(half_width) and target > 0):
        return None
    import numpy as np

    q = 0.5 + confidence / 2
    sd = half_width * math.sqrt(n) / float(_t(q, n - 1))
    m = np.arange(MIN_PAIRS, most + 1)
    reached = np.flatnonzero(_t(q, m - 1) * sd / np.sqrt(m) <= target)
    return int(m[reached[0]]) if len(reached) else None


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation of the values that are set and not NaN (0 for a single one; NaN for
    none)."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return math.nan, math.nan
    mean = sum(kept) / len(kept)
    if len(kept) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))


def cumulative(history: list[dict], column: str) -> list[float]:
    """The running total of a per-epoch column (cost at the end of each epoch)."""
    out, total = [], 0.0
    for row in history:
        total += row.get(column, math.nan)
        out.append(total)
    return out


def value_at_budget(costs: Sequence[float], values: Sequence[float], budget: float) -> float:
    """``values`` at the last evaluation whose cumulative cost is within ``budget`` (NaN if none is).

    ``costs``: the cumulative cost at the end of each epoch, ascending. This is what the run had reached
    had it been stopped once the budget was spent: no interpolation between evaluations.
    """
    reached = [v for c, v in zip(costs, values, strict=True) if c <= budget * (1 + 1e-9)]
    return reached[-1] if reached else math.nan


def line_weights(xs: Sequence[float], x: float, tolerance: float = 1e-9) -> list[tuple[int, float]] | None:
    """Where ``x`` falls on the straight line between neighbouring points of ascending ``xs``: [(i, 1 - w), (i + 1,
    w)] with w = (x - xs[i]) / (xs[i + 1] - xs[i]), or [(i, 1.0)] where ``x`` is one of ``xs`` (within a relative
    ``tolerance``); None outside [xs[0], xs[-1]] (no extrapolation). A value y(x) on the line is then
    sum(weight x ys[index]), and the same weights interpolate any other series measured at ``xs``."""
    if not xs or not (xs[0] * (1 - tolerance) <= x <= xs[-1] * (1 + tolerance)):
        return None
    for i, xi in enumerate(xs):
        if abs(x - xi) <= tolerance * max(abs(xi), 1e-300):
            return [(i, 1.0)]
    i = max(j for j in range(len(xs) - 1) if xs[j] < x)
    w = (x - xs[i]) / (xs[i + 1] - xs[i])
    return [(i, 1.0 - w), (i + 1, w)]
