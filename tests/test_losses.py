"""Any loss, any batch: the per-sample reducers, batch structures, and the step core, fit, the drop-in sampler and
Lightning taking them, refusing a loss of the wrong shape at the first step."""

from __future__ import annotations

import math
import re
import runpy
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from hardbatch import POLICIES, HardBatchSampler, UsageError, batches, losses, step, top_k_batches
from hardbatch.training import CostMeter, evaluate, fit

# ---- the reducers ------------------------------------------------------------------------------------------------


def test_cross_entropy_takes_tensors_model_outputs_and_dict_batches():
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    want = F.cross_entropy(logits, y, reduction="none")
    assert torch.equal(losses.cross_entropy(logits, (logits, y)), want)
    assert torch.equal(losses.cross_entropy(SimpleNamespace(logits=logits), {"labels": y}), want)  # a ModelOutput
    assert torch.equal(losses.cross_entropy({"logits": logits}, [None, y]), want)


def test_reducers_return_float32_one_loss_per_sample_under_low_precision_outputs():
    out = torch.randn(4, 3).bfloat16()
    assert losses.cross_entropy(out, (None, torch.tensor([0, 1, 2, 0]))).dtype == torch.float32
    assert losses.mse(out, (None, torch.randn(4, 3))).dtype == torch.float32


def test_multilabel_bce_is_the_mean_over_labels():
    logits, y = torch.randn(5, 4), torch.randint(0, 2, (5, 4))
    got = losses.multilabel_bce(logits, (None, y))
    want = torch.stack([F.binary_cross_entropy_with_logits(logits[i], y[i].float()) for i in range(5)])
    assert got.shape == (5,) and torch.allclose(got, want)


@pytest.mark.parametrize("name, fn", [("mse", F.mse_loss), ("l1", F.l1_loss)])
def test_regression_losses_are_the_mean_over_output_dims(name, fn):
    prediction, y = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    got = getattr(losses, name)(prediction, (None, y))
    assert got.shape == (3,) and torch.allclose(got, torch.stack([fn(prediction[i], y[i]) for i in range(3)]))
    # A (b, 1) prediction against (b,) targets: one value each, not every sample against every target.
    column, targets = torch.randn(4, 1), torch.randn(4)
    assert torch.allclose(getattr(losses, name)(column, (None, targets)), fn(column[:, 0], targets, reduction="none"))
    with pytest.raises(UsageError, match=r"output has shape \(4, 1\) and the targets \(4, 2\)"):
        getattr(losses, name)(column, (None, torch.randn(4, 2)))


def test_dense_is_the_mean_over_the_pixels_not_ignored():
    logits, target = torch.randn(3, 4, 2, 3), torch.randint(0, 4, (3, 2, 3))
    target[0, 0] = 255  # half of sample 0 ignored
    target[2] = 255  # all of sample 2
    got = losses.dense()(logits, (None, target))
    first = F.cross_entropy(logits[0:1, :, 1], target[0:1, 1])  # the pixels of sample 0 that count
    second = F.cross_entropy(logits[1:2], target[1:2])
    assert got.shape == (3,) and torch.allclose(got, torch.stack([first, second, torch.tensor(0.0)]))
    assert torch.allclose(losses.dense(ignore_index=-1)(logits[1:2], (None, target[1:2])), second[None])


def test_token_lm_shifts_like_a_causal_lm_and_averages_each_sequences_tokens():
    logits, labels = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    labels[0, 3:] = -100  # padding: sequence 0 has 2 predicted tokens (labels 1 and 2)
    labels[2, 1:] = -100  # sequence 2 predicts nothing: counts 0
    got = losses.token_lm()(SimpleNamespace(logits=logits), {"input_ids": labels.clamp(min=0), "labels": labels})
    seq0 = F.cross_entropy(logits[0, :2], labels[0, 1:3])
    seq1 = F.cross_entropy(logits[1, :-1], labels[1, 1:])
    assert got.shape == (3,) and torch.allclose(got, torch.stack([seq0, seq1, torch.tensor(0.0)]))
    # Without the shift: per-token classification.
    unshifted = losses.token_lm(shift=False)(logits, (None, labels))
    assert torch.allclose(unshifted[1], F.cross_entropy(logits[1], labels[1]))


def test_check_per_sample_names_the_shape_expected_and_received():
    losses.check_per_sample(torch.zeros(4), 4)
    for bad, shown in [(torch.tensor(1.0), r"shape \(\) \(a batch mean"), (torch.zeros(4, 1), r"shape \(4, 1\)"),
                       (torch.zeros(3), r"shape \(3,\)"), (1.0, "a float")]:
        with pytest.raises(UsageError, match=rf"^loss_fn must return one loss per sample, shape \(4,\), got {shown}"):
            losses.check_per_sample(bad, 4)


def test_target_of_a_batch_without_targets_is_one_line():
    with pytest.raises(UsageError, match="under 'labels', got the keys 'input_ids'"):
        losses.target_of({"input_ids": torch.zeros(2)})
    with pytest.raises(UsageError, match="got a tuple of 1"):
        losses.target_of((torch.zeros(2),))


# ---- batches -----------------------------------------------------------------------------------------------------


def test_take_indexes_every_tensor_whose_first_dim_is_the_batch():
    batch = {"input_ids": torch.arange(8).view(4, 2), "labels": torch.arange(4), "vocab": torch.arange(7),
             "scale": torch.tensor(2.0), "name": "x", "extra": (torch.arange(4) * 10, [torch.arange(4)])}
    kept = batches.take(batch, torch.tensor([True, False, True, False]))
    assert kept["input_ids"].tolist() == [[0, 1], [4, 5]] and kept["labels"].tolist() == [0, 2]
    assert kept["vocab"] is batch["vocab"] and kept["scale"] is batch["scale"] and kept["name"] == "x"
    assert kept["extra"][0].tolist() == [0, 20] and kept["extra"][1][0].tolist() == [0, 2]
    assert batches.batch_size(batch) == 4
    Pair = namedtuple("Pair", "x y")
    taken = batches.take(Pair(torch.arange(3), torch.arange(3) + 5), torch.tensor([2]))
    assert isinstance(taken, Pair) and taken.y.tolist() == [7]
    assert batches.take([torch.arange(3), torch.arange(3)], torch.tensor([1]))[1].tolist() == [1]


def test_batch_size_of_a_batch_without_tensors_is_one_line():
    with pytest.raises(UsageError, match="got no tensor in a dict"):
        batches.batch_size({"a": 1})


def test_default_forward_drops_the_labels_of_a_dict():
    seen = {}

    def model(**kwargs):
        seen.update(kwargs)
        return kwargs["input_ids"].float()

    batches.forward(model, {"input_ids": torch.ones(2), "attention_mask": torch.ones(2), "labels": torch.ones(2)})
    assert set(seen) == {"input_ids", "attention_mask"}
    assert batches.forward(lambda x: x * 2, (torch.ones(2), torch.zeros(2))).tolist() == [2.0, 2.0]


# ---- the step core, fit, the own loop ----------------------------------------------------------------------------


class DictModel(torch.nn.Module):
    """A regressor called as a Hugging Face model is: ``model(features=..., mask=...)``."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 2)

    def forward(self, features, mask):
        return self.linear(features) * mask[:, None]


def dict_data(n=64):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n, 6, generator=generator)
    return features, torch.ones(n), features[:, :2] * 2 - 1


class DictSet(torch.utils.data.Dataset):
    def __init__(self, n=64):
        self.features, self.mask, self.labels = dict_data(n)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"features": self.features[i], "mask": self.mask[i], "labels": self.labels[i]}


def test_select_applies_selective_backprops_keep_mask_to_every_tensor_of_a_dict_batch():
    torch.manual_seed(0)
    model, data = DictModel(), DictSet(16)
    sampler = HardBatchSampler(16, 8, epochs=2, policy="selective-backprop", warmup_epoch=False, seed=0)
    batch = next(iter(DataLoader(data, batch_sampler=sampler)))
    chosen = step.select(sampler, model, batch, CostMeter(), torch.device("cpu"), loss_fn=losses.mse)
    keep = sampler.weights() > 0  # the answer select got from the scores (one draw per batch)
    assert 0 < int(keep.sum()) < 8
    for key in ("features", "mask", "labels"):
        assert torch.equal(chosen.batch[key], batch[key][keep])
    scores = losses.mse(model(batch["features"], batch["mask"]), batch)
    assert chosen.total == int(keep.sum()) and scores.shape == (8,)


def test_the_own_loop_refuses_a_batch_mean_at_the_first_step():
    model = torch.nn.Linear(6, 2)
    x, _, y = dict_data(16)
    sampler = HardBatchSampler(16, 8, delta=0.5, epochs=2)
    meter = CostMeter()
    for batch in DataLoader(TensorDataset(x, y), batch_sampler=sampler):
        chosen = step.select(sampler, model, batch, meter, torch.device("cpu"), loss_fn=losses.mse)
        mean = F.mse_loss(model(chosen.batch[0]), chosen.batch[1])  # a batch mean, not (b,)
        with pytest.raises(UsageError, match=r"shape \(8,\), got shape \(\) \(a batch mean"):
            step.weighted_loss(chosen, mean)
        with pytest.raises(UsageError, match=r"shape \(8,\), got shape \(\)"):
            step.record(sampler, chosen, mean.detach(), mean.detach(), meter)
        break
    assert sampler.steps == 0 and meter.optimizer_steps == 0  # nothing was recorded


def test_sampler_record_refuses_a_batch_mean_as_the_per_sample_losses_of_any_policy():
    sampler = HardBatchSampler(16, 8, delta=0.5, epochs=2)  # the paper's rule does not read them: checked anyway
    next(iter(sampler))
    with pytest.raises(UsageError, match=r"sample_losses must have shape \(8,\) .*got a tensor of shape \(\)"):
        sampler.record(torch.tensor(0.5), torch.tensor(0.5))
    assert sampler.record(torch.tensor(0.5), torch.full((8,), 0.5)) == 0


def run_fit(loss_fn, data, model, policy="hardbatch", epochs=2, params=None, **kwargs):
    """fit on ``data`` (a Dataset) in batches of 8, at δ = 0.5 for a policy that takes one; returns (sampler, epoch
    results)."""
    delta = 0.5 if POLICIES[policy].uses_delta else 1.0
    sampler = HardBatchSampler(len(data), 8, delta=delta, epochs=epochs, policy=policy, seed=0, **(params or {}))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    results = []
    fit(model, optimizer, DataLoader(data, batch_sampler=sampler), sampler,
        {"test": DataLoader(data, batch_size=16)}, torch.device("cpu"), on_epoch=results.append, loss_fn=loss_fn,
        **kwargs)
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


@pytest.mark.parametrize("policy, params", [("hardbatch", {}), ("infobatch", {}),
                                            ("selective-backprop", {"warmup_epoch": False})])  # in the scoring pass
def test_fit_refuses_a_loss_fn_that_returns_a_batch_mean_at_the_first_step(policy, params):
    data = DictSet()
    model = DictModel()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(UsageError, match=r"^loss_fn must return one loss per sample, shape \(8,\), got shape \(\)"):
        run_fit(lambda outputs, batch: F.mse_loss(outputs, batch["labels"]), data, model, policy, params=params)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no step taken


def test_fit_refuses_a_transform_for_dict_batches_in_one_line():
    with pytest.raises(UsageError, match="applies to the input x of .* a dict batch must be transformed in its "
                                         "Dataset or collate_fn"):
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


def test_evaluate_with_the_default_loss_keeps_accuracy():
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    model = torch.nn.Linear(4, 3)
    result = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=8), torch.device("cpu"))
    with torch.no_grad():
        logits = model(x)
    assert result.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert result.acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert sum(result.class_counts) == 20


def test_readme_own_loop_with_any_loss_runs_as_written(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Any loss, any batch", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    sampler, meter = namespace["sampler"], namespace["meter"]
    assert sampler.done and meter.optimizer_steps == sampler.steps
    assert 0 < meter.samples_backprop < meter.samples_loaded == meter.samples_forward_nograd + 10 * 64  # 1st epoch
    assert capsys.readouterr().out == f"{meter.samples_backprop} of {meter.samples_loaded} samples back-propagated\n"


# ---- Lightning ---------------------------------------------------------------------------------------------------


def lightning_fit(hb, data, model, training_step=None):
    """``Trainer.fit`` of ``model`` (wrapped in a LightningModule whose training_step returns ``hb``'s loss)."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, **batch):
            return self.model(**batch)

        def training_step(self, batch, batch_idx):
            return hb.training_loss(self, batch) if training_step is None else training_step(self, batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=-1, use_distributed_sampler=False, callbacks=[hb],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Module(), hb.loader(data))
    return trainer


def test_lightning_takes_dict_batches_and_any_loss_and_logs_the_cost():
    from hardbatch.integrations.lightning import HardBatch

    torch.manual_seed(0)
    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=2, seed=0)
    hb = HardBatch(sampler, loss_fn=losses.mse)
    trainer = lightning_fit(hb, DictSet(), DictModel())
    assert sampler.done and sampler.steps == 16  # 8 warm-up batches, then rounds of k = 4
    logged = trainer.callback_metrics
    assert logged["hardbatch/optimizer_steps"].item() == 16
    assert logged["hardbatch/samples_backprop"].item() == logged["hardbatch/samples_loaded"].item() == 16 * 8
    assert logged["hardbatch/samples_forward_nograd"].item() == 0


def test_lightning_refuses_a_loss_fn_that_returns_a_batch_mean_at_the_first_step():
    from hardbatch.integrations.lightning import HardBatch

    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=2, seed=0)
    hb = HardBatch(sampler, loss_fn=lambda outputs, batch: F.mse_loss(outputs, batch["labels"]))
    with pytest.raises(UsageError, match=r"^loss_fn must return one loss per sample, shape \(8,\), got shape \(\)"):
        lightning_fit(hb, DictSet(), DictModel())
    assert sampler.steps == 0


def test_lightning_keeps_the_earlier_criterion_and_x_y_call_as_deprecated_aliases():
    from hardbatch.integrations.lightning import HardBatch

    x, _, y = dict_data()
    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=1, seed=0)
    with pytest.warns(DeprecationWarning, match="criterion"):
        hb = HardBatch(sampler, criterion=lambda logits, target: ((logits - target) ** 2).mean(1))
    linear = torch.nn.Linear(6, 2)

    def training_step(module, batch):
        with pytest.warns(DeprecationWarning, match=r"training_loss\(module, batch\)"):
            return hb.training_loss(linear, *batch)

    lightning_fit(hb, TensorDataset(x, y), linear, training_step)
    assert sampler.done and hb.meter.optimizer_steps == 8


# ---- the examples, one per task type -----------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, capsys) -> tuple[dict, list[str]]:
    """Run ``examples/NAME.py`` as a script; returns the names it defined and the lines it printed."""
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    return namespace, capsys.readouterr().out.splitlines()


def record_loss_calls(monkeypatch, name: str, factory: bool = False) -> list[tuple[int, tuple, bool]]:
    """Wrap ``hardbatch.losses.NAME`` (the loss a factory makes, with ``factory``); returns the list that each call
    appends (the batch's size, the shape returned, whether grad was on) to."""
    calls = []
    original = getattr(losses, name)

    def recording(fn):
        def loss_fn(outputs, batch):
            values = fn(outputs, batch)
            calls.append((batches.batch_size(batch), tuple(values.shape), torch.is_grad_enabled()))
            return values
        return loss_fn

    monkeypatch.setattr(losses, name, (lambda *a, **k: recording(original(*a, **k))) if factory else recording(original))
    return calls


def assert_follows_the_rule(steps: list[tuple[int, int, float]], num_batches: int, k: int) -> None:
    """``steps``: (round, batch, loss) of every optimizer step. The warm-up trains batches 0..N-1 in order; each
    later round the k highest stored losses (the loss of each batch's last training step), in index order."""
    rounds: dict[int, list[tuple[int, float]]] = {}
    for r, batch, loss in steps:
        rounds.setdefault(r, []).append((batch, loss))
    assert [b for b, _ in rounds[0]] == list(range(num_batches))
    stored = torch.zeros(num_batches)
    for r in sorted(rounds):
        if r > 0:
            planned = top_k_batches(stored, k).tolist()
            trained = [b for b, _ in rounds[r]]
            assert trained == planned[:len(trained)], f"round {r}"  # the last round may be cut short
        for b, loss in rounds[r]:
            stored[b] = loss
    assert len(rounds) > 2  # rounds after the warm-up were checked


def assert_one_loss_per_sample(calls) -> None:
    assert calls and all(shape == (b,) for b, shape, _ in calls)
    assert {grad for *_, grad in calls} == {True, False}  # training steps, and no-grad scoring or evaluation


def test_multilabel_example_trains_the_rules_batches_on_the_mean_bce_over_labels(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "multilabel_bce")
    names, printed = run_example("multilabel", capsys)
    sampler = names["sampler"]
    assert sampler.done and sampler.steps == 6 * 16
    assert_follows_the_rule([(r, b, loss) for _, r, b, loss, _ in names["trace"]], 16, 8)
    assert_one_loss_per_sample(calls)
    assert [line.split(":")[0] for line in printed] == [f"epoch {e}" for e in range(1, 7)]
    assert float(printed[-1].rsplit(" ", 1)[1]) > 0.9  # label accuracy


def test_regression_example_runs_the_rule_in_its_own_loop_with_mse(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "mse")
    names, printed = run_example("regression", capsys)
    assert names["sampler"].steps == 8 * 16 and names["meter"].samples_backprop == 8 * 16 * 32
    assert_follows_the_rule(names["trace"], 16, 8)
    assert_one_loss_per_sample(calls)
    errors = [float(line.split("mse ")[1].split(",")[0]) for line in printed]
    assert len(errors) == 8 and errors[-1] < errors[0] / 2


def test_segmentation_example_trains_dict_batches_on_the_pixels_not_ignored(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "dense", factory=True)
    names, printed = run_example("segmentation", capsys)
    assert names["sampler"].steps == 6 * 12
    assert_follows_the_rule([(r, b, loss) for _, r, b, loss, _ in names["trace"]], 12, 6)
    assert_one_loss_per_sample(calls)
    labels = names["train_set"].labels
    assert (labels == 255).any() and (labels == 1).any()  # the ignore index is exercised
    assert float(printed[-1].rsplit(" ", 1)[1]) > 0.9  # pixel accuracy


def test_token_lm_example_back_propagates_the_sequences_selective_backprop_keeps(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "token_lm", factory=True)
    seen = []
    select = step.select

    def recording_select(sampler, model, batch, *args, **kwargs):
        pending = sampler.pending
        scoring = sampler.policy.needs_scores(pending)
        chosen = select(sampler, model, batch, *args, **kwargs)
        seen.append((scoring, pending, batch, chosen))
        return chosen

    monkeypatch.setattr(step, "select", recording_select)
    names, printed = run_example("token_lm", capsys)
    sampler, meter = names["sampler"], names["meter"]
    assert sampler.done and len(printed) == 5
    scored = 0
    for scoring, pending, batch, chosen in seen:
        if not scoring:  # the first epoch trains every sequence, unscored (the authors' code)
            assert chosen.batch is batch
            continue
        scored += 1
        keep = pending.weights > 0  # what the policy chose from the scoring pass's losses
        if not keep.any():
            assert chosen is None
            continue
        for key in ("input_ids", "attention_mask", "labels"):  # the same rows of every tensor of the dict
            assert torch.equal(chosen.batch[key], batch[key][keep])
    assert scored == 4 * 16 and meter.samples_forward_nograd == scored * 32
    assert meter.samples_backprop == sum(n for _, n in names["kept"]) < meter.samples_loaded
    assert_one_loss_per_sample(calls)
    assert sum(1 for b, _, grad in calls if not grad and b == 32) >= scored  # a scoring pass per scored batch
    test_losses = [float(line.split("test loss ")[1].split(";")[0]) for line in printed]
    assert test_losses[-1] < test_losses[0] - 0.5
