"""RHO-LOSS, ``hardbatch.policies.RhoLoss``, pinned on scripted losses: candidate batches of ⌈B / select_fraction⌉
cut from a fresh permutation, the B highest training-minus-irreducible losses trained, the budget of epochs·N steps
of B; its irreducible losses (``irreducible_losses``: eval-mode per-sample losses, any loss and batch) and its checks.

Training the irreducible-loss model in a run (its quality, its cost): tests/run/test_policy_runs.py.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import drive, scripted, steps_of
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hardbatch.errors import BadValue, UsageError
from hardbatch.policies import RhoLoss, Step, irreducible_losses
from hardbatch.sampler import HardBatchSampler


def partition() -> torch.Tensor:
    return torch.arange(40).view(10, 4)


@pytest.mark.parametrize("keep, size, count", [(0.5, 8, 5), (0.3, 14, 2), (0.1, 40, 1), (1.0, 4, 10)])
def test_it_cuts_a_fresh_permutation_into_candidate_batches_of_ceil_b_over_keep(keep, size, count):
    policy = RhoLoss(select_fraction=keep).bind(partition(), seed=1)
    assert policy.candidates == size
    passes = [steps_of(policy.plan()) for _ in range(3)]
    for steps in passes:
        assert len(steps) == count and [s.batch for s in steps] == list(range(count))
        flat = [i for s in steps for i in s.samples.tolist()]
        assert all(len(s.samples) == size for s in steps) and len(set(flat)) == len(flat) == size * count
        assert all(s.weights is None and policy.needs_scores(s) for s in steps)  # every step is scored first
    assert len({tuple(i for s in steps for i in s.samples.tolist()) for steps in passes}) == 3


def test_it_trains_the_b_highest_training_minus_irreducible_losses():
    irreducible = torch.zeros(40)
    irreducible[:8] = torch.tensor([0.0, 2.0, 0.5, 0.0, 3.0, 0.25, 0.0, 1.0])
    policy = RhoLoss(select_fraction=0.5).bind(partition())
    policy.irreducible = irreducible
    step = Step(torch.arange(8), 0)
    scores = torch.tensor([1.0, 2.5, 1.0, 0.25, 3.0, 1.25, 0.75, 1.5])
    # reducible: [1, 0.5, 0.5, 0.25, 0, 1, 0.75, 0.5]: 1, 1, 0.75, then 0.5 three times: the earliest (position 1).
    assert policy.select(step, scores).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    # The highest training losses are not what is chosen: position 4 (3.0) is unlearnable (IL 3.0).
    policy.irreducible = torch.zeros(40)
    assert policy.select(step, scores).tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_through_the_sampler_it_spends_epochs_times_n_steps_of_b():
    irreducible = torch.tensor([scripted(9)(i, 0) for i in range(40)])
    sampler = HardBatchSampler(partition(), epochs=3, policy=RhoLoss(select_fraction=0.3))
    sampler.policy.irreducible = irreducible
    loss = scripted(4)
    log = drive(sampler, loss, by="epoch")  # sample i's loss in epoch e: loss(i, e)
    assert sampler.done and sampler.steps == 30 == len(log) and sampler.epoch == 3  # 15 passes of 2 candidates
    for n, r in enumerate(log):
        epoch = n // 10  # N = 10 steps an epoch, each trains B = 4 of a candidate batch of 14
        reducible = [loss(i, epoch) - irreducible[i].item() for i in r.samples]
        top = sorted(range(14), key=lambda p: (-reducible[p], p))[:4]
        assert r.kind == "train" and r.kept == [r.samples[p] for p in sorted(top)]
    assert sampler.trained_samples["all"] == 30 * 4


def test_without_irreducible_losses_it_says_what_to_set():
    policy = RhoLoss(select_fraction=0.5).bind(partition())
    assert policy.irreducible is None
    with pytest.raises(RuntimeError, match=re.escape("no irreducible losses: set policy.irreducible")):
        policy.select(policy.plan().step(0), torch.rand(8))
    with pytest.raises(ValueError, match="shape \\(40,\\), one per training sample, got \\(39,\\)"):
        policy.irreducible = torch.zeros(39)
    with pytest.raises(ValueError, match="irreducible losses by sample id are for a stream"):
        policy.irreducible = dict.fromkeys(range(40), 0.0)
    policy.irreducible = torch.ones(40)
    assert policy.select(policy.plan().step(0), torch.rand(8)).sum() == 4


def test_it_refuses_candidate_batches_larger_than_the_data():
    with pytest.raises(UsageError) as error:
        RhoLoss(select_fraction=0.05).bind(partition())
    assert str(error.value).startswith(
        "select_fraction 0.05 makes candidate batches of ⌈4 / 0.05⌉ = 80 samples, more than the 40 training samples"
    )


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.01, math.inf])
def test_it_refuses_a_bad_select_fraction_in_one_line(keep):
    with pytest.raises(BadValue) as error:
        RhoLoss(select_fraction=keep)
    assert str(error.value) == f"RhoLoss: select_fraction must be in (0, 1], got {keep}"
    assert error.value.as_flag() == f"--select-fraction must be in (0, 1], got {keep}"


def test_an_unknown_il_model_is_refused_naming_the_models():
    with pytest.raises(UsageError, match="unknown model 'no-such-net'"):
        RhoLoss(il_model="no-such-net")


# ---- the irreducible losses -----------------------------------------------------------------------------------------


def test_irreducible_losses_are_eval_mode_per_sample_cross_entropies_in_index_order():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=generator), torch.randint(0, 4, (10,), generator=generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 4))
    model.train()
    losses = irreducible_losses(model, DataLoader(TensorDataset(x, y), batch_size=4), "cpu")
    assert model.training and losses.shape == (10,) and not losses.requires_grad
    model.eval()
    with torch.no_grad():
        assert torch.equal(losses, F.cross_entropy(model(x), y, reduction="none"))
    doubled = irreducible_losses(
        model, DataLoader(TensorDataset(x, y), batch_size=3), "cpu", transform=lambda batch, generator: 2 * batch
    )
    with torch.no_grad():
        assert torch.allclose(doubled, F.cross_entropy(model(2 * x), y, reduction="none"))


def test_irreducible_losses_take_any_per_sample_loss_and_dict_batches():
    from hardbatch import losses as reducers

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, features):
            return self.linear(features)

    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=generator), torch.randn(7, 2, generator=generator)
    model = Regressor()
    rows = [{"features": x[i], "labels": y[i]} for i in range(7)]
    losses = irreducible_losses(model, DataLoader(rows, batch_size=3), "cpu", loss_fn=reducers.mse)
    with torch.no_grad():
        assert torch.allclose(losses, ((model(x) - y) ** 2).mean(1))
    with pytest.raises(UsageError, match=r"shape \(3,\), got shape \(\)"):
        irreducible_losses(
            model,
            DataLoader(rows, batch_size=3),
            "cpu",
            loss_fn=lambda outputs, batch: reducers.mse(outputs, batch).mean(),
        )
    with pytest.raises(UsageError, match=r"a transform applies to x of \(x, y, ...\) batches; a dict batch takes"):
        irreducible_losses(model, DataLoader(rows, batch_size=3), "cpu", transform=lambda batch, generator: batch)
