"""InfoBatch's annealing weights as the authors' code leaves them (``keep_weights_in_anneal``)."""

from __future__ import annotations

import pytest
import torch

import hardbatch
from hardbatch.policies import InfoBatch


def _weighted_in_annealing_epochs(epochs: int, keep: bool) -> list[int]:
    """How many samples each annealing epoch weights above 1, for a run of ``epochs`` on scripted random losses."""
    sampler = hardbatch.HardBatchSampler(1000, 10, epochs=epochs, policy=InfoBatch(keep_weights_in_anneal=keep))
    losses = torch.Generator().manual_seed(0)
    counts = []
    while not sampler.done:
        for indices in sampler:
            sampler.record(torch.tensor(1.0), torch.rand(len(indices), generator=losses))
        if sampler.policy.round >= sampler.policy.pruning_epochs:
            counts.append(int((sampler._round.weights > 1).sum()))
    return counts


@pytest.mark.parametrize("epochs, weighted", [(8, False), (15, True), (16, False), (10, True)])
def test_the_authors_weights_stay_on_in_annealing_only_when_e_times_delta_is_not_whole(epochs, weighted):
    # δ = 1 - anneal = 0.875: E·δ = 7 and 14 are whole (their epoch counter hits it and resets the weights), 13.125
    # and 8.75 are not (the weights of the last pruning epoch stay on in every annealing epoch).
    kept = _weighted_in_annealing_epochs(epochs, keep=True)
    assert len(kept) == epochs - InfoBatch().bind(10, epochs=epochs).pruning_epochs
    assert all(count > 0 for count in kept) if weighted else kept == [0] * len(kept)
    assert _weighted_in_annealing_epochs(epochs, keep=False) == [0] * len(kept)  # the method: weight 1
