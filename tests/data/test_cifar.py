"""hardbatch.data.readers.cifar: CIFAR-10 and CIFAR-100 from tiny fakes in the official python-format files."""

from __future__ import annotations

import pickle
import re
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from hardbatch.data import DATASETS, InMemoryDataset
from hardbatch.errors import MissingExtra, UsageError


def test_cifar10_reads_official_pickles(tmp_path, fake):
    written = fake.cifar10(tmp_path)
    raw = DATASETS["cifar10"].read(str(tmp_path))
    assert (raw.num_classes, raw.in_channels, raw.image_size) == (10, 3, 32)
    assert isinstance(raw.train, InMemoryDataset) and isinstance(raw.test, InMemoryDataset)
    assert raw.train.images.shape == (40, 3, 32, 32) and raw.train.images.dtype == torch.uint8
    assert raw.test.images.shape == (10, 3, 32, 32) and raw.test.labels.dtype == torch.long
    assert torch.equal(raw.train.images, torch.from_numpy(written["x_train"]))  # batches 1..5 in order
    assert raw.train.labels.tolist() == written["y_train"].tolist()
    assert raw.test.labels.tolist() == written["y_test"].tolist()
    assert raw.test.images[3].nonzero().tolist() == [[1, 5, 7]] and raw.test.images[3, 1, 5, 7] == 200
    x = written["x_train"].astype(np.float64) / 255
    np.testing.assert_allclose(raw.mean, x.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(raw.std, x.std(axis=(0, 2, 3)), atol=1e-9)


def test_cifar100_uses_fine_labels(tmp_path, fake):
    written = fake.cifar100(tmp_path)
    raw = DATASETS["cifar100"].read(str(tmp_path))
    assert raw.num_classes == 100 and raw.in_channels == 3 and raw.image_size == 32
    assert raw.train.images.shape == (30, 3, 32, 32) and raw.test.images.shape == (12, 3, 32, 32)
    assert torch.equal(raw.test.images, torch.from_numpy(written["x_test"]))
    assert raw.train.labels.tolist() == written["y_train"].tolist()
    assert raw.test.labels.tolist() == written["y_test"].tolist()
    x = written["x_train"].astype(np.float64) / 255
    np.testing.assert_allclose(raw.mean, x.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(raw.std, x.std(axis=(0, 2, 3)), atol=1e-9)


def test_one_file_short_is_not_enough(tmp_path, fake):
    fake.cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UsageError, match=re.escape("data_batch_1..5")):
        DATASETS["cifar10"].read(str(tmp_path))


def test_missing_files_through_the_command_line_exit_2_with_one_line(tmp_path, train):
    status, _, err = train(
        "--dataset", "cifar10", "--data-dir", tmp_path / "nothing", "--epochs", "1", "--out", tmp_path / "run"
    )
    assert status == 2 and err.count("\n") == 1 and str(tmp_path / "nothing" / "cifar-10-batches-py") in err


def test_truncated_pickle_is_a_usage_error(tmp_path, fake):
    fake.cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UsageError, match=r"cannot read .*test_batch"):
        DATASETS["cifar10"].read(str(tmp_path))


def test_download_fetches_through_torchvision_only_when_files_are_missing(tmp_path, fake, monkeypatch):
    calls = []

    class FakeCIFAR10:  # stands in for torchvision's class: "downloads" by writing the files
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            fake.cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    raw = DATASETS["cifar10"].read(str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True)] and len(raw.train) == 40
    DATASETS["cifar10"].read(str(tmp_path), download=True)  # files now present: no second download
    assert len(calls) == 1


def test_failed_download_is_a_one_line_usage_error(tmp_path, monkeypatch):
    def offline(root, download=False, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(UsageError) as err:
        DATASETS["cifar100"].read(str(tmp_path), download=True)
    assert "download" in str(err.value) and "no network" in str(err.value) and "\n" not in str(err.value)


def test_files_on_disk_need_no_torchvision_and_a_download_names_its_install(tmp_path, fake, monkeypatch):
    fake.cifar10(tmp_path / "present")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # importing it fails, as where it is not installed
    assert len(DATASETS["cifar10"].read(str(tmp_path / "present"), download=True).train) == 40
    with pytest.raises(MissingExtra) as err:
        DATASETS["cifar10"].read(str(tmp_path / "absent"), download=True)
    assert str(err.value) == "cifar10 --download needs torchvision: pip install 'hardbatch[cli]'"


class _RunsCode:
    """A pickle that, when loaded by plain ``pickle.load``, creates a marker directory."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def test_hostile_cifar_pickle_is_refused_and_runs_no_code(tmp_path, fake):
    fake.cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f)
    with pytest.raises(UsageError) as err:
        DATASETS["cifar10"].read(str(tmp_path))
    message = str(err.value)
    assert not marker.exists()
    assert "\n" not in message and "data_batch_2" in message and "posix.mkdir" in message and "refused" in message


@pytest.mark.parametrize(
    "entry",
    [
        [1, 2, 3],
        {b"labels": [0]},
        {b"data": "text", b"labels": [0]},
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]},
    ],
    ids=["a-list", "no-data", "data-not-array", "labels-too-few", "labels-not-int"],
)
def test_malformed_cifar_pickle_is_one_line_naming_the_file(tmp_path, fake, entry):
    fake.cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(UsageError) as err:
        DATASETS["cifar10"].read(str(tmp_path))
    assert "\n" not in str(err.value) and "data_batch_3" in str(err.value)


def test_cifar_pickles_as_python2_wrote_them_still_load(tmp_path, fake):
    """The real files are protocol-2 pickles whose arrays name numpy.core.multiarray._reconstruct."""
    fake.cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    for name in ("data_batch_1", "test_batch"):
        with open(base / name, "rb") as f:
            entry = pickle.load(f)
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    raw = DATASETS["cifar10"].read(str(tmp_path))
    assert len(raw.test) > 0
