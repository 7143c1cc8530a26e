"""hardbatch.training: fit (δ = 1 is plain training, skipped batches are never loaded, what it reports, resuming, any
loss and any batch, its clocks) and evaluate."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import DictModel, DictSet, dict_data
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import hardbatch
from hardbatch import HardBatchSampler, UsageError, evaluate, fit, losses
from hardbatch.data import load_dataset
from hardbatch.models import build_seeded
from hardbatch.policies import POLICIES
from hardbatch.training import EpochResult

CPU = torch.device("cpu")


def check_trace_follows_the_rule(trace, n: int, k: int, total: int) -> None:
    """Replay docs/method.md's rule on the losses the loop itself recorded; every step must be the one the rule picks.

    ``trace``: (step, round, batch, loss, samples) rows in step order.
    """
    assert [row[0] for row in trace] == list(range(1, total + 1))
    stored = {}
    expected = []
    rnd = 0
    while len(expected) < total:
        chosen = list(range(n)) if rnd == 0 else sorted(sorted(range(n), key=lambda b: -stored[b])[:k])
        for b in chosen[: total - len(expected)]:
            step, got_round, got_batch, loss = trace[len(expected)][:4]
            assert (got_round, got_batch) == (rnd, b), f"step {step}"
            stored[b] = loss
            expected.append(b)
        rnd += 1


# ---- delta = 1 is a plain PyTorch loop, step for step --------------------------------------------


def test_delta_one_fit_equals_a_hand_written_loop():
    data = load_dataset(hardbatch.RunConfig(dataset="digits"))
    assert data.val is None
    images, labels = data.train.images, data.train.labels
    batch_size, epochs, seed = 32, 2, 3
    n = len(labels) // batch_size

    def make():
        model = build_seeded("small_cnn", 10, 1, seed)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    model, optimizer = make()
    sampler = HardBatchSampler(len(data.train), batch_size, delta=1.0, epochs=epochs)
    results: list[EpochResult] = []
    torch.manual_seed(0)
    fit(
        model,
        optimizer,
        data.loader(data.train, sampler),
        sampler,
        {"test": data.eval_loader(data.test)},
        CPU,
        train_transform=data.train_transform,
        eval_transform=data.eval_transform,
        on_epoch=results.append,
    )

    hand, hand_optimizer = make()
    hand.train()
    hand_losses = []
    hand_evals = []
    torch.manual_seed(0)
    for _ in range(epochs):
        for i in range(n):
            x = data.train_transform(images[i * batch_size : (i + 1) * batch_size])
            y = labels[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(hand(x), y)
            hand_optimizer.zero_grad()
            loss.backward()
            hand_optimizer.step()
            hand_losses.append(loss.item())
        hand_evals.append(evaluate(hand, data.eval_loader(data.test), CPU, transform=data.eval_transform))
        hand.train()

    trace = [row for result in results for row in result.trace]
    assert [row[3] for row in trace] == hand_losses  # exact, not approximate
    assert [row[2] for row in trace] == list(range(n)) * epochs
    assert [row[1] for row in trace] == [e for e in range(epochs) for _ in range(n)]
    for (name, p), (_, q) in zip(model.state_dict().items(), hand.state_dict().items(), strict=True):
        assert torch.equal(p, q), name  # parameters and BatchNorm buffers alike
    assert [r.epoch for r in results] == [1, 2]
    assert [r.step for r in results] == [n, 2 * n]
    assert [r.evals["test"] for r in results] == hand_evals
    assert sampler.visits.tolist() == [epochs] * n


# ---- skipped batches are never loaded ------------------------------------------------------------


class CountingDataset(Dataset):
    """Fixed random features and labels; counts every __getitem__ per sample in shared memory (seen by workers too)."""

    def __init__(self, n: int, features: int = 6, classes: int = 3):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, features, generator=generator)
        self.y = torch.randint(0, classes, (n,), generator=generator)
        self.loads = torch.zeros(n, dtype=torch.long).share_memory_()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.loads[i] += 1
        return self.x[i], self.y[i]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skipped_batches_are_never_loaded(num_workers):
    batch_size, n_batches, epochs = 4, 12, 3
    dataset = CountingDataset(batch_size * n_batches + 3)  # 3 samples in the dropped remainder
    sampler = HardBatchSampler(len(dataset), batch_size, delta=0.25, epochs=epochs, shuffle_partition=True, seed=1)
    assert sampler.policy.k == 3
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, persistent_workers=num_workers > 0)
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    results: list[EpochResult] = []
    fit(model, optimizer, loader, sampler, {}, CPU, on_epoch=results.append)

    steps = epochs * n_batches
    assert sampler.steps == steps
    assert int(dataset.loads.sum()) == steps * batch_size
    for b, samples in enumerate(sampler.partition.tolist()):
        assert dataset.loads[samples].tolist() == [int(sampler.visits[b])] * batch_size, f"batch {b}"
    in_batches = torch.zeros(len(dataset), dtype=torch.bool)
    in_batches[sampler.partition.flatten()] = True
    assert dataset.loads[~in_batches].tolist() == [0, 0, 0]
    # Some batches were trained only in the warm-up: their samples were read exactly once.
    starved = (sampler.visits == 1).nonzero().flatten()
    assert len(starved) > 0
    assert dataset.loads[sampler.partition[starved].flatten()].eq(1).all()
    trace = [row for result in results for row in result.trace]
    check_trace_follows_the_rule(trace, n_batches, 3, steps)


# ---- what fit reports ----------------------------------------------------------------------------


def tiny_problem(n_batches=11, batch_size=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * batch_size, 1, 2, 3, generator=generator)
    y = torch.randint(0, 4, (n_batches * batch_size,), generator=generator)
    return hardbatch.data.InMemoryDataset(x, y)


def tiny_model(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def loader_for(dataset, sampler):
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=hardbatch.data.keep_batch)


def test_fit_hands_each_epoch_to_its_sinks_in_order_then_to_on_epoch():
    dataset = tiny_problem()
    sampler = HardBatchSampler(len(dataset), 5, delta=0.3, epochs=2)
    model = tiny_model()
    seen = []

    class Sink:
        def __init__(self, name):
            self.name = name

        def on_epoch(self, result):
            seen.append((self.name, result.epoch, result.step))

    fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loader_for(dataset, sampler),
        sampler,
        {},
        CPU,
        sinks=[Sink("a"), Sink("b")],
        on_epoch=lambda result: seen.append(("f", result.epoch, result.step)),
    )
    n = sampler.num_batches
    assert seen == [("a", 1, n), ("b", 1, n), ("f", 1, n), ("a", 2, 2 * n), ("b", 2, 2 * n), ("f", 2, 2 * n)]


def test_fit_reports_every_n_steps_even_mid_round():
    dataset = tiny_problem()
    sampler = HardBatchSampler(len(dataset), 5, delta=0.3, epochs=4)  # N = 11, k = 3: epochs end mid-round
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    test_batches = [(dataset.images[:20], dataset.labels[:20])]
    results: list[EpochResult] = []
    evals_seen = []

    def on_epoch(result):
        results.append(result)
        evals_seen.append(evaluate(model, test_batches, CPU))
        assert model.training  # fit keeps training after the evaluation

    fit(
        model,
        optimizer,
        loader_for(dataset, sampler),
        sampler,
        {"test": test_batches, "val": test_batches},
        CPU,
        on_epoch=on_epoch,
    )
    assert [r.epoch for r in results] == [1, 2, 3, 4]
    assert [r.step for r in results] == [11, 22, 33, 44]
    assert [len(r.trace) for r in results] == [11] * 4
    # Warm-up = steps 1..11, then rounds of 3: step 22 ends epoch 2 inside round 4, which goes on in epoch 3.
    assert results[1].trace[-1][1] == results[2].trace[0][1] == 4
    for r, seen in zip(results, evals_seen, strict=True):
        assert set(r.evals) == {"test", "val"}
        assert r.evals["test"] == r.evals["val"] == seen
        assert r.train_loss == pytest.approx(sum(row[3] for row in r.trace) / len(r.trace))
        assert r.lr == 0.2
        assert r.history_row()["test_acc"] == seen.acc
    trace = [row for r in results for row in r.trace]
    check_trace_follows_the_rule(trace, 11, 3, 44)
    # The stored losses are the latest trained loss of each batch.
    latest = {batch: loss for _, _, batch, loss, _ in trace}
    assert sampler.policy.losses.tolist() == [latest[b] for b in range(11)]


def test_fit_steps_the_scheduler_once_per_optimizer_step():
    dataset = tiny_problem()
    sampler = HardBatchSampler(len(dataset), 5, delta=0.5, epochs=2)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    results: list[EpochResult] = []
    fit(model, optimizer, loader_for(dataset, sampler), sampler, {}, CPU, scheduler=scheduler, on_epoch=results.append)
    assert [r.lr for r in results] == [1.0 / 12, 1.0 / 23]


def test_fit_resumed_from_a_mid_round_checkpoint_matches_an_uninterrupted_run():
    dataset = tiny_problem(n_batches=10)

    draws = []

    def augment(x, generator):
        noise = torch.randn(x.shape, generator=generator)
        draws.append(noise.flatten()[0].item())
        return x + 0.1 * noise

    def setup():
        sampler = HardBatchSampler(len(dataset), 5, delta=0.3, epochs=3)  # N = 10, k = 3: 10, 13, 16, 19, 22, ...
        model = tiny_model()
        return sampler, model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    sampler, full_model, optimizer = setup()
    full: list[EpochResult] = []
    fit(
        full_model,
        optimizer,
        loader_for(dataset, sampler),
        sampler,
        {},
        CPU,
        train_transform=augment,
        augment_seed=7,
        on_epoch=full.append,
    )

    class Stop(Exception):
        pass

    sampler, model, optimizer = setup()
    saved = {}

    def stop_after_second_epoch(result):
        if result.epoch == 2:  # step 20, inside round 4
            saved.update(
                sampler=sampler.state_dict(),
                model=copy.deepcopy(model.state_dict()),
                optimizer=copy.deepcopy(optimizer.state_dict()),
            )
            raise Stop

    # Prefetching workers have drawn batches past the checkpoint that were never trained.
    prefetching = DataLoader(dataset, batch_sampler=sampler, collate_fn=hardbatch.data.keep_batch, num_workers=2)
    with pytest.raises(Stop):
        fit(
            model,
            optimizer,
            prefetching,
            sampler,
            {},
            CPU,
            train_transform=augment,
            augment_seed=7,
            on_epoch=stop_after_second_epoch,
        )

    sampler, model, optimizer = setup()
    sampler.load_state_dict(saved["sampler"])
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    assert sampler.steps == 20
    rest: list[EpochResult] = []
    fit(
        model,
        optimizer,
        loader_for(dataset, sampler),
        sampler,
        {},
        CPU,
        train_transform=augment,
        augment_seed=7,
        on_epoch=rest.append,
    )
    assert [r.trace for r in rest] == [full[2].trace]
    # Augmentation is seeded per step, not per position in the epoch: no two steps share a draw, and
    # the resumed run drew the same noise as the uninterrupted one.
    full_draws, resumed_draws = draws[:30], draws[-10:]
    assert len(set(full_draws)) == 30
    assert resumed_draws == full_draws[20:]
    assert torch.equal(sampler.visits, torch.bincount(torch.tensor([row[2] for r in full for row in r.trace])))
    for p, q in zip(model.state_dict().values(), full_model.state_dict().values(), strict=True):
        assert torch.equal(p, q)


# ---- selective backprop in fit: skipped batches, the scoring mode ---------------------------------


def test_fit_consumes_a_batch_selective_backprop_keeps_none_of_without_a_step_and_still_ends():
    """All losses equal (a zero last layer): no loss is strictly below another, so nothing is ever kept. Every batch
    is loaded and scored, none trained; every epoch still ends (its last batch skipped) and is evaluated."""
    dataset = tiny_problem(n_batches=6, batch_size=4)
    sampler = HardBatchSampler(len(dataset), 4, epochs=3, policy="selective-backprop", warmup_epoch=False)
    model = tiny_model()
    nn.init.zeros_(model[3].weight), nn.init.zeros_(model[3].bias)
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    results: list[EpochResult] = []
    test_batches = [(dataset.images[:8], dataset.labels[:8])]
    fit(model, optimizer, loader_for(dataset, sampler), sampler, {"test": test_batches}, CPU, on_epoch=results.append)
    meter = sampler.meter
    assert [(r.epoch, r.step, r.trace) for r in results] == [(1, 0, []), (2, 0, []), (3, 0, [])]
    assert all(r.train_loss != r.train_loss for r in results)  # NaN: no step to average
    assert meter.optimizer_steps == meter.samples_backprop == meter.samples_forward == 0
    assert meter.samples_loaded == meter.samples_forward_nograd == 3 * 24
    assert all(torch.equal(p, before[name]) for name, p in model.state_dict().items())  # no step, not even decay


def test_fit_with_selective_backprop_counts_only_real_steps():
    dataset = tiny_problem(n_batches=20, batch_size=1)  # one sample a batch: about half of them are skipped
    sampler = HardBatchSampler(len(dataset), 1, epochs=3, policy="selective-backprop", seed=1)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    results: list[EpochResult] = []
    fit(model, optimizer, loader_for(dataset, sampler), sampler, {}, CPU, scheduler=scheduler, on_epoch=results.append)
    meter = sampler.meter
    steps = [len(r.trace) for r in results]
    assert len(results) == 3 and steps[0] == 20 and 0 < steps[1] < 20 and 0 < steps[2] < 20
    assert [r.step for r in results] == [20, 20 + steps[1], sum(steps)] and sampler.steps == sum(steps)
    assert [row[0] for r in results for row in r.trace] == list(range(1, sum(steps) + 1))
    assert meter.optimizer_steps == meter.samples_backprop == sum(steps) == sampler.trained_samples["all"]
    assert meter.samples_loaded == 60 and meter.samples_forward_nograd == 40  # the warm-up epoch scores nothing
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + sum(steps)))  # a scheduler step per step


class BatchStatistics(nn.Module):
    """A model whose output depends on BatchNorm's mode: batch statistics in training, running ones in eval."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("params, train_mode", [({}, False), ({"score_in_train_mode": True}, True)])
def test_fit_scores_selective_backprop_batches_in_eval_mode_unless_asked(params, train_mode):
    dataset = tiny_problem(n_batches=6, batch_size=5)
    # β = 0 keeps every sample: BatchNorm cannot train on a kept subset of one.
    sampler = HardBatchSampler(len(dataset), 5, epochs=2, policy="selective-backprop", beta=0.0, **params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BatchStatistics()
    seen = []
    select = sampler.policy.select

    def checked(step, scores):  # the scores fit hands over, against both forwards of the model as it is now
        x, y = dataset.images[step.samples], dataset.labels[step.samples]
        twin = copy.deepcopy(model)
        with torch.no_grad():
            eval_loss = F.cross_entropy(twin.eval()(x), y, reduction="none")
            train_loss = F.cross_entropy(twin.train()(x), y, reduction="none")
        assert torch.allclose(scores, train_loss if train_mode else eval_loss)
        assert not torch.allclose(eval_loss, train_loss)
        assert model.training  # the loop's mode is restored
        seen.append(len(scores))
        return select(step, scores)

    sampler.policy.select = checked
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loader_for(dataset, sampler), sampler, {}, CPU)
    assert seen == [5] * 6  # epoch 2's six batches (epoch 1 is the warm-up)


# ---- any loss, any batch -----------------------------------------------------------------------------------------


def run_fit(loss_fn, data, model, policy="hardbatch", epochs=2, params=None, **kwargs):
    """fit on ``data`` (a Dataset) in batches of 8, at δ = 0.5 for a policy that takes one; returns (sampler, epoch
    results)."""
    delta = {"delta": 0.5} if POLICIES[policy].takes("delta") else {}
    sampler = HardBatchSampler(len(data), 8, epochs=epochs, policy=policy, seed=0, **delta, **(params or {}))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    results = []
    fit(
        model,
        optimizer,
        DataLoader(data, batch_sampler=sampler),
        sampler,
        {"test": DataLoader(data, batch_size=16)},
        CPU,
        on_epoch=results.append,
        loss_fn=loss_fn,
        **kwargs,
    )
    return sampler, results


def test_fit_trains_dict_batches_with_any_loss_and_evaluates_its_mean():
    torch.manual_seed(0)
    data, model = DictSet(), DictModel()
    sampler, results = run_fit(losses.mse, data, model, policy="infobatch")
    assert sampler.done and len(results) == 2
    evaluated = results[-1].evals["test"]
    with torch.no_grad():
        want = losses.mse(model(data.features, data.mask), {"labels": data.labels}).mean().item()
    assert evaluated.loss == pytest.approx(want, rel=1e-6)
    assert math.isnan(evaluated.acc) and math.isnan(evaluated.top5) and evaluated.class_counts == []
    assert results[-1].train_loss < results[0].train_loss


@pytest.mark.parametrize(
    "policy, params", [("hardbatch", {}), ("infobatch", {}), ("selective-backprop", {"warmup_epoch": False})]
)  # in the scoring pass
def test_fit_refuses_a_loss_fn_that_returns_a_batch_mean_at_the_first_step(policy, params):
    data = DictSet()
    model = DictModel()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(UsageError, match=r"^loss_fn must return one loss per sample, shape \(8,\), got shape \(\)"):
        run_fit(lambda outputs, batch: F.mse_loss(outputs, batch["labels"]), data, model, policy, params=params)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # no step taken


def test_fit_refuses_a_transform_for_dict_batches_in_one_line():
    with pytest.raises(
        UsageError,
        match=r"applies to the input x of .* a dict batch must be transformed in its "
        r"Dataset or collate_fn",
    ):
        run_fit(losses.mse, DictSet(), DictModel(), train_transform=lambda x, generator: x)


def test_fit_transforms_the_input_of_a_tuple_batch_and_leaves_the_rest():
    x, _, y = dict_data()
    seen = []

    def transform(inputs, generator):
        seen.append(inputs.shape)
        return inputs * 0  # the model sees zeros: only its bias learns

    model = torch.nn.Linear(6, 2)
    weight = model.weight.detach().clone()
    run_fit(losses.l1, TensorDataset(x, y, torch.arange(len(y))), model, train_transform=transform)
    assert seen and all(s == (8, 6) for s in seen)
    assert torch.equal(model.weight, weight)


# ---- what fit counts as training time ---------------------------------------------------------------------------


class SlowSet:
    """Batches ``(x, y)`` whose iteration "takes" ``seconds`` on ``clock`` (a fake clock): an evaluation set."""

    def __init__(self, batches, clock, seconds: float):
        self.batches, self.clock, self.seconds = batches, clock, seconds

    def __iter__(self):
        self.clock.advance(self.seconds)
        return iter(self.batches)


def test_fit_times_every_step_and_leaves_evaluation_out(clock):
    """Each training forward "takes" 10 s and each evaluation 10,000 s (a fake clock): ``sampler.meter`` and each
    epoch's ``train_seconds`` count every step, the epoch's last one included, and no evaluation."""
    dataset = tiny_problem()
    sampler = HardBatchSampler(len(dataset), 5, delta=0.3, epochs=3)  # N = 11: 33 steps
    model = tiny_model()

    def slow_loss(outputs, batch):
        if torch.is_grad_enabled():  # the training forward, not evaluation
            clock.advance(10)
        return losses.cross_entropy(outputs, batch)

    results: list[EpochResult] = []
    test_batches = SlowSet([(dataset.images[:20], dataset.labels[:20])], clock, 10_000)
    fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loader_for(dataset, sampler),
        sampler,
        {"test": test_batches},
        CPU,
        on_epoch=results.append,
        loss_fn=slow_loss,
    )
    assert [r.epoch for r in results] == [1, 2, 3] and sampler.steps == 33
    for result in results:
        assert 10 * 11 <= result.train_seconds < 10 * 11 + 5  # 11 steps; the real time of tiny steps: under 5 s
        assert result.train_seconds == result.cost["train_seconds"]
        assert 10 * 11 <= result.cost["cpu_seconds"] < 10 * 11 + 5
    meter = sampler.meter
    assert 10 * 33 <= meter.train_seconds < 10 * 33 + 5 and 10 * 33 <= meter.cpu_seconds < 10 * 33 + 5
    assert meter.train_seconds == pytest.approx(sum(r.train_seconds for r in results)) and not meter.running


# ---- evaluate ------------------------------------------------------------------------------------


class Logits(nn.Module):
    """A fixed identity linear layer (input = logits) that remembers the mode and grad state of its forward."""

    def __init__(self, classes: int):
        super().__init__()
        self.linear = nn.Linear(classes, classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(classes))
            self.linear.bias.zero_()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.linear(x)


LOGITS = torch.tensor(
    [
        [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 0: rank 1
        [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 4: rank 5
        [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 5: rank 6
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 9.0],  # label 6: rank 1
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],  # label 2: rank 5
    ]
)
LABELS = torch.tensor([0, 4, 5, 6, 2])


def test_evaluate_top1_top5_and_loss_on_known_logits():
    batches = [(LOGITS[:3], LABELS[:3]), (LOGITS[3:], LABELS[3:])]  # unequal batches: means are per sample
    result = evaluate(Logits(7), batches, CPU)
    assert result.acc == pytest.approx(2 / 5)
    assert result.top5 == pytest.approx(4 / 5)
    assert result.loss == pytest.approx(F.cross_entropy(LOGITS, LABELS).item(), rel=1e-6)
    mean_of_batch_means = (F.cross_entropy(LOGITS[:3], LABELS[:3]) + F.cross_entropy(LOGITS[3:], LABELS[3:])) / 2
    assert result.loss != pytest.approx(mean_of_batch_means.item(), rel=1e-3)


def test_evaluate_applies_the_transform():
    batches = [(LOGITS, LABELS)]
    seen = []

    def reverse(x, generator):
        seen.append(generator)
        return x.flip(1)  # the class ranking reverses

    result = evaluate(Logits(7), batches, CPU, transform=reverse)
    assert seen == [None]
    # Reversed rows: the labels rank 7, 3, 2, 7 (row 3 becomes [9, .6, ..., .1]) and 3.
    assert result.acc == 0.0
    assert result.top5 == pytest.approx(3 / 5)
    assert result.loss == pytest.approx(F.cross_entropy(LOGITS.flip(1), LABELS).item(), rel=1e-6)


def test_evaluate_with_fewer_than_five_classes_counts_every_sample_in_top5():
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    result = evaluate(Logits(3), [(logits, torch.tensor([0, 0]))], CPU)
    assert result.acc == pytest.approx(0.5)
    assert result.top5 == 1.0


@pytest.mark.parametrize("was_training", [True, False])
@pytest.mark.parametrize("train_mode", [True, False])
def test_evaluate_mode_flag_and_restores_the_previous_mode(was_training, train_mode):
    model = Logits(7)
    model.train(was_training)
    evaluate(model, [(LOGITS, LABELS), (LOGITS, LABELS)], CPU, train_mode=train_mode)
    assert model.calls == [(train_mode, False)] * 2  # the requested mode, no autograd
    assert model.training is was_training
    assert model.linear.training is was_training


def test_evaluate_train_mode_uses_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(7))
    x = LOGITS * 10 + 3
    in_eval = evaluate(model, [(x, LABELS)], CPU, train_mode=False)
    in_train = evaluate(model, [(x, LABELS)], CPU, train_mode=True)
    normalized = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    assert in_train.loss == pytest.approx(F.cross_entropy(normalized, LABELS).item(), rel=1e-5)
    assert in_eval.loss == pytest.approx(F.cross_entropy(x / (1 + 1e-5) ** 0.5, LABELS).item(), rel=1e-5)


def test_evaluate_with_the_default_loss_keeps_accuracy():
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    model = torch.nn.Linear(4, 3)
    result = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=8), CPU)
    with torch.no_grad():
        logits = model(x)
    assert result.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert result.acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert sum(result.class_counts) == 20
