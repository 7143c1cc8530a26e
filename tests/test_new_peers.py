"""The peers composer-sb, rho-loss, seta and ies pinned on scripted losses: plans, choices, resume and bad input."""

from __future__ import annotations

import io
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hardbatch.errors import UsageError
from hardbatch.selection import HardBatchSampler
from hardbatch.selection.composer_sb import ComposerSBParams, ComposerSBPolicy, rank_percentiles
from hardbatch.selection.ies import IESParams, IESPolicy, mastered
from hardbatch.selection.policy import Step
from hardbatch.selection import POLICIES
from hardbatch.params import check_params
from hardbatch.selection.rho_loss import RhoLossParams, RhoLossPolicy, irreducible_losses
from hardbatch.selection.seta import SeTaParams, SeTaPolicy, kmeans_1d, window_size


def partition() -> torch.Tensor:
    return torch.arange(40).view(10, 4)


def hashed(seed: int):
    """Scripted losses ``f(i, e)``: sample i's loss in epoch e, multiples of 2**-20 below 1 (exact in float32)."""
    return lambda i, e: random.Random(seed * 1_000_003 + i * 1009 + e).randrange(1 << 20) / (1 << 20)


def drive(sampler: HardBatchSampler, loss_of, stop_after: int | None = None) -> list[tuple]:
    """Run ``sampler`` the way ``training.fit`` does, with ``loss_of(i, e)`` (sample i's loss in epoch e) for a model.

    A scoring step after epoch e sees the epoch-e losses. Scores-first policies get the batch's losses before the
    step unless ``needs_scores`` says no; only the samples weighted > 0 are trained. Returns one tuple per recorded
    item: (kind, round, epoch, batch, samples, trained samples, their losses).
    """
    log: list[tuple] = []
    while not sampler.done:
        for indices in sampler:
            step, policy = sampler.pending, sampler.policy
            epoch = sampler.epoch - step.score_only
            losses = torch.tensor([loss_of(i, epoch) for i in indices])
            if step.score_only:
                sampler.record(losses.mean(), losses)
                log.append(("score", sampler.round, epoch, step.batch, indices, [], losses.tolist()))
            else:
                kept = indices
                if policy.scores_first:
                    needs = policy.needs_scores(step)
                    keep = (sampler.weights(losses) if needs else sampler.weights()) > 0
                    kept, losses = [i for i, k in zip(indices, keep.tolist()) if k], losses[keep]
                sampler.record(losses.mean(), losses)
                log.append(("train", sampler.round, epoch, step.batch, indices, kept, losses.tolist()))
            if stop_after is not None and len(log) == stop_after:
                return log
    return log


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def resumes_exactly(make, loss_of, stop_after: int) -> None:
    """A run stopped after ``stop_after`` items and resumed from its state_dict in a fresh sampler (another seed)
    continues exactly as the uninterrupted run."""
    whole = make(0)
    expected = drive(whole, loss_of)
    first = make(0)
    head = drive(first, loss_of, stop_after)
    second = make(99)
    second.load_state_dict(roundtrip(first.state_dict()))
    assert head + drive(second, loss_of) == expected
    assert torch.equal(second.sample_visits, whole.sample_visits)


def trained(log, epoch=None) -> list[tuple]:
    return [r for r in log if r[0] == "train" and (epoch is None or r[2] == epoch)]


# ---- composer-sb ---------------------------------------------------------------------------------


def test_composer_sb_percentile_of_rank_i_is_i_plus_half_over_b_ties_in_position_order():
    order, percentile = rank_percentiles(torch.tensor([3.0, 1.0, 2.0, 1.0]))
    assert order.tolist() == [1, 3, 2, 0]
    assert percentile.tolist() == [0.125, 0.375, 0.625, 0.875]


def test_composer_sb_selects_in_the_window_except_every_interrupt_th_batch_of_an_epoch():
    # N = 9 batches, 10 epochs: T = 90, the window [0.5, 0.9) is steps 45..80; interrupt 2 trains batches 1, 3, 5, 7
    # of each epoch (0-based) in full, so steps 53 and 54 (batches 8 and 0) both select.
    policy = ComposerSBPolicy(torch.arange(36).view(9, 4), epochs=10)
    assert [s for s in range(90) if policy.selects(s)] == [s for s in range(45, 81) if s % 9 % 2 == 0]
    assert policy.selects(53) and policy.selects(54) and not policy.selects(46)
    always = ComposerSBPolicy(torch.arange(36).view(9, 4), epochs=10, interrupt=0, start=0.0, end=0.1)
    assert [s for s in range(90) if always.selects(s)] == list(range(9))
    third = ComposerSBPolicy(torch.arange(36).view(9, 4), epochs=10, interrupt=3, start=0.0, end=1.0)
    assert [s for s in range(9) if third.selects(s)] == [0, 1, 3, 4, 6, 7]
    whole = ComposerSBPolicy(torch.arange(36).view(9, 4), epochs=10, keep=1.0, start=0.0, end=1.0, interrupt=0)
    assert not any(whole.selects(s) for s in range(90))  # keep = 1: Composer never selects


def test_composer_sb_trains_whole_batches_without_scores_outside_selection_and_keep_b_inside():
    policy = ComposerSBPolicy(partition(), epochs=4, keep=0.5, start=0.25, end=0.75, seed=3)
    sampler = HardBatchSampler(partition(), epochs=4, policy=policy)
    log = drive(sampler, hashed(1))
    steps = trained(log)
    assert len(steps) == 40 and sampler.done
    for s, (_, _, epoch, batch, samples, kept, _) in enumerate(steps):
        if 10 <= s < 30 and batch % 2 == 0:
            assert len(kept) == 2 and set(kept) <= set(samples)  # ⌊0.5 · 4⌋
        else:
            assert kept == samples
    assert int(sampler.sample_visits.sum()) == 160 - 10 * 2  # 10 selecting steps dropped 2 samples each
    # Every epoch is a fresh cut of all 40 samples, as in uniform.
    for epoch in range(4):
        assert sorted(i for r in trained(log, epoch) for i in r[4]) == list(range(40))


def test_composer_sb_steps_without_selection_come_planned_with_weight_one_and_need_no_scores():
    policy = ComposerSBPolicy(partition(), epochs=2, start=0.5, end=1.0)
    first = policy.plan()
    assert all(s.weights.tolist() == [1.0] * 4 and not policy.needs_scores(s) for s in first)  # steps 0..9
    for s in first:
        policy.observe(s, 0.0)
    second = policy.plan()  # steps 10..19: batches 0, 2, 4, 6, 8 select
    assert [policy.needs_scores(s) for s in second] == [b % 2 == 0 for b in range(10)]
    sampler = HardBatchSampler(partition(), epochs=2, policy=ComposerSBPolicy(partition(), epochs=2))
    next(iter(sampler))
    assert sampler.weights().tolist() == [1.0] * 4  # no scores asked for: the loop skips the no-grad forward


@pytest.mark.parametrize("keep, b, count", [(0.5, 4, 2), (0.3, 10, 3), (0.1, 4, 1), (0.25, 8, 2), (0.9, 10, 9),
                                             (0.57, 100, 57)])
def test_composer_sb_keeps_exactly_floor_keep_b_at_least_one(keep, b, count):
    policy = ComposerSBPolicy(torch.arange(4 * b).view(4, b), epochs=1, keep=keep, start=0.0)
    step = policy.plan()[0]
    for scores in torch.rand(20, b, generator=torch.Generator().manual_seed(0)):
        weights = policy.select(step, scores)
        assert weights.sum().item() == count and set(weights.tolist()) <= {0.0, 1.0}


def inclusion_probabilities(weights: list[float]) -> list[float]:
    """P(rank i among two draws without replacement, each proportional to weight), exactly."""
    total = sum(weights)
    return [w / total + sum(v / total * w / (total - v) for j, v in enumerate(weights) if j != i)
            for i, w in enumerate(weights)]


@pytest.mark.parametrize("keep, b", [(0.5, 4), (0.25, 8)])
def test_composer_sb_draws_by_rank_percentile_to_the_one_over_keep_minus_one(keep, b):
    policy = ComposerSBPolicy(torch.arange(4 * b).view(4, b), epochs=1, keep=keep, start=0.0, seed=5)
    step = policy.plan()[0]
    scores = torch.tensor([0.7, 0.1, 0.9, 0.3, 0.5, 0.2, 0.8, 0.4][:b])
    rank = torch.argsort(torch.argsort(scores)).tolist()  # each position's rank, 0 = lowest loss
    draws = 1000
    counts = torch.stack([policy.select(step, scores) for _ in range(draws)]).sum(dim=0) / draws
    exact = inclusion_probabilities([((i + 0.5) / b) ** (1 / keep - 1) for i in range(b)])  # two kept
    assert counts.tolist() == pytest.approx([exact[r] for r in rank], abs=0.05)  # 3 standard errors


def test_composer_sb_resumes_exactly_mid_run():
    def make(seed):
        policy = ComposerSBPolicy(partition(), epochs=5, start=0.2, end=0.8, keep=0.5, seed=seed)
        return HardBatchSampler(partition(), epochs=5, policy=policy)

    for stop_after in (13, 27):
        resumes_exactly(make, hashed(2), stop_after)


@pytest.mark.parametrize("params, message", [
    (dict(start=-0.1), "--start must be in \\[0, 1\\), got -0.1"),
    (dict(start=1.0, end=1.0), "--start must be in \\[0, 1\\), got 1.0"),
    (dict(end=0.0, start=0.0), "--end must be in \\(0, 1\\], got 0.0"),
    (dict(end=1.5), "--end must be in \\(0, 1\\], got 1.5"),
    (dict(start=0.6, end=0.4), "--start must be below --end, got start 0.6 and end 0.4"),
    (dict(keep=0.0), "--keep must be in \\(0, 1\\], got 0.0"),
    (dict(keep=1.5), "--keep must be in \\(0, 1\\], got 1.5"),
    (dict(keep=math.nan), "--keep must be in \\(0, 1\\], got nan"),
    (dict(interrupt=-1), "--interrupt must be an integer >= 0"),
    (dict(interrupt=1.5), "--interrupt must be an integer >= 0"),
])
def test_composer_sb_refuses_bad_hyper_parameters_in_one_line(params, message):
    with pytest.raises(UsageError, match=message) as error:
        check_params(ComposerSBParams(**params))
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match=message):
        ComposerSBPolicy(partition(), **params)


# ---- rho-loss ------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep, size, count", [(0.5, 8, 5), (0.3, 14, 2), (0.1, 40, 1), (1.0, 4, 10)])
def test_rho_loss_cuts_a_fresh_permutation_into_candidate_batches_of_ceil_b_over_keep(keep, size, count):
    policy = RhoLossPolicy(partition(), select_fraction=keep, seed=1)
    passes = [policy.plan() for _ in range(3)]
    for steps in passes:
        assert len(steps) == count and [s.batch for s in steps] == list(range(count))
        flat = [i for s in steps for i in s.samples.tolist()]
        assert all(len(s.samples) == size for s in steps) and len(set(flat)) == len(flat) == size * count
    assert len({tuple(i for s in steps for i in s.samples.tolist()) for steps in passes}) == 3


def test_rho_loss_trains_the_b_highest_training_minus_irreducible_losses():
    irreducible = torch.zeros(40)
    irreducible[:8] = torch.tensor([0.0, 2.0, 0.5, 0.0, 3.0, 0.25, 0.0, 1.0])
    policy = RhoLossPolicy(partition(), select_fraction=0.5, irreducible=irreducible)
    step = Step(torch.arange(8), 0)
    scores = torch.tensor([1.0, 2.5, 1.0, 0.25, 3.0, 1.25, 0.75, 1.5])
    # reducible: [1, 0.5, 0.5, 0.25, 0, 1, 0.75, 0.5]: 1, 1, 0.75, then 0.5 three times: the earliest (position 1).
    assert policy.select(step, scores).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    # The highest training losses are not what is chosen: position 4 (3.0) is unlearnable (IL 3.0).
    assert RhoLossPolicy(partition(), select_fraction=0.5, irreducible=torch.zeros(40)).select(step, scores).tolist() == [
        0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_rho_loss_through_the_sampler_spends_epochs_times_n_steps_of_b():
    irreducible = torch.tensor([hashed(9)(i, 0) for i in range(40)])

    def make(seed):
        policy = RhoLossPolicy(partition(), select_fraction=0.3, irreducible=irreducible, seed=seed, epochs=3)
        return HardBatchSampler(partition(), epochs=3, policy=policy)

    sampler = make(0)
    log = drive(sampler, hashed(4))
    assert sampler.done and sampler.steps == 30 == len(log) and sampler.epoch == 3  # 15 passes of 2 candidates
    loss = hashed(4)
    for _, _, epoch, _, samples, kept, _ in log:
        reducible = [loss(i, epoch) - irreducible[i].item() for i in samples]
        top = sorted(range(14), key=lambda p: (-reducible[p], p))[:4]
        assert kept == [samples[p] for p in sorted(top)]
    assert int(sampler.sample_visits.sum()) == 30 * 4
    for stop_after in (7, 20):
        resumes_exactly(make, hashed(4), stop_after)


def test_rho_loss_without_irreducible_losses_says_what_to_set():
    policy = RhoLossPolicy(partition(), select_fraction=0.5)
    with pytest.raises(RuntimeError, match="no irreducible losses: set policy.irreducible"):
        policy.select(policy.plan()[0], torch.rand(8))
    with pytest.raises(ValueError, match="shape \\(40,\\), one per training sample, got \\(39,\\)"):
        policy.irreducible = torch.zeros(39)
    policy.irreducible = torch.ones(40)
    assert policy.select(policy.plan()[0], torch.rand(8)).sum() == 4


def test_rho_loss_refuses_candidate_batches_larger_than_the_data():
    with pytest.raises(UsageError, match="--select-fraction 0.05 makes candidate batches of .* = 80 samples, more than the 40"):
        RhoLossPolicy(partition(), select_fraction=0.05)


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.01, math.inf])
def test_rho_loss_refuses_bad_keep_in_one_line(keep):
    with pytest.raises(UsageError, match=f"--select-fraction must be in \\(0, 1\\], got {keep}"):
        check_params(RhoLossParams(select_fraction=keep))


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
    doubled = irreducible_losses(model, DataLoader(TensorDataset(x, y), batch_size=3), "cpu",
                                 transform=lambda batch, generator: 2 * batch)
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
        irreducible_losses(model, DataLoader(rows, batch_size=3), "cpu",
                           loss_fn=lambda outputs, batch: reducers.mse(outputs, batch).mean())


def test_the_il_models_quality_is_its_top1_and_mean_loss_on_the_training_split(monkeypatch):
    from hardbatch.run import holdout
    from hardbatch.config import RunConfig
    from hardbatch.data import load_dataset

    cfg = RunConfig(dataset="digits", model="mlp", train_subset=400, val_fraction=0.25, batch_size=32, epochs=3,
                    policy="rho-loss", select_fraction=0.5)
    data = load_dataset(cfg)
    scored = {}

    def spy(model, loader, device, transform=None, **kw):  # keep the IL model to check its numbers independently
        scored["model"] = model
        return irreducible_losses(model, loader, device, transform, **kw)

    monkeypatch.setattr(holdout, "irreducible_losses", spy)
    losses, cost, quality = holdout.train_irreducible(cfg, data, torch.device("cpu"))
    model = scored["model"].eval()
    x, y = zip(*[(xb, yb) for xb, yb, *_ in data.eval_loader(data.train)])
    with torch.no_grad():
        logits = model(data.eval_transform(torch.cat(x), None) if data.eval_transform else torch.cat(x))
    y = torch.cat(y)
    assert quality["holdout_samples"] == len(data.val) and len(losses) == len(data.train) == 400
    assert quality["train_top1"] == (logits.argmax(1) == y).sum().item() / 400
    assert 0.3 < quality["train_top1"] < 1.0  # learnt something from the validation digits, not everything
    assert quality["train_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert cost["samples_forward_nograd"] == 400  # the scoring pass, counted once


# ---- seta ----------------------------------------------------------------------------------------


def test_kmeans_1d_finds_separated_groups_and_sorts_them_easy_to_hard():
    values = torch.tensor([9.0, 0.1, 5.0, 0.2, 9.2, 5.1, 0.15, 8.8])
    assert kmeans_1d(values, 3).tolist() == [2, 0, 1, 0, 2, 1, 0, 2]
    # Starts at the 1/4 and 3/4 quantiles (1 and 4); Lloyd moves the boundary from 2.5 to 3.08 to 6 and settles.
    assert kmeans_1d(torch.tensor([4.0, 0.0, 3.0, 1.0, 10.0]), 2).tolist() == [0, 0, 0, 0, 1]
    assert kmeans_1d(torch.full((6,), 2.0), 3).tolist() == [0, 0, 1, 1, 2, 2]  # all equal: equal chunks
    # Fewer values than clusters: starts [1, 1, 3, 3]; a tie between equal centres goes to the lower id.
    assert kmeans_1d(torch.tensor([1.0, 3.0]), 4).tolist() == [0, 2]
    assert kmeans_1d(torch.zeros(0), 3).tolist() == []


@pytest.mark.parametrize("groups, window, size", [(5, 0.9, 4), (10, 0.5, 5), (3, 0.5, 2), (4, 0.5, 2), (5, 1.0, 5)])
def test_seta_window_is_round_groups_times_window(groups, window, size):
    assert window_size(groups, window) == size


def scripted_seta(epochs=10, **params) -> SeTaPolicy:
    return SeTaPolicy(partition(), epochs=epochs, seed=4, **params)


def observe_all(policy: SeTaPolicy, score) -> None:
    """Give every sample a loss, as if all had been trained."""
    policy.observe(Step(torch.arange(40), 0), 0.0, torch.tensor([score(i) for i in range(40)]))


def planned_with_kept(policy):
    """Plan the next epoch; returns (its samples, the random-pruning survivors its first draw kept)."""
    generator = torch.Generator()
    generator.set_state(policy.generator.get_state())
    kept = torch.randperm(40, generator=generator)[: math.floor((1 - policy.random_prune) * 40 + 1e-9)].tolist()
    steps = policy.plan()
    assert all(len(s.samples) == 4 for s in steps) and [s.batch for s in steps] == list(range(len(steps)))
    return [i for s in steps for i in s.samples.tolist()], kept


def test_seta_window_slides_one_cluster_harder_each_epoch_and_wraps_over_the_random_survivors():
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
            starts.append(start)
            chosen = {i for i in kept if start <= i % 4 < start + 2}
        assert set(samples) <= chosen and len(samples) == len(chosen) // 4 * 4 and len(set(samples)) == len(samples)
        observe_all(policy, lambda i: 10.0 * (i % 4) + i / 100)
    assert starts == [1, 2, 0, 1, 2, 0, 1]


def test_seta_trains_kept_samples_without_a_loss_whatever_the_window():
    policy = scripted_seta(random_prune=0.25, groups=4, window=0.25)  # w = 1
    policy.plan()
    policy.observe(Step(torch.arange(20), 0), 0.0, torch.tensor([10.0 * (i % 4) for i in range(20)]))
    samples, kept = planned_with_kept(policy)  # epoch 1: only cluster 1 (i % 4 == 1) of the known, all the unknown
    chosen = {i for i in kept if i >= 20 or i % 4 == 1}
    assert set(samples) <= chosen and len(samples) == len(chosen) // 4 * 4


def test_seta_tops_up_a_selection_smaller_than_a_batch_into_one_batch():
    policy = scripted_seta(random_prune=0.0, groups=4, window=0.25)
    policy.plan()
    observe_all(policy, lambda i: 0.0 if i < 38 else 1.0)  # two clusters hold all: {0..37} and {38, 39}
    policy.round = 2  # window start 2 mod 4 = 2: an empty cluster -> nothing chosen
    (step,) = policy.plan()
    assert len(step.samples) == 4 and len(set(step.samples.tolist())) == 4


def test_seta_with_nothing_pruned_and_one_window_of_everything_is_a_reshuffle_of_all_data():
    policy = scripted_seta(random_prune=0.0, groups=1, window=1.0)
    sampler = HardBatchSampler(partition(), epochs=3, policy=policy)
    log = drive(sampler, hashed(3))
    for epoch in range(3):
        assert sorted(i for r in trained(log, epoch) for i in r[5]) == list(range(40))


def test_seta_through_the_sampler_runs_its_epochs_and_resumes_exactly():
    def make(seed):
        policy = SeTaPolicy(partition(), epochs=6, random_prune=0.2, groups=3, window=0.67, anneal=0.2, seed=seed)
        return HardBatchSampler(partition(), epochs=6, policy=policy)

    sampler = make(0)
    log = drive(sampler, hashed(6))
    assert sampler.done and sampler.epoch == 6 and sampler.steps == len(log)
    lengths = [len(trained(log, e)) for e in range(6)]
    # 32 of 40 survive the random pruning (8 batches); the window drops a cluster in epochs 1..3; ⌊6 · 0.8⌋ = 4, so
    # epochs 4 and 5 anneal.
    assert lengths[0] == lengths[4] == lengths[5] == 8 and all(n < 8 for n in lengths[1:4])
    for stop_after in (9, 25):
        resumes_exactly(make, hashed(6), stop_after)


def test_seta_needs_per_sample_losses():
    policy = scripted_seta()
    with pytest.raises(RuntimeError, match="per-sample"):
        policy.observe(policy.plan()[0], 1.0)


@pytest.mark.parametrize("params, message", [
    (dict(random_prune=1.0), "--random-prune must be in \\[0, 1\\), got 1.0"),
    (dict(random_prune=-0.1), "--random-prune must be in \\[0, 1\\), got -0.1"),
    (dict(groups=0), "--groups must be an integer >= 1, got 0"),
    (dict(groups=2.0), "--groups must be an integer >= 1, got 2.0"),
    (dict(window=0.0), "--window must be in \\(0, 1\\], got 0.0"),
    (dict(window=1.2), "--window must be in \\(0, 1\\], got 1.2"),
    (dict(groups=5, window=0.1), "--window 0.1 with --groups 5 makes a window of round\\(5 · 0.1\\) = 0 clusters"),
    (dict(anneal=1.5), "--anneal must be in \\[0, 1\\], got 1.5"),
    (dict(anneal=math.nan), "--anneal must be in \\[0, 1\\], got nan"),
])
def test_seta_refuses_bad_hyper_parameters_in_one_line(params, message):
    with pytest.raises(UsageError, match=message) as error:
        check_params(SeTaParams(**params))
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match=message):
        SeTaPolicy(partition(), **params)


# ---- ies -----------------------------------------------------------------------------------------


def test_mastered_averages_the_latest_absolute_second_differences_hand_computed():
    history = torch.tensor([
        [1.0, 0.875, 0.75, 0.625, 0.5, 0.375],  # linear: every d = 0 -> mastered
        [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125],  # d = .25, .125, .0625, .03125: mean of the last 3 = .073
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # flat, but only 5 losses recorded yet
        [0.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # d = -1, 0, 0, 0: the oldest d is outside the window of 3
        [1.0, 0.5, 1.0, 0.5, 1.0, 0.5],  # oscillating: |d| = 1
    ])
    counts = torch.tensor([6, 9, 5, 6, 6])
    assert mastered(history, counts, 1e-3, 3, 1).tolist() == [True, False, False, True, False]
    assert mastered(history, counts, 0.1, 3, 1).tolist() == [True, True, False, True, False]
    # patience 2 (L = 7 here: one more loss): the sum of the last two sliding means must stay below τ.
    wide = torch.cat([torch.zeros(5, 1), history], dim=1)
    wide[0, 0], wide[3, 0] = 1.125, 0.0
    assert mastered(wide, counts + 1, 1e-3, 3, 2).tolist() == [True, False, False, False, False]
    assert not mastered(history, counts, 0.0, 3, 1).any()  # τ = 0: nothing is ever mastered


def ies_losses(i: int, e: int) -> float:
    """Samples 0..17 fall linearly (every d = 0) but 0..3 jump to 4.0 from epoch 8; 18..39 are random."""
    if i < 4 and e >= 8:
        return 4.0
    if i < 18:
        return 2.0 - e / 8
    return hashed(7)(i, e)


def test_ies_leaves_out_mastered_samples_scores_them_after_each_epoch_and_takes_back_those_that_move():
    policy = IESPolicy(partition(), epochs=11, seed=2)
    sampler = HardBatchSampler(partition(), epochs=11, policy=policy)
    log = drive(sampler, ies_losses)
    assert sampler.done and sampler.epoch == 11
    for epoch in range(11):
        steps = [r for r in log if r[2] == epoch]
        kinds = [r[0] for r in steps]
        assert kinds == sorted(kinds, reverse=True)  # training first, then the scoring pass
        samples = [i for r in steps if r[0] == "train" for i in r[5]]
        scored = [r[4] for r in steps if r[0] == "score"]
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
    # One loss per sample and epoch: 4..17 trained in epochs 0..5 and scored after 6..9, the repeats not counted.
    assert policy.counts[4:18].tolist() == [10] * 14


def test_ies_tops_up_a_last_batch_from_left_out_samples_which_are_then_not_scored():
    policy = IESPolicy(partition(), epochs=3)
    policy.history[:38] = torch.tensor([1.0, 0.875, 0.75, 0.625, 0.5, 0.375])
    policy.counts[:38] = 6
    (step,) = policy.plan()
    topped = set(step.samples.tolist())
    assert {38, 39} <= topped and len(topped) == 4
    scoring = policy.plan()
    assert all(s.score_only and len(s.samples) == 4 for s in scoring) and len(scoring) == 9
    assert sorted(i for s in scoring for i in s.samples.tolist()) == sorted(set(range(38)) - topped)


def test_ies_with_threshold_zero_trains_every_sample_every_epoch_and_never_scores():
    sampler = HardBatchSampler(partition(), epochs=8, policy=IESPolicy(partition(), epochs=8, threshold=0.0))
    log = drive(sampler, ies_losses)
    assert len(log) == 80 and all(r[0] == "train" for r in log)


def test_ies_resumes_exactly_mid_training_and_mid_scoring_pass():
    def make(seed):
        return HardBatchSampler(partition(), epochs=9, policy=IESPolicy(partition(), epochs=9, seed=seed))

    log = drive(make(0), ies_losses)
    first_score = next(n for n, r in enumerate(log) if r[0] == "score")
    for stop_after in (first_score - 2, first_score + 2, len(log) - 3):
        resumes_exactly(make, ies_losses, stop_after)


def test_ies_needs_per_sample_losses():
    policy = IESPolicy(partition())
    with pytest.raises(RuntimeError, match="per-sample"):
        policy.observe(policy.plan()[0], 1.0)


@pytest.mark.parametrize("params, message", [
    (dict(threshold=-1e-3), "--threshold must be a finite number >= 0, got -0.001"),
    (dict(threshold=math.inf), "--threshold must be a finite number >= 0, got inf"),
    (dict(smoothing=0), "--smoothing must be an integer >= 1, got 0"),
    (dict(smoothing=2.5), "--smoothing must be an integer >= 1, got 2.5"),
    (dict(patience=0), "--patience must be an integer >= 1, got 0"),
])
def test_ies_refuses_bad_hyper_parameters_in_one_line(params, message):
    with pytest.raises(UsageError, match=message) as error:
        check_params(IESParams(**params))
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match=message):
        IESPolicy(partition(), **params)


# ---- all four ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(POLICIES))
def test_params_are_frozen_documented_and_their_defaults_are_valid(name):
    """Every registered policy's Params: each field has a one-line help and a range (a name field: none), and
    the defaults pass every check."""
    from hardbatch.params import check_params

    params = POLICIES[name].Params
    defaults = params()
    check_params(defaults)
    for f in params.__dataclass_fields__.values():
        assert f.metadata["help"] and "\n" not in f.metadata["help"]
        assert f.metadata["range"] is not None or isinstance(f.default, (bool, str)) or f.default is None
    if params.__dataclass_fields__:
        with pytest.raises(Exception):
            defaults.__setattr__(next(iter(params.__dataclass_fields__)), 0)


class PlainSGD:
    """Plain SGD for the loop tests: torch.optim's first step imports torch._dynamo, seconds on a loaded machine."""

    def __init__(self, params, lr: float):
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                p -= self.param_groups[0]["lr"] * p.grad


@pytest.mark.parametrize("name", ["composer-sb", "rho-loss", "seta", "ies"])
def test_each_runs_through_the_training_loop_unchanged(name):
    from hardbatch.training import CostMeter, fit

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=generator)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    epochs = 6
    policy = {
        "composer-sb": lambda: ComposerSBPolicy(partition(), epochs=epochs, start=0.0, end=1.0),
        "rho-loss": lambda: RhoLossPolicy(partition(), epochs=epochs, select_fraction=0.5, irreducible=irreducible_losses(
            model, DataLoader(data, batch_size=16), "cpu")),
        "seta": lambda: SeTaPolicy(partition(), epochs=epochs, random_prune=0.2, groups=3, window=0.67),
        "ies": lambda: IESPolicy(partition(), epochs=epochs, threshold=10.0, smoothing=1),  # all mastered from epoch 4
    }[name]()
    sampler = HardBatchSampler(partition(), epochs=epochs, policy=policy)
    meter, ends = CostMeter(), []
    fit(model, PlainSGD(model.parameters(), lr=0.1), DataLoader(data, batch_sampler=sampler), sampler, {},
        torch.device("cpu"), meter=meter, on_epoch=ends.append)
    assert sampler.done and len(ends) == epochs and meter.optimizer_steps == sampler.steps
    assert meter.samples_backprop == int(sampler.sample_visits.sum())
    if name == "ies":  # epochs 4 and 5 train one topped-up batch; the 36 others are scored after epoch 4
        assert sampler.steps == 4 * 10 + 2 and meter.samples_forward_nograd == 36
