"""The null model of stale ranking, ``hardbatch.policies.Cyclic``: after the warm-up, each round the k = ⌊δ·N⌋
batches trained longest ago (ties to the lower index), in index order, whatever the losses and the seed."""

from __future__ import annotations

import pytest
from conftest import drive, rounds_of, scripted, table

from hardbatch.sampler import HardBatchSampler


@pytest.mark.parametrize(
    "n, delta, expected",
    [
        (6, 1 / 3, [[0, 1, 2, 3, 4, 5], [0, 1], [2, 3], [4, 5], [0, 1], [2, 3], [4, 5]]),
        # last trained after round 2: 4 at step 5, 0 at 6 -> [0, 4] in index order; then 1 (7), 2 (8); 3 (9), 0 (10).
        (5, 0.4, [[0, 1, 2, 3, 4], [0, 1], [2, 3], [0, 4], [1, 2], [0, 3]]),
    ],
)
def test_cyclic_trains_the_k_batches_trained_longest_ago_in_index_order(n, delta, expected):
    constant = table({i: [float(i)] * 9 for i in range(n)})
    for seed, losses in ((0, scripted(1)), (5, scripted(2)), (0, constant)):
        sampler = HardBatchSampler(n, 1, delta=delta, epochs=3, policy="cyclic", seed=seed)
        assert rounds_of(drive(sampler, losses)) == expected  # independent of the losses and the seed


def test_cyclic_keeps_when_each_batch_was_trained_last():
    sampler = HardBatchSampler(5, 1, delta=0.4, epochs=2, policy="cyclic")
    drive(sampler, scripted(0))  # the warm-up (steps 1-5), [0, 1] (6, 7), [2, 3] (8, 9), [0] of [0, 4] (10)
    assert sampler.policy.trained_when().tolist() == [10, 7, 8, 9, 5] and sampler.policy.clock == 10


def test_cyclic_at_delta_one_trains_what_the_rule_trains():
    def samples(policy):
        sampler = HardBatchSampler(12, 1, delta=1.0, epochs=4, policy=policy, seed=3)
        return [rec.samples for rec in drive(sampler, scripted(5))]

    assert samples("cyclic") == samples("hardbatch")  # why compare runs the control once at δ = 1
