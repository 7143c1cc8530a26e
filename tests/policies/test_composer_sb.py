"""Composer's Selective Backprop, ``hardbatch.policies.ComposerSB``, pinned on scripted losses: which steps select
(the window of the step budget, every ``interrupt``-th batch of an epoch in full), whole batches planned at weight 1
without a scoring forward elsewhere, ⌊keep·b⌋ kept by rank percentile, and its hyper-parameters' checks.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import drive, scripted, steps_of

from hardbatch.errors import BadValue, UsageError
from hardbatch.policies import ComposerSB
from hardbatch.sampler import HardBatchSampler


def partition() -> torch.Tensor:
    return torch.arange(40).view(10, 4)


def test_it_selects_in_the_window_except_every_interrupt_th_batch_of_an_epoch():
    # N = 9 batches, 10 epochs: T = 90, the window [0.5, 0.9) is steps 45..80; interrupt 2 trains batches 1, 3, 5, 7
    # of each epoch (0-based) in full, so steps 53 and 54 (batches 8 and 0) both select.
    nine = torch.arange(36).view(9, 4)
    policy = ComposerSB().bind(nine, epochs=10)
    assert [s for s in range(90) if policy.selects(s)] == [s for s in range(45, 81) if s % 9 % 2 == 0]
    assert policy.selects(53) and policy.selects(54) and not policy.selects(46)
    always = ComposerSB(interrupt=0, start=0.0, end=0.1).bind(nine, epochs=10)
    assert [s for s in range(90) if always.selects(s)] == list(range(9))
    third = ComposerSB(interrupt=3, start=0.0, end=1.0).bind(nine, epochs=10)
    assert [s for s in range(9) if third.selects(s)] == [0, 1, 3, 4, 6, 7]
    whole = ComposerSB(keep=1.0, start=0.0, end=1.0, interrupt=0).bind(nine, epochs=10)
    assert not any(whole.selects(s) for s in range(90))  # keep = 1: Composer never selects
    # A stream's batches (InBatchSelector) train whole exactly where the sampler's steps do not select.
    assert all(policy.in_batch_preset(s, s // 9) == (not policy.selects(s)) for s in range(90))


def test_it_trains_whole_batches_without_scores_outside_selection_and_keep_b_inside():
    sampler = HardBatchSampler(
        partition(), epochs=4, policy=ComposerSB(keep=0.5, start=0.25, end=0.75), seed=3, watch=list(range(40))
    )
    log = drive(sampler, scripted(1), by="epoch")
    assert all(r.kind == "train" for r in log) and len(log) == 40 and sampler.done
    for s, r in enumerate(log):
        if 10 <= s < 30 and r.batch % 2 == 0:
            assert len(r.kept) == 2 and set(r.kept) <= set(r.samples)  # ⌊0.5 · 4⌋
        else:
            assert r.kept == r.samples and r.weights == [1.0] * 4  # planned whole, no scores
    assert sampler.trained_samples["all"] == sampler.trained_samples["watched"] == 160 - 10 * 2  # 10 selecting steps
    # Every epoch is a fresh cut of all 40 samples, as in uniform.
    for epoch in range(4):
        assert sorted(i for r in log if r.round == epoch for i in r.samples) == list(range(40))


def test_steps_without_selection_come_planned_with_weight_one_and_need_no_scores():
    policy = ComposerSB(start=0.5, end=1.0).bind(partition(), epochs=2)
    first = steps_of(policy.plan())
    assert all(s.weights.tolist() == [1.0] * 4 and not policy.needs_scores(s) for s in first)  # steps 0..9
    for s in first:
        policy.observe(s, 0.0)
    second = steps_of(policy.plan())  # steps 10..19: batches 0, 2, 4, 6, 8 select
    assert [policy.needs_scores(s) for s in second] == [b % 2 == 0 for b in range(10)]
    sampler = HardBatchSampler(partition(), epochs=2, policy=ComposerSB())
    next(iter(sampler))
    assert sampler.weights().tolist() == [1.0] * 4  # no scores asked for: the loop skips the no-grad forward


@pytest.mark.parametrize(
    "keep, b, count", [(0.5, 4, 2), (0.3, 10, 3), (0.1, 4, 1), (0.25, 8, 2), (0.9, 10, 9), (0.57, 100, 57)]
)
def test_it_keeps_exactly_floor_keep_b_at_least_one(keep, b, count):
    policy = ComposerSB(keep=keep, start=0.0).bind(torch.arange(4 * b).view(4, b), epochs=1)
    step = policy.plan().step(0)
    assert policy.needs_scores(step)
    for scores in torch.rand(20, b, generator=torch.Generator().manual_seed(0)):
        weights = policy.select(step, scores)
        assert weights.sum().item() == count and set(weights.tolist()) <= {0.0, 1.0}


def inclusion_probabilities(weights: list[float]) -> list[float]:
    """P(rank i among two draws without replacement, each proportional to weight), exactly."""
    total = sum(weights)
    return [
        w / total + sum(v / total * w / (total - v) for j, v in enumerate(weights) if j != i)
        for i, w in enumerate(weights)
    ]


@pytest.mark.parametrize("keep, b", [(0.5, 4), (0.25, 8)])
def test_it_draws_by_rank_percentile_to_the_one_over_keep_minus_one(keep, b):
    policy = ComposerSB(keep=keep, start=0.0).bind(torch.arange(4 * b).view(4, b), epochs=1, seed=5)
    step = policy.plan().step(0)
    scores = torch.tensor([0.7, 0.1, 0.9, 0.3, 0.5, 0.2, 0.8, 0.4][:b])
    rank = torch.argsort(torch.argsort(scores)).tolist()  # each position's rank, 0 = lowest loss
    draws = 1000
    counts = torch.stack([policy.select(step, scores) for _ in range(draws)]).sum(dim=0) / draws
    exact = inclusion_probabilities([((i + 0.5) / b) ** (1 / keep - 1) for i in range(b)])  # two kept
    assert counts.tolist() == pytest.approx([exact[r] for r in rank], abs=0.05)  # 3 standard errors


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(start=-0.1), "start must be in [0, 1), got -0.1"),
        (dict(start=1.0, end=1.0), "start must be in [0, 1), got 1.0"),
        (dict(end=0.0, start=0.0), "end must be in (0, 1], got 0.0"),
        (dict(end=1.5), "end must be in (0, 1], got 1.5"),
        (dict(keep=0.0), "keep must be in (0, 1], got 0.0"),
        (dict(keep=1.5), "keep must be in (0, 1], got 1.5"),
        (dict(keep=math.nan), "keep must be in (0, 1], got nan"),
        (dict(interrupt=-1), "interrupt must be an integer >= 0, got -1"),
        (dict(interrupt=1.5), "interrupt must be an integer >= 0, got 1.5"),
    ],
)
def test_it_refuses_bad_hyper_parameters_in_one_line(params, message):
    with pytest.raises(BadValue) as error:
        ComposerSB(**params)
    assert str(error.value) == f"ComposerSB: {message}"
    assert error.value.as_flag() == f"--{message}"  # as the command line says it


def test_start_must_be_below_end():
    with pytest.raises(UsageError) as error:
        HardBatchSampler(partition(), policy="composer-sb", start=0.6, end=0.4)
    assert str(error.value) == "ComposerSB: start must be below end, got start 0.6 and end 0.4"
