"""Selection inside the loaded batch over streaming data made on disk here: webdataset tar shards and Hugging Face
``datasets`` in streaming mode over local files (``hardbatch.InBatchSelector``)."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

import hardbatch
from hardbatch import InBatchSelector
from hardbatch.functional import key_ids
from hardbatch.policies import RhoLoss, SelectiveBackprop

SAMPLES, BATCH, FEATURES, CLASSES = 96, 16, 8, 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    """Two webdataset tar shards of (x, class) samples with string keys."""
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    paths = []
    for shard in range(2):
        path = str(folder / f"train-{shard}.tar")
        with wds.TarWriter(path) as sink:
            for i in range(SAMPLES // 2):
                sink.write(
                    {
                        "__key__": f"s{shard}-{i:04d}",
                        "x.npy": rng.standard_normal(FEATURES).astype(np.float32),
                        "cls": int(rng.integers(CLASSES)),
                    }
                )
        paths.append(path)
    return paths


def _webdataset_loader(shards: list[str]) -> DataLoader:
    stream = (
        wds.WebDataset(shards, shardshuffle=False)
        .decode()
        .map(lambda s: {"x": torch.from_numpy(s["x.npy"]), "labels": s["cls"], "__key__": s["__key__"]})
    )
    return DataLoader(stream, batch_size=BATCH)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(FEATURES, CLASSES)


def _train(selector, loader, model, **kwargs) -> list[tuple]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trace = []
    while not selector.done:
        for batch in loader:
            loss = hardbatch.training_loss(selector, model, batch, forward=lambda m, b: m(b["x"]), **kwargs)
            if loss is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            trace.append((selector.last.step, selector.last.samples))
            if selector.done:
                break
    return trace


def test_selective_backprop_over_webdataset_shards_trains_every_sample_first_then_chooses(shards):
    steps = SAMPLES // BATCH
    selector = InBatchSelector(SelectiveBackprop(beta=1.0), epochs=3, steps_per_epoch=steps)
    trace = _train(selector, _webdataset_loader(shards), _model())
    assert selector.done and selector.epoch == 3 and selector.loaded == 3 * steps
    first, later = trace[:steps], trace[steps:]
    assert [samples for _, samples in first] == [BATCH] * steps  # the warm-up epoch: whole batches, no scoring
    assert all(samples < BATCH for _, samples in later) and sum(s for _, s in later) > 0
    assert selector.meter.samples_forward_nograd == 2 * steps * BATCH  # every later batch scored once
    assert selector.meter.samples_backprop == sum(samples for _, samples in trace)


def test_rho_loss_over_webdataset_keys_trains_the_most_reducible_of_each_batch(shards):
    loader = _webdataset_loader(shards)
    keys = [key for batch in loader for key in batch["__key__"]]
    irreducible = {key: (i % 7) / 7 for i, key in enumerate(keys)}  # an IL model's losses, by webdataset key
    selector = InBatchSelector(
        RhoLoss(select_fraction=0.25), epochs=1, steps_per_epoch=SAMPLES // BATCH, id_key="__key__"
    )
    selector.policy.irreducible = irreducible
    chosen = []
    select = selector.policy.select
    selector.policy.select = lambda step, scores: chosen.append(select(step, scores)) or chosen[-1]
    model = torch.nn.Linear(FEATURES, CLASSES)
    for batch in loader:
        with torch.no_grad():  # what the scoring forward sees: the model before this step
            scores = torch.nn.functional.cross_entropy(model(batch["x"]), batch["labels"], reduction="none")
        reducible = scores - torch.tensor([irreducible[k] for k in batch["__key__"]])
        expected = torch.sort(reducible, descending=True, stable=True).indices[: BATCH // 4]
        loss = hardbatch.training_loss(selector, model, batch, forward=lambda m, b: m(b["x"]))
        assert loss is not None and selector.last.samples == BATCH // 4
        assert set(chosen[-1].nonzero().flatten().tolist()) == set(expected.tolist())
    assert selector.done and selector.meter.samples_backprop == SAMPLES // 4


def test_rho_loss_needs_sample_ids_and_a_loss_for_each(shards):
    with pytest.raises(hardbatch.UsageError, match="id_key"):
        selector = InBatchSelector("rho-loss", epochs=1, steps_per_epoch=6, select_fraction=0.5)
        selector.policy.irreducible = torch.zeros(SAMPLES)
        hardbatch.training_loss(
            selector, _model(), next(iter(_webdataset_loader(shards))), forward=lambda m, b: m(b["x"])
        )
    selector = InBatchSelector("rho-loss", epochs=1, steps_per_epoch=6, id_key="__key__", select_fraction=0.5)
    selector.policy.irreducible = {"s0-0000": 0.1}
    with pytest.raises(hardbatch.UsageError, match="no irreducible loss for sample id"):
        hardbatch.training_loss(
            selector, _model(), next(iter(_webdataset_loader(shards))), forward=lambda m, b: m(b["x"])
        )


def test_huggingface_streaming_dataset_over_local_files(tmp_path):
    path = tmp_path / "train.jsonl"
    rng = np.random.default_rng(1)
    with open(path, "w") as f:
        for i in range(SAMPLES):
            f.write(
                json.dumps({"idx": i, "x": rng.standard_normal(FEATURES).tolist(), "labels": int(i % CLASSES)}) + "\n"
            )
    stream = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True).with_format("torch")
    loader = DataLoader(stream, batch_size=BATCH)
    selector = InBatchSelector(
        "composer-sb",
        epochs=4,
        steps_per_epoch=SAMPLES // BATCH,
        id_key="idx",
        start=0.25,
        end=1.0,
        keep=0.5,
        interrupt=0,
    )
    trace = _train(selector, loader, _model(), loss_fn=hardbatch.losses.cross_entropy)
    # Steps 0..5 (the first quarter of 24) train whole batches; every later one trains half of its 16.
    assert [samples for _, samples in trace] == [BATCH] * 6 + [BATCH // 2] * 18
    assert selector.done and selector.steps == 24


@pytest.mark.parametrize("name", ["hardbatch", "uniform", "infobatch", "seta", "ies", "random", "cyclic"])
def test_a_policy_that_plans_before_loading_is_refused_in_one_line_naming_those_that_work(name):
    with pytest.raises(hardbatch.UsageError) as refused:
        InBatchSelector(name, epochs=1, steps_per_epoch=4)
    message = str(refused.value)
    assert "\n" not in message and "selective-backprop, composer-sb, rho-loss" in message


def test_string_keys_hash_to_the_same_ids_everywhere():
    ids = key_ids(["a", "b", "a"])
    assert ids[0] == ids[2] != ids[1] and (ids >= 0).all()
    assert key_ids(torch.tensor([3, 1])).tolist() == [3, 1]
    with pytest.raises(hardbatch.UsageError, match="integer or a string"):
        key_ids([1.5])


def test_a_selector_resumes_from_its_state(shards):
    import copy

    loader, steps = _webdataset_loader(shards), SAMPLES // BATCH
    selector, model = InBatchSelector(SelectiveBackprop(), epochs=2, steps_per_epoch=steps, seed=3), _model()
    for batch in loader:  # the first epoch
        hardbatch.training_loss(selector, model, batch, forward=lambda m, b: m(b["x"]))
    saved, weights = copy.deepcopy(selector.state_dict()), copy.deepcopy(model.state_dict())
    uninterrupted = _train(selector, loader, model)
    resumed = InBatchSelector(SelectiveBackprop(), epochs=2, steps_per_epoch=steps, seed=3)
    resumed.load_state_dict(saved)
    model.load_state_dict(weights)
    assert resumed.epoch == 1 and _train(resumed, loader, model) == uninterrupted
