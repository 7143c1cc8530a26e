"""Selective Backprop, ``hardbatch.policies.SelectiveBackprop``, pinned on scripted losses: keep probability
percentile^β over the last H losses (strictly below, or at or below with ``count_ties``), the draws, the warm-up epoch,
batches it keeps none of (no optimizer step, ``force_one``), a hand-written loop run to its budget, and stepping as
the authors' code does (``accumulate``: the kept samples of successive batches pooled, one optimizer step per B).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import drive, scripted, table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.policies import SelectiveBackprop, Step
from hardbatch.sampler import HardBatchSampler


def bound(**params) -> SelectiveBackprop:
    """The policy bound to 4 batches (its own seed: ``seed``)."""
    seed = params.pop("seed", 0)
    return SelectiveBackprop(**params).bind(4, seed=seed)


STEP = Step(torch.arange(3), 0)  # what select is given besides the scores (it reads only the scores)


def test_keep_probability_is_percentile_to_the_beta_in_the_last_h_losses():
    # Strictly below (<), as the authors' code: a sample does not count itself.
    one, two = bound(beta=1.0, loss_history=4), bound(beta=2.0, loss_history=4)
    assert one.keep_probabilities(torch.tensor([1.0, 2.0])).tolist() == [0.0, 0.5]  # history [1, 2]
    assert two.keep_probabilities(torch.tensor([1.0, 2.0])).tolist() == [0.0, 0.25]
    # The ring keeps the last four: [1, 2, 3, 0.5, 4] -> [2, 3, 0.5, 4].
    assert one.keep_probabilities(torch.tensor([3.0, 0.5, 4.0])).tolist() == [0.5, 0.0, 0.75]
    assert one.history.tolist() == [2.0, 3.0, 0.5, 4.0]
    assert two.keep_probabilities(torch.tensor([3.0, 0.5, 4.0])).tolist() == [0.25, 0.0, 0.5625]
    # A batch longer than the history: only its own last H losses remain.
    short = bound(beta=1.0, loss_history=2)
    assert short.keep_probabilities(torch.tensor([5.0, 1.0, 3.0])).tolist() == [1.0, 0.0, 0.5]
    assert short.history.tolist() == [1.0, 3.0]
    # count_ties: hardbatch's earlier rule, at or below.
    old = bound(beta=1.0, loss_history=4, count_ties=True)
    assert old.keep_probabilities(torch.tensor([1.0, 2.0])).tolist() == [0.5, 1.0]
    assert old.keep_probabilities(torch.tensor([3.0, 0.5, 4.0])).tolist() == [0.75, 0.25, 1.0]


@pytest.mark.parametrize("count_ties, kept", [(False, 0.42), (True, 0.58)])
def test_with_40_percent_zero_losses_it_keeps_0_42_as_the_original(count_ties, kept):
    """PEERS.md's measurement: 40% of the losses exactly 0.0 (saturated cross-entropy), the rest spread, β = 1.
    Counting strictly smaller losses keeps 0.6 · (0.4 + 0.6 / 2) = 0.42 and never a zero-loss sample; counting
    ties too keeps 0.4 · 0.4 + 0.6 · 0.7 = 0.58."""
    policy = bound(beta=1.0, loss_history=1024, seed=0, count_ties=count_ties)
    generator = torch.Generator().manual_seed(1)
    step = Step(torch.arange(32), 0)
    masks, zeros = [], []
    for _ in range(400):
        scores = torch.rand(32, generator=generator) + 1e-3
        scores[torch.rand(32, generator=generator) < 0.4] = 0.0
        masks.append(policy.select(step, scores))
        zeros.append(scores == 0.0)
    masks, zeros = torch.stack(masks)[40:], torch.stack(zeros)[40:]  # once the history is full
    assert masks.mean().item() == pytest.approx(kept, abs=0.02)
    if not count_ties:
        assert not masks[zeros].any()  # a zero-loss sample is never kept


@pytest.mark.parametrize("seed", range(5))
def test_it_keeps_certain_samples_and_drops_impossible_ones(seed):
    # H = 1: the history is the batch's last loss, 3, so p = [0, 1, 0] whatever the draw (3 is not below itself;
    # it was kept under the earlier <= rule).
    policy = bound(beta=1.0, loss_history=1, seed=seed)
    assert policy.select(STEP, torch.tensor([1.0, 5.0, 3.0])).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("force_one", [False, True])
def test_it_keeps_nothing_when_nothing_is_drawn_unless_forced(seed, force_one):
    # The authors' code trains nothing then; force_one (the earlier rule here) keeps the highest loss alone.
    policy = bound(beta=50.0, loss_history=4, seed=seed, force_one=force_one)
    policy.select(STEP, torch.tensor([100.0]))
    # History [100, 1, 3, 2]: p^50 <= 0.5^50 < 1e-6, so the draw keeps none.
    assert policy.select(STEP, torch.tensor([1.0, 3.0, 2.0])).tolist() == ([0.0, 1.0, 0.0] if force_one else [0.0] * 3)


def test_beta_zero_keeps_every_sample():
    policy = bound(beta=0.0, loss_history=8)
    scores = torch.rand(40, 5, generator=torch.Generator().manual_seed(0))
    assert all(policy.select(STEP, s).tolist() == [1.0] * 5 for s in scores)


@pytest.mark.parametrize("beta, kept", [(1.0, 1 / 2), (2.0, 1 / 3), (3.0, 1 / 4)])
def test_it_keeps_one_in_beta_plus_one_of_stationary_losses(beta, kept):
    policy = bound(beta=beta, loss_history=1024, seed=1)
    scores = torch.rand(300, 32, generator=torch.Generator().manual_seed(2))
    fraction = torch.stack([policy.select(STEP, s) for s in scores]).mean().item()
    assert fraction == pytest.approx(kept, abs=0.03)  # E[p^beta] = 1 / (beta + 1) for uniform p


def test_its_draws_are_reproducible_per_seed():
    scores = torch.rand(50, 8, generator=torch.Generator().manual_seed(0))

    def masks(seed):
        policy = bound(beta=1.0, loss_history=64, seed=seed)
        return [policy.select(STEP, s).tolist() for s in scores]

    assert masks(3) == masks(3)
    assert masks(3) != masks(4)


# ---- through the sampler ----------------------------------------------------------------------------------------


def test_the_sampler_asks_for_the_scores_and_counts_only_the_kept_samples():
    # warmup_epoch=False: selection from the first batch on (the first epoch is otherwise a plain one, below).
    def make(watch=None) -> HardBatchSampler:
        return HardBatchSampler(
            12, 4, epochs=1, policy="selective-backprop", loss_history=1, seed=0, warmup_epoch=False, watch=watch
        )

    indices = next(iter(make()))
    sampler = make(watch=indices[:2])  # the same draws: the first two samples watched
    assert next(iter(sampler)) == indices
    assert sampler.policy.needs_scores(sampler.pending)
    with pytest.raises(RuntimeError, match="weights\\(scores\\)"):
        sampler.weights()
    # H = 1: only samples scoring above the batch's last score (2) are kept (p = 1), the rest have p = 0.
    weights = sampler.weights(torch.tensor([4.0, 1.0, 9.0, 2.0]))
    assert weights.tolist() == [1.0, 0.0, 1.0, 0.0]
    sampler.record(torch.tensor(1.0))
    assert sampler.steps == 1 and sampler.last.samples == 2
    assert sampler.trained_samples["all"] == 2 and sampler.trained_samples["watched"] == 1  # the first, not the second


def test_the_first_epoch_trains_everything_and_records_no_history():
    """As the authors' code: epoch 1 is a plain epoch (no scoring forward needed, nothing in the history);
    selection starts in epoch 2, with a history that holds only epoch-2 losses."""
    loss_of = scripted(3)
    sampler = HardBatchSampler(
        12, 4, epochs=2, policy="selective-backprop", beta=1.0, loss_history=8, seed=0, watch=list(range(12))
    )
    log = drive(sampler, loss_of)
    first = [r for r in log if r.round == 0]
    assert [r.kind for r in first] == ["train"] * 3 and all(r.kept == r.samples for r in first)
    assert all(r.weights == [1.0] * 4 for r in first)
    assert sampler.trained_samples["first_epoch"] == sampler.trained_samples["watched_first_epoch"] == 12
    second = [r for r in log if r.round == 1]
    assert len(second) == 3 and any(len(r.kept) < 4 for r in second)  # selection in epoch 2
    # The history holds epoch 2's scores only (each sample trained once before): the last 8 of them.
    order = [i for r in second for i in r.samples]
    assert sampler.policy.history.tolist() == [loss_of(i, 1) for i in order][-8:]
    # The warm-up steps need no scores: the loop may skip their no-grad forward.
    fresh = HardBatchSampler(12, 4, epochs=2, policy="selective-backprop", seed=0)
    next(iter(fresh))
    assert not fresh.policy.needs_scores(fresh.pending) and fresh.weights().tolist() == [1.0] * 4


def test_batches_it_keeps_none_of_are_no_steps_and_the_run_still_ends():
    """A batch of which the draw keeps nothing is consumed untrained (the authors' code); it is no optimizer step
    and no visit, and an epoch is a pass over the data, so the run ends after E passes even if nothing is kept."""
    constant = table({i: [0.5] * 3 for i in range(12)})  # all losses equal: none is strictly below another, p = 0
    sampler = HardBatchSampler(12, 4, epochs=3, policy="selective-backprop", seed=0)
    progress: list[float] = []
    log = drive(sampler, constant, progress=progress)
    assert [(r.round, r.kind) for r in log] == [(0, "train")] * 3 + [(1, "skip")] * 3 + [(2, "skip")] * 3
    assert sampler.done and sampler.epoch == 3 and sampler.steps == 3 and sampler.visits.tolist() == [1, 1, 1]
    assert sampler.trained_samples["all"] == 12  # the warm-up only
    assert progress == sorted(progress) and progress[-1] == 1.0
    # force_one (the earlier rule): the highest loss (the first of equals) is trained alone instead.
    forced = HardBatchSampler(12, 4, epochs=3, policy="selective-backprop", seed=0, force_one=True)
    log = drive(forced, constant)
    assert [r.kind for r in log] == ["train"] * 9 and forced.steps == 9
    assert [r.kept for r in log[3:]] == [r.samples[:1] for r in log[3:]]


def test_an_epoch_ends_on_its_last_batch_even_when_that_batch_is_skipped():
    sampler = HardBatchSampler(4, 2, epochs=2, policy="selective-backprop", seed=0, warmup_epoch=False)
    ended = []
    while not sampler.done:
        for _ in sampler:
            assert sampler.weights(torch.full((2,), 0.5)).tolist() == [0.0, 0.0]
            sampler.record(torch.tensor(0.5))
            ended.append(sampler.epoch_ended)
    assert ended == [False, True, False, True] and sampler.epoch == 2 and sampler.steps == 0


def test_score_mode_follows_score_in_train_mode():
    assert not SelectiveBackprop().score_train_mode and SelectiveBackprop(score_in_train_mode=True).score_train_mode


def test_a_hand_written_loop_runs_to_done():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=generator)
    data = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler = HardBatchSampler(len(data), 8, epochs=2, policy="selective-backprop", beta=1.0, seed=0)
    loader = DataLoader(data, batch_sampler=sampler)
    kept_total = skipped = 0
    while not sampler.done:
        for x, y in loader:
            with torch.no_grad():
                scores = F.cross_entropy(model(x), y, reduction="none")
            keep = sampler.weights(scores) > 0
            if not keep.any():  # nothing drawn: the batch is recorded untrained, no optimizer step
                sampler.record(scores.mean())
                skipped += 1
                continue
            losses = F.cross_entropy(model(x[keep]), y[keep], reduction="none")
            loss = losses.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sampler.record(loss.detach(), losses.detach())
            kept_total += int(keep.sum())
    # Two passes of 12 batches; the first trains all of them (the warm-up epoch).
    assert sampler.steps == 24 - skipped and sampler.epoch == 2 and sampler.progress == 1.0
    assert sampler.trained_samples["all"] == kept_total < 24 * 8 and kept_total > 12 * 8


# ---- accumulate: the kept samples of successive batches pooled, one optimizer step per B of them -----------------

POOL_SAMPLES, POOL_BATCH, POOL_EPOCHS = 640, 32, 3


def _pooled_run(accumulate: bool, stream: bool = False):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(POOL_SAMPLES, 8, generator=generator), torch.randint(0, 4, (POOL_SAMPLES,), generator=generator)
    )
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    policy = SelectiveBackprop(beta=1.0, accumulate=accumulate)
    if stream:
        sampler = hardbatch.InBatchSelector(policy, epochs=POOL_EPOCHS, steps_per_epoch=POOL_SAMPLES // POOL_BATCH)
        loader = DataLoader(data, batch_size=POOL_BATCH, shuffle=False)
    else:
        sampler = hardbatch.HardBatchSampler(POOL_SAMPLES, POOL_BATCH, epochs=POOL_EPOCHS, policy=policy, seed=1)
        loader = DataLoader(data, batch_sampler=sampler)
    kept, steps = [], []
    select = sampler.policy.select

    def recording(step, scores):  # what each scored batch keeps
        weights = select(step, scores)
        kept.append(step.samples[weights > 0])
        return weights

    sampler.policy.select = recording
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps.append((sampler.epoch if not sampler.epoch_ended else sampler.epoch - 1, sampler.last.samples))
            if sampler.done:
                break
    return sampler, kept, steps


def test_the_kept_samples_are_trained_b_at_a_time_and_each_pass_trains_its_leftover():
    sampler, kept, steps = _pooled_run(accumulate=True)
    first_epoch = POOL_SAMPLES // POOL_BATCH  # the warm-up trains whole batches, without scoring
    assert [n for _, n in steps[:first_epoch]] == [POOL_BATCH] * first_epoch
    for epoch in range(1, POOL_EPOCHS):
        sizes = [n for e, n in steps if e == epoch]
        kept_in_epoch = sum(len(k) for k in kept[(epoch - 1) * first_epoch : epoch * first_epoch])
        assert sum(sizes) == kept_in_epoch  # every kept sample trained once, in its own epoch
        assert sizes[:-1] == [POOL_BATCH] * (len(sizes) - 1) and 0 < sizes[-1] < 2 * POOL_BATCH
    assert sampler.steps == len(steps) and sampler.meter.samples_backprop == sum(n for _, n in steps)
    assert sampler.trained_samples["all"] == sum(n for _, n in steps)


def test_pooling_takes_about_one_step_per_batch_of_kept_samples_where_one_step_per_batch_took_more():
    _, kept, pooled = _pooled_run(accumulate=True)
    _, _, plain = _pooled_run(accumulate=False)
    assert len(pooled) < len(plain)  # β = 1 keeps about half: about half the steps after the warm-up
    assert sum(len(k) for k in kept) <= sum(n for _, n in pooled)


def test_a_stream_pools_alike():
    selector, kept, steps = _pooled_run(accumulate=True, stream=True)
    warmup = POOL_SAMPLES // POOL_BATCH * POOL_BATCH  # the first epoch trains every sample
    assert selector.done and sum(n for _, n in steps) == warmup + sum(len(k) for k in kept)
