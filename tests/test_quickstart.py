"""The 10-line quickstart runs every registered policy, and trains exactly what the sampler-level reference trains."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.policies import POLICIES

N_SAMPLES, BATCH, EPOCHS = 320, 32, 4
# Every registered policy at the hyper-parameters of its tiny example (a new one is picked up with no edit here),
# the rule at δ = 0.5, and its variants that change the loop (a scoring pass, per-sample losses).
CASES = {
    **{
        name: (name, {**({"delta": 0.5} if cls.takes("delta") else {}), **cls.example})
        for name, cls in POLICIES.items()
    },
    "hardbatch+rescore": ("hardbatch", {"delta": 0.5, "rescore": 2}),
    "hardbatch+repartition": ("hardbatch", {"delta": 0.5, "repartition": True}),
}


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(N_SAMPLES, 1, 8, 8, generator=generator), torch.randint(0, 10, (N_SAMPLES,), generator=generator)
    )


def _model() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def _sampler(train_set, case: str) -> hardbatch.HardBatchSampler:
    name, params = CASES[case]
    sampler = hardbatch.HardBatchSampler(
        len(train_set), batch_size=BATCH, epochs=EPOCHS, policy=hardbatch.create_policy(name, **params), seed=1
    )
    if sampler.policy.holdout:  # rho-loss: its irreducible losses, set before training (a run trains its IL model)
        sampler.policy.irreducible = torch.linspace(0.0, 1.0, len(train_set))
    return sampler


def quickstart(case: str) -> tuple[hardbatch.HardBatchSampler, list[tuple]]:
    """The README's quickstart loop, as written, with a trace of what each optimizer step trained and a row
    ("epoch", E) where epoch E ended (where a loop evaluates)."""
    train_set, model = _data(), _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler = _sampler(train_set, case)
    trace = []
    loader = DataLoader(train_set, batch_sampler=sampler)
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad(); loss.backward(); optimizer.step()  # noqa: E702 - as in the README  # fmt: skip
                last = sampler.last
                trace.append((last.step, last.round, last.batch, float(last.loss), last.samples))
            if sampler.epoch_ended:
                trace.append(("epoch", sampler.epoch))
    return sampler, trace


def reference(case: str) -> tuple[hardbatch.HardBatchSampler, list[tuple]]:
    """The same training written against the sampler's own primitives (pending, weights, record): no step core."""
    import torch.nn.functional as F

    train_set, model = _data(), _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler = _sampler(train_set, case)
    trace = []
    loader = DataLoader(train_set, batch_sampler=sampler)
    while not sampler.done:
        for x, y in loader:
            step, scores = sampler.pending, None
            if step.score_only or sampler.policy.needs_scores(step):
                with torch.no_grad():
                    model.train(sampler.policy.score_train_mode)
                    scores = F.cross_entropy(model(x), y, reduction="none")
                    model.train()
                if step.score_only:
                    sampler.record(scores.mean(), scores)
                    continue
            weights = sampler.weights(scores)
            keep = weights > 0
            if not keep.any():
                sampler.record(scores.mean())
                continue
            logits = model(x[keep])
            if step.weights is None and not sampler.policy.scores_first:
                loss = F.cross_entropy(logits, y[keep])  # the fused mean, as the step core computes it
            else:
                loss = (weights[keep] * F.cross_entropy(logits, y[keep], reduction="none")).mean()
            losses = F.cross_entropy(logits.detach(), y[keep], reduction="none")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sampler.record(loss.detach(), losses if sampler.policy.per_sample else None)
            trace.append((sampler.steps, sampler.round, step.batch, float(loss.detach()), int(keep.sum())))
    return sampler, trace


@pytest.mark.parametrize("case", list(CASES))
def test_quickstart_trains_what_the_sampler_level_reference_trains(case):
    sampler, trace = quickstart(case)
    assert [row for row in trace if row[0] == "epoch"] == [("epoch", e) for e in range(1, EPOCHS + 1)]
    trace = [row for row in trace if row[0] != "epoch"]
    expected_sampler, expected = reference(case)
    assert sampler.done and sampler.progress == 1.0
    assert [row[:3] + row[4:] for row in trace] == [row[:3] + row[4:] for row in expected]
    assert [row[3] for row in trace] == pytest.approx([row[3] for row in expected], abs=1e-6)
    assert sampler.trained_samples == expected_sampler.trained_samples
    assert torch.equal(sampler.visits, expected_sampler.visits)
    if not sampler.policy.epoch_is_round:
        assert sampler.steps == EPOCHS * sampler.num_batches
    else:
        assert sampler.epoch == EPOCHS
    meter = sampler.meter
    assert meter.optimizer_steps == len(trace) and meter.samples_backprop == sum(row[4] for row in trace)
    assert meter.train_seconds > 0 and meter.cpu_seconds > 0  # timed from one call to the next


def test_quickstart_takes_the_policy_by_name_and_keywords_as_before():
    train_set = _data()
    by_name = hardbatch.HardBatchSampler(len(train_set), BATCH, epochs=2, policy="infobatch", prune_ratio=0.3)
    by_object = hardbatch.HardBatchSampler(
        len(train_set), BATCH, epochs=2, policy=hardbatch.policies.InfoBatch(prune_ratio=0.3)
    )
    assert by_name.policy.hyper_parameters() == by_object.policy.hyper_parameters()
    assert hardbatch.HardBatchSampler(len(train_set), BATCH, delta=0.5).policy.k == (N_SAMPLES // BATCH) // 2


def test_a_policy_object_stays_unbound_and_serves_two_samplers():
    policy = hardbatch.policies.HardBatch(delta=0.5)
    first = hardbatch.HardBatchSampler(64, 8, policy=policy)
    second = hardbatch.HardBatchSampler(128, 8, policy=policy)
    assert first.policy is not policy and second.policy is not first.policy
    assert (first.policy.k, second.policy.k) == (4, 8)
    assert not hasattr(policy, "partition")  # the object given holds only its hyper-parameters


def test_the_quickstart_loop_consumes_the_batches_selective_backprop_keeps_none_of():
    # One sample a batch: about half of the batches keep nothing; training_loss records each untrained and returns
    # None (no optimizer step), and every epoch still ends.
    train_set, model = _data(), _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler = hardbatch.HardBatchSampler(len(train_set), batch_size=1, epochs=2, policy="selective-backprop", seed=1)
    untrained = epochs_ended = 0
    loader = DataLoader(train_set, batch_sampler=sampler)
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad(); loss.backward(); optimizer.step()  # noqa: E702 - as in the README  # fmt: skip
            else:
                untrained += 1
            epochs_ended += sampler.epoch_ended
    assert sampler.done and sampler.epoch == epochs_ended == 2
    assert N_SAMPLES < sampler.steps < 2 * N_SAMPLES and untrained == 2 * N_SAMPLES - sampler.steps  # 1st: all
    assert sampler.trained_samples["all"] == sampler.steps == sampler.meter.optimizer_steps
    assert sampler.meter.samples_forward_nograd == N_SAMPLES  # the second epoch scored every sample
