"""scikit-learn's bundled 8x8 handwritten digits, split once for every run."""

from __future__ import annotations

from pathlib import Path

import torch

from hardbatch.data.memory import InMemoryDataset
from hardbatch.data.readers.common import RawData, optional_import, value_stats


def read_digits(root: str | Path | None = None, download: bool = False) -> RawData:
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, no download (``root`` and ``download`` unused).

    A fixed stratified split (80/20, seed 0, independent of the run's seed) so every run shares one test set: 1,437
    train and 360 test images, float (1, 8, 8) in [0, 1]. Needs scikit-learn (MissingExtra without it).
    """
    what = "the digits data set"
    sk_datasets = optional_import("sklearn.datasets", what, "scikit-learn")
    train_test_split = optional_import("sklearn.model_selection", what, "scikit-learn").train_test_split

    bunch = sk_datasets.load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, stratify=y.numpy(), random_state=0
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    mean, std = value_stats(x[train_idx])
    return RawData(
        InMemoryDataset(x[train_idx], y[train_idx]),
        InMemoryDataset(x[test_idx], y[test_idx]),
        num_classes=10,
        in_channels=1,
        image_size=8,
        mean=mean,
        std=std,
    )
