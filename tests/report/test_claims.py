"""report.claims on scripted statistics: each verdict flips where its definition says it should."""

from __future__ import annotations

import math

import pytest

from hardbatch.metrics import Interval
from hardbatch.report.claims import (
    HELD,
    NO_BASELINE,
    NOT_HELD,
    NOT_RUN,
    PARTLY,
    UNDECIDED,
    GroupResult,
    check_claims,
)
from hardbatch.report.stats import ArmStats, Target


def row(delta, diff, low=None, high=None, pairs=3, fewer=10.0, reached=3, n=3, policy="hardbatch"):
    """An arm's statistics with the fields the claims read; diff/low/high in points."""
    reference = policy == "hardbatch" and delta == 1.0
    return ArmStats(
        group="g",
        arm=f"δ = {delta:g}",
        policy=policy,
        axis="delta",
        value=delta,
        delta=delta,
        n=n,
        is_reference=reference,
        is_method=policy == "hardbatch" and not reference,
        vs_reference=Interval(diff, diff - 1 if low is None else low, diff + 1 if high is None else high, pairs),
        relative_pct=diff * 1.5,
        target=Target(fewer_epochs_pct=fewer, reached=reached),
    )


def group(dataset, model, *rows, chosen=None, on="validation"):
    rows = [*rows, row(1.0, 0.0, 0.0, 0.0, fewer=0.0)]
    chosen = chosen if chosen is not None else rows[0]
    return GroupResult(dataset, model, rows, chosen, on)


def claim(results, start):
    return next(c for c in check_claims(results) if c.claim.startswith(start))


def test_accuracy_claim_needs_a_ci_above_zero_in_every_group():
    gain, flat = row(0.5, 2.0, 0.5, 3.5), row(0.5, 2.0, -0.5, 4.5)
    assert claim([group("cifar10", "resnet18", gain)], "Training").verdict == HELD
    assert claim([group("cifar10", "resnet18", gain), group("stl10", "resnet18", flat)], "Training").verdict == PARTLY
    assert claim([group("cifar10", "resnet18", flat)], "Training").verdict == NOT_HELD
    assert claim([], "Training").verdict == NOT_RUN
    one_seed = row(0.5, 2.0, math.nan, math.nan, pairs=1)
    assert claim([group("cifar10", "resnet18", one_seed)], "Training").verdict == UNDECIDED
    # A group without an interval does not count against (or for) the others.
    assert claim([group("cifar10", "resnet18", gain), group("stl10", "resnet18", one_seed)], "Training").verdict == HELD
    zero_width = row(0.5, 2.5, math.nan, math.nan, pairs=3)  # what mean_interval gives equal differences
    assert claim([group("cifar10", "resnet18", zero_width)], "Training").verdict == UNDECIDED
    assert "no CI: zero spread" in claim([group("cifar10", "resnet18", zero_width)], "Training").evidence
    # The evidence quotes the difference as report.md does: half-width and ends.
    assert (
        "Δ +2.00 ±1.50 [+0.50, +3.50] pts, +3.0% relative"
        in claim([group("cifar10", "resnet18", gain)], "Training").evidence
    )


def test_claims_without_a_baseline_say_so():
    claims = check_claims([], missing_baseline=["digits / mlp"])
    assert {c.verdict for c in claims[:3]} == {NO_BASELINE}
    assert all("baseline (the rule at δ = 1) missing in digits / mlp" in c.evidence for c in claims[:3])


def test_convergence_claim_needs_fewer_epochs_with_every_run_reaching_target():
    assert claim([group("cifar10", "resnet18", row(0.5, 0.0, fewer=20.0))], "It speeds").verdict == HELD
    assert claim([group("cifar10", "resnet18", row(0.5, 0.0, fewer=-5.0))], "It speeds").verdict == NOT_HELD
    straggler = row(0.5, 0.0, fewer=20.0, reached=2)
    assert claim([group("cifar10", "resnet18", straggler)], "It speeds").verdict == NOT_HELD


def test_smaller_delta_claim_looks_at_the_smallest_delta():
    similar_fast = row(0.2, -0.5, -1.5, 0.5, fewer=15.0)
    worse = row(0.2, -3.0, -4.0, -2.0, fewer=15.0)
    chosen = row(0.8, 0.1, fewer=5.0)
    assert claim([group("cifar10", "resnet18", similar_fast, chosen, chosen=chosen)], "Smaller").verdict == HELD
    assert claim([group("cifar10", "resnet18", worse, chosen, chosen=chosen)], "Smaller").verdict == NOT_HELD
    assert "δ=0.2" in claim([group("cifar10", "resnet18", worse, chosen, chosen=chosen)], "Smaller").evidence


@pytest.mark.parametrize("fewer, verdict", [(30.0, HELD), (26.47, HELD), (10.0, PARTLY), (-5.0, NOT_HELD)])
def test_stl10_efficientnet_b4_epochs_claim(fewer, verdict):
    result = claim([group("stl10", "efficientnet_b4", row(0.5, 0.0, fewer=fewer))], "EfficientNet-B4")
    assert result.verdict == verdict
    assert "26.47" in result.evidence


def test_stl10_claim_is_not_run_without_those_runs():
    assert claim([group("cifar10", "efficientnet_b4", row(0.5, 0.0))], "EfficientNet-B4").verdict == NOT_RUN


@pytest.mark.parametrize(
    "diff, low, verdict", [(8.0, 6.0, HELD), (2.0, 0.5, PARTLY), (8.0, -1.0, NOT_HELD), (-3.0, -4.0, NOT_HELD)]
)
def test_cifar100_resnet18_gain_claim(diff, low, verdict):
    result = claim([group("cifar100", "resnet18", row(0.5, diff, low, diff + 2))], "ResNet-18 on CIFAR-100")
    assert result.verdict == verdict


def test_released_table_compares_signs_at_the_papers_delta():
    # The released table: ResNet-18 69.6 -> 69.2 at δ 0.5 (worse), ResNet-50 63.1 -> 64.6 at δ 0.5 (better).
    r18 = group("cifar10", "resnet18", row(0.5, -1.0, -1.8, -0.2))
    r50 = group("cifar10", "resnet50", row(0.5, 1.2, 0.3, 2.1))
    assert claim([r18, r50], "The released").verdict == HELD
    r50_flat = group("cifar10", "resnet50", row(0.5, 1.2, -0.3, 2.7))
    assert claim([r18, r50_flat], "The released").verdict == PARTLY
    r50_wrong_delta = group("cifar10", "resnet50", row(0.8, 1.2, 0.3, 2.1))
    result = claim([r18, r50_wrong_delta], "The released")
    assert result.verdict == HELD and "resnet50 δ=0.5: not run" in result.evidence
    assert claim([group("cifar10", "resnet18", row(0.5, 1.0, 0.2, 1.8))], "The released").verdict == NOT_HELD
