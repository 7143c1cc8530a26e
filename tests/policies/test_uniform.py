"""Ordinary SGD as practitioners run it, ``hardbatch.policies.Uniform``: every round (an epoch) a fresh seeded
permutation of the samples cut into N batches of B, the remainder dropped, whatever the losses."""

from __future__ import annotations

import pytest
import torch
from conftest import drive, scripted

from hardbatch.functional import generator_for
from hardbatch.sampler import HardBatchSampler


@pytest.mark.parametrize("n, batch_size", [(12, 3), (14, 3), (9, 1)])
def test_uniform_is_a_fresh_seeded_permutation_cut_into_n_batches_every_round(n, batch_size):
    sampler = HardBatchSampler(n, batch_size, epochs=4, policy="uniform", seed=6)
    log = drive(sampler, scripted(0))
    n_batches = n // batch_size
    generator = generator_for(6, "policy")
    cuts = []
    for r in range(4):
        steps = [s for s in log if s.round == r]
        assert [s.batch for s in steps] == list(range(n_batches)) and all(s.kind == "train" for s in steps)
        flat = [i for s in steps for i in s.samples]
        assert len(flat) == len(set(flat)) == n_batches * batch_size  # each sample at most once per round
        expected = torch.randperm(n, generator=generator)[: n_batches * batch_size].view(n_batches, batch_size)
        assert [s.samples for s in steps] == expected.tolist()
        cuts.append(flat)
    assert len({tuple(c) for c in cuts}) == 4
    assert sampler.steps == 4 * n_batches and sampler.epoch == 4
    # The losses change nothing.
    assert [
        s.samples for s in drive(HardBatchSampler(n, batch_size, epochs=4, policy="uniform", seed=6), scripted(9))
    ] == [s.samples for s in log]
