"""hardbatch.data.readers.mnist1d: the mnist1d package's own generator output, its cache, and the --mnist1d-samples
sets."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import mnist1d.data
import numpy as np
import pytest
import torch

from hardbatch.config import RunConfig
from hardbatch.data import DATASETS, load_dataset
from hardbatch.data.readers.mnist1d import mnist1d_arguments, mnist1d_cache_file
from hardbatch.errors import MissingExtra
from hardbatch.records import find_runs
from hardbatch.report import Run, group_runs
from hardbatch.run.plan import DataCache


def _no_generator(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the generator ran although the cache holds this set")

    monkeypatch.setattr(mnist1d.data, "make_dataset", refuse)


def _cache_files(folder: str | Path) -> list[Path]:
    return sorted((Path(folder) / "mnist1d").glob("*.npz"))


def test_the_canonical_set_is_the_generators_own_output(generated):
    ((args, made),) = generated.calls
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
        other = {**args, name: [value] if not isinstance(value, list) else [*value, 0]}
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
    assert torch.equal(DATASETS["mnist1d"].read(str(tmp_path)).test.images, generated.raw.test.images)
    assert [p.name for p in (tmp_path / "mnist1d").iterdir()] == [cached.name]  # no temporary file left


def test_a_larger_set_from_the_same_generator_is_its_own_group(train, generated, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(Path(generated.folder) / "mnist1d", data / "mnist1d")
    common = ["--dataset", "mnist1d", "--model", "mlp1d", "--epochs", "1", "--batch-size", "128", "--data-dir", data]
    assert train(*common, "--mnist1d-samples", "5500", "--out", tmp_path / "runs" / "larger")[0] == 0
    _no_generator(monkeypatch)  # both sets are cached now
    assert train(*common, "--out", tmp_path / "runs" / "canonical")[0] == 0
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


def test_without_the_mnist1d_package_one_line_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # importing it fails, as where it is not installed
    with pytest.raises(MissingExtra, match=r"^the mnist1d data set needs mnist1d: pip install 'hardbatch\[cli\]'$"):
        DATASETS["mnist1d"].read(str(tmp_path))
