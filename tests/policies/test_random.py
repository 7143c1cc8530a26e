"""The control for the loss signal, ``hardbatch.policies.Random``: the paper's warm-up and k = ⌊δ·N⌋ batches per
round, drawn at random (seeded) and trained in index order, whatever the losses."""

from __future__ import annotations

import pytest
from conftest import drive, rounds_of, scripted

from hardbatch.errors import BadValue
from hardbatch.policies import Random
from hardbatch.sampler import HardBatchSampler


def random_rounds(seed: int, losses, n=20, delta=0.25, epochs=5) -> list[list[int]]:
    sampler = HardBatchSampler(n, 1, delta=delta, epochs=epochs, policy="random", seed=seed)
    assert isinstance(sampler.policy, Random)
    return rounds_of(drive(sampler, losses))


def test_random_policy_warms_up_then_trains_k_random_batches_in_index_order():
    rounds = random_rounds(0, scripted(1))
    assert rounds[0] == list(range(20))
    assert len(rounds) == 1 + 16  # (100 - 20) steps / 5 per round
    for chosen in rounds[1:]:
        assert len(chosen) == 5
        assert chosen == sorted(set(chosen))
        assert all(0 <= b < 20 for b in chosen)
    assert len({tuple(c) for c in rounds[1:]}) > 1  # not the same subset every round


def test_random_policy_ignores_losses_and_is_reproducible_per_seed():
    a = random_rounds(0, scripted(1))
    assert random_rounds(0, scripted(2)) == a  # the choice does not depend on losses
    assert random_rounds(0, scripted(1)) == a
    assert random_rounds(1, scripted(1)) != a
    # The high-loss rule on the same losses chooses differently.
    high = rounds_of(drive(HardBatchSampler(20, 1, delta=0.25, epochs=5), scripted(1)))
    assert high[0] == a[0] and high[1:] != a[1:]


def test_random_policy_with_delta_one_is_index_order_as_the_rule_at_delta_one():
    assert random_rounds(3, scripted(0), n=6, delta=1.0, epochs=3) == [list(range(6))] * 3

    def samples(policy):
        sampler = HardBatchSampler(12, 1, delta=1.0, epochs=4, policy=policy, seed=3)
        return [rec.samples for rec in drive(sampler, scripted(5))]

    assert samples("random") == samples("hardbatch")  # why compare runs the control once at δ = 1


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.0001, float("nan")])
def test_delta_outside_unit_interval_is_refused(delta):
    with pytest.raises(BadValue, match=r"^Random: delta must be in \(0, 1\], got "):
        Random(delta=delta)
