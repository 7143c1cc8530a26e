"""hardbatch.data.readers.fashion_mnist: Fashion-MNIST read from tiny fakes in the official IDX format (plain and
gzipped), and from the Debian package's files."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from hardbatch.config import make_config
from hardbatch.data import DATASETS, load_dataset
from hardbatch.data.readers import fashion_mnist
from hardbatch.data.readers.fashion_mnist import read_idx
from hardbatch.errors import UsageError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_system_copy(tmp_path, monkeypatch):
    """Point the Debian folder at an empty place, so tests do not depend on what this machine has installed."""
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "usr-share-nothing")
    return tmp_path / "usr-share-nothing"


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_reads_official_idx_files(tmp_path, fake, gz):
    written = fake.fashion_mnist(tmp_path, gz=gz)
    raw = DATASETS["fashion-mnist"].read(str(tmp_path))
    assert (raw.num_classes, raw.in_channels, raw.image_size) == (10, 1, 28)
    assert raw.train.images.shape == (40, 1, 28, 28) and raw.train.images.dtype == torch.uint8
    assert raw.test.images.shape == (20, 1, 28, 28) and raw.test.labels.dtype == torch.long
    assert torch.equal(raw.train.images[:, 0], torch.from_numpy(written["x_train"]))  # row-major, in file order
    assert torch.equal(raw.test.images[:, 0], torch.from_numpy(written["x_test"]))
    assert raw.train.labels.tolist() == written["y_train"].tolist()
    assert raw.test.labels.tolist() == written["y_test"].tolist()
    x = written["x_train"].astype(np.float64) / 255
    assert raw.mean == pytest.approx((x.mean(),)) and raw.std == pytest.approx((x.std(),))


def test_read_idx_shapes_and_bad_files(tmp_path, fake):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(fake.idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    (tmp_path / "short").write_bytes(fake.idx_bytes(array)[:-1])  # one value missing
    (tmp_path / "magic").write_bytes(b"\x01" + fake.idx_bytes(array)[1:])
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b not really gzip")
    for name in ("short", "magic", "bad.gz"):
        with pytest.raises(UsageError, match=f"cannot read .*{name}"):
            read_idx(tmp_path / name)


def test_finds_torchvision_layout_under_data_dir(tmp_path, fake, no_system_copy):
    fake.fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    raw = DATASETS["fashion-mnist"].read(str(tmp_path))
    assert len(raw.train) == 40 and len(raw.test) == 20


def test_without_data_dir_reads_the_debian_folder(tmp_path, fake, monkeypatch):
    fake.fashion_mnist(tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "debian")
    raw = DATASETS["fashion-mnist"].read(None)
    assert len(raw.train) == 40 and raw.test.images[3, 0, 0, 0] == 103


def test_missing_files_name_the_places_and_both_ways_to_get_them(tmp_path, fake, no_system_copy):
    for root, places in ((None, [no_system_copy]), (str(tmp_path), [tmp_path, tmp_path / "FashionMNIST" / "raw"])):
        with pytest.raises(UsageError) as err:
            DATASETS["fashion-mnist"].read(root)
        message = str(err.value)
        assert "\n" not in message and all(str(p) in message for p in places)
        assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    fake.fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()  # three of four files are not enough
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte"):
        DATASETS["fashion-mnist"].read(str(tmp_path))


def test_download_goes_through_torchvision_into_data_dir(tmp_path, fake, no_system_copy, monkeypatch):
    calls = []

    class FakeFashionMNIST:  # torchvision's class: fetches into root/FashionMNIST/raw/
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            fake.fashion_mnist(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    assert len(DATASETS["fashion-mnist"].read(str(tmp_path), download=True).train) == 40
    DATASETS["fashion-mnist"].read(str(tmp_path), download=True)  # present now: no second download
    assert calls == [(str(tmp_path), True)]


def test_failed_or_homeless_download_is_one_line(tmp_path, no_system_copy, monkeypatch):
    def offline(root, download=False, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(UsageError) as err:
        DATASETS["fashion-mnist"].read(str(tmp_path), download=True)
    message = str(err.value)
    assert "no network" in message and "dataset-fashion-mnist" in message and "\n" not in message
    with pytest.raises(UsageError, match="--download needs --data-dir"):
        DATASETS["fashion-mnist"].read(None, download=True)


@pytest.mark.parametrize("protocol", ["paper", "modern"])
def test_every_protocol_sees_one_channel_at_the_right_size(tmp_path, fake, protocol):
    fake.fashion_mnist(tmp_path)
    cfg = make_config(protocol, dataset="fashion-mnist", data_dir=str(tmp_path), val_fraction=0.25)
    data = load_dataset(cfg)
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.test) == 20
    x, _ = next(iter(data.eval_loader(data.test, batch_size=4)))
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 28, 28)
    side = 128 if protocol == "paper" else 28
    assert data.image_size == side and data.eval_transform(x).shape == (4, 1, side, side)
    assert data.train_transform(x, torch.Generator().manual_seed(0)).shape == (4, 1, side, side)


def test_cli_missing_files_exit_2_and_write_nothing(tmp_path, no_system_copy, train):
    status, _, err = train("--dataset", "fashion-mnist", "--out", tmp_path / "run")
    assert status == 2 and err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "run").exists()


def test_debian_package_files():
    if not SYSTEM_DIR.is_dir():
        pytest.skip(f"{SYSTEM_DIR} absent: apt-get install dataset-fashion-mnist (CI installs it)")
    raw = DATASETS["fashion-mnist"].read(None)
    assert (len(raw.train), len(raw.test), raw.num_classes, raw.in_channels) == (60000, 10000, 10, 1)
    assert raw.image_size == 28
    assert raw.train.images.shape == (60000, 1, 28, 28) and raw.train.images.dtype == torch.uint8
    assert raw.test.images.shape == (10000, 1, 28, 28) and raw.test.images.dtype == torch.uint8
    assert torch.bincount(raw.train.labels).tolist() == [6000] * 10
    assert torch.bincount(raw.test.labels).tolist() == [1000] * 10
    assert raw.mean[0] == pytest.approx(0.2860, abs=1e-4) and raw.std[0] == pytest.approx(0.3530, abs=1e-4)
