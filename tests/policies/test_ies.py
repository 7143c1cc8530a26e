"""IES, instance-dependent early stopping (``hardbatch.policies.IES``), pinned on scripted per-epoch losses: mastered
samples left out of an epoch and scored after it (a scoring pass of full batches, its repeats ignored), taken back
when their loss moves, a last batch topped up from the left-out ones, τ = 0 never leaving any out, and its checks.

The mastery test itself: tests/test_functional.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import drive, scripted, steps_of
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hardbatch.errors import BadValue
from hardbatch.params import flag
from hardbatch.policies import IES
from hardbatch.sampler import HardBatchSampler


def partition() -> torch.Tensor:
    return torch.arange(40).view(10, 4)


def ies_losses(i: int, e: int) -> float:
    """Samples 0..17 fall linearly (every d = 0) but 0..3 jump to 4.0 from epoch 8; 18..39 are random."""
    if i < 4 and e >= 8:
        return 4.0
    if i < 18:
        return 2.0 - e / 8
    return scripted(7)(i, e)


def test_it_leaves_out_mastered_samples_scores_them_after_each_epoch_and_takes_back_those_that_move():
    sampler = HardBatchSampler(partition(), epochs=11, policy=IES(), seed=2)
    log = drive(sampler, ies_losses, by="epoch")  # a scoring pass after epoch e sees the epoch-e losses
    assert sampler.done and sampler.epoch == 11
    for epoch in range(11):
        steps = [r for r in log if r.round == epoch]
        kinds = [r.kind for r in steps]
        assert kinds == sorted(kinds, reverse=True)  # training first, then the scoring pass
        samples = [i for r in steps if r.kind == "train" for i in r.kept]
        scored = [r.samples for r in steps if r.kind == "score"]
        assert len(set(samples)) == len(samples)
        if epoch < 6:  # six losses are needed before the first test
            assert len(samples) == 40 and not scored
            continue
        # 0..3 jumped in epoch 8 (d = 4 - 2 * 1.125 + 1.25 = 3): back in training from epoch 9 on.
        left_out = set(range(18)) if epoch < 9 else set(range(4, 18))
        active = set(range(40)) - left_out
        assert set(samples) <= active and len(samples) == len(active) // 4 * 4
        if epoch == 10:  # the budget is spent: no scoring pass after the last epoch
            assert not scored
            continue
        flat = [i for b in scored for i in b]
        assert all(len(b) == 4 for b in scored) and len(flat) == math.ceil(len(left_out) / 4) * 4
        assert sorted(flat[: len(left_out)]) == sorted(left_out) and set(flat) == left_out  # the tail repeats
    # One loss per sample and epoch: 4..17 trained in epochs 0..5 and scored after 6..9, the repeats not counted, so
    # their last L = 6 losses are those of epochs 4..9 (counts stop at L: the test only asks whether a sample has L).
    history = sampler.policy.history
    assert history[4:18].tolist() == [[ies_losses(i, e) for e in range(4, 10)] for i in range(4, 18)]
    assert sampler.policy.counts[4:18].tolist() == [6] * 14


def test_it_tops_up_a_last_batch_from_left_out_samples_which_are_then_not_scored():
    policy = IES().bind(partition(), epochs=3)
    policy.history[:38] = torch.tensor([1.0, 0.875, 0.75, 0.625, 0.5, 0.375])
    policy.counts[:38] = 6
    planned = policy.plan()
    assert len(planned) == 1 and not planned.score_only
    topped = set(planned.step(0).samples.tolist())
    assert {38, 39} <= topped and len(topped) == 4
    scoring = policy.plan()
    assert scoring.score_only and len(scoring) == 9 and policy.round == 0  # a scoring pass is no new epoch
    assert all(s.score_only and len(s.samples) == 4 for s in steps_of(scoring))
    flat = scoring.samples.flatten().tolist()
    assert sorted(set(flat)) == sorted(set(range(38)) - topped) and len(flat) == 36  # 34 left out, 2 repeated


def test_with_threshold_zero_it_trains_every_sample_every_epoch_and_never_scores():
    sampler = HardBatchSampler(partition(), epochs=8, policy=IES(threshold=0.0))
    log = drive(sampler, ies_losses, by="epoch")
    assert len(log) == 80 and all(r.kind == "train" for r in log)


def test_through_fit_mastered_epochs_train_one_topped_up_batch_and_score_the_rest():
    from hardbatch.training import fit

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=generator)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    sampler = HardBatchSampler(partition(), epochs=6, policy=IES(threshold=10.0, smoothing=1))  # all mastered at 4
    fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(data, batch_sampler=sampler),
        sampler,
        {},
        torch.device("cpu"),
    )
    # Epochs 4 and 5 train one topped-up batch each; the 36 others are scored after epoch 4 (not after the last).
    assert sampler.done and sampler.steps == 4 * 10 + 2 and sampler.meter.samples_forward_nograd == 36


def test_it_needs_per_sample_losses():
    policy = IES().bind(partition())
    with pytest.raises(RuntimeError, match="ies needs per-sample losses"):
        policy.observe(policy.plan().step(0), 1.0)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(threshold=-1e-3), "threshold must be a finite number >= 0, got -0.001"),
        (dict(threshold=math.inf), "threshold must be a finite number >= 0, got inf"),
        (dict(smoothing=0), "smoothing must be an integer >= 1, got 0"),
        (dict(smoothing=2.5), "smoothing must be an integer >= 1, got 2.5"),
        (dict(patience=0), "patience must be an integer >= 1, got 0"),
    ],
)
def test_it_refuses_bad_hyper_parameters_in_one_line(params, message):
    with pytest.raises(BadValue) as error:
        IES(**params)
    assert str(error.value) == f"IES: {message}"
    name = message.split()[0]
    assert error.value.as_flag() == f"{flag(name)}{message[len(name) :]}"  # as the command line says it
