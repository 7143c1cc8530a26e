"""hardbatch.metrics: epochs to a target, the Student-t intervals (scipy's) and the power of a comparison, checked
against hand computations; a leaf that imports scipy only where an interval is computed."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest

import hardbatch.metrics
from hardbatch.metrics import (
    Interval,
    cumulative,
    detectable_difference,
    epochs_to_plateau,
    epochs_to_target,
    line_weights,
    mean_interval,
    mean_std,
    paired_difference,
    seeds_for_half_width,
    value_at_budget,
)

# Student-t quantiles t(q, df), written out so the intervals and power figures are checked against a hand computation.
T975 = {
    2: 4.302652729911275,
    4: 2.7764451051977987,
    5: 2.5705818356363146,
    6: 2.4469118511449692,
    7: 2.3646242510102993,
    23: 2.0686576104190406,
    24: 2.0638985616280205,
}
T80 = {2: 1.0606601717798212, 4: 0.9409645131325547}


def test_epochs_to_target_edge_cases():
    assert epochs_to_target([0.1, 0.5, 0.5, 0.9], 0.5) == 2  # >= is enough
    assert epochs_to_target([0.9, 0.1], 0.5) == 1  # 1-based
    assert epochs_to_target([0.1, 0.4], 0.5) is None  # never reached
    assert epochs_to_target([], 0.5) is None
    assert epochs_to_target([0.3, 0.1 + 0.2], 0.3) == 1  # float noise at the boundary does not count as missing it


def test_epochs_to_plateau_edge_cases():
    assert epochs_to_plateau([]) is None
    assert epochs_to_plateau([0.7]) == 1
    assert epochs_to_plateau([0.5, 0.895, 0.9, 0.7]) == 2  # within 1 point of the best, later drop irrelevant
    assert epochs_to_plateau([0.5, 0.88, 0.9]) == 3
    assert epochs_to_plateau([0.5, 0.89, 0.9]) == 2  # exactly 1 point below counts as within
    assert epochs_to_plateau([0.5, 0.86, 0.9], points=0.05) == 2


def test_mean_interval_is_the_student_t_interval_of_the_mean():
    ci = mean_interval([0.90, 0.905, 0.91])
    half = T975[2] * 0.005 / math.sqrt(3)
    assert (ci.mean, ci.n) == (pytest.approx(0.905), 3)
    assert (ci.low, ci.high) == (pytest.approx(0.905 - half), pytest.approx(0.905 + half))
    assert ci.half_width == pytest.approx(half) and ci.has_interval
    assert ci.scaled(100) == Interval(pytest.approx(90.5), pytest.approx(100 * ci.low), pytest.approx(100 * ci.high), 3)
    assert mean_interval([0.9, 0.91], confidence=0.95).n == 2 and not mean_interval([0.9, 0.91]).has_interval


def test_paired_difference_hand_computation():
    d = paired_difference([0.11, 0.22, 0.33], [0.10, 0.20, 0.30])
    half = T975[2] * 0.01 / math.sqrt(3)
    assert d.n == 3
    assert d.mean == pytest.approx(0.02)
    assert (d.low, d.high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    # Method minus reference: the sign flips with the order.
    assert paired_difference([0.10, 0.20, 0.30], [0.11, 0.22, 0.33]).mean == pytest.approx(-0.02)
    # Equal differences have zero spread: no interval, whatever the count (a zero-width "CI" is no evidence).
    same = paired_difference([0.5, 0.6], [0.4, 0.5])
    assert same.mean == pytest.approx(0.1) and math.isnan(same.low) and math.isnan(same.high)
    flat = paired_difference([0.5, 0.6, 0.7, 0.8], [0.4, 0.5, 0.6, 0.7])
    assert flat.n == 4 and not flat.has_interval and math.isnan(flat.half_width) and math.isnan(flat.detectable)


def test_paired_difference_edge_cases():
    empty = paired_difference([], [])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.low) and math.isnan(empty.high)
    assert empty == Interval()  # "nothing to compare" is the empty interval
    one = paired_difference([0.7], [0.5])
    assert one.n == 1 and one.mean == pytest.approx(0.2) and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])


def test_mean_std_edge_cases():
    m, s = mean_std([])
    assert math.isnan(m) and math.isnan(s)
    assert mean_std([0.4]) == (0.4, 0.0)
    assert mean_std([1.0, 2.0, 3.0]) == (pytest.approx(2.0), pytest.approx(1.0))  # sample (n - 1) std
    assert mean_std([1.0, None, math.nan, 3.0]) == (pytest.approx(2.0), pytest.approx(math.sqrt(2)))
    m, s = mean_std([None, math.nan])
    assert math.isnan(m) and math.isnan(s)


def test_detectable_difference_is_the_minimum_detectable_effect_at_80_percent_power():
    diffs = [1.0, 2.0, 3.0, 4.0, 6.0]  # mean 3.2, sd sqrt(3.7)
    d = mean_interval(diffs)
    se = math.sqrt(3.7) / math.sqrt(5)
    assert d.half_width == pytest.approx(T975[4] * se)
    assert d.detectable == pytest.approx((T975[4] + T80[4]) * se)
    assert detectable_difference(d.half_width, 5, power=0.8) == pytest.approx(3.1978, abs=1e-4)
    assert math.isnan(detectable_difference(math.nan, 5))
    assert math.isnan(paired_difference([1.0, 2.0], [0.0, 0.0]).detectable)  # 2 pairs: no interval


def test_seeds_for_half_width_keeps_the_spread_and_solves_for_n():
    # half-width 1 over 8 seeds: sd = sqrt(8) / t(7); 25 seeds give t(24) sd / 5 <= 0.5, 24 do not.
    sd = math.sqrt(8) / T975[7]
    assert T975[24] * sd / 5 <= 0.5 < T975[23] * sd / math.sqrt(24)
    assert seeds_for_half_width(1.0, 8, 0.5) == 25
    # already narrower: fewer would do, but not as few as the spread alone says (t grows as n shrinks)
    sd = 0.4 * math.sqrt(8) / T975[7]
    assert T975[6] * sd / math.sqrt(7) <= 0.5 < T975[5] * sd / math.sqrt(6)
    assert seeds_for_half_width(0.4, 8, 0.5) == 7
    assert seeds_for_half_width(0.01, 8, 0.5) == 3  # never fewer than an interval needs
    assert seeds_for_half_width(math.nan, 8, 0.5) is None
    assert seeds_for_half_width(100.0, 3, 0.01, most=50) is None  # more than `most` would be needed


def test_cost_at_a_budget_is_the_last_evaluation_within_it():
    history = [{"samples_backprop": 100}, {"samples_backprop": 100}, {"samples_backprop": 50}]
    costs = cumulative(history, "samples_backprop")
    assert costs == [100, 200, 250]
    assert value_at_budget(costs, [0.5, 0.6, 0.7], 200) == 0.6  # no interpolation toward 250
    assert math.isnan(value_at_budget(costs, [0.5, 0.6, 0.7], 99))


def test_metrics_is_a_leaf_that_needs_scipy_only_for_intervals():
    tree = ast.parse(Path(hardbatch.metrics.__file__).read_text())
    modules = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert not [m for m in modules if m.split(".")[0] == "hardbatch"]
    # Without scipy (the core install), everything but a t interval or quantile works.
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from hardbatch.metrics import epochs_to_target, mean_interval, mean_std\n"
        "assert epochs_to_target([0.1, 0.9], 0.5) == 2 and mean_std([1.0, 3.0])[0] == 2.0\n"
        "assert not mean_interval([1.0, 2.0]).has_interval\n"
        "try:\n    mean_interval([1.0, 2.0, 4.0])\nexcept ImportError:\n    print('needs scipy')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "needs scipy\n", done.stderr


def test_line_weights_are_the_straight_line_between_neighbours_and_never_extrapolate():
    xs = [1.0, 2.0, 4.0]
    assert line_weights(xs, 3.0) == [(1, 0.5), (2, 0.5)]
    assert line_weights(xs, 1.25) == [(0, 0.75), (1, 0.25)]
    assert line_weights(xs, 2.0) == [(1, 1.0)] and line_weights(xs, 4.0 * (1 + 1e-12)) == [(2, 1.0)]  # a point itself
    assert line_weights(xs, 0.99) is None and line_weights(xs, 4.01) is None and line_weights([], 1.0) is None
    ys = [10.0, 20.0, 0.0]
    assert sum(w * ys[i] for i, w in line_weights(xs, 3.5)) == pytest.approx(5.0)  # 20 + 0.75 x (0 - 20)
