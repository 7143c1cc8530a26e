"""MNIST-1D: the mnist1d package's own generator output, its cache, the 1-D models end to end, and refused options."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import mnist1d.data
import numpy as np
import pytest
import torch

from hardbatch.config import RunConfig
from hardbatch.data import DATASETS, BatchTransform, RawData, load_dataset, mnist1d_arguments, mnist1d_cache_file
from hardbatch.run.plan import DataCache
from hardbatch.report.build import group_runs, Run
from hardbatch.records import find_runs
from test_cli import FAST, assert_one_line_error, snapshot


@dataclass
class Generated:
    """The canonical set as hardbatch read it on a cache miss, and what the package's generator was called with."""

    folder: str  # the --data-dir holding the cache
    raw: RawData
    calls: list[tuple[dict, dict]]  # (arguments, output) of each make_dataset call
    random_state_kept: bool  # numpy's and Python's global random states are as before


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Generated:
    """Generates the canonical set once per test session (a few seconds), into a temporary cache folder."""
    folder = tmp_path_factory.mktemp("mnist1d_data")
    calls = []
    make_dataset = mnist1d.data.make_dataset

    def spy(args, *rest, **kwargs):
        made = make_dataset(args, *rest, **kwargs)
        calls.append((dict(vars(args)), made))
        return made

    numpy_before, python_before = np.random.get_state()[1].copy(), random.getstate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mnist1d.data, "make_dataset", spy)
        raw = DATASETS["mnist1d"].read(str(folder))
    kept = np.array_equal(np.random.get_state()[1], numpy_before) and random.getstate() == python_before
    return Generated(str(folder), raw, calls, kept)


def _no_generator(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the generator ran although the cache holds this set")

    monkeypatch.setattr(mnist1d.data, "make_dataset", refuse)


def _cache_files(folder: str | Path) -> list[Path]:
    return sorted((Path(folder) / "mnist1d").glob("*.npz"))


def test_the_canonical_set_is_the_generators_own_output(generated):
    (args, made), = generated.calls
    assert args == mnist1d.data.get_dataset_args(as_dict=True)  # the package's canonical arguments, unchanged
    raw = generated.raw
    assert (len(raw.train), len(raw.test), raw.num_classes, raw.in_channels) == (4000, 1000, 10, 1)
    assert raw.train.images.shape == (4000, 1, 40) and raw.test.images.shape == (1000, 1, 40)
    assert raw.train.images.dtype == torch.float32 and raw.train.labels.dtype == torch.long
    for split, x, y in ((raw.train, "x", "y"), (raw.test, "x_test", "y_test")):
        assert torch.equal(split.images[:, 0], torch.from_numpy(made[x].astype(np.float32)))
        assert torch.equal(split.labels, torch.from_numpy(made[y]))
    assert set(raw.train.labels.tolist()) == set(range(10))
    # Normalisation statistics are the training split's, as for the other data sets.
    assert raw.mean == pytest.approx((raw.train.images.mean().item(),))
    assert raw.std == pytest.approx((raw.train.images.std().item(),))


def test_generating_leaves_the_global_random_state_alone(generated):
    """make_dataset reseeds numpy's and Python's global generators; hardbatch puts them back."""
    assert generated.random_state_kept


def test_the_second_load_reads_the_cache_without_the_generator(generated, monkeypatch):
    _no_generator(monkeypatch)
    again = DATASETS["mnist1d"].read(generated.folder)
    assert torch.equal(again.train.images, generated.raw.train.images)
    assert torch.equal(again.test.labels, generated.raw.test.labels)
    assert len(_cache_files(generated.folder)) == 1


def test_without_data_dir_the_cache_is_the_user_cache_folder(generated, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "hardbatch" / "mnist1d"
    folder.mkdir(parents=True)
    (cached,) = _cache_files(generated.folder)
    shutil.copy(cached, folder / cached.name)
    _no_generator(monkeypatch)
    assert mnist1d_cache_file(None, mnist1d_arguments()).parent == folder
    assert torch.equal(DATASETS["mnist1d"].read(None).train.images, generated.raw.train.images)


def test_the_cache_key_covers_every_generator_argument_and_the_package_version(monkeypatch):
    args = mnist1d_arguments()
    canonical = mnist1d_cache_file(None, args)
    for name, value in args.items():
        other = {**args, name: [value] if not isinstance(value, list) else value + [0]}
        assert mnist1d_cache_file(None, other) != canonical, name
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "99.0")
    assert mnist1d_cache_file(None, args) != canonical


def test_an_unreadable_cache_is_generated_again_and_rewritten(generated, monkeypatch, tmp_path):
    shutil.copytree(Path(generated.folder) / "mnist1d", tmp_path / "mnist1d")
    (cached,) = _cache_files(tmp_path)
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated, as by a crash of another writer's filesystem
    calls = []
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda args: calls.append(args) or generated.calls[0][1])
    raw = DATASETS["mnist1d"].read(str(tmp_path))
    assert len(calls) == 1 and torch.equal(raw.train.images, generated.raw.train.images)
    _no_generator(monkeypatch)
    assert torch.equal(DATASETS["mnist1d"].read(str(tmp_path)).test.images,
                       generated.raw.test.images)
    assert [p.name for p in (tmp_path / "mnist1d").iterdir()] == [cached.name]  # no temporary file left


def test_signal_batches_are_normalised_per_channel():
    x = torch.full((2, 1, 40), 3.0)
    out = BatchTransform((1.0,), (4.0,))(x)
    assert out.shape == (2, 1, 40) and torch.equal(out, torch.full((2, 1, 40), 0.5))


@pytest.mark.parametrize("model", ["cnn1d", "mlp1d"])
def test_each_1d_model_trains_end_to_end(invoke, generated, tmp_path, model):
    # --channels-last (the default on CUDA) is a layout of image batches; signal batches keep theirs.
    rc, out, err = invoke("train", "--dataset", "mnist1d", "--model", model, "--epochs", "1", "--batch-size", "128",
                          "--lr", "0.1", "--channels-last", "--data-dir", generated.folder, *FAST,
                          "--out", tmp_path / "run")
    assert rc == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["optimizer_steps"] == 4000 // 128
    assert 0.1 < summary["final_test_acc"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (config["dataset"], config["model"], config["mnist1d_samples"]) == ("mnist1d", model, None)


def test_a_larger_set_from_the_same_generator_is_its_own_group(invoke, generated, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(Path(generated.folder) / "mnist1d", data / "mnist1d")
    common = ["train", "--dataset", "mnist1d", "--model", "mlp1d", "--epochs", "1", "--batch-size", "128",
              "--data-dir", data, *FAST]
    assert invoke(*common, "--mnist1d-samples", "5500", "--out", tmp_path / "runs" / "larger")[0] == 0
    _no_generator(monkeypatch)  # both sets are cached now
    assert invoke(*common, "--out", tmp_path / "runs" / "canonical")[0] == 0
    assert len(_cache_files(data)) == 2
    larger = load_dataset(RunConfig(dataset="mnist1d", mnist1d_samples=5500, data_dir=str(data)))
    assert (len(larger.train), len(larger.test)) == (4400, 1100)  # the generator's own 80/20 split
    config = json.loads((tmp_path / "runs" / "larger" / "config.json").read_text())["config"]
    assert config["mnist1d_samples"] == 5500
    groups = group_runs([Run.load(r) for r in find_runs(tmp_path / "runs")])
    assert len(groups) == 2 and any("mnist1d_samples=5500" in g.title for g in groups)
    shared = DataCache(torch.device("cpu"))  # what the runs of one compare or sweep plan share
    assert len(shared(RunConfig(dataset="mnist1d", data_dir=str(data))).train) == 4000
    assert len(shared(RunConfig(dataset="mnist1d", mnist1d_samples=5500, data_dir=str(data))).train) == 4400


BAD_DATA_OPTIONS = [
    (["--augment", "crop_flip"], ["mnist1d", "1-D signals", "--augment crop_flip", "images only"]),
    (["--image-size", "32"], ["--image-size 32", "images only"]),
    (["--stem", "small"], ["--stem small", "images only"]),
    (["--normalize", "imagenet"], ["--normalize imagenet", "images only"]),
    (["--protocol", "modern"], ["--augment crop_flip", "--stem small", "--protocol modern", "--augment none --stem imagenet"]),
    (["--protocol", "paper"], ["--image-size 128", "--normalize imagenet", "drop --protocol paper"]),
    (["--mnist1d-samples", "45"], ["--mnist1d-samples", "multiple of 10", "45"]),
    (["--dataset", "digits", "--mnist1d-samples", "6000"], ["--mnist1d-samples", "mnist1d only", "digits"]),
]


@pytest.mark.parametrize("args,words", BAD_DATA_OPTIONS, ids=[" ".join(a) for a, _ in BAD_DATA_OPTIONS])
def test_image_options_and_bad_sizes_are_refused_before_anything_is_written(invoke, generated, tmp_path, args, words):
    before = snapshot(tmp_path)
    rc, out, err = invoke("train", "--dataset", "mnist1d", "--model", "cnn1d", "--epochs", "1",
                          "--data-dir", generated.folder, *FAST, "--out", tmp_path / "run", *args)
    assert rc == 2 and out == ""
    assert_one_line_error(err, *words)
    assert snapshot(tmp_path) == before


MISMATCHED = [
    (["--model", "small_cnn"], ["'small_cnn'", "images", "(1, 40)", "cnn1d, mlp1d"]),
    (["--model", "mlp"], ["'mlp'", "(1, 40)", "cnn1d, mlp1d"]),  # would otherwise pool the batch as an image
    (["--dataset", "digits", "--model", "cnn1d"], ["'cnn1d'", "1-D signals", "(1, 8, 8)", "small_cnn"]),
]


@pytest.mark.parametrize("args,words", MISMATCHED, ids=[" ".join(a) for a, _ in MISMATCHED])
def test_a_model_given_the_other_kind_of_data_names_the_models_that_take_it(invoke, generated, tmp_path, args, words):
    rc, out, err = invoke("train", "--dataset", "mnist1d", "--epochs", "1", "--batch-size", "128",
                          "--data-dir", generated.folder, *FAST, "--out", tmp_path / "run", *args)
    assert rc == 2
    assert_one_line_error(err, *words)
