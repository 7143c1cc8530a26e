"""rho-loss and composer-sb can score as their authors' code does: in training mode, BatchNorm statistics moving."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.policies import ComposerSB, RhoLoss


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                               torch.nn.Linear(8, 3))


def _first_scored_step(policy) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm's running mean before and after the first step that scores (its training step aside)."""
    data = TensorDataset(torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,)))
    sampler = hardbatch.HardBatchSampler(64, 8, epochs=4, policy=policy)
    if sampler.policy.holdout:
        sampler.policy.irreducible = torch.zeros(64)
    model = _net()
    bn = model[2]
    for batch in DataLoader(data, batch_sampler=sampler):
        if sampler.policy.needs_scores(sampler.pending):
            before = bn.running_mean.clone()
            with torch.no_grad():
                hardbatch.step.select(sampler, model, batch)
            return before, bn.running_mean.clone()
        sampler.record(torch.tensor(1.0))
    raise AssertionError("no step scored")


@pytest.mark.parametrize("policy", [lambda **kw: RhoLoss(select_fraction=0.5, **kw), lambda **kw: ComposerSB(start=0.0, **kw)])
def test_the_scoring_forward_moves_batchnorm_only_when_asked(policy):
    before, after = _first_scored_step(policy())
    assert torch.equal(before, after)  # restored: the default
    before, after = _first_scored_step(policy(score_moves_batchnorm=True))
    assert not torch.equal(before, after)  # moved, as the authors' code leaves them
