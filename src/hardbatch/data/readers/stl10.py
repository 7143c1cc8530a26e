"""STL-10's labelled splits from its official binary files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hardbatch.data.memory import InMemoryDataset
from hardbatch.data.readers.common import RawData, find_files, in_memory_raw, torchvision_datasets, unreadable

STL10_HOME = "https://cs.stanford.edu/~acoates/stl10/"


def read_stl10_binaries(images_path: Path, labels_path: Path) -> InMemoryDataset:
    """STL-10 binary files: images 3x96x96 uint8 each, every plane stored column-major; labels uint8 1..10 (-> 0..9).

    Returns images (N, 3, 96, 96) uint8 (row-major) and labels (N,) long."""
    try:
        # (N, C, W, H) on disk -> (N, C, H, W)
        x = np.fromfile(images_path, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
        y = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1
        return InMemoryDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
    except (OSError, ValueError) as e:  # a truncated file, or as many labels as images
        raise unreadable(images_path, e) from None


def read_stl10(root: str | Path | None, download: bool = False) -> RawData:
    """STL-10 from ``root``/stl10_binary/ (required; ``download`` fetches it through torchvision): the 5,000
    labelled train and 8,000 test 96x96 images; the unlabelled split is not used."""
    files = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    base = find_files(
        root,
        download,
        "stl10",
        "stl10_binary",
        files,
        ", ".join(files),
        "stl10_binary.tar.gz",
        STL10_HOME,
        lambda root: torchvision_datasets("stl10").STL10(root, split="train", download=True),
    )
    train = read_stl10_binaries(base / "train_X.bin", base / "train_y.bin")
    return in_memory_raw(train, read_stl10_binaries(base / "test_X.bin", base / "test_y.bin"), num_classes=10)
