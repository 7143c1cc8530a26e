"""Data sets by name (a table that new data sets join), and the loaders and batch transforms the loop reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler, Subset

from hardbatch.config import RunConfig, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_SEED = 0  # the validation split is the same for every run, whatever its seed


class InMemoryDataset(Dataset):
    """Images and labels held as tensors; ``__getitems__`` gathers a whole mini-batch in one indexing op.

    ``images``: (n, C, H, W), uint8 (0..255) or float (0..1); ``labels``: (n,) long.
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

    def to(self, device: torch.device | str) -> "InMemoryDataset":
        return InMemoryDataset(self.images.to(device), self.labels.to(device))


def keep_batch(batch):
    """Collate function for data sets whose ``__getitems__`` already returns a batch."""
    return batch


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The class label of every sample, without loading images."""
    if isinstance(dataset, InMemoryDataset):
        return dataset.labels.cpu()
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices)]
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets)
    raise TypeError(f"cannot read labels of {type(dataset).__name__}")


def subset(dataset: Dataset, indices: torch.Tensor) -> Dataset:
    if isinstance(dataset, InMemoryDataset):
        return InMemoryDataset(dataset.images[indices], dataset.labels[indices])
    return Subset(dataset, indices.tolist())


def stratified_split(labels: torch.Tensor, fraction: float, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out): ``fraction`` of each class held out at random, both sorted ascending."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for c in torch.unique(labels).tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held.append(members[: round(fraction * len(members))])
    held_out = torch.sort(torch.cat(held)).values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return mask.nonzero().flatten(), held_out


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    """Per-sample random crop from a zero-padded batch plus a random horizontal flip; works on any device.

    ``x``: (B, C, H, W) float; ``generator`` on x's device. Returns the same shape.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), device=x.device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


@dataclass
class BatchTransform:
    """Raw batch -> model input on x's device: scale to [0, 1], augment (if a generator is given), resize, normalise."""

    mean: Sequence[float]
    std: Sequence[float]
    size: int | None = None
    crop_flip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if self.crop_flip and generator is not None:
            x = random_crop_flip(x, generator, padding=max(1, x.shape[-1] // 8))
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class RawData:
    """What a data-set reader returns: splits with images uint8 or in [0, 1], and per-channel statistics."""

    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int  # native side length
    mean: Sequence[float]
    std: Sequence[float]


@dataclass
class DataSplits:
    """A loaded data set: train, optional validation and test splits, and the transforms to model input."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int  # side length the model sees
    train_transform: BatchTransform
    eval_transform: BatchTransform

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


def read_digits(cfg: RunConfig) -> RawData:
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, no download.

    A fixed stratified split (80/20, seed 0, independent of the run's seed) so every run shares one test set.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(torch.arange(len(y)).numpy(), test_size=0.2, stratify=y.numpy(), random_state=0)
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    mean, std = x[train_idx].mean().item(), x[train_idx].std().item()
    return RawData(InMemoryDataset(x[train_idx], y[train_idx]), InMemoryDataset(x[test_idx], y[test_idx]),
                   num_classes=10, in_channels=1, image_size=8, mean=(mean,), std=(std,))


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the data-set table."""

    name: str
    read: Callable[[RunConfig], RawData]
    description: str


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    if spec.name in DATASETS:
        raise ValueError(f"data set {spec.name!r} is already registered")
    DATASETS[spec.name] = spec


register_dataset(DatasetSpec("digits", read_digits, "scikit-learn 8x8 handwritten digits, 10 classes, bundled offline"))


def load_dataset(cfg: RunConfig, device: torch.device | str = "cpu") -> DataSplits:
    """Read ``cfg.dataset``, hold out the validation split, and set up the transforms the config asks for.

    Unknown names list the valid ones. With ``cfg.data_on_device``, in-memory splits move to ``device``.
    """
    if cfg.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    raw = DATASETS[cfg.dataset].read(cfg)
    train, val = raw.train, None
    if cfg.val_fraction > 0:
        keep, held_out = stratified_split(dataset_labels(raw.train), cfg.val_fraction)
        train, val = subset(raw.train, keep), subset(raw.train, held_out)
    test = raw.test
    if cfg.data_on_device:
        train, val, test = (d.to(device) if isinstance(d, InMemoryDataset) else d for d in (train, val, test))
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if cfg.normalize == "imagenet" else (raw.mean, raw.std)
    if len(mean) != raw.in_channels:  # ImageNet statistics on grey images: use their average
        mean, std = (sum(mean) / len(mean),) * raw.in_channels, (sum(std) / len(std),) * raw.in_channels
    size = cfg.image_size or raw.image_size
    return DataSplits(
        train=train, val=val, test=test, num_classes=raw.num_classes, in_channels=raw.in_channels, image_size=size,
        train_transform=BatchTransform(mean, std, cfg.image_size, crop_flip=cfg.augment == "crop_flip"),
        eval_transform=BatchTransform(mean, std, cfg.image_size),
    )
