"""SeTa, ``hardbatch.policies.SeTa``, pinned on scripted losses: random pruning, clusters of the survivors' last losses
sorted easy to hard, a window of round(K·window) clusters sliding one harder each epoch and wrapping, samples without a
loss always trained, a selection smaller than a batch topped up, the annealing epochs, and its checks.

The exact 1-D k-means it clusters with: tests/test_functional.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import drive, scripted

from hardbatch.errors import BadValue, UsageError
from hardbatch.params import flag
from hardbatch.policies import SeTa, Step
from hardbatch.policies.seta import window_size
from hardbatch.sampler import HardBatchSampler


def partition() -> torch.Tensor:
    return torch.arange(40).view(10, 4)


@pytest.mark.parametrize("groups, window, size", [(5, 0.9, 4), (10, 0.5, 5), (3, 0.5, 2), (4, 0.5, 2), (5, 1.0, 5)])
def test_the_window_is_round_groups_times_window(groups, window, size):
    assert window_size(groups, window) == size
    assert SeTa(groups=groups, window=window).bind(partition()).window_clusters == size


def scripted_seta(epochs=10, **params) -> SeTa:
    return SeTa(**params).bind(partition(), epochs=epochs, seed=4)


def observe_all(policy: SeTa, score) -> None:
    """Give every sample a loss, as if all had been trained."""
    policy.observe(Step(torch.arange(40), 0), 0.0, torch.tensor([score(i) for i in range(40)]))


def planned_with_kept(policy: SeTa) -> tuple[list[int], list[int]]:
    """Plan the next epoch; returns (its samples, the random-pruning survivors its first draw kept)."""
    generator = torch.Generator()
    generator.set_state(policy.generator.get_state())
    kept = torch.randperm(40, generator=generator)[: math.floor((1 - policy.random_prune) * 40 + 1e-9)].tolist()
    planned = policy.plan()
    assert planned.samples.shape[1] == 4 and planned.ids.tolist() == list(range(len(planned)))
    return planned.samples.flatten().tolist(), kept


def test_the_window_slides_one_cluster_harder_each_epoch_and_wraps_over_the_random_survivors():
    # 4 clusters by i % 4 (losses 10·(i % 4) + i/100), w = 2, so the window starts at e mod 3; 30 of 40 survive the
    # random pruning; E = 10, anneal 0.2: epochs 1..7 slide, epoch 0 trains every survivor, 8 and 9 anneal.
    policy = scripted_seta(random_prune=0.25, groups=4, window=0.5, anneal=0.2)
    assert policy.pruning_epochs == 8
    starts = []
    for epoch in range(10):
        samples, kept = planned_with_kept(policy)
        chosen = set(kept)
        if 1 <= epoch < 8:
            start = epoch % 3
            assert policy.window_start(epoch) == start
            starts.append(start)
            chosen = {i for i in kept if start <= i % 4 < start + 2}
        assert set(samples) <= chosen and len(samples) == len(chosen) // 4 * 4 and len(set(samples)) == len(samples)
        observe_all(policy, lambda i: 10.0 * (i % 4) + i / 100)
    assert starts == [1, 2, 0, 1, 2, 0, 1]


def test_kept_samples_without_a_loss_are_trained_whatever_the_window():
    policy = scripted_seta(random_prune=0.25, groups=4, window=0.25)  # w = 1
    policy.plan()
    policy.observe(Step(torch.arange(20), 0), 0.0, torch.tensor([10.0 * (i % 4) for i in range(20)]))
    samples, kept = planned_with_kept(policy)  # epoch 1: only cluster 1 (i % 4 == 1) of the known, all the unknown
    chosen = {i for i in kept if i >= 20 or i % 4 == 1}
    assert set(samples) <= chosen and len(samples) == len(chosen) // 4 * 4


def test_a_selection_smaller_than_a_batch_is_topped_up_into_one_batch():
    policy = scripted_seta(random_prune=0.0, groups=4, window=0.25)  # w = 1
    policy.plan()
    observe_all(policy, lambda i: 0.0 if i < 38 else 1.0)  # two distinct losses: clusters 0 ({0..37}) and 1
    policy.round = 1  # the next epoch is 2, whose window is cluster 2: empty, nothing chosen
    planned = policy.plan()
    assert planned.samples.shape == (1, 4) and len(set(planned.samples.flatten().tolist())) == 4


def test_with_nothing_pruned_and_one_window_of_everything_it_is_a_reshuffle_of_all_data():
    sampler = HardBatchSampler(partition(), epochs=3, policy=SeTa(random_prune=0.0, groups=1, window=1.0), seed=4)
    log = drive(sampler, scripted(3), by="epoch")
    for epoch in range(3):
        assert sorted(i for r in log if r.round == epoch for i in r.kept) == list(range(40))


def test_through_the_sampler_it_runs_its_epochs():
    sampler = HardBatchSampler(partition(), epochs=6, policy=SeTa(random_prune=0.2, groups=3, window=0.67, anneal=0.2))
    log = drive(sampler, scripted(6), by="epoch")
    assert sampler.done and sampler.epoch == 6 and sampler.steps == len(log)
    lengths = [len([r for r in log if r.round == e]) for e in range(6)]
    # 32 of 40 survive the random pruning (8 batches); the window drops a cluster in epochs 1..3; ⌊6 · 0.8⌋ = 4, so
    # epochs 4 and 5 anneal.
    assert sampler.policy.pruning_epochs == 4
    assert lengths[0] == lengths[4] == lengths[5] == 8 and all(n < 8 for n in lengths[1:4])


def test_it_needs_per_sample_losses():
    policy = scripted_seta()
    with pytest.raises(RuntimeError, match="seta needs per-sample losses"):
        policy.observe(policy.plan().step(0), 1.0)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(random_prune=1.0), "random_prune must be in [0, 1), got 1.0"),
        (dict(random_prune=-0.1), "random_prune must be in [0, 1), got -0.1"),
        (dict(groups=0), "groups must be an integer >= 1, got 0"),
        (dict(groups=2.0), "groups must be an integer >= 1, got 2.0"),
        (dict(window=0.0), "window must be in (0, 1], got 0.0"),
        (dict(window=1.2), "window must be in (0, 1], got 1.2"),
        (dict(anneal=1.5), "anneal must be in [0, 1], got 1.5"),
        (dict(anneal=math.nan), "anneal must be in [0, 1], got nan"),
    ],
)
def test_it_refuses_bad_hyper_parameters_in_one_line(params, message):
    with pytest.raises(BadValue) as error:
        SeTa(**params)
    assert str(error.value) == f"SeTa: {message}"
    name = message.split()[0]
    assert error.value.as_flag() == f"{flag(name)}{message[len(name) :]}"  # as the command line says it


def test_a_window_of_no_cluster_is_refused():
    with pytest.raises(UsageError) as error:
        SeTa(groups=5, window=0.1)
    assert str(error.value) == (
        "SeTa: window 0.1 with groups 5 makes a window of round(5 · 0.1) = 0 clusters; use a "
        "larger window or more groups"
    )
