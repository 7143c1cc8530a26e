"""InfoBatch, ``hardbatch.policies.InfoBatch``, pinned on scripted losses: each pruning epoch drops round(r·m) of the m
below-mean samples and weights the kept ones 1/(1 − r), the last ⌊E·anneal⌋ epochs train all the data at weight 1
(or with the authors' code's leftover weights, ``keep_weights_in_anneal``), and a hand-written loop runs to its budget.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import drive, rounds_of, scripted
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.policies import InfoBatch
from hardbatch.sampler import HardBatchSampler


def trained(log):
    return [r for r in log if r.kind == "train"]


# ⌊E·(1 − a)⌋ pruning epochs, as the authors' code (this was ⌈E·(1 − a)⌉: 14 at E = 15, 9 at E = 10, 3 at E = 3).
@pytest.mark.parametrize(
    "epochs, anneal, pruning",
    [
        (8, 0.125, 7),
        (15, 0.125, 13),
        (10, 0.125, 8),
        (3, 0.125, 2),
        (4, 0.5, 2),
        (5, 0.0, 5),
        (5, 1.0, 0),
        (10, 0.3, 7),
        (10, 0.9, 1),
        (5, 0.8, 1),
    ],
)  # 10 · (1 − 0.9) = 0.99999...
def test_infobatch_stops_pruning_for_the_final_anneal_fraction(epochs, anneal, pruning):
    sampler = HardBatchSampler(10, 1, epochs=epochs, policy="infobatch", prune_ratio=0.5, anneal=anneal, seed=1)
    assert sampler.policy.pruning_epochs == pruning
    log = drive(sampler, scripted(3))
    # With distinct losses some are always below the mean, so every scored pruning epoch prunes at least one.
    assert [len(r) < 10 for r in rounds_of(log)] == [1 <= e < pruning for e in range(epochs)]


def test_infobatch_epochs_prune_below_mean_samples_and_weight_the_kept_ones():
    # N = 12 batches of one sample (no remainder), E = 8, a = 0.125: epochs 0..6 may prune, epoch 7 trains all.
    r = 0.5
    sampler = HardBatchSampler(12, 1, epochs=8, policy="infobatch", prune_ratio=r, anneal=0.125, seed=2)
    progress: list[float] = []
    log = drive(sampler, scripted(4), progress=progress)
    steps = trained(log)
    score: dict[int, float] = {}  # each sample's last training loss, as the policy keeps it
    lengths = []
    for epoch in range(8):
        epoch_steps = [s for s in steps if s.round == epoch]
        loaded = [s.samples[0] for s in epoch_steps]
        lengths.append(len(loaded))
        assert len(set(loaded)) == len(loaded)
        mean = sum(score.values()) / len(score) if score else math.nan
        below = {i for i, v in score.items() if v < mean}
        pruned = set(range(12)) - set(loaded)
        if 1 <= epoch < 7:
            assert pruned <= below and len(pruned) == math.floor(r * len(below) + 0.5)  # halves round up
            for s in epoch_steps:
                assert s.weights == [1 / (1 - r) if s.samples[0] in below else 1.0]
        else:  # epoch 0 has no scores; epoch 7 is annealed
            assert not pruned and all(s.weights == [1.0] for s in epoch_steps)
        for s in epoch_steps:
            score[s.samples[0]] = s.losses[0]
            assert s.loss == pytest.approx(s.weights[0] * s.losses[0])
    assert lengths[0] == lengths[7] == 12 and all(n < 12 for n in lengths[1:7])  # shorter epochs while pruning
    assert sampler.done and sampler.epoch == 8 and sampler.steps == sum(lengths)
    # Progress is passes done (plus the fraction of the current one) over the 8 passes.
    ends = [sum(lengths[: e + 1]) - 1 for e in range(8)]
    assert [progress[i] for i in ends] == [(e + 1) / 8 for e in range(8)]
    assert progress[0] == pytest.approx(1 / 12 / 8)


@pytest.mark.parametrize("keep", [False, True])
def test_infobatch_annealing_trains_with_weight_one_unless_asked_to_keep_the_last_pruning_weights(keep):
    """The annealing epochs train every sample with weight 1; keep_weights_in_anneal reproduces the authors' code,
    where the samples weighted 1/(1 − r) in the last pruning epoch keep that weight when E·(1 − a) is not whole
    (here 2.5; when it is whole their code resets the weights: the next test)."""
    r = 0.5
    sampler = HardBatchSampler(
        12, 1, epochs=5, policy="infobatch", prune_ratio=r, anneal=0.5, seed=2, keep_weights_in_anneal=keep
    )
    assert sampler.policy.pruning_epochs == 2  # ⌊5 · 0.5⌋: epochs 0-1 prune (epoch 0 has no scores), 2-4 do not
    steps = trained(drive(sampler, scripted(4)))
    boosted = {s.samples[0] for s in steps if s.round == 1 and s.weights == [1 / (1 - r)]}
    assert boosted and len([s for s in steps if s.round == 1]) < 12
    for epoch in (2, 3, 4):
        annealed = [s for s in steps if s.round == epoch]
        assert sorted(s.samples[0] for s in annealed) == list(range(12))
        for s in annealed:
            assert s.weights == [1 / (1 - r) if keep and s.samples[0] in boosted else 1.0]
            assert s.loss == pytest.approx(s.weights[0] * s.losses[0])


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


def test_infobatch_with_ratio_zero_is_uniform_with_weight_one():
    sampler = HardBatchSampler(20, 2, epochs=3, policy="infobatch", prune_ratio=0.0, seed=0)
    log = drive(sampler, scripted(1))
    assert [len(r) for r in rounds_of(log)] == [10, 10, 10]
    assert all(w == 1.0 for s in trained(log) for w in s.weights)


def test_infobatch_trains_one_shorter_batch_when_fewer_than_b_samples_are_kept():
    # 5 samples, batches of 4: a pruned epoch never comes out empty.
    policy = InfoBatch(prune_ratio=0.5).bind(torch.tensor([[0, 1, 2, 3]]), num_samples=5, epochs=4)
    assert policy.plan().samples.shape == (1, 4)  # nothing scored yet: 5 kept, the remainder dropped
    policy.observe(hardbatch.policies.Step(torch.arange(5), 0), 0.0, torch.tensor([0.1, 0.2, 0.3, 0.4, 9.0]))
    planned = policy.plan()  # mean 2: samples 0-3 below it, 2 of them pruned; 3 samples kept: one batch of 3
    assert planned.samples.shape == (1, 3) and 4 in planned.samples.tolist()[0]
    assert sorted(planned.weights.tolist()[0]) == [1.0, 2.0, 2.0]


def test_a_hand_written_infobatch_loop_runs_to_done():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=generator)
    data = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler = HardBatchSampler(len(data), 8, epochs=4, policy="infobatch", prune_ratio=0.5, anneal=0.25, seed=0)
    loader = DataLoader(data, batch_sampler=sampler)
    steps_per_pass = []
    while not sampler.done:
        steps = 0
        for x, y in loader:
            losses = F.cross_entropy(model(x), y, reduction="none")
            weights = sampler.weights()
            assert weights.shape == losses.shape and set(weights.tolist()) <= {1.0, 2.0}
            loss = (losses * weights).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sampler.record(loss.detach(), losses.detach())
            steps += 1
        steps_per_pass.append(steps)
    # 96 / 8 = 12 batches; epoch 0 has no scores and epoch 3 is annealed: full; epochs 1 and 2 pruned.
    assert len(steps_per_pass) == 4 and steps_per_pass[0] == steps_per_pass[3] == 12
    assert all(s < 12 for s in steps_per_pass[1:3])
    assert sampler.epoch == 4 and sampler.progress == 1.0 and sampler.steps == sum(steps_per_pass)
