"""Every selection policy's choices pinned on scripted losses, the sampler's budget and checkpoints, and bad input."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import random
import re
from collections import Counter, namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.cli import main
from hardbatch.config import DELTA_POLICIES, POLICY_NAMES, RunConfig
from hardbatch.run.plan import SAME_AS_RULE_AT_ONE, plan_compare
from hardbatch.selection import POLICIES, create_policy, HardBatchSampler, SelectiveBackpropPolicy, Step, top_k_batches
from hardbatch.functional import batch_scores, generator_for, infobatch_prune, percentiles, trimmed_top_k
from hardbatch.errors import TrainingDiverged
from hardbatch.training import score_losses




# ---- helpers -------------------------------------------------------------------------------------

# One recorded item of a pass: a training step or a scoring forward (``--rescore``).
Rec = namedtuple("Rec", "kind round batch samples kept weights losses loss")


def sample_losses(seed: int):
    """Scripted per-sample losses: ``f(i, v)`` is sample i's loss after it was trained v times.

    Values are multiples of 2**-20 below 1, exact in float32 (the stored dtype), and so are means of two.
    """

    def loss_of(i: int, v: int) -> float:
        return random.Random(seed * 1_000_003 + i * 1009 + v).randrange(1 << 20) / (1 << 20)

    return loss_of


def table(rows: dict[int, list[float]]):
    """Scripted losses by (sample, times trained); an unscripted visit fails the test."""

    def loss_of(i: int, v: int) -> float:
        assert v < len(rows[i]), f"sample {i} used a {v + 1}th time; the script has {len(rows[i])}"
        return rows[i][v]

    return loss_of


def drive(sampler: HardBatchSampler, train_loss, score_loss=None, *, trained: Counter | None = None,
          stop_after: int | None = None, draw_ahead: int = 0, progress: list | None = None) -> list[Rec]:
    """Run ``sampler`` the way ``training.fit`` does, with scripted losses instead of a model.

    ``train_loss(i, v)``: sample i's training loss the v-th time it is trained; ``score_loss(i, v)``: what a no-grad
    forward sees for it after v trainings (default: the same). Scoring steps record the mean of their scores;
    selective-backprop trains only the samples ``weights(scores)`` keeps, and a batch it keeps none of is recorded
    untrained ("skip", its mean score as the loss); weighted policies record the weighted mean.
    ``stop_after`` stops after that many recorded items, first drawing ``draw_ahead`` more (a prefetching loader).
    """
    trained = Counter() if trained is None else trained
    score_loss = score_loss or train_loss
    log: list[Rec] = []
    passes = 0
    while not sampler.done:
        passes += 1
        assert passes < 1000, "sampler never finished"
        it = iter(sampler)
        for indices in it:
            step = sampler.pending
            assert step.samples.tolist() == indices
            if step.score_only or sampler.policy.scores_first:
                scores = torch.tensor([score_loss(i, trained[i]) for i in indices])
            if step.score_only:
                assert sampler.record(scores.mean(), scores) == step.batch
                log.append(Rec("score", sampler.round, step.batch, indices, [], None, scores.tolist(),
                               scores.mean().item()))
            elif sampler.policy.scores_first and not (sampler.weights(scores) > 0).any():
                # Selective Backprop kept none: the batch is recorded untrained, as training.fit does.
                assert sampler.record(scores.mean()) == step.batch
                log.append(Rec("skip", sampler.round, step.batch, indices, [], step.weights.tolist(), scores.tolist(),
                               scores.mean().item()))
            else:
                if sampler.policy.scores_first:
                    keep = sampler.weights(scores) > 0  # the answer given above: one draw per batch
                    kept, weights = [i for i, k in zip(indices, keep.tolist()) if k], None
                else:
                    kept, weights = indices, sampler.weights()
                losses = torch.tensor([train_loss(i, trained[i]) for i in kept])
                trained.update(kept)
                loss = losses.mean() if weights is None else (losses * weights).mean()
                assert sampler.record(loss, losses) == step.batch
                w = None if step.weights is None else step.weights.tolist()
                log.append(Rec("train", sampler.round, step.batch, indices, kept, w, losses.tolist(), loss.item()))
            if progress is not None:
                progress.append(sampler.progress)
            if stop_after is not None and len(log) == stop_after:
                for _ in range(draw_ahead):
                    next(it, None)
                return log
    return log


def trained_steps(log: list[Rec]) -> list[Rec]:
    return [r for r in log if r.kind == "train"]


def rounds_of(log: list[Rec]) -> list[list[int]]:
    """The batch ids trained in each round, round by round."""
    rounds: dict[int, list[int]] = {}
    for r in trained_steps(log):
        rounds.setdefault(r.round, []).append(r.batch)
    assert sorted(rounds) == list(range(len(rounds)))
    return [rounds[r] for r in sorted(rounds)]


def stored_before_each_round(log: list[Rec], n: int) -> dict[int, list[float]]:
    """For a fixed-partition batch policy: each batch's last recorded loss when each round r >= 1 was planned."""
    stored = [math.nan] * n
    before: dict[int, list[float]] = {}
    for rec in log:
        if rec.kind == "train" and rec.round not in before:
            before[rec.round] = list(stored)
        stored[rec.batch] = rec.loss
    return before


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# Settings that make each policy do something (the defaults would for most); a policy missing here runs with its
# defaults, so a newly registered policy is still covered by every registry-parametrized test below.
SETTINGS = {
    "hardbatch": dict(delta=0.3),
    "random": dict(delta=0.3),
    "cyclic": dict(delta=0.3),
    "selective-backprop": dict(beta=1.0, loss_history=16),
    "infobatch": dict(prune_ratio=0.5, anneal=0.25),
}
# Opt-in variants (the paper's rule's, the peers'), run through the same tests.
VARIANTS = {
    "hardbatch+rescore": ("hardbatch", dict(delta=0.3, rescore=2)),
    "hardbatch+repartition": ("hardbatch", dict(delta=0.3, repartition=True)),
    "hardbatch+trim+mix": ("hardbatch", dict(delta=0.3, trim_top=0.2, mix=0.5)),
    "hardbatch+all": ("hardbatch", dict(delta=0.3, rescore=1, repartition=True, mix=0.4)),
    # The peers' options that restore hardbatch's earlier rules, or the authors' code's annealing weights.
    "selective-backprop+legacy": ("selective-backprop", dict(beta=1.0, loss_history=16, warmup_epoch=False,
                                                             score_in_train_mode=True, force_one=True, count_ties=True)),
    "infobatch+keep-weights": ("infobatch", dict(prune_ratio=0.5, anneal=0.25, keep_weights_in_anneal=True)),
}
CASES = {**{name: (name, SETTINGS.get(name, cls.example)) for name, cls in POLICIES.items()}, **VARIANTS}


def make_case(case: str, n: int = 26, batch_size: int = 2, epochs: int = 3, seed: int = 7) -> HardBatchSampler:
    name, params = CASES[case]
    params = dict(params)
    delta = params.pop("delta", 1.0)
    sampler = HardBatchSampler(n, batch_size, delta=delta, epochs=epochs, policy=name, shuffle_partition=True,
                               seed=seed, **params)
    if sampler.policy.needs_irreducible:  # what the experiment's holdout model would give: here, no irreducible loss
        sampler.policy.irreducible = torch.zeros(n)
    return sampler


# ---- the registry --------------------------------------------------------------------------------


def test_registry_holds_exactly_the_policies_the_cli_accepts():
    assert tuple(POLICIES) == POLICY_NAMES
    for name, cls in POLICIES.items():
        assert cls.name == name
        assert cls.uses_delta == (name in DELTA_POLICIES)
        assert isinstance(create_policy(name, 8, 0.5 if cls.uses_delta else 1.0, **cls.example), cls)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        hardbatch.selection.register(POLICIES["uniform"])


@pytest.mark.parametrize("name, param, value", [("random", "beta", 2.0), ("uniform", "rescore", 2),
                                                ("cyclic", "trim_top", 0.1), ("infobatch", "beta", 1.0),
                                                ("selective-backprop", "prune_ratio", 0.5)])
def test_create_policy_refuses_a_hyper_parameter_the_policy_does_not_use(name, param, value):
    with pytest.raises(hardbatch.UsageError, match=f"does not use {param}"):
        create_policy(name, 10, **{param: value})
    with pytest.raises(hardbatch.UsageError, match=f"does not use {param}"):
        HardBatchSampler(10, 1, policy=name, **{param: value})


def test_unknown_policy_lists_the_valid_names():
    with pytest.raises(hardbatch.UsageError, match="valid: " + ", ".join(POLICY_NAMES)):
        create_policy("hardest", 10)


# ---- every policy, through the sampler -----------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_spends_exactly_its_budget_and_progress_reaches_one(case):
    sampler = make_case(case)
    n_batches = sampler.num_batches  # 26 // 2 = 13
    progress: list[float] = []
    log = drive(sampler, sample_losses(1), progress=progress)
    steps = trained_steps(log)
    assert sampler.done and list(sampler) == [] and len(sampler) == 0
    assert sampler.steps == len(steps) == int(sampler.visits.sum())
    if sampler.policy.epoch_is_round:
        assert sampler.epoch == 3 == len(rounds_of(log))
    else:
        assert sampler.steps == 3 * n_batches and sampler.epoch == 3
    assert progress == sorted(progress) and progress[-1] == 1.0 and all(0 < p <= 1 for p in progress)
    # Every step trains at least one sample, and no sample twice.
    for r in steps:
        assert r.kept and len(set(r.kept)) == len(r.kept) and set(r.kept) <= set(r.samples)
    # sample_visits counts what was back-propagated.
    counts = Counter(i for r in steps for i in r.kept)
    assert sampler.sample_visits.tolist() == [counts[i] for i in range(26)]


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_is_reproducible_per_seed(case):
    a = drive(make_case(case, seed=3), sample_losses(2))
    assert drive(make_case(case, seed=3), sample_losses(2)) == a
    # The partition is seeded too, so another seed trains other samples whatever the policy.
    assert [r.samples for r in drive(make_case(case, seed=4), sample_losses(2))] != [r.samples for r in a]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("stop_after, draw_ahead", [(5, 0), (17, 2), (28, 0), (30, 1)])
def test_every_policy_resumes_mid_pass_from_its_state_dict(case, stop_after, draw_ahead):
    losses = sample_losses(5)
    expected = drive(make_case(case), losses)
    first = make_case(case)
    trained = Counter()
    head = drive(first, losses, trained=trained, stop_after=stop_after, draw_ahead=draw_ahead)
    assert len(head) == stop_after
    second = make_case(case, seed=99)  # the state carries the partition and every generator: the seed is overwritten
    second.load_state_dict(roundtrip(first.state_dict()))
    assert second.steps == first.steps and torch.equal(second.partition, first.partition)
    assert head + drive(second, losses, trained=trained) == expected


# ---- selective backprop --------------------------------------------------------------------------


def test_percentiles_are_the_fraction_of_the_history_strictly_below_each_loss():
    # Strictly smaller (<), as the authors' code counts (this was <= before: see count_ties).
    history = torch.tensor([4.0, 1.0, 3.0, 2.0])
    losses = torch.tensor([1.0, 2.0, 3.0, 5.0, 0.5, 2.5])
    assert percentiles(losses, history).tolist() == [0.0, 0.25, 0.5, 1.0, 0.0, 0.5]
    assert percentiles(losses, history, ties=True).tolist() == [0.25, 0.5, 0.75, 1.0, 0.0, 0.5]
    ties = torch.tensor([2.0, 2.0, 1.0, 3.0])
    assert percentiles(torch.tensor([2.0]), ties).tolist() == [0.25]  # the two other 2.0s do not count
    assert percentiles(torch.tensor([2.0]), ties, ties=True).tolist() == [0.75]


def test_selective_backprop_keep_probability_is_percentile_to_the_beta_in_the_last_h_losses():
    # The values changed with the percentile rule (< instead of <=): a sample no longer counts itself.
    one, two = SelectiveBackpropPolicy(4, beta=1.0, loss_history=4), SelectiveBackpropPolicy(4, beta=2.0, loss_history=4)
    assert one.keep_probabilities(torch.tensor([1.0, 2.0])).tolist() == [0.0, 0.5]  # history [1, 2]
    assert two.keep_probabilities(torch.tensor([1.0, 2.0])).tolist() == [0.0, 0.25]
    # The ring keeps the last four: [1, 2, 3, 0.5, 4] -> [2, 3, 0.5, 4].
    assert one.keep_probabilities(torch.tensor([3.0, 0.5, 4.0])).tolist() == [0.5, 0.0, 0.75]
    assert one.history.tolist() == [2.0, 3.0, 0.5, 4.0]
    assert two.keep_probabilities(torch.tensor([3.0, 0.5, 4.0])).tolist() == [0.25, 0.0, 0.5625]
    # A batch longer than the history: only its own last H losses remain.
    short = SelectiveBackpropPolicy(4, beta=1.0, loss_history=2)
    assert short.keep_probabilities(torch.tensor([5.0, 1.0, 3.0])).tolist() == [1.0, 0.0, 0.5]
    assert short.history.tolist() == [1.0, 3.0]
    # count_ties: the earlier rule, at or below.
    old = SelectiveBackpropPolicy(4, beta=1.0, loss_history=4, count_ties=True)
    assert old.keep_probabilities(torch.tensor([1.0, 2.0])).tolist() == [0.5, 1.0]
    assert old.keep_probabilities(torch.tensor([3.0, 0.5, 4.0])).tolist() == [0.75, 0.25, 1.0]


@pytest.mark.parametrize("count_ties, kept", [(False, 0.42), (True, 0.58)])
def test_selective_backprop_with_40_percent_zero_losses_keeps_0_42_as_the_original(count_ties, kept):
    """PEERS.md's measurement: 40% of the losses exactly 0.0 (saturated cross-entropy), the rest spread, β = 1.
    Counting strictly smaller losses keeps 0.6 · (0.4 + 0.6 / 2) = 0.42 and never a zero-loss sample; counting
    ties too keeps 0.4 · 0.4 + 0.6 · 0.7 = 0.58."""
    policy = SelectiveBackpropPolicy(4, beta=1.0, loss_history=1024, seed=0, count_ties=count_ties)
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
def test_selective_backprop_keeps_certain_samples_and_drops_impossible_ones(seed):
    # H = 1: the history is the batch's last loss, 3, so p = [0, 1, 0] whatever the draw (3 is not below itself;
    # it was kept under the earlier <= rule).
    policy = SelectiveBackpropPolicy(4, beta=1.0, loss_history=1, seed=seed)
    assert policy.select(policy.plan()[0], torch.tensor([1.0, 5.0, 3.0])).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("force_one", [False, True])
def test_selective_backprop_keeps_nothing_when_nothing_is_drawn_unless_forced(seed, force_one):
    # The authors' code trains nothing then; force_one (the earlier rule here) keeps the highest loss alone.
    policy = SelectiveBackpropPolicy(4, beta=50.0, loss_history=4, seed=seed, force_one=force_one)
    step = Step(torch.arange(3), 0)
    policy.select(step, torch.tensor([100.0]))
    # History [100, 1, 3, 2]: p^50 <= 0.5^50 < 1e-6, so the draw keeps none.
    assert policy.select(step, torch.tensor([1.0, 3.0, 2.0])).tolist() == ([0.0, 1.0, 0.0] if force_one else [0.0] * 3)


def test_selective_backprop_beta_zero_keeps_every_sample():
    policy = SelectiveBackpropPolicy(4, beta=0.0, loss_history=8)
    step = policy.plan()[0]
    scores = torch.rand(40, 5, generator=torch.Generator().manual_seed(0))
    assert all(policy.select(step, s).tolist() == [1.0] * 5 for s in scores)


@pytest.mark.parametrize("beta, kept", [(1.0, 1 / 2), (2.0, 1 / 3), (3.0, 1 / 4)])
def test_selective_backprop_keeps_one_in_beta_plus_one_of_stationary_losses(beta, kept):
    policy = SelectiveBackpropPolicy(4, beta=beta, loss_history=1024, seed=1)
    step = policy.plan()[0]
    scores = torch.rand(300, 32, generator=torch.Generator().manual_seed(2))
    fraction = torch.stack([policy.select(step, s) for s in scores]).mean().item()
    assert fraction == pytest.approx(kept, abs=0.03)  # E[p^beta] = 1 / (beta + 1) for uniform p


def test_selective_backprop_draws_are_reproducible_per_seed():
    scores = torch.rand(50, 8, generator=torch.Generator().manual_seed(0))

    def masks(seed):
        policy = SelectiveBackpropPolicy(4, beta=1.0, loss_history=64, seed=seed)
        step = policy.plan()[0]
        return [policy.select(step, s).tolist() for s in scores]

    assert masks(3) == masks(3)
    assert masks(3) != masks(4)


def test_selective_backprop_sampler_wants_the_scores_and_counts_only_kept_samples():
    # warmup_epoch=False: selection from the first batch on (the first epoch is otherwise a plain one, below).
    sampler = HardBatchSampler(12, 4, epochs=1, policy="selective-backprop", loss_history=1, seed=0,
                               warmup_epoch=False)
    indices = next(iter(sampler))
    assert sampler.policy.needs_scores(sampler.pending)
    with pytest.raises(RuntimeError, match="weights\\(scores\\)"):
        sampler.weights()
    # H = 1: only samples scoring above the batch's last score (2) are kept (p = 1), the rest have p = 0.
    weights = sampler.weights(torch.tensor([4.0, 1.0, 9.0, 2.0]))
    assert weights.tolist() == [1.0, 0.0, 1.0, 0.0]
    sampler.record(torch.tensor(1.0))
    assert sampler.steps == 1
    assert sampler.sample_visits[indices].tolist() == [1, 0, 1, 0]
    assert int(sampler.sample_visits.sum()) == 2


def test_selective_backprop_first_epoch_trains_everything_and_records_no_history():
    """As the authors' code: epoch 1 is a plain epoch (no scoring forward needed, nothing in the history);
    selection starts in epoch 2, with a history that holds only epoch-2 losses."""
    loss_of = sample_losses(3)
    sampler = HardBatchSampler(12, 4, epochs=2, policy="selective-backprop", beta=1.0, loss_history=8, seed=0)
    log = drive(sampler, loss_of)
    first = [r for r in log if r.round == 0]
    assert [r.kind for r in first] == ["train"] * 3 and all(r.kept == r.samples for r in first)
    assert all(r.weights == [1.0] * 4 for r in first)
    assert sampler.first_epoch_visits.tolist() == [1] * 12
    second = [r for r in log if r.round == 1]
    assert len(second) == 3 and any(len(r.kept) < 4 for r in second)  # selection in epoch 2
    # The history holds epoch 2's scores only (each sample trained once before): the last 8 of them.
    order = [i for r in second for i in r.samples]
    assert sampler.policy.history.tolist() == [loss_of(i, 1) for i in order][-8:]
    # The warm-up steps need no scores: the loop may skip their no-grad forward.
    fresh = HardBatchSampler(12, 4, epochs=2, policy="selective-backprop", seed=0)
    next(iter(fresh))
    assert not fresh.policy.needs_scores(fresh.pending) and fresh.weights().tolist() == [1.0] * 4


def test_selective_backprop_batches_it_keeps_none_of_are_no_steps_and_the_run_still_ends():
    """A batch of which the draw keeps nothing is consumed untrained (the authors' code); it is no optimizer step
    and no visit, and an epoch is a pass over the data, so the run ends after E passes even if nothing is kept."""
    constant = table({i: [0.5] * 3 for i in range(12)})  # all losses equal: none is strictly below another, p = 0
    sampler = HardBatchSampler(12, 4, epochs=3, policy="selective-backprop", seed=0)
    progress: list[float] = []
    log = drive(sampler, constant, progress=progress)
    assert [(r.round, r.kind) for r in log] == [(0, "train")] * 3 + [(1, "skip")] * 3 + [(2, "skip")] * 3
    assert sampler.done and sampler.epoch == 3 and sampler.steps == 3 and sampler.visits.tolist() == [1, 1, 1]
    assert sampler.sample_visits.tolist() == [1] * 12  # the warm-up only
    assert progress == sorted(progress) and progress[-1] == 1.0
    # force_one (the earlier rule): the highest loss (the first of equals) is trained alone instead.
    forced = HardBatchSampler(12, 4, epochs=3, policy="selective-backprop", seed=0, force_one=True)
    log = drive(forced, constant)
    assert [r.kind for r in log] == ["train"] * 9 and forced.steps == 9
    assert [r.kept for r in log[3:]] == [r.samples[:1] for r in log[3:]]


def test_selective_backprop_epoch_ends_on_its_last_batch_even_when_that_batch_is_skipped():
    sampler = HardBatchSampler(4, 2, epochs=2, policy="selective-backprop", seed=0, warmup_epoch=False)
    ended = []
    while not sampler.done:
        for _ in sampler:
            assert sampler.weights(torch.full((2,), 0.5)).tolist() == [0.0, 0.0]
            sampler.record(torch.tensor(0.5))
            ended.append(sampler.epoch_ended)
    assert ended == [False, True, False, True] and sampler.epoch == 2 and sampler.steps == 0


def test_score_losses_leaves_batchnorm_statistics_and_the_global_rng_unchanged():
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    x, y = torch.randn(16, 4, generator=generator), torch.randint(0, 3, (16,), generator=generator)
    model.train()
    with torch.no_grad():
        model(x)  # running statistics away from their initial values
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    reference = copy.deepcopy(model)
    rng = torch.get_rng_state()

    losses = score_losses(model, (x, y))

    assert torch.equal(torch.get_rng_state(), rng)
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name  # running_mean, running_var and num_batches_tracked
    assert model.training and losses.shape == (16,) and not losses.requires_grad
    # It is a training-mode forward: batch statistics, and the dropout mask the next draw of the RNG gives.
    with torch.no_grad():
        expected = F.cross_entropy(reference(x), y, reduction="none")
    assert torch.equal(losses, expected)
    assert not torch.equal(reference[1].running_mean, buffers["1.running_mean"])  # a plain forward does move them
    reference.eval()
    with torch.no_grad():
        assert not torch.allclose(losses, F.cross_entropy(reference(x), y, reduction="none"))


@pytest.mark.parametrize("was_training", [True, False])
def test_score_losses_in_eval_mode_is_an_eval_forward_that_restores_the_mode(was_training):
    """What selective-backprop scores with by default, as the authors' code: running statistics, no dropout."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    x, y = torch.randn(16, 4, generator=generator), torch.randint(0, 3, (16,), generator=generator)
    with torch.no_grad():
        model(x)  # running statistics away from their initial values
    model.train(was_training)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    losses = score_losses(model, (x, y), train_mode=False)
    assert model.training == was_training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        assert torch.equal(losses, F.cross_entropy(reference(x), y, reduction="none"))
    # The training-mode forward is another one (batch statistics, dropout), and it too leaves the mode as it was.
    assert not torch.allclose(score_losses(model, (x, y), train_mode=True), losses)
    assert model.training == was_training


# ---- InfoBatch -----------------------------------------------------------------------------------


def test_infobatch_prune_hand_computed():
    nan = math.nan
    # Known mean (1 + 2 + 3 + 10 + 0.5 + 8) / 6 = 4.083: below it are samples 0, 1, 2, 5 (m = 4).
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, nan, 0.5, 8.0, nan])
    below = {0, 1, 2, 5}
    seen = set()
    for seed in range(20):
        kept, boosted = infobatch_prune(scores, 0.5, torch.Generator().manual_seed(seed))
        kept = kept.tolist()
        pruned = set(range(8)) - set(kept)
        assert len(kept) == len(set(kept))
        assert len(pruned) == 2 and pruned <= below  # round(0.5 * 4): never above the mean, never unscored
        assert boosted.tolist() == [i in below for i in kept]
        seen.add(frozenset(pruned))
    assert len(seen) > 1  # which ones is drawn


@pytest.mark.parametrize("ratio, pruned", [(0.0, 0), (0.25, 1), (0.3, 1), (0.4, 2), (0.75, 3), (0.9, 4)])
def test_infobatch_prunes_round_ratio_times_m(ratio, pruned):
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])  # mean 6.6: m = 4 below
    kept, boosted = infobatch_prune(scores, ratio, torch.Generator().manual_seed(0))
    assert len(kept) == 10 - pruned and int(boosted.sum()) == 4 - pruned


def test_infobatch_prunes_nothing_without_scores():
    kept, boosted = infobatch_prune(torch.full((6,), math.nan), 0.5, torch.Generator().manual_seed(0))
    assert sorted(kept.tolist()) == list(range(6)) and not boosted.any()


# ⌊E·(1 − a)⌋ pruning epochs, as the authors' code (this was ⌈E·(1 − a)⌉: 14 at E = 15, 9 at E = 10, 3 at E = 3).
@pytest.mark.parametrize("epochs, anneal, pruning", [(8, 0.125, 7), (15, 0.125, 13), (10, 0.125, 8), (3, 0.125, 2),
                                                     (4, 0.5, 2), (5, 0.0, 5), (5, 1.0, 0), (10, 0.3, 7),
                                                     (10, 0.9, 1), (5, 0.8, 1)])  # 10 · (1 − 0.9) = 0.99999...
def test_infobatch_stops_pruning_for_the_final_anneal_fraction(epochs, anneal, pruning):
    sampler = HardBatchSampler(10, 1, epochs=epochs, policy="infobatch", prune_ratio=0.5, anneal=anneal, seed=1)
    assert sampler.policy.pruning_epochs == pruning
    log = drive(sampler, sample_losses(3))
    # With distinct losses some are always below the mean, so every scored pruning epoch prunes at least one.
    assert [len(r) < 10 for r in rounds_of(log)] == [1 <= e < pruning for e in range(epochs)]


def test_infobatch_epochs_prune_below_mean_samples_and_weight_the_kept_ones():
    # N = 12 batches of one sample (no remainder), E = 8, a = 0.125: epochs 0..6 may prune, epoch 7 trains all.
    r = 0.5
    sampler = HardBatchSampler(12, 1, epochs=8, policy="infobatch", prune_ratio=r, anneal=0.125, seed=2)
    progress: list[float] = []
    log = drive(sampler, sample_losses(4), progress=progress)
    steps = trained_steps(log)
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
    where the samples weighted 1/(1 − r) in the last pruning epoch keep that weight."""
    r = 0.5
    sampler = HardBatchSampler(12, 1, epochs=5, policy="infobatch", prune_ratio=r, anneal=0.4, seed=2,
                               keep_weights_in_anneal=keep)
    assert sampler.policy.pruning_epochs == 3  # ⌊5 · 0.6⌋: epochs 0-2 prune (epoch 0 has no scores), 3-4 do not
    steps = trained_steps(drive(sampler, sample_losses(4)))
    boosted = {s.samples[0] for s in steps if s.round == 2 and s.weights == [1 / (1 - r)]}
    assert boosted and len([s for s in steps if s.round == 2]) < 12
    for epoch in (3, 4):
        annealed = [s for s in steps if s.round == epoch]
        assert sorted(s.samples[0] for s in annealed) == list(range(12))
        for s in annealed:
            assert s.weights == [1 / (1 - r) if keep and s.samples[0] in boosted else 1.0]
            assert s.loss == pytest.approx(s.weights[0] * s.losses[0])


def test_infobatch_loads_a_state_saved_before_keep_weights_in_anneal_existed():
    sampler = HardBatchSampler(12, 1, epochs=3, policy="infobatch", seed=2)
    drive(sampler, sample_losses(4), stop_after=14)
    state = roundtrip(sampler.state_dict())
    del state["policy"]["boosted"]
    again = HardBatchSampler(12, 1, epochs=3, policy="infobatch", seed=2)
    again.load_state_dict(state)
    assert again.steps == sampler.steps and not again.policy.boosted.any()


def test_infobatch_with_ratio_zero_is_uniform_with_weight_one():
    sampler = HardBatchSampler(20, 2, epochs=3, policy="infobatch", prune_ratio=0.0, seed=0)
    log = drive(sampler, sample_losses(1))
    assert [len(r) for r in rounds_of(log)] == [10, 10, 10]
    assert all(w == 1.0 for s in trained_steps(log) for w in s.weights)


def test_infobatch_needs_per_sample_losses():
    sampler = HardBatchSampler(8, 2, epochs=2, policy="infobatch")
    next(iter(sampler))
    with pytest.raises(hardbatch.UsageError, match=r"policy 'infobatch' needs per-sample losses: record\(loss, "
                                                  r"sample_losses\) with sample_losses of shape \(2,\)"):
        sampler.record(1.0)
    assert sampler.steps == 0


# ---- cyclic, uniform -----------------------------------------------------------------------------


@pytest.mark.parametrize("n, delta, expected", [
    (6, 1 / 3, [[0, 1, 2, 3, 4, 5], [0, 1], [2, 3], [4, 5], [0, 1], [2, 3], [4, 5]]),
    # last trained after round 2: 4 at step 5, 0 at 6 -> [0, 4] in index order; then 1 (7), 2 (8); then 3 (9), 0 (10).
    (5, 0.4, [[0, 1, 2, 3, 4], [0, 1], [2, 3], [0, 4], [1, 2], [0, 3]]),
])
def test_cyclic_trains_the_k_batches_trained_longest_ago_in_index_order(n, delta, expected):
    constant = table({i: [float(i)] * 9 for i in range(n)})
    for seed, losses in ((0, sample_losses(1)), (5, sample_losses(2)), (0, constant)):
        sampler = HardBatchSampler(n, 1, delta=delta, epochs=3, policy="cyclic", seed=seed)
        assert rounds_of(drive(sampler, losses)) == expected  # independent of the losses and the seed


@pytest.mark.parametrize("n, batch_size", [(12, 3), (14, 3), (9, 1)])
def test_uniform_is_a_fresh_seeded_permutation_cut_into_n_batches_every_round(n, batch_size):
    sampler = HardBatchSampler(n, batch_size, epochs=4, policy="uniform", seed=6)
    log = drive(sampler, sample_losses(0))
    n_batches = n // batch_size
    generator = generator_for(6, "policy")
    cuts = []
    for r in range(4):
        steps = [s for s in trained_steps(log) if s.round == r]
        assert [s.batch for s in steps] == list(range(n_batches))
        flat = [i for s in steps for i in s.samples]
        assert len(flat) == len(set(flat)) == n_batches * batch_size  # each sample at most once per round
        expected = torch.randperm(n, generator=generator)[: n_batches * batch_size].view(n_batches, batch_size)
        assert [s.samples for s in steps] == expected.tolist()
        cuts.append(flat)
    assert len({tuple(c) for c in cuts}) == 4
    # The losses change nothing.
    assert [s.samples for s in drive(HardBatchSampler(n, batch_size, epochs=4, policy="uniform", seed=6),
                                     sample_losses(9))] == [s.samples for s in log]


# ---- the paper's rule and its variants -----------------------------------------------------------


def test_rescore_scores_every_batch_before_every_kth_round_and_refreshes_stale_losses():
    # N = 4 batches of one sample, k = 2, K = 2, 12 optimizer steps: scoring passes before rounds 2 and 4.
    train = table({0: [5.0, 1.0, 0.7], 1: [4.0, 0.9], 2: [3.0, 1.5, 0.5, 0.4], 3: [0.1, 8.0, 0.2]})
    score_rows = {(0, 2): 1.0, (1, 2): 0.8, (2, 1): 2.0, (3, 1): 9.0, (2, 3): 3.0, (3, 3): 0.3}
    sampler = HardBatchSampler(4, 1, delta=0.5, epochs=3, rescore=2)
    log = drive(sampler, train, lambda i, v: score_rows[(i, v)])
    assert [(r.kind, r.round, r.batch) for r in log] == [
        ("train", 0, 0), ("train", 0, 1), ("train", 0, 2), ("train", 0, 3),  # L = [5, 4, 3, 0.1]
        ("train", 1, 0), ("train", 1, 1),  # L = [1, 0.9, 3, 0.1]
        ("score", 1, 0), ("score", 1, 1), ("score", 1, 2), ("score", 1, 3),  # L = [1, 0.8, 2, 9]
        ("train", 2, 2), ("train", 2, 3),  # the stale batch 3 (0.1 since the warm-up) is chosen; L = [1, .8, 1.5, 8]
        ("train", 3, 2), ("train", 3, 3),  # L = [1, .8, .5, .2]
        ("score", 3, 0), ("score", 3, 1), ("score", 3, 2), ("score", 3, 3),  # L = [1, .8, 3, .3]
        ("train", 4, 0), ("train", 4, 2),
    ]
    assert sampler.done and sampler.steps == 12 and sampler.epoch == 3  # scoring steps are no optimizer steps ...
    assert sampler.visits.tolist() == [3, 2, 4, 3]  # ... nor visits
    assert sampler.policy.losses.tolist() == pytest.approx([0.7, 0.8, 0.4, 0.3])  # 1 and 3: from the scoring pass


@pytest.mark.parametrize("rescore, passes", [(1, [1, 2, 3, 4, 5, 6, 7]), (3, [3, 6]), (8, [])])
def test_rescore_passes_cover_all_batches_and_skip_nothing_of_the_budget(rescore, passes):
    # N = 10, k = 3, 30 steps: warm-up, rounds 1..6 of 3 and round 7 cut to 2.
    sampler = HardBatchSampler(10, 1, delta=0.3, epochs=3, rescore=rescore)
    log = drive(sampler, sample_losses(8))
    scored = [r for r in log if r.kind == "score"]
    assert [r.batch for r in scored] == list(range(10)) * len(passes)
    assert sorted({r.round + 1 for r in scored}) == passes  # planned before round `upcoming`
    assert [len(r) for r in rounds_of(log)] == [10, 3, 3, 3, 3, 3, 3, 2]
    assert sampler.steps == 30 and int(sampler.visits.sum()) == 30


def reference_repartition(n: int, batch_size: int, k: int, epochs: int, seed: int, loss_of) -> list[list[int]]:
    """The samples of each step under --repartition, written from the docs with plain lists: a warm-up over the
    fixed cut, then per round a fresh permutation of all n samples from the policy's generator cut into N batches
    of B, each scored by the mean of its samples' last known losses (+inf when none is known), top k by score."""
    n_batches = n // batch_size
    generator = generator_for(seed, "policy")
    last: dict[int, float] = {}
    trained: Counter = Counter()
    steps: list[list[int]] = []

    def train(samples):
        steps.append(samples)
        for i in samples:
            last[i] = loss_of(i, trained[i])
            trained[i] += 1

    for b in range(n_batches):
        train(list(range(b * batch_size, (b + 1) * batch_size)))
    while len(steps) < epochs * n_batches:
        cut = torch.randperm(n, generator=generator)[: n_batches * batch_size].view(n_batches, batch_size).tolist()
        scores = []
        for batch in cut:
            known = [last[i] for i in batch if i in last]
            scores.append(sum(known) / len(known) if known else math.inf)
        chosen = sorted(sorted(range(n_batches), key=lambda b: -scores[b])[:k])
        for b in chosen[: epochs * n_batches - len(steps)]:
            train(cut[b])
    return steps


@pytest.mark.parametrize("n, batch_size, delta, seed", [(6, 2, 1 / 3, 0), (7, 2, 1 / 3, 1), (20, 4, 0.4, 2),
                                                        (13, 3, 0.5, 3)])
def test_repartition_recuts_every_round_and_scores_batches_by_their_samples_last_losses(n, batch_size, delta, seed):
    k = math.floor(delta * (n // batch_size) + 1e-9)
    losses = sample_losses(seed)
    sampler = HardBatchSampler(n, batch_size, delta=delta, epochs=3, repartition=True, seed=seed)
    log = drive(sampler, losses)
    assert [s.samples for s in log] == reference_repartition(n, batch_size, k, 3, seed, losses)
    # From round 1 on the trace's batch id is the position in the round's own cut.
    assert all(0 <= s.batch < n // batch_size for s in log)


def test_repartition_round_one_scores_the_new_cut_from_the_warmup_losses():
    # n = 7, B = 2: the fixed cut [[0, 1], [2, 3], [4, 5]] drops sample 6, which the re-cut may draw (never trained).
    warmup = [0.6, 0.1, 0.5, 0.3, 0.2, 0.4]
    policy = create_policy("hardbatch", torch.arange(6).view(3, 2), 1 / 3, seed=0, num_samples=7, repartition=True)
    for step in policy.plan():
        policy.observe(step, torch.tensor(0.0), torch.tensor([warmup[i] for i in step.samples.tolist()]))
    (step,) = policy.plan()  # k = 1
    cut = policy.cut.tolist()
    flat = [i for row in cut for i in row]
    assert len(set(flat)) == 6 and set(flat) <= set(range(7))  # 6 of the 7 samples, none twice
    known = [[warmup[i] for i in row if i < 6] for row in cut]
    scores = [sum(v) / len(v) if v else math.inf for v in known]
    assert policy.losses.tolist() == pytest.approx(scores)
    assert step.batch == scores.index(max(scores)) and step.samples.tolist() == cut[step.batch]


def test_batch_scores_hand_computed():
    nan = math.nan
    scores = batch_scores(torch.tensor([1.0, nan, 3.0, nan, 0.5]), torch.tensor([[0, 2], [1, 3], [0, 1], [4, 2]]))
    assert scores.tolist() == [2.0, math.inf, 1.0, 1.75]  # unknown samples ignored; none known: +inf, trained first


def test_trim_top_skips_the_highest_stored_losses_hand_computed():
    # N = 5, k = 2, trim floor(0.2 * 5) = 1: each round the highest stored loss is skipped, the next two trained.
    script = table({0: [5.0, 0.1, 0.01], 1: [1.0, 0.2, 0.02], 2: [4.0, 0.5, 0.05], 3: [2.0, 7.0],
                    4: [3.0, 6.0, 0.3, 0.04]})
    sampler = HardBatchSampler(5, 1, delta=0.4, epochs=3, trim_top=0.2)
    assert rounds_of(drive(sampler, script)) == [
        [0, 1, 2, 3, 4],  # L = [5, 1, 4, 2, 3]
        [2, 4],  # 0 skipped; L = [5, 1, .5, 2, 6]
        [0, 3],  # 4 skipped; L = [.1, 1, .5, 7, 6]
        [1, 4],  # 3 skipped (and from now on starved); L = [.1, .2, .5, 7, .3]
        [2, 4],  # L = [.1, .2, .05, 7, .04]
        [0, 1],
    ]
    assert trimmed_top_k(torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]), 2, trim=1).tolist() == [2, 4]


@pytest.mark.parametrize("trim_top, trim", [(0.1, 1), (0.25, 2), (0.39, 3)])
def test_trim_top_never_chooses_the_floor_q_n_highest(trim_top, trim):
    sampler = HardBatchSampler(10, 1, delta=0.3, epochs=4, trim_top=trim_top)
    log = drive(sampler, sample_losses(4))
    for r, chosen in enumerate(rounds_of(log)[1:], start=1):
        stored = torch.tensor(stored_before_each_round(log, 10)[r])
        order = torch.sort(stored, descending=True, stable=True).indices.tolist()
        assert chosen == sorted(order[trim: trim + 3])[: len(chosen)]


def test_trim_top_leaving_fewer_than_k_batches_is_refused():
    with pytest.raises(hardbatch.UsageError, match="trim-top"):
        HardBatchSampler(10, 1, delta=0.5, trim_top=0.6)


def test_mix_draws_floor_f_k_of_the_k_outside_the_top_set_seeded():
    # N = 10, k = 4, mix floor(0.5 * 4) = 2: the top 2 by stored loss plus 2 drawn from the other 8.
    def run(seed):
        sampler = HardBatchSampler(10, 1, delta=0.4, epochs=5, mix=0.5, seed=seed)
        return drive(sampler, sample_losses(6))

    log = run(1)
    before = stored_before_each_round(log, 10)
    beyond_top_k = 0
    for r, chosen in enumerate(rounds_of(log)[1:], start=1):
        stored = torch.tensor(before[r])
        assert chosen == sorted(set(chosen)) and len(chosen) == 4
        assert set(top_k_batches(stored, 2).tolist()) <= set(chosen)
        beyond_top_k += bool(set(chosen) - set(top_k_batches(stored, 4).tolist()))
    assert beyond_top_k >= 5  # of 10 rounds: the two drawn are not simply the 3rd and 4th highest
    assert run(1) == log and run(2) != log
    # floor(0.2 * 4) = 0: nothing mixed, the paper's rule exactly
    plain = drive(HardBatchSampler(10, 1, delta=0.4, epochs=5), sample_losses(6))
    assert drive(HardBatchSampler(10, 1, delta=0.4, epochs=5, mix=0.2, seed=3), sample_losses(6)) == plain


def test_trim_top_is_never_chosen_even_with_mix():
    """--trim-top's help: "never select the top q fraction of stored losses"; --mix must not bring them back."""
    sampler = HardBatchSampler(10, 1, delta=0.4, epochs=6, trim_top=0.2, mix=0.5, seed=0)
    log = drive(sampler, sample_losses(2))
    before = stored_before_each_round(log, 10)
    for r, chosen in enumerate(rounds_of(log)[1:], start=1):
        trimmed = top_k_batches(torch.tensor(before[r]), 2).tolist()
        assert not set(trimmed) & set(chosen), f"round {r} trained the trimmed batches {set(trimmed) & set(chosen)}"


# ---- drop-in use: hand-written loops -------------------------------------------------------------


def _toy_problem(n=96, features=8, classes=3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, classes))
    return TensorDataset(x, y), model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_hand_written_infobatch_loop_runs_to_done():
    data, model, optimizer = _toy_problem()
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


def test_hand_written_selective_backprop_loop_runs_to_done():
    data, model, optimizer = _toy_problem()
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
    assert int(sampler.sample_visits.sum()) == kept_total < 24 * 8 and kept_total > 12 * 8


# ---- bad input on the command line ---------------------------------------------------------------


def _main(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's own errors
            code = e.code
    return code, err.getvalue()


@pytest.mark.parametrize("flags, words", [
    (["--policy", "hardest"], ["unknown policy 'hardest'", "selective-backprop"]),
    (["--policy", "selective-backprop", "--beta", "-0.5"], ["--beta", "-0.5"]),
    (["--policy", "selective-backprop", "--beta", "nan"], ["--beta"]),
    (["--policy", "selective-backprop", "--loss-history", "0"], ["--loss-history"]),
    (["--policy", "infobatch", "--prune-ratio", "1.0"], ["--prune-ratio", "[0, 1)"]),
    (["--policy", "infobatch", "--prune-ratio", "-0.1"], ["--prune-ratio"]),
    (["--policy", "infobatch", "--anneal", "1.5"], ["--anneal"]),
    (["--rescore", "0"], ["rescore", ">= 1"]),
    (["--rescore", "-2"], ["rescore"]),
    (["--trim-top", "1.0"], ["--trim-top", "[0, 1)"]),
    (["--trim-top", "-0.2"], ["--trim-top"]),
    (["--mix", "1.0"], ["--mix", "[0, 1)"]),
    (["--mix", "-0.5"], ["--mix"]),
    (["--policy", "random", "--beta", "2"], ["--beta", "selective-backprop"]),
    (["--policy", "cyclic", "--rescore", "2"], ["--rescore", "hardbatch"]),
    (["--policy", "uniform", "--delta", "0.5"], ["--delta", "uniform"]),
    (["--policy", "infobatch", "--delta", "0.5"], ["--delta"]),
    (["--policy", "selective-backprop", "--repartition"], ["--repartition"]),
    (["--policy", "infobatch", "--mix", "0.2"], ["--mix"]),
    (["--delta", "0.5", "--trim-top", "0.6"], ["--trim-top 0.6"]),  # k + floor(qN) > N, found with the data
])
def test_bad_policy_input_exits_2_with_one_line_and_writes_nothing(tmp_path, flags, words):
    out = tmp_path / "run"
    code, err = _main("train", "--dataset", "digits", "--epochs", "1", *flags, "--out", str(out), "--no-progress")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hardbatch train: error:"), err
    for word in words:
        assert word in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("flags", [["--policies", "uniform", "infobatch", "--beta", "2"],
                                   ["--policies", "hardbatch", "nope"]])
def test_compare_refuses_bad_policy_input_before_training(tmp_path, flags):
    out = tmp_path / "cmp"
    code, err = _main("compare", "--dataset", "digits", "--epochs", "1", "--seeds", "0", "--deltas", "0.5", *flags,
                      "--out", str(out), "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "error" in err
    assert not out.exists()


@pytest.mark.parametrize("control", SAME_AS_RULE_AT_ONE)
def test_controls_at_delta_one_train_what_the_rule_trains_so_compare_runs_them_once(control, tmp_path):
    def passes(policy):
        sampler = HardBatchSampler(12, 1, delta=1.0, epochs=4, policy=policy, seed=3)
        return [rec.samples for rec in drive(sampler, sample_losses(5))]

    assert passes(control) == passes("hardbatch")
    plan = plan_compare(RunConfig(), [0.5, 1.0], [0], tmp_path, policies=["hardbatch", control])
    assert [(r.cfg.policy, r.cfg.delta) for r in plan] == [("hardbatch", 0.5), ("hardbatch", 1.0), (control, 0.5)]
    alone = plan_compare(RunConfig(), [1.0], [0], tmp_path, policies=[control])  # without the rule it still runs
    assert [(r.cfg.policy, r.cfg.delta) for r in alone] == [(control, 1.0)]


def test_asking_twice_for_a_batch_s_weights_draws_once():
    sampler = HardBatchSampler(8, 4, epochs=1, policy="selective-backprop", beta=1.0, loss_history=16,
                               warmup_epoch=False)  # a selecting step from the first batch
    next(iter(sampler))
    scores = torch.tensor([0.1, 2.0, 0.5, 1.0])
    first = sampler.weights(scores).clone()
    generator, history = sampler.policy.generator.get_state(), sampler.policy.history.clone()
    assert torch.equal(sampler.weights(scores * 3), first)  # a loop that retried the step gets the same keep-mask
    assert torch.equal(sampler.policy.generator.get_state(), generator)
    assert torch.equal(sampler.policy.history, history) and len(history) == 4


def test_docs_hyper_parameter_table_is_generated_from_the_declarations():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "scripts" / "policy_docs.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    table = hardbatch.selection.registry.hyper_parameter_table()
    for name, cls in POLICIES.items():  # every registered policy and every flag it declares is listed
        assert f"| `{name}` |" in table
        for f in dataclasses.fields(cls.Params):
            assert f"`--{f.name.replace('_', '-')}`" in table


def test_every_declared_hyper_parameter_is_a_checked_flag():
    """What a policy's file declares reaches RunConfig, the CLI and the range checks, with nothing else to edit."""
    from hardbatch.cli import build_parser
    from hardbatch.config import validate
    from hardbatch.errors import UsageError

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name, cls in POLICIES.items():
        for f in dataclasses.fields(cls.Params):
            assert f.name in RunConfig.__dataclass_fields__
            assert f"--{f.name.replace('_', '-')}" in help_text
            allowed = f.metadata.get("range")
            if allowed is not None and allowed.high is not None:
                with pytest.raises(UsageError, match=f"--{f.name.replace('_', '-')} must be {re.escape(str(allowed))}"):
                    validate(RunConfig(policy=name, **{f.name: allowed.high + 1}))


# ---- misuse of the sampler by a hand-written loop ------------------------------------------------

PER_SAMPLE = [case for case in CASES if make_case(case).policy.per_sample]


def _first_training_step(sampler: HardBatchSampler):
    """Draw batches, scoring the score-only ones, until a training step is pending; returns it."""
    for _ in sampler:
        step = sampler.pending
        if not step.score_only:
            return step
        sampler.record(torch.tensor(0.5), torch.full((len(step.samples),), 0.5))
    raise AssertionError("no training step")


@pytest.mark.parametrize("case", PER_SAMPLE)
@pytest.mark.parametrize("sample_losses, words", [
    (torch.ones(2, 1), "(one loss per sample of the batch), got a tensor of shape (2, 1)"),
    (torch.ones(3), "got a tensor of shape (3,)"),
    (torch.ones(()), "got a tensor of shape ()"),
    ([0.5, 0.5], "got [0.5, 0.5] (list)"),
])
def test_record_refuses_per_sample_losses_of_the_wrong_shape(case, sample_losses, words):
    sampler = make_case(case)
    _first_training_step(sampler)
    steps = sampler.steps
    with pytest.raises(hardbatch.UsageError) as error:
        sampler.record(torch.tensor(0.5), sample_losses)
    message = str(error.value)
    assert message.startswith("record(loss, sample_losses): sample_losses must have shape (2,)") and words in message
    assert "\n" not in message
    assert sampler.steps == steps
    sampler.record(torch.tensor(0.5), torch.ones(2))  # the batch is still pending
    assert sampler.steps == steps + 1


@pytest.mark.parametrize("case", PER_SAMPLE)
def test_record_refuses_non_finite_per_sample_losses(case):
    sampler = make_case(case)
    _first_training_step(sampler)
    with pytest.raises(TrainingDiverged, match=r"record\(loss, sample_losses\): sample_losses are not finite at "
                                               r"step 1; .*learning rate"):
        sampler.record(torch.tensor(0.5), torch.tensor([0.5, float("nan")]))


def test_selective_backprop_refuses_scores_of_the_wrong_shape_or_not_finite():
    # Without the warm-up epoch, whose steps are weighed before loading and take no scores.
    sampler = HardBatchSampler(12, 4, epochs=1, policy="selective-backprop", warmup_epoch=False)
    next(iter(sampler))
    with pytest.raises(hardbatch.UsageError, match=r"weights\(scores\): scores must have shape \(4,\) \(one loss per "
                                                   r"sample of the batch\), got a tensor of shape \(4, 1\)"):
        sampler.weights(torch.ones(4, 1))
    with pytest.raises(TrainingDiverged, match=r"weights\(scores\): scores are not finite at step 1;"):
        sampler.weights(torch.tensor([1.0, float("inf"), 0.5, 0.2]))
    assert len(sampler.policy.history) == 0  # nothing was drawn or stored


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_gives_per_sample_weights_for_every_training_step(case):
    # One generic loop, loss = (weights * per-sample losses).mean(), runs every policy: batch policies weigh by 1.
    sampler = make_case(case)
    for _ in range(5):
        step = _first_training_step(sampler)
        scores = torch.rand(len(step.samples)) if sampler.policy.scores_first else None
        weights = sampler.weights(scores)
        assert isinstance(weights, torch.Tensor) and weights.is_floating_point()
        assert weights.shape == (len(step.samples),)
        if not (sampler.policy.per_sample or sampler.policy.scores_first):
            assert weights.tolist() == [1.0] * len(step.samples)
        assert torch.equal(sampler.weights(scores), weights)
        sampler.record(torch.tensor(0.5), torch.full((len(step.samples),), 0.5))


def _train_everything(sampler: HardBatchSampler) -> int:
    """A loop that never looks at ``sampler.pending``: it trains every batch it draws; returns its optimizer steps."""
    steps = 0
    while not sampler.done:
        for indices in sampler:
            steps += 1
            sampler.record(torch.tensor(0.5), torch.full((len(indices),), 0.5))
    return steps


def test_a_loop_that_ignores_score_only_is_refused_at_the_first_scoring_batch():
    # rescore=2 scores all 10 batches before rounds 2, 4 and 6: a loop that trains them too takes 70 optimizer steps
    # against a budget of 40 (10 batches x 4 epochs), without an error, unless the sampler refuses.
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=4, policy="hardbatch", rescore=2)
    with pytest.raises(hardbatch.UsageError) as error:
        _train_everything(sampler)
    message = str(error.value)
    assert "batch 0 was drawn for scoring only, and the loop recorded it without looking at sampler.pending" in message
    assert "\n" not in message
    assert "check sampler.pending.score_only" in message and "only score those batches" in message
    assert sampler.steps == 15  # the warm-up (10) and round 1 (5): the error came at the first scoring batch


def test_a_correct_loop_is_never_refused_even_if_it_computes_the_scoring_loss_with_gradient():
    # The check is that the loop looked at the pending step before recording a scoring batch: a loop cannot honour
    # score_only without reading it, and nothing else about a correct loop (gradient or not, .item() or a tensor)
    # is assumed.
    data, model, optimizer = _toy_problem()
    sampler = HardBatchSampler(len(data), 8, delta=0.5, epochs=4, rescore=1)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=0)
    scored = trained = 0
    while not sampler.done:
        for x, y in loader:
            losses = F.cross_entropy(model(x), y, reduction="none")  # with gradient, before branching
            if sampler.pending.score_only:
                sampler.record(losses.mean().item(), losses.detach())
                scored += 1
                continue
            loss = losses.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sampler.record(loss, losses)
            trained += 1
    assert trained == sampler.steps == 4 * 12 and scored == 6 * 12  # rounds 1-6 of k = 6 each follow a scoring pass


def test_a_loop_that_looks_at_pending_once_per_pass_is_not_refused():
    # A scoring pass scores every batch of its round, so reading score_only at the first batch of a pass is enough.
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=4, rescore=2)
    optimizer_steps = 0
    while not sampler.done:
        scoring = None
        for _ in sampler:
            if scoring is None:
                scoring = sampler.pending.score_only
            optimizer_steps += not scoring
            sampler.record(torch.tensor(0.5))
    assert optimizer_steps == sampler.steps == 40


def test_a_saved_run_without_a_later_setting_keeps_its_earlier_rule():
    """config.json of a selective-backprop run made before its authors'-code options existed stands for the earlier
    rule (no warm-up epoch, train-mode scoring, force one, <=): resuming it must not switch rules mid-run."""
    saved = RunConfig(policy="selective-backprop").to_dict()
    for name in ("warmup_epoch", "score_in_train_mode", "force_one", "count_ties"):
        del saved[name]
    old = RunConfig.from_dict(saved)
    assert (old.warmup_epoch, old.score_in_train_mode, old.force_one, old.count_ties) == (False, True, True, True)
    assert RunConfig.from_dict(RunConfig(policy="selective-backprop").to_dict()) == RunConfig(policy="selective-backprop")
    other = RunConfig().to_dict()  # another policy's run: its missing keys are plain defaults
    for name in ("warmup_epoch", "count_ties"):
        del other[name]
    assert RunConfig.from_dict(other) == RunConfig()
