"""Batch Loss Score, pinned down on scripted batch losses: the moving average from 0 of the mean losses of a sample's
batches, the InfoBatch pruning it drives (never-trained samples at 0 included), the step's loss scaled by its batch's
mean weight, and all of it from batch means alone."""

from __future__ import annotations

import pytest
import torch

import hardbatch
from hardbatch.errors import BadValue
from hardbatch.functional import batch_loss_scores, batch_mean_weights
from hardbatch.policies import defaults
from hardbatch.policies.bls import BLS


def test_the_update_is_an_exponential_moving_average_of_batch_losses():
    scores = torch.tensor([0.0, 1.0, 2.0])
    assert batch_loss_scores(scores, torch.tensor([2.0, 2.0, 0.0]), 0.9).tolist() == pytest.approx([0.2, 1.1, 1.8])
    assert batch_loss_scores(scores, torch.tensor([5.0, 5.0, 5.0]), 0.0).tolist() == [5.0, 5.0, 5.0]


def test_a_batch_weight_is_the_mean_of_its_samples_weights():
    weights = torch.tensor([[1.0, 2.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert batch_mean_weights(weights).tolist() == [[1.5] * 4, [1.0] * 4]


def test_defaults_are_the_authors_code_not_their_readme():
    # alpha 0.9 (BLS(alpha=0.9) and --alpha 0.9 in their code; the README's example passes 0.7); InfoBatch's
    # prune ratio 0.5 and delta 0.875 (anneal 0.125).
    assert defaults("bls") == {"prune_ratio": 0.5, "anneal": 0.125, "keep_weights_in_anneal": False, "alpha": 0.9}
    for bad in (1.0, -0.1):
        with pytest.raises(BadValue, match="alpha"):
            BLS(alpha=bad)


def _epoch(sampler, loss_of) -> list[tuple[list[int], float]]:
    """One pass, recording for each step ``loss_of(rows, weight)`` as its loss (a batch mean, no per-sample loss);
    returns each step's samples and its weight."""
    steps = []
    for indices in sampler:
        weights = sampler.weights()
        assert bool((weights == weights[0]).all())  # one weight per batch
        sampler.record(loss_of(indices, float(weights[0])))
        steps.append((indices, float(weights[0])))
    return steps


def test_scores_start_at_0_and_average_the_losses_of_the_batches_a_sample_was_in():
    sampler = hardbatch.HardBatchSampler(12, 3, epochs=8, policy=BLS(alpha=0.5, prune_ratio=0.5), seed=0)
    assert sampler.policy.scores.values.tolist() == [0.0] * 12
    batch_loss = {}  # each step's unweighted mean loss, scripted: 1, 2, 3, 4 in epoch 0

    def loss_of(rows, weight):
        batch_loss[tuple(rows)] = float(len(batch_loss) % 4 + 1)
        return torch.tensor(batch_loss[tuple(rows)] * weight)  # the loss trained on: the weighted mean

    first = _epoch(sampler, loss_of)
    assert [w for _, w in first] == [1.0] * 4  # all scores 0: nothing below the mean, nothing pruned or weighted
    expected = torch.zeros(12)
    for rows, _ in first:
        expected[rows] = 0.5 * 0.0 + 0.5 * batch_loss[tuple(rows)]
    assert torch.equal(sampler.policy.scores.values, expected)
    second = _epoch(sampler, loss_of)
    # (the weighted loss recorded, divided by the weight again, is the batch loss up to float32 rounding)
    assert torch.allclose(sampler.policy.scores.values, _after(expected, second, batch_loss, 0.5), rtol=1e-6, atol=0)
    # The batches of losses 1 and 2 (scores 0.5 and 1) are below the mean 1.25: round(0.5 · 6) = 3 of their 6
    # samples are pruned, the other 3 weighted 2, so 9 samples train in 3 batches whose weights are the mean of
    # their samples' (a batch with k weighted samples: 1 + k/3).
    low = {i for rows, _ in first if batch_loss[tuple(rows)] <= 2 for i in rows}
    trained = [i for rows, _ in second for i in rows]
    assert len(second) == 3 and len(set(trained)) == 9 and len(low - set(trained)) == 3
    for rows, weight in second:
        assert weight == pytest.approx(1 + sum(i in low for i in rows) / 3)
    pruned = low - set(trained)
    assert all(float(sampler.policy.scores.values[i]) == float(expected[i]) for i in pruned)  # kept as they were


def _after(scores: torch.Tensor, steps, batch_loss: dict, alpha: float) -> torch.Tensor:
    scores = scores.clone()
    for rows, _ in steps:
        scores[rows] = alpha * scores[rows] + (1 - alpha) * batch_loss[tuple(rows)]
    return scores


def test_a_sample_never_trained_scores_0_counts_in_the_mean_and_is_pruned_first():
    # n = 10, B = 3: epoch 0 trains 9 samples (one is the dropped remainder). Every batch loss is 1, so the 9 score
    # 0.1 and the untrained one 0, the only score below the mean 0.09: round(0.5 · 1) = 1 of 1 pruned.
    sampler = hardbatch.HardBatchSampler(10, 3, epochs=8, policy="bls", seed=3)
    first = _epoch(sampler, lambda rows, w: torch.tensor(1.0 * w))
    untrained = set(range(10)) - {i for rows, _ in first for i in rows}
    assert len(untrained) == 1 and float(sampler.policy.scores.values[next(iter(untrained))]) == 0.0
    second = _epoch(sampler, lambda rows, w: torch.tensor(1.0 * w))
    assert {i for rows, _ in second for i in rows} == set(range(10)) - untrained
    assert [w for _, w in second] == [1.0, 1.0, 1.0]


def test_the_score_takes_the_unweighted_batch_loss_whatever_the_step_was_weighted():
    sampler = hardbatch.HardBatchSampler(12, 3, epochs=8, policy=BLS(alpha=0.9), seed=1)
    script = iter([0.0, 1.0, 2.0, 3.0, 2.5, 0.5, 1.5])  # unweighted batch losses, step by step
    losses = {}

    def loss_of(rows, weight):
        losses[tuple(rows)] = next(script)
        return torch.tensor(losses[tuple(rows)]) * weight  # what a loop trains on and records

    _epoch(sampler, loss_of)
    before = sampler.policy.scores.values.clone()
    steps = _epoch(sampler, loss_of)
    assert len(steps) == 3 and any(w > 1 for _, w in steps)
    after = sampler.policy.scores.values
    for rows, _ in steps:
        expected = 0.9 * before[rows] + (1 - 0.9) * torch.tensor(losses[tuple(rows)])
        assert torch.allclose(after[rows], expected, rtol=1e-6, atol=0)


def test_annealing_epochs_train_everything_at_weight_1():
    # E = 4: ⌊4 · 0.875⌋ = 3 pruning epochs (the first prunes nothing), then one epoch of all the data.
    sampler = hardbatch.HardBatchSampler(40, 4, epochs=4, policy="bls", seed=0)
    losses = torch.Generator().manual_seed(0)
    counts = []
    while not sampler.done:
        steps = _epoch(sampler, lambda rows, w: torch.rand((), generator=losses) * w)
        counts.append((len(steps), max(w for _, w in steps)))
    assert counts[0] == (10, 1.0) and counts[1][0] < 10 and counts[1][1] > 1.0 and counts[3] == (10, 1.0)


def test_a_checkpoint_mid_epoch_resumes_the_same_scores_and_epochs():
    def run(stop_at: int | None = None):
        sampler = hardbatch.HardBatchSampler(30, 3, epochs=6, policy="bls", seed=5)
        trained, step = [], 0
        while not sampler.done:
            for indices in sampler:
                step += 1
                trained.append(indices)
                sampler.record(torch.tensor(float(sum(indices) % 7)) * sampler.weights()[0])
                if step == stop_at:
                    state = sampler.state_dict()
                    sampler = hardbatch.HardBatchSampler(30, 3, epochs=6, policy="bls", seed=5)
                    sampler.load_state_dict(state)
                    break
        return trained, sampler.policy.scores.values

    straight, scores = run()
    for stop_at in (5, 14, 23):
        resumed, resumed_scores = run(stop_at)
        assert resumed == straight and torch.equal(resumed_scores, scores)


def test_bls_needs_only_a_batch_mean_loss():
    sampler = hardbatch.HardBatchSampler(40, 4, epochs=2, policy="bls")
    assert not sampler.policy.per_sample and not sampler.policy.scores_first
    for _ in sampler:
        sampler.record(2.0)  # a plain number: no per-sample losses, not even a tensor
    assert sampler.policy.scores.values.tolist() == pytest.approx([0.2] * 40)
