"""Data sets by name (a table that new data sets join), and the loaders the training loop reads from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from hardbatch.config import RunConfig, UsageError


class InMemoryDataset(Dataset):
    """Images and labels held as tensors; ``__getitems__`` gathers a whole mini-batch in one indexing op.

    ``images``: (n, C, H, W) float; ``labels``: (n,) long.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long, device=self.labels.device)
        return self.images[index], self.labels[index]


def keep_batch(batch):
    """Collate function for data sets whose ``__getitems__`` already returns a batch."""
    return batch


@dataclass
class DataSplits:
    """A loaded data set: train and test splits plus the shape facts a model needs."""

    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int

    def loader(self, dataset: Dataset, batch_sampler: Sampler, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
        """A DataLoader that draws whole mini-batches from ``batch_sampler``."""
        collate = keep_batch if hasattr(dataset, "__getitems__") else None
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )

    def eval_loader(self, dataset: Dataset, batch_size: int = 1024, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
        """Sequential, complete batches over ``dataset`` for evaluation."""
        sampler = BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last=False)
        return self.loader(dataset, sampler, num_workers, pin_memory)


def load_digits(cfg: RunConfig) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, no download.

    A fixed stratified split (80/20, seed 0, independent of the run's seed) so every run shares
    one test set. Pixels are scaled by the training split's mean and std.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, stratify=y.numpy(), random_state=0
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return DataSplits(
        train=InMemoryDataset(x[train_idx], y[train_idx]),
        test=InMemoryDataset(x[test_idx], y[test_idx]),
        num_classes=10,
        in_channels=1,
        image_size=8,
    )


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the data-set table."""

    name: str
    load: Callable[[RunConfig], DataSplits]
    description: str


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    if spec.name in DATASETS:
        raise ValueError(f"data set {spec.name!r} is already registered")
    DATASETS[spec.name] = spec


register_dataset(DatasetSpec("digits", load_digits, "scikit-learn 8x8 handwritten digits, 10 classes, bundled offline"))


def load_dataset(cfg: RunConfig) -> DataSplits:
    """Load ``cfg.dataset``; unknown names list the valid ones."""
    if cfg.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[cfg.dataset].load(cfg)
