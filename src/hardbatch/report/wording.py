"""How reports word numbers, intervals and verdicts: the one home of "+0.96 ±1.96 [-1.00, +2.92]", "(no CI: 2 pairs,
needs 3)" and "no measurable difference (detectable: ±2.58)", used by report.md, the claims and the evidence page."""

from __future__ import annotations

import math

from hardbatch.metrics import MIN_PAIRS, Interval

DASH = "—"  # a number that was not measured
NO_BASELINE = "no baseline"  # a difference to an arm that was not run
HIGHER, LOWER = "**higher**", "**lower**"
IDENTICAL = "identical in every seed (the same training)"
UNDECIDED = "undecided (no interval)"


def number(value: float | None, digits: int = 2, scale: float = 1.0, signed: bool = False) -> str:
    """``value`` x ``scale`` to ``digits`` decimals ("+" first when ``signed``); DASH for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value * scale:+.{digits}f}" if signed else f"{value * scale:.{digits}f}"


def no_interval_reason(interval: Interval, of: str = "pair") -> str:
    """ "" for a usable interval, else why there is none: too few values ("no CI: 2 pairs, needs 3"; ``of`` names
    them), or all of them equal ("no CI: zero spread")."""
    if interval.has_interval:
        return ""
    if interval.n < MIN_PAIRS:
        return f"no CI: {interval.n} {of}{'s' if interval.n != 1 else ''}, needs {MIN_PAIRS}"
    return "no CI: zero spread"


def difference(d: Interval, scale: float = 1.0) -> str:
    """A seed-paired difference with its interval: "+1.23 ±1.33 [-0.10, +2.56]" (its t interval is symmetric, so the
    half-width says how sure it is); "+1.23 (no CI: 2 pairs, needs 3)" or "+1.23 (no CI: zero spread)" without an
    interval; NO_BASELINE when there are no pairs (the other arm was not run)."""
    if d.n == 0:
        return NO_BASELINE
    reason = no_interval_reason(d)
    if reason:
        return f"{number(d.mean, scale=scale, signed=True)} ({reason})"
    return (
        f"{number(d.mean, scale=scale, signed=True)} ±{number(d.half_width, scale=scale)} "
        f"[{number(d.low, scale=scale, signed=True)}, {number(d.high, scale=scale, signed=True)}]"
    )


def level(i: Interval, scale: float = 100.0) -> str:
    """A level with its interval (clipped, so no half-width): "91.20 [90.10, 92.30]"; "91.20 (no CI: 2 seeds,
    needs 3)" without one."""
    reason = no_interval_reason(i, of="seed")
    if reason:
        return f"{number(i.mean, scale=scale)} ({reason})"
    return f"{number(i.mean, scale=scale)} [{number(i.low, scale=scale)}, {number(i.high, scale=scale)}]"


def mean_std(mean: float, std: float, scale: float = 100.0) -> str:
    """ "mean ± std" (in % by default), or DASH for runs that did not record the number."""
    return DASH if math.isnan(mean) else f"{number(mean, scale=scale)} ± {number(std, scale=scale)}"


def verdict(d: Interval) -> str:
    """What a difference says: HIGHER or LOWER when its interval excludes 0, otherwise "no measurable difference
    (detectable: ±x)" with the smallest difference it could have shown; without an interval, IDENTICAL when every
    seed pair differs by exactly 0 (an arm that trained what its reference trained: cyclic at δ = 1/2 is δ = 1's
    order, a peer that never pruned is uniform), else UNDECIDED."""
    if not d.has_interval:
        return IDENTICAL if d.n >= MIN_PAIRS and d.mean == 0 else UNDECIDED  # n >= MIN_PAIRS: zero spread
    if d.low > 0:
        return HIGHER
    if d.high < 0:
        return LOWER
    return f"no measurable difference (detectable: ±{number(d.detectable)})"


ABOVE, BELOW = "**above the frontier**", "**below the frontier**"
OUTSIDE = "outside the frontier"
ON_FRONTIER = "on the frontier in every seed (the same training)"


def frontier_verdict(d: Interval, inside: bool = True) -> str:
    """Where an arm lies against uniform's compute frontier: OUTSIDE where its cost is beyond the frontier's budgets
    (no extrapolation, no verdict); ABOVE or BELOW when the interval of its seed-paired difference to the frontier
    excludes 0; otherwise "level with the frontier (detectable: ±x)"; without an interval, as ``verdict`` says."""
    if not inside:
        return OUTSIDE
    if not d.has_interval:
        return ON_FRONTIER if d.n >= MIN_PAIRS and d.mean == 0 else UNDECIDED
    if d.low > 0:
        return ABOVE
    if d.high < 0:
        return BELOW
    return f"level with the frontier (detectable: ±{number(d.detectable)})"


def budgets_text(budgets: list[float]) -> str:
    """ "budget 0.5", "budgets 0.25 and 0.5", "no budget"."""
    if not budgets:
        return "no budget"
    shown = [f"{b:g}" for b in budgets]
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    return f"budget{'s' if len(shown) > 1 else ''} {listed}"


def fewer_epochs_answer(rule: str, above: dict[str, list[float]]) -> str:
    """The answer to "does the rule generalize in fewer epochs?" in one sentence: at which budgets ``rule`` (its
    label) is above uniform's frontier, per cost (``above``: cost name -> budgets)."""
    if not any(above.values()):
        return f"At no budget is the rule ({rule}) above uniform's frontier, in {' or in '.join(above)}."
    parts = [f"at {budgets_text(budgets)} in {cost}" for cost, budgets in above.items()]
    return f"The rule ({rule}) is above uniform's frontier " + (", and ".join(parts)) + "."
