"""CIFAR-10 and CIFAR-100 from their official python-format files, read by an unpickler that runs no code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardbatch.data.memory import InMemoryDataset
from hardbatch.data.readers.common import RawData, find_files, in_memory_raw, torchvision_datasets, unreadable

CIFAR_HOME = "https://www.cs.toronto.edu/~kriz/cifar.html"

# What CIFAR's python-format files may name: numpy's array reconstruction (Python 2's pickles, numpy 1 and 2 module
# names) and bytes as Python 3 writes them at protocol 2. Nothing else is looked up, so a crafted file runs no code.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles dicts of bytes, strings, numbers, lists and numpy arrays, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it names {module}.{name}, which a CIFAR file never holds (refused: unpickling it could run code)"
        )


def load_cifar_pickle(path: Path) -> dict:
    """One CIFAR python-format file as a dict with str keys, read by a restricted unpickler."""
    with open(path, "rb") as f:
        entry = _CifarUnpickler(f, encoding="latin1").load()  # written by Python 2
    if not isinstance(entry, dict):
        raise ValueError(f"it holds a {type(entry).__name__}, not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def read_cifar_pickles(paths: list[Path], label_key: str) -> InMemoryDataset:
    """CIFAR python-format batches: pickled dicts with 'data' (n, 3072) uint8, planes R, G, B row-major, and labels.

    Returns their images (N, 3, 32, 32) uint8 and labels (N,), files in the order given; a file that is not such a
    batch is a UsageError naming it."""
    images, labels = [], []
    for path in paths:
        try:
            entry = load_cifar_pickle(path)
            data, targets = entry["data"], entry[label_key]
            if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError("'data' is not an (n, 3072) array")
            if (
                not isinstance(targets, list)
                or len(targets) != len(data)
                or not all(isinstance(t, int) for t in targets)
            ):
                raise ValueError(f"{label_key!r} is not a list of {len(data)} integer labels")
            images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(targets)
        except (
            OSError,
            EOFError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
            MemoryError,
            UnicodeDecodeError,
            pickle.UnpicklingError,
        ) as e:
            raise unreadable(path, e) from None
    return InMemoryDataset(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))


def read_cifar10(root: str | Path | None, download: bool = False) -> RawData:
    """CIFAR-10 from ``root``/cifar-10-batches-py/ (required; ``download`` fetches it through torchvision): 50,000
    train and 10,000 test images."""
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    base = find_files(
        root,
        download,
        "cifar10",
        "cifar-10-batches-py",
        [*train_files, "test_batch"],
        "data_batch_1..5, test_batch",
        "cifar-10-python.tar.gz",
        CIFAR_HOME,
        lambda root: torchvision_datasets("cifar10").CIFAR10(root, download=True),
    )
    train = read_cifar_pickles([base / f for f in train_files], "labels")
    return in_memory_raw(train, read_cifar_pickles([base / "test_batch"], "labels"), num_classes=10)


def read_cifar100(root: str | Path | None, download: bool = False) -> RawData:
    """CIFAR-100 (fine labels) from ``root``/cifar-100-python/ (required; ``download`` fetches it through
    torchvision): 50,000 train and 10,000 test images."""
    base = find_files(
        root,
        download,
        "cifar100",
        "cifar-100-python",
        ["train", "test"],
        "train, test",
        "cifar-100-python.tar.gz",
        CIFAR_HOME,
        lambda root: torchvision_datasets("cifar100").CIFAR100(root, download=True),
    )
    train = read_cifar_pickles([base / "train"], "fine_labels")
    return in_memory_raw(train, read_cifar_pickles([base / "test"], "fine_labels"), num_classes=100)
