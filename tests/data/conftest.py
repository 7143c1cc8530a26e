"""Shared by the data layer's tests: fake data-set files in their official on-disk formats (nothing is downloaded),
MNIST-1D generated once per session, and checks that a command refused in one line and wrote nothing."""

from __future__ import annotations

import gzip
import pickle
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# ---------------------------------------------------------------- fake files in the official formats


def _unique_images(rng: np.random.Generator, n: int, shape: tuple[int, ...], first: int = 0) -> np.ndarray:
    """Random uint8 images whose pixel [0, 0, 0] is the image's index (+ first), so split membership can be traced."""
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(first, first + n)
    return x


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def write_cifar10(root: Path, n_train: int = 40, n_test: int = 10) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/ with data_batch_1..5 (n_train / 5 images each), test_batch and batches.meta; test image 3
    is black but for one green pixel at row 5, column 7."""
    rng = np.random.default_rng(0)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    x_train, y_train = _unique_images(rng, n_train, (3, 32, 32)), np.arange(n_train) % 10
    x_test, y_test = _unique_images(rng, n_test, (3, 32, 32), first=100), np.arange(n_test) % 10
    x_test[3] = 0
    x_test[3, 1, 5, 7] = 200  # green plane, row 5, column 7: flat index 1024 + 5 * 32 + 7
    per = n_train // 5
    for i in range(5):
        part = slice(i * per, (i + 1) * per)
        _pickle(
            base / f"data_batch_{i + 1}",
            {
                b"batch_label": b"training batch",
                b"labels": y_train[part].tolist(),
                b"data": x_train[part].reshape(per, 3072),
                b"filenames": [b"x.png"] * per,
            },
        )
    _pickle(
        base / "test_batch",
        {
            b"batch_label": b"testing batch",
            b"labels": y_test.tolist(),
            b"data": x_test.reshape(n_test, 3072),
            b"filenames": [b"x.png"] * n_test,
        },
    )
    _pickle(base / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072})
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_cifar100(root: Path) -> dict[str, np.ndarray]:
    """cifar-100-python/ with train (30 images), test (12) and meta; fine labels 0..99, coarse ones beside them."""
    rng = np.random.default_rng(1)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = {}
    for split, n in (("train", 30), ("test", 12)):
        x, fine = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 100, n)
        _pickle(
            base / split,
            {
                b"filenames": [b"x.png"] * n,
                b"batch_label": split.encode(),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": (fine // 5).tolist(),
                b"data": x.reshape(n, 3072),
            },
        )
        out[f"x_{split}"], out[f"y_{split}"] = x, fine
    _pickle(
        base / "meta",
        {b"fine_label_names": [b"f%d" % i for i in range(100)], b"coarse_label_names": [b"c%d" % i for i in range(20)]},
    )
    return out


STL_PLANE, STL_IMAGE = 96 * 96, 3 * 96 * 96


def write_stl10(root: Path, n_train: int = 10, n_test: int = 6) -> dict[str, np.ndarray]:
    """stl10_binary/ *_X.bin (raw bytes, each plane column-major) and *_y.bin (labels 1..10); train image 1 is black
    but for one pixel of value 77 in channel 2, row 10, column 70."""
    rng = np.random.default_rng(2)
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        raw = rng.integers(0, 256, n * STL_IMAGE, dtype=np.uint8)
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        raw.tofile(base / f"{split}_X.bin")
        labels.tofile(base / f"{split}_y.bin")
        out[f"raw_{split}"], out[f"y_{split}"] = raw, labels
    # column-major: byte c*96*96 + column*96 + row
    raw = out["raw_train"]
    raw[STL_IMAGE : 2 * STL_IMAGE] = 0
    raw[STL_IMAGE + 2 * STL_PLANE + 70 * 96 + 10] = 77
    raw.tofile(base / "train_X.bin")
    return out


COLOURS = {
    "cat": [(255, 0, 0), (200, 10, 20), (250, 128, 0), (190, 60, 60)],
    "dog": [(0, 255, 0), (10, 200, 30), (0, 128, 64), (40, 220, 90)],
    "emu": [(0, 0, 255), (30, 20, 200), (64, 0, 128), (90, 90, 250)],
}


def write_image_folder(root: Path, test_name: str = "test") -> None:
    """train/<class>/ with 4 solid-colour PNGs of assorted sizes and modes per class (``COLOURS``), <test_name>/<class>/
    with 2, and a greyscale image sorted last in train/emu/: 13 train and 6 test images of 3 classes."""
    from PIL import Image

    for split, count in (("train", 4), (test_name, 2)):
        for cls, colours in COLOURS.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, colour in enumerate(colours[:count]):
                image = Image.new("RGB", (10 + 3 * i, 12 + i), colour)
                if i == 1:
                    image = image.convert("RGBA")  # must come out as RGB all the same
                image.save(folder / f"{i}.png")
    Image.new("L", (9, 9), 100).save(root / "train" / "emu" / "9_grey.png")  # a greyscale image: 3 equal channels


FASHION_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 0, 0, type 0x08, ndim, big-endian uint32 sizes, the values."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST files; image i's pixels (0, 0) and (0, 1) hold i (+ 100 in test) in base 256; labels
    i % 10."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        index = np.arange(n) + (100 if split == "test" else 0)
        images[:, 0, 0], images[:, 0, 1] = index % 256, index // 256
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, array in zip(FASHION_NAMES[split], (images, labels), strict=True):
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(idx_bytes(array))
            else:
                (folder / name).write_bytes(idx_bytes(array))
        out[f"x_{split}"], out[f"y_{split}"] = images, labels
    return out


FAKES = SimpleNamespace(
    cifar10=write_cifar10,
    cifar100=write_cifar100,
    stl10=write_stl10,
    image_folder=write_image_folder,
    fashion_mnist=write_fashion_mnist,
    idx_bytes=idx_bytes,
    COLOURS=COLOURS,
    STL_PLANE=STL_PLANE,
    STL_IMAGE=STL_IMAGE,
    FASHION_NAMES=FASHION_NAMES,
)


@pytest.fixture(scope="session")
def fake() -> SimpleNamespace:
    """The writers of fake data-set files (``fake.cifar10(root)``, ``fake.fashion_mnist(folder, gz=False)``, ...) and
    the values they write (``fake.COLOURS``, ...)."""
    return FAKES


# ---------------------------------------------------------------- MNIST-1D, generated once


@dataclass
class Generated:
    """The canonical set as hardbatch read it on a cache miss, and what the package's generator was called with."""

    folder: str  # the --data-dir holding the cache
    raw: object  # RawData
    calls: list[tuple[dict, dict]]  # (arguments, output) of each make_dataset call
    random_state_kept: bool  # numpy's and Python's global random states are as before


def _numpy_global_state() -> np.ndarray:
    """The key of numpy's legacy global generator, which mnist1d's generator reseeds (the reader restores it)."""
    return np.random.get_state()[1]  # noqa: NPY002 - that global generator is what is checked


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Generated:
    """MNIST-1D's canonical set, generated once per test session (a few seconds) into a temporary cache folder."""
    import mnist1d.data

    from hardbatch.data import DATASETS

    folder = tmp_path_factory.mktemp("mnist1d_data")
    calls = []
    make_dataset = mnist1d.data.make_dataset

    def spy(args, *rest, **kwargs):
        made = make_dataset(args, *rest, **kwargs)
        calls.append((dict(vars(args)), made))
        return made

    numpy_before, python_before = _numpy_global_state().copy(), random.getstate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mnist1d.data, "make_dataset", spy)
        raw = DATASETS["mnist1d"].read(str(folder))
    kept = np.array_equal(_numpy_global_state(), numpy_before) and random.getstate() == python_before
    return Generated(str(folder), raw, calls, kept)


# ---------------------------------------------------------------- refused in one line, nothing written


def assert_one_line_error(err: str, *words: str) -> None:
    """``err`` (a command's stderr) is one line, an error without a traceback, holding every one of ``words``."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected exactly one line on stderr, got {err!r}"
    assert "error" in lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under ``root``: bytes and mtime for files, so any write shows."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): ("dir",) if p.is_dir() else (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="session")
def one_line_error():
    """``one_line_error(stderr, *words)``: asserts a one-line error naming every word (``assert_one_line_error``)."""
    return assert_one_line_error


@pytest.fixture(scope="session")
def files_under():
    """``files_under(root)``: every file and folder under ``root`` with its bytes and mtime (``snapshot``), to show
    that a refused command wrote nothing."""
    return snapshot


@pytest.fixture(scope="session")
def train(invoke):
    """``train(*argv) -> (status, stdout, stderr)``: ``hardbatch train ARGV --device cpu --no-progress`` in-process."""

    def run(*argv):
        return invoke("train", *argv, "--device", "cpu", "--no-progress")

    return run
