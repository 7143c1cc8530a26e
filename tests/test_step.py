"""hardbatch.step: the one selection step under every loop. ``training_loss`` in a loop of one's own (any loss, any
batch structure, its clocks), the step core under it (``select``, ``losses_of``, ``record``, ``step_loss``),
``score_losses``, and the data-parallel scaling of a rank's loss, as far as one process can show it.

Every registered policy through the quickstart loop, against the sampler-level reference: tests/test_quickstart.py.
"""

from __future__ import annotations

import copy
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from conftest import DictModel, DictSet, dict_data
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import hardbatch
from hardbatch import UsageError, batches, distributed, losses, step
from hardbatch.policies import SelectiveBackprop


def quickstart(sampler, model, data, lr=0.05, **kwargs) -> list[tuple]:
    """The quickstart loop over ``data``; returns (step, round, batch, loss, samples) of every optimizer step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trace = []
    loader = DataLoader(data, batch_sampler=sampler)
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch, **kwargs)
            if loss is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                last = sampler.last
                trace.append((last.step, last.round, last.batch, float(last.loss), last.samples))
    return trace


# ---- any loss, any batch -----------------------------------------------------------------------------------------


Pair = namedtuple("Pair", "input target")


class Structured(Dataset):
    """``dict_data``'s regression problem served as one batch ``structure``: a tuple (x, y), (x, y, index), a
    namedtuple, or a dict that the default forward passes as ``model(input=..., index=...)``."""

    def __init__(self, structure: str, n: int = 64):
        self.structure = structure
        self.x, _, self.y = dict_data(n)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x, y = self.x[i], self.y[i]
        return {
            "tuple": lambda: (x, y),
            "triple": lambda: (x, y, i),
            "namedtuple": lambda: Pair(x, y),
            "dict": lambda: {"input": x, "labels": y, "index": i},
        }[self.structure]()


class Regressor(nn.Module):
    """(b, 6) -> (b, 2); takes a batch's per-sample ``index`` too when called with keywords, and ignores it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 2)

    def forward(self, input, index=None):  # input: the name the dict batch gives it
        return self.linear(input)


POLICY_CASES = {"hardbatch": {"delta": 0.5}, "infobatch": {}, "selective-backprop": {"warmup_epoch": False}}


@pytest.mark.parametrize("policy", list(POLICY_CASES))
def test_training_loss_trains_the_same_steps_whatever_the_batch_structure(policy):
    """A batch policy, per-sample weights (infobatch) and a keep-mask over a scoring pass (selective-backprop): the
    structure a loader delivers changes nothing of what is trained."""
    runs = {}
    for structure in ("tuple", "triple", "namedtuple", "dict"):
        sampler = hardbatch.HardBatchSampler(64, 8, epochs=3, policy=policy, seed=0, **POLICY_CASES[policy])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = Regressor()
        trace = quickstart(sampler, model, Structured(structure), loss_fn=losses.mse)
        runs[structure] = trace, sampler.visits, sampler.trained_samples, model.linear.weight.detach()
    trace, visits, trained, weight = runs["tuple"]
    assert len(trace) > 8
    for structure, (other, other_visits, other_trained, other_weight) in runs.items():
        assert other == trace and other_trained == trained, structure
        assert torch.equal(other_visits, visits) and torch.equal(other_weight, weight), structure


def test_select_applies_selective_backprops_keep_mask_to_every_tensor_of_a_dict_batch():
    torch.manual_seed(0)
    model, data = DictModel(), DictSet(16)
    sampler = hardbatch.HardBatchSampler(16, 8, epochs=2, policy="selective-backprop", warmup_epoch=False, seed=0)
    batch = next(iter(DataLoader(data, batch_sampler=sampler)))
    chosen = step.select(sampler, model, batch, loss_fn=losses.mse)
    keep = sampler.weights() > 0  # the answer select got from the scores (one draw per batch)
    assert 0 < int(keep.sum()) < 8
    for key in ("features", "mask", "labels"):
        assert torch.equal(chosen.batch[key], batch[key][keep])
    scores = losses.mse(model(batch["features"], batch["mask"]), batch)
    assert chosen.total == chosen.count == int(keep.sum()) and scores.shape == (8,)
    assert chosen.weights is None and chosen.scale == 1.0
    assert sampler.meter.samples_loaded == sampler.meter.samples_forward_nograd == 8


def test_the_pending_step_a_loop_holds_sees_the_weights_chosen_for_it():
    """``sampler.pending`` hands out one Step per drawn step until it is recorded: a loop (or a test) that took it
    before the scoring pass reads the keep-mask the policy chose from that Step (as before the reshape)."""
    data = TensorDataset(torch.randn(16, 6), torch.randint(0, 3, (16,)))
    sampler = hardbatch.HardBatchSampler(16, 8, epochs=2, policy="selective-backprop", warmup_epoch=False, seed=0)
    batch = next(iter(DataLoader(data, batch_sampler=sampler)))
    held = sampler.pending
    assert held.weights is None and sampler.pending is held
    chosen = step.select(sampler, nn.Linear(6, 3), batch)
    assert held.weights is not None and torch.equal(held.weights, sampler.weights())
    assert int((held.weights > 0).sum()) == chosen.total
    sampler.record(torch.tensor(1.0))
    assert sampler.last.samples == chosen.total


def test_training_loss_takes_any_per_sample_loss_and_counts_the_cost_in_an_own_loop():
    """Selective Backprop on a regression loss: the first epoch trains every sample unscored, later ones score each
    loaded batch and back-propagate what they keep."""
    generator = torch.Generator().manual_seed(0)
    train_set = TensorDataset(torch.randn(640, 8, generator=generator), torch.randn(640, 2, generator=generator))
    torch.manual_seed(0)
    sampler = hardbatch.HardBatchSampler(len(train_set), batch_size=64, epochs=3, policy="selective-backprop")
    trace = quickstart(sampler, nn.Linear(8, 2), train_set, lr=0.1, loss_fn=losses.mse)
    meter = sampler.meter
    assert sampler.done and meter.optimizer_steps == sampler.steps == len(trace)
    assert meter.samples_backprop == meter.samples_forward == sum(row[4] for row in trace)
    assert 0 < meter.samples_backprop < meter.samples_loaded == meter.samples_forward_nograd + 10 * 64  # 1st epoch
    assert meter.samples_loaded == 3 * 640


@pytest.mark.parametrize(
    "policy, params",
    [("hardbatch", {"delta": 0.5}), ("infobatch", {}), ("selective-backprop", {"warmup_epoch": False})],
)  # in the scoring pass
def test_training_loss_refuses_a_loss_fn_that_returns_a_batch_mean_at_the_first_step(policy, params):
    model = DictModel()
    before = copy.deepcopy(model.state_dict())
    sampler = hardbatch.HardBatchSampler(64, 8, epochs=2, policy=policy, seed=0, **params)
    with pytest.raises(
        UsageError,
        match=r"^loss_fn must return one loss per sample, shape \(8,\), got shape \(\) "
        r"\(a batch mean",
    ):
        quickstart(sampler, model, DictSet(), loss_fn=lambda outputs, batch: F.mse_loss(outputs, batch["labels"]))
    assert sampler.steps == 0 and sampler.meter.optimizer_steps == 0  # nothing was recorded
    assert all(torch.equal(p, before[name]) for name, p in model.state_dict().items())  # no step taken


def test_the_step_core_refuses_a_batch_mean_in_weighted_loss_and_record():
    model = nn.Linear(6, 2)
    x, _, y = dict_data(16)
    sampler = hardbatch.HardBatchSampler(16, 8, delta=0.5, epochs=2)
    batch = next(iter(DataLoader(TensorDataset(x, y), batch_sampler=sampler)))
    chosen = step.select(sampler, model, batch, loss_fn=losses.mse)
    mean = F.mse_loss(model(chosen.batch[0]), chosen.batch[1])  # a batch mean, not (b,)
    with pytest.raises(UsageError, match=r"shape \(8,\), got shape \(\) \(a batch mean"):
        step.weighted_loss(chosen, mean)
    with pytest.raises(UsageError, match=r"shape \(8,\), got shape \(\)"):
        step.record(sampler, chosen, mean.detach(), mean.detach())
    assert sampler.steps == 0 and sampler.meter.optimizer_steps == 0  # nothing was recorded


def test_sampler_record_refuses_a_batch_mean_as_the_per_sample_losses_of_any_policy():
    sampler = hardbatch.HardBatchSampler(16, 8, delta=0.5, epochs=2)  # the paper's rule does not read them: checked
    next(iter(sampler))
    with pytest.raises(UsageError, match=r"sample_losses must have shape \(8,\) .*got a tensor of shape \(\)"):
        sampler.record(torch.tensor(0.5), torch.tensor(0.5))
    assert sampler.record(torch.tensor(0.5), torch.full((8,), 0.5)) == 0


# ---- the step core -----------------------------------------------------------------------------------------------


def test_training_loss_is_the_fused_mean_cross_entropy_before_the_update_bit_for_bit():
    """With the default loss and no weights, the loss to back-propagate is ``F.cross_entropy(model(x), y)`` itself;
    the loop's optimizer step is one SGD step on its gradient (what ``training.train_step`` did before)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    before = copy.deepcopy(model)
    x, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    sampler = hardbatch.HardBatchSampler(8, 8)  # the rule at δ = 1: the fixed batch, in order
    batch = next(iter(DataLoader(TensorDataset(x, y), batch_sampler=sampler)))
    assert torch.equal(batch[0], x) and torch.equal(batch[1], y)
    loss = hardbatch.training_loss(sampler, model, batch)
    expected = F.cross_entropy(before(x), y)
    assert loss.shape == () and loss.requires_grad
    assert torch.equal(loss.detach(), expected.detach()) and torch.equal(sampler.last.loss, expected.detach())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    expected.backward()
    for p, q in zip(model.parameters(), before.parameters(), strict=True):
        assert torch.allclose(p, q - 0.5 * q.grad)
        assert not torch.equal(p, q)
    assert sampler.done and sampler.steps == 1


def test_losses_of_weighs_the_per_sample_losses_and_hands_back_the_unweighted_ones():
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
    per_sample = F.cross_entropy(model(x), y, reduction="none").detach()
    weights = torch.tensor([0.0, 1.0, 2.0, 1.0, 0.5, 1.5])
    weighted = step.Chosen((x, y), weights, 1.0, 6, 6)
    loss, sample_losses = step.losses_of(model, weighted, per_sample=True)
    assert torch.allclose(loss, (weights * per_sample).mean()) and loss.requires_grad
    assert torch.allclose(sample_losses, per_sample) and not sample_losses.requires_grad
    plain = step.Chosen((x, y), None, 1.0, 6, 6)
    fused, fused_losses = step.losses_of(model, plain, per_sample=True)  # the fused mean
    generic, generic_losses = step.losses_of(
        model, plain, per_sample=True, loss_fn=lambda outputs, batch: losses.cross_entropy(outputs, batch)
    )
    assert torch.allclose(fused, generic) and torch.allclose(fused_losses, generic_losses)
    assert step.losses_of(model, plain, per_sample=False)[1] is None
    with pytest.raises(UsageError, match=r"shape \(6,\), got shape \(6, 4\)"):
        step.losses_of(model, plain, per_sample=True, loss_fn=lambda outputs, batch: outputs)


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

    scores = step.score_losses(model, (x, y))

    assert torch.equal(torch.get_rng_state(), rng)
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name  # running_mean, running_var and num_batches_tracked
    assert model.training and scores.shape == (16,) and not scores.requires_grad
    # It is a training-mode forward: batch statistics, and the dropout mask the next draw of the RNG gives.
    with torch.no_grad():
        expected = F.cross_entropy(reference(x), y, reduction="none")
    assert torch.equal(scores, expected)
    assert not torch.equal(reference[1].running_mean, buffers["1.running_mean"])  # a plain forward does move them
    # restore_buffers=False (a policy that follows its authors): the statistics move as in that plain forward.
    step.score_losses(model, (x, y), restore_buffers=False)
    assert torch.equal(model[1].running_mean, reference[1].running_mean)
    reference.eval()
    with torch.no_grad():
        assert not torch.allclose(scores, F.cross_entropy(reference(x), y, reduction="none"))


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
    scores = step.score_losses(model, (x, y), train_mode=False)
    assert model.training == was_training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        assert torch.equal(scores, F.cross_entropy(reference(x), y, reduction="none"))
    # The training-mode forward is another one (batch statistics, dropout), and it too leaves the mode as it was.
    assert not torch.allclose(step.score_losses(model, (x, y), train_mode=True), scores)
    assert model.training == was_training


# ---- the clocks of an own loop -----------------------------------------------------------------------------------


def test_training_loss_times_from_one_call_to_the_next_leaving_out_the_gap_after_an_epoch(clock):
    """Each step's backward and optimizer step "take" 10 s and each evaluation 10,000 s (a fake clock): the meter
    counts the steps, except the backward of an epoch's last step, which shares its gap with the evaluation
    (``training_loss``'s docstring); step_loss, under it, times nothing."""
    data = TensorDataset(torch.randn(80, 6), torch.randint(0, 3, (80,)))
    sampler = hardbatch.HardBatchSampler(80, 8, delta=0.5, epochs=3, seed=0)  # N = 10: 30 steps, 3 epochs
    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    evaluations = 0
    while not sampler.done:
        for batch in DataLoader(data, batch_sampler=sampler):
            loss = hardbatch.training_loss(sampler, model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clock.advance(10)
            if sampler.epoch_ended:
                clock.advance(10_000)
                evaluations += 1
    meter = sampler.meter
    assert sampler.steps == 30 and evaluations == 3
    counted = 10 * (30 - 3)
    assert counted <= meter.train_seconds < counted + 5  # the real time of 30 tiny steps: well under 5 s
    assert counted <= meter.cpu_seconds < counted + 5

    quiet = hardbatch.HardBatchSampler(80, 8, delta=0.5, epochs=1, seed=0)
    for batch in DataLoader(data, batch_sampler=quiet):
        step.step_loss(quiet, model, batch).backward()
        clock.advance(10)
    assert quiet.done and quiet.meter.train_seconds == quiet.meter.cpu_seconds == 0


# ---- several processes, as one process sees them ------------------------------------------------------------------


def as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    """Make ``hardbatch.distributed`` answer as rank ``rank`` of ``world`` (torchrun's variables; no process group)."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", str(rank))


def test_local_rows_and_kept_share_split_a_global_batch_over_the_ranks(monkeypatch):
    keep = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool)  # rank 0 keeps 3 of its 4 rows, rank 1 one
    kept, weights, scale, total = distributed.kept_share(keep, torch.device("cpu"))
    assert kept.tolist() == [0, 1, 2, 4] and weights is None and (scale, total) == (1.0, 4)  # one process
    assert distributed.local_rows(8) == slice(0, 8)
    shares = []
    for rank in (0, 1):
        as_rank(monkeypatch, rank)
        assert distributed.local_rows(8) == slice(4 * rank, 4 * rank + 4)
        shares.append(distributed.kept_share(keep, torch.device("cpu")))
    (kept0, weights0, scale0, total0), (kept1, weights1, scale1, total1) = shares
    assert kept0.tolist() == [0, 1, 2] and kept1.tolist() == [0] and total0 == total1 == 4
    assert weights0 is None and weights1 is None and (scale0, scale1) == (2 * 3 / 4, 2 * 1 / 4)
    # A rank that holds none of the kept samples trains one row at weight 0, scaled to nothing.
    nothing, weights, scale, total = distributed.kept_share(
        torch.tensor([1, 1, 0, 0], dtype=torch.bool), torch.device("cpu")
    )
    assert nothing.tolist() == [0] and weights.tolist() == [0.0] and (scale, total) == (0.0, 2)
    # Without a process group the collectives hand back their input.
    values = torch.arange(4.0)
    mean = values.mean()
    assert distributed.all_gather(values) is values and distributed.global_mean(mean, 4, 8) is mean
    assert distributed.all_reduce_sum(values) is values


def test_each_ranks_loss_makes_ddps_average_the_gradient_of_the_mean_over_every_kept_sample(monkeypatch):
    """Selective Backprop keeps unequal shares of a global batch on two ranks: each rank's ``step_loss`` is scaled
    so that the average of the ranks' gradients (what DDP's all-reduce makes) is the one-process gradient."""
    data = TensorDataset(torch.randn(16, 6, generator=torch.Generator().manual_seed(1)), torch.randint(0, 3, (16,)))

    def gradient(rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        sampler = hardbatch.HardBatchSampler(16, 8, epochs=2, policy=SelectiveBackprop(warmup_epoch=False), seed=3)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = nn.Linear(6, 3)
        batch = next(iter(DataLoader(data, batch_sampler=sampler)))  # the global batch of 8
        if rank is not None:  # this rank's half, and the other rank's scores as all_gather would bring them
            full = step.score_losses(model, batch, train_mode=sampler.policy.score_train_mode)
            monkeypatch.setattr(distributed, "all_gather", lambda values, group=None: full)
            as_rank(monkeypatch, rank)
            batch = batches.take(batch, torch.arange(8)[distributed.local_rows(8)])
        held = sampler.pending
        loss = step.step_loss(sampler, model, batch)
        loss.backward()
        monkeypatch.undo()
        return model.weight.grad.clone(), held.weights > 0  # the keep-mask the policy chose

    one, keep = gradient(None)
    (first, keep0), (second, keep1) = gradient(0), gradient(1)
    assert torch.equal(keep0, keep) and torch.equal(keep1, keep)  # every rank recorded the global selection
    assert int(keep[:4].sum()) != int(keep[4:].sum()) and 0 < int(keep.sum()) < 8  # unequal shares
    assert torch.allclose((first + second) / 2, one, atol=1e-6)
