"""report.wording: the one wording of a difference with its interval, a level with its interval, and a verdict."""

from __future__ import annotations

import math

from hardbatch.metrics import Interval, mean_interval, paired_difference
from hardbatch.report.wording import (
    ABOVE,
    BELOW,
    HIGHER,
    IDENTICAL,
    LOWER,
    NO_BASELINE,
    ON_FRONTIER,
    OUTSIDE,
    UNDECIDED,
    budgets_text,
    difference,
    fewer_epochs_answer,
    frontier_verdict,
    level,
    no_interval_reason,
    number,
    verdict,
)


def test_a_difference_with_its_half_width_and_ends():
    assert difference(Interval(0.96, -1.0, 2.92, 5)) == "+0.96 ±1.96 [-1.00, +2.92]"
    assert difference(Interval(0.0123, -0.001, 0.0256, 3), scale=100) == "+1.23 ±1.33 [-0.10, +2.56]"
    assert difference(Interval(1.234, math.nan, math.nan, 2)) == "+1.23 (no CI: 2 pairs, needs 3)"
    assert difference(Interval(-2.5, math.nan, math.nan, 4)) == "-2.50 (no CI: zero spread)"
    assert difference(Interval()) == NO_BASELINE  # no pairs: the other arm was not run


def test_why_there_is_no_interval():
    assert no_interval_reason(mean_interval([1.0, 2.0, 4.0])) == ""
    assert no_interval_reason(paired_difference([0.5, 0.6], [0.4, 0.4])) == "no CI: 2 pairs, needs 3"
    assert no_interval_reason(Interval(0.5, math.nan, math.nan, 1)) == "no CI: 1 pair, needs 3"
    flat = paired_difference([0.5, 0.6, 0.7, 0.8], [0.4, 0.5, 0.6, 0.7])  # equal differences: zero spread
    assert flat.n == 4 and no_interval_reason(flat) == "no CI: zero spread"


def test_a_level_with_its_interval():
    assert level(Interval(0.912, 0.901, 0.923, 3)) == "91.20 [90.10, 92.30]"
    assert level(Interval(0.912, math.nan, math.nan, 2)) == "91.20 (no CI: 2 seeds, needs 3)"
    assert number(math.nan) == number(None) == "—" and number(0.5, 1, 100, signed=True) == "+50.0"


def test_verdict_follows_the_interval_and_names_an_arm_identical_to_its_reference():
    same = paired_difference([0.9, 0.8, 0.85], [0.9, 0.8, 0.85])  # every pair equal: zero spread, no interval
    assert verdict(same.scaled(100)) == IDENTICAL == "identical in every seed (the same training)"
    one = paired_difference([0.9], [0.9])  # one pair: no interval, and nothing to call identical
    assert verdict(one) == UNDECIDED == "undecided (no interval)"
    two = paired_difference([0.9, 0.8], [0.91, 0.79])  # mean 0 over 2 pairs: no spread known, not identical
    assert verdict(two) == UNDECIDED
    lower = paired_difference([0.80, 0.81, 0.79], [0.90, 0.90, 0.91]).scaled(100)
    assert verdict(lower) == LOWER == "**lower**"
    assert verdict(Interval(2.0, 0.5, 3.5, 3)) == HIGHER == "**higher**"
    flat = Interval(0.5, -1.0, 2.0, 3)
    assert verdict(flat) == f"no measurable difference (detectable: ±{flat.detectable:.2f})"


def test_the_frontier_verdict_and_the_fewer_epochs_answer():
    assert frontier_verdict(Interval(1.0, 0.2, 1.8, 5)) == ABOVE == "**above the frontier**"
    assert frontier_verdict(Interval(-1.0, -1.8, -0.2, 5)) == BELOW == "**below the frontier**"
    flat = Interval(0.5, -1.0, 2.0, 3)
    assert frontier_verdict(flat) == f"level with the frontier (detectable: ±{flat.detectable:.2f})"
    assert frontier_verdict(flat, inside=False) == OUTSIDE == "outside the frontier"  # no extrapolation, no verdict
    assert frontier_verdict(Interval(0.0, math.nan, math.nan, 3)) == ON_FRONTIER
    assert frontier_verdict(Interval(0.3, math.nan, math.nan, 2)) == UNDECIDED
    assert budgets_text([]) == "no budget" and budgets_text([0.5]) == "budget 0.5"
    assert budgets_text([0.25, 0.5, 0.75]) == "budgets 0.25, 0.5 and 0.75"
    assert fewer_epochs_answer("δ = 0.5", {"samples back-propagated": [], "CPU seconds": []}) == (
        "At no budget is the rule (δ = 0.5) above uniform's frontier, in samples back-propagated or in CPU seconds."
    )
    assert fewer_epochs_answer("δ = 0.5", {"samples back-propagated": [0.25, 0.5], "CPU seconds": []}) == (
        "The rule (δ = 0.5) is above uniform's frontier at budgets 0.25 and 0.5 in samples back-propagated, and at no "
        "budget in CPU seconds."
    )
