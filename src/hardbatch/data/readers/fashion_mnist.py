"""Fashion-MNIST from its official IDX files (LeCun's MNIST format), plain or gzipped, wherever they were put."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from hardbatch.data.memory import InMemoryDataset
from hardbatch.data.readers.common import RawData, fetch, in_memory_raw, torchvision_datasets, unreadable
from hardbatch.errors import UsageError

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist puts them
FASHION_MNIST_FILES = {
    split: (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    for split, prefix in (("train", "train"), ("test", "t10k"))
}
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped when ``path`` ends in .gz: two zero bytes, a type code, the
    number of dimensions d, d big-endian uint32 sizes, then the values row-major. Returns an array of those sizes."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            content = f.read()
        if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in IDX_DTYPES:
            raise ValueError("not an IDX file (bad magic number)")
        ndim = content[3]
        shape = tuple(int(v) for v in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
        return np.frombuffer(content, dtype=IDX_DTYPES[content[2]], offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error) as e:  # truncated, or values that do not fill the sizes
        raise unreadable(path, e) from None


def _idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (the plain one first); None if neither."""
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _fashion_mnist_folder(root: str | Path | None, download: bool) -> Path:
    """The first folder holding the four Fashion-MNIST IDX files: ``root`` and its FashionMNIST/raw/ (where
    torchvision downloads to; fetched there first with ``download``), or Debian's folder when ``root`` is None."""
    if root is None:
        if download:
            raise UsageError("fashion-mnist --download needs --data-dir: the folder to download into")
        places = [FASHION_MNIST_SYSTEM_DIR]
    else:
        places = [Path(root), Path(root) / "FashionMNIST" / "raw"]
    names = [name for pair in FASHION_MNIST_FILES.values() for name in pair]

    def found() -> Path | None:
        return next((p for p in places if all(_idx_file(p, n) for n in names)), None)

    if found() is None and download:
        assert root is not None  # --download needs --data-dir (checked above)
        fetch(
            "fashion-mnist",
            root,
            lambda root: torchvision_datasets("fashion-mnist").FashionMNIST(root, download=True),
            "install the Debian package (apt-get install dataset-fashion-mnist) and drop --data-dir",
        )
    if (folder := found()) is None:
        raise UsageError(
            f"fashion-mnist not found: looked in {', '.join(str(p) for p in places)} for "
            f"{', '.join(names)} (each plain or .gz); get it with 'apt-get install dataset-fashion-mnist' "
            f"(read from {FASHION_MNIST_SYSTEM_DIR} when there is no --data-dir) or with --download "
            f"--data-dir DIR"
        )
    return folder


def read_fashion_mnist_split(folder: Path, images_name: str, labels_name: str) -> InMemoryDataset:
    """One split from its IDX files: images (n, 28, 28) uint8 -> (n, 1, 28, 28); labels (n,) uint8 0..9 -> long."""
    images_path, labels_path = _idx_file(folder, images_name), _idx_file(folder, labels_name)
    assert images_path is not None and labels_path is not None  # the folder holds them (_fashion_mnist_folder)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise unreadable(
            images_path,
            ValueError(
                f"images {images.dtype} {images.shape}, labels {labels.shape}: expected uint8 (n, H, W) and (n,)"
            ),
        )
    if len(labels) and labels.max() >= 10:
        raise unreadable(labels_path, ValueError(f"label {labels.max()} outside 0..9"))
    return InMemoryDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def read_fashion_mnist(root: str | Path | None, download: bool = False) -> RawData:
    """Fashion-MNIST from its official IDX files (plain or gzipped): 60,000 train and 10,000 test 28x28 grey images.

    Looked for in ``root`` and its FashionMNIST/raw/, or in Debian's folder when ``root`` is None.
    """
    folder = _fashion_mnist_folder(root, download)
    train, test = (read_fashion_mnist_split(folder, *FASHION_MNIST_FILES[split]) for split in ("train", "test"))
    return in_memory_raw(train, test, num_classes=10)
