"""Data sets by name (a table that new data sets join), and the loaders and batch transforms the loop reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import pickle
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    Sampler,
    SequentialSampler,
    Subset,
)

from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.fileio import atomic_write_bytes
from hardbatch.functional import generator_for

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_SEED = 0  # the validation split is the same for every run, whatever its seed
IMAGEFOLDER_SIZE = 64  # side length of imagefolder images when no --image-size is given
STATS_IMAGES = 1_000  # imagefolder mean/std come from this many train images at most
CIFAR_HOME = "https://www.cs.toronto.edu/~kriz/cifar.html"
STL10_HOME = "https://cs.stanford.edu/~acoates/stl10/"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist puts the files
FASHION_MNIST_FILES = {split: (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
                       for split, prefix in (("train", "train"), ("test", "t10k"))}


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
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.labels.device.type == "cuda":
            # A pinned, non-blocking copy: a pageable one would make the host wait for the GPU every step.
            index = index.pin_memory().to(self.labels.device, non_blocking=True)
        # index_select is ~20x faster than images[index] for a batch of whole images on a CPU.
        return self.images.index_select(0, index), self.labels.index_select(0, index)

    def to(self, device: torch.device | str) -> "InMemoryDataset":
        return InMemoryDataset(self.images.to(device), self.labels.to(device))


def keep_batch(batch):
    """Collate function for data sets whose ``__getitems__`` already returns a batch."""
    return batch


def gives_batches(dataset: Dataset) -> bool:
    """Whether ``dataset.__getitems__`` returns a whole batch (an InMemoryDataset, or a Subset of one), not a list of samples."""
    while isinstance(dataset, Subset):  # Subset always has __getitems__; it returns what its base returns
        dataset = dataset.dataset
    return hasattr(dataset, "__getitems__")


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


# ---- reshaping the training split: a class-balanced subset, a long tail, label noise (all seeded by the run) ----
# Each draws from its own generator of the run seed (generator_for: the package's one seed derivation).


def balanced_subset(labels: torch.Tensor, size: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (sorted) of ``size`` samples, as equal per class as the classes allow, drawn at random within each.

    ``labels``: (n,). Classes with fewer samples than their share give all of them and the rest goes to the others;
    the ``size % classes`` left over go to the classes with the most samples.
    """
    if not (num_classes <= size <= len(labels)):
        raise UsageError(f"train subset must be between the number of classes ({num_classes}) and the training "
                         f"split's {len(labels)} samples, got {size}")
    available = torch.bincount(labels, minlength=num_classes)
    order = torch.sort(available, stable=True).indices.tolist()  # fewest samples first
    quota, remaining = {}, size
    for i, c in enumerate(order):
        quota[c] = min(int(available[c]), remaining // (len(order) - i))
        remaining -= quota[c]
    return _draw_per_class(labels, quota, generator)


def long_tail_counts(counts: torch.Tensor, rho: float) -> torch.Tensor:
    """How many samples class c keeps of its ``counts[c]``: floor(counts[c] * rho^(-c / (C - 1))). ``counts``: (C,)."""
    c = len(counts)
    if c < 2:
        return counts.clone()
    # The 1e-9 keeps an exact product such as 6000 * 10^-1 = 600 from flooring to 599 through rounding error.
    return torch.tensor([math.floor(int(n) * rho ** (-i / (c - 1)) + 1e-9) for i, n in enumerate(counts)])


def long_tailed(labels: torch.Tensor, rho: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (sorted) of a long-tailed subset: class c keeps ``long_tail_counts`` of its samples, drawn at random."""
    counts = torch.bincount(labels, minlength=num_classes)
    keep = long_tail_counts(counts, rho)
    emptied = [c for c in range(num_classes) if counts[c] > 0 and keep[c] == 0]
    if emptied:
        # Class c keeps at least one sample while rho <= n_c^((C - 1) / c).
        most = min(int(counts[c]) ** ((num_classes - 1) / c) for c in range(1, num_classes) if counts[c] > 0)
        raise UsageError(f"imbalance {rho:g} leaves class {emptied[0]} with none of its {int(counts[emptied[0]])} "
                         f"training samples; use an imbalance between 1 and {math.floor(most * (1 + 1e-12)):d}")
    return _draw_per_class(labels, dict(enumerate(keep.tolist())), generator)


def _draw_per_class(labels: torch.Tensor, quota: dict[int, int], generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``quota[c]`` samples of each class c, chosen uniformly at random (classes in index order)."""
    chosen = []
    for c in sorted(quota):
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[: quota[c]]])
    return torch.sort(torch.cat(chosen)).values


def noisy_labels(labels: torch.Tensor, fraction: float, num_classes: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with exactly round(fraction * n) of them replaced by another class drawn uniformly (never their own).

    ``labels``: (n,). Returns (new labels (n,), sorted indices (m,) of the replaced ones).
    """
    m = round(fraction * len(labels))
    if m and num_classes < 2:
        raise UsageError("label noise needs at least 2 classes")
    indices = torch.sort(torch.randperm(len(labels), generator=generator)[:m]).values
    new = labels.clone()
    # An offset of 1..C-1 classes, uniform, moves each label to one of the C - 1 others, uniformly.
    new[indices] = (labels[indices] + torch.randint(1, max(num_classes, 2), (m,), generator=generator)) % num_classes
    return new, indices


class RelabelledDataset(Dataset):
    """Another data set's samples with replaced labels (for data sets not held in memory)."""

    def __init__(self, dataset: Dataset, labels: torch.Tensor):
        self.dataset, self.targets = dataset, labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.dataset[index][0], int(self.targets[index])


def with_labels(dataset: Dataset, labels: torch.Tensor) -> Dataset:
    if isinstance(dataset, InMemoryDataset):
        return InMemoryDataset(dataset.images, labels.to(dataset.labels.device))
    return RelabelledDataset(dataset, labels)


@dataclass
class Relabelling:
    """The training samples whose label the label noise replaced. ``indices``: (m,) sorted, into the training
    split as the sampler sees it; ``true_labels``, ``given_labels``: (m,) their labels before and after."""

    indices: torch.Tensor
    true_labels: torch.Tensor
    given_labels: torch.Tensor


def reshape_train(train: Dataset, cfg: RunConfig, num_classes: int) -> tuple[Dataset, Relabelling | None]:
    """The training split as ``cfg`` asks: a class-balanced subset (``train_subset``), then a long tail
    (``imbalance``), then label noise (``label_noise``), each from its own generator of ``cfg.seed``."""
    labels = dataset_labels(train)
    if cfg.train_subset is not None:
        keep = balanced_subset(labels, cfg.train_subset, num_classes, generator_for(cfg.seed, "train-subset"))
        train, labels = subset(train, keep), labels[keep]
    if cfg.imbalance != 1:
        keep = long_tailed(labels, cfg.imbalance, num_classes, generator_for(cfg.seed, "imbalance"))
        train, labels = subset(train, keep), labels[keep]
    if cfg.label_noise == 0:
        return train, None
    given, indices = noisy_labels(labels, cfg.label_noise, num_classes, generator_for(cfg.seed, "label-noise"))
    return with_labels(train, given), Relabelling(indices, labels[indices], given[indices])


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int,
                     part: tuple[slice, int] | None = None) -> torch.Tensor:
    """Per-sample random crop from a zero-padded batch plus a random horizontal flip; works on any device.

    ``x``: (B, C, H, W) float; ``generator`` on x's device. Returns the same shape. ``part = (rows, total)``: x is
    rows ``rows`` of a global batch of ``total``; the draws are made for the global batch and sliced, so each
    sample gets the same crop and flip however many processes share the batch.
    """
    b, _, h, w = x.shape
    rows_taken, total = part if part is not None else (slice(0, b), b)
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, total), device=x.device, generator=generator)[:, rows_taken]
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(total, device=x.device, generator=generator)[rows_taken] < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


@dataclass
class BatchTransform:
    """Raw batch -> model input on x's device: scale to [0, 1], augment (if a generator is given), resize, normalise."""

    mean: Sequence[float]
    std: Sequence[float]
    size: int | None = None
    crop_flip: bool = False
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 part: tuple[slice, int] | None = None) -> torch.Tensor:
        """``part = (rows, total)``: x is that share of a global batch (several processes); see random_crop_flip."""
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if self.crop_flip and generator is not None:
            x = random_crop_flip(x, generator, padding=max(1, x.shape[-1] // 8), part=part)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        mean, std = self._statistics(x.device, x.dim())
        return (x - mean) / std

    def _statistics(self, device: torch.device, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std shaped (1, C, 1, ...) to broadcast over a batch of ``dims`` dimensions ((B, C, H, W) images,
        (B, C, L) signals), on ``device``, made once: a copy per batch would sync."""
        if (device, dims) not in self._cache:
            stats = torch.tensor([self.mean, self.std], dtype=torch.float32).view(2, 1, -1, *[1] * (dims - 2))
            self._cache[device, dims] = tuple(stats.to(device))
        return self._cache[device, dims]


@dataclass
class RawData:
    """What a data-set reader returns: splits with images uint8 or in [0, 1], and per-channel statistics."""

    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int  # native side length (a 1-D signal's length)
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
    image_size: int  # side length the model sees (a 1-D signal's length)
    train_transform: BatchTransform
    eval_transform: BatchTransform
    relabelled: Relabelling | None = None  # the training samples label noise relabelled, if any

    def loader(self, dataset: Dataset, batch_sampler: Sampler, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
        """A DataLoader that draws whole mini-batches from ``batch_sampler``."""
        collate = keep_batch if gives_batches(dataset) else None
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # Each new iterator draws a base seed; from its own generator, not the global RNG that dropout
            # uses, so a resumed run (which opens its iterators at other moments) draws the same dropout masks.
            generator=torch.Generator().manual_seed(0),
        )

    def eval_loader(self, dataset: Dataset, batch_size: int = 1024, num_workers: int = 0, pin_memory: bool = False,
                    shard: range | None = None) -> DataLoader:
        """Sequential, complete batches over ``dataset`` (or its indices ``shard``: one process's share) for evaluation."""
        indices = shard if shard is not None else SequentialSampler(range(len(dataset)))
        sampler = BatchSampler(indices, batch_size, drop_last=False)
        return self.loader(dataset, sampler, num_workers, pin_memory)


def read_digits(root: str | Path | None = None, download: bool = False) -> RawData:
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, no download (``root`` and ``download`` unused).

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


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W) in [0, 1] units, from a histogram per channel."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        p = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        p /= p.sum()
        mean = (p * values).sum()
        means.append(mean.item())
        stds.append((p * (values - mean) ** 2).sum().sqrt().item())
    return tuple(means), tuple(stds)


def _in_memory_raw(train: InMemoryDataset, test: InMemoryDataset, num_classes: int) -> RawData:
    mean, std = channel_stats(train.images)
    return RawData(train, test, num_classes, in_channels=train.images.shape[1], image_size=train.images.shape[-1],
                   mean=mean, std=std)


def _data_dir(root: str | Path | None, name: str, holds: str) -> Path:
    if root is None:
        raise UsageError(f"{name} needs --data-dir: the folder that holds {holds}")
    return Path(root)


def _find_files(root: str | Path | None, download: bool, name: str, folder: str, files: list[str], listing: str,
                archive: str, home: str, fetch: Callable[[str], object]) -> Path:
    """``root/folder``, checked to hold ``files``; if some are missing and ``download``, ``fetch(root)`` gets them.

    ``fetch`` is a torchvision data-set class called with download=True: it fetches the archive, checks its
    md5 and extracts it. Missing files without --download, or a failed download, raise UsageError.
    """
    root = _data_dir(root, name, f"{folder}/ ({listing}), or where --download should put it")
    base = root / folder
    get = f"get {archive} from {home} and extract it into {str(root)!r}"
    if download and not all((base / f).is_file() for f in files):
        try:
            fetch(str(root))
        except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on bad md5
            raise UsageError(f"{name} download into {str(root)!r} failed ({e}); {get}") from None
    if not all((base / f).is_file() for f in files):
        raise UsageError(f"{name} not found in {str(root)!r}: expected {base}/ ({listing}); pass --download or {get}")
    return base


def _unreadable(path: Path, error: Exception) -> UsageError:
    return UsageError(f"cannot read {path} ({type(error).__name__}: {error}); extract the archive again or delete it and pass --download")


# What CIFAR's python-format files may name: numpy's array reconstruction (Python 2's pickles, numpy 1 and 2 module
# names) and bytes as Python 3 writes them at protocol 2. Nothing else is looked up, so a crafted file runs no code.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles dicts of bytes, strings, numbers, lists and numpy arrays, and refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never holds (refused: "
                                     f"unpickling it could run code)")


def load_cifar_pickle(path: Path) -> dict:
    """One CIFAR python-format file as a dict with str keys, read by a restricted unpickler."""
    with open(path, "rb") as f:
        entry = _CifarUnpickler(f, encoding="latin1").load()  # written by Python 2
    if not isinstance(entry, dict):
        raise ValueError(f"it holds a {type(entry).__name__}, not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def read_cifar_pickles(paths: list[Path], label_key: str) -> InMemoryDataset:
    """CIFAR python-format batches: pickled dicts with 'data' (n, 3072) uint8, planes R, G, B row-major, and labels."""
    images, labels = [], []
    for path in paths:
        try:
            entry = load_cifar_pickle(path)
            data, targets = entry["data"], entry[label_key]
            if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError("'data' is not an (n, 3072) array")
            if not isinstance(targets, list) or len(targets) != len(data) or not all(isinstance(t, int) for t in targets):
                raise ValueError(f"{label_key!r} is not a list of {len(data)} integer labels")
            images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(targets)
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError, MemoryError,
                UnicodeDecodeError, pickle.UnpicklingError) as e:
            raise _unreadable(path, e) from None
    return InMemoryDataset(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))


def read_stl10_binaries(images_path: Path, labels_path: Path) -> InMemoryDataset:
    """STL-10 binary files: images 3x96x96 uint8 each, every plane stored column-major; labels uint8 1..10 (-> 0..9)."""
    try:
        x = np.fromfile(images_path, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # (N, C, W, H) -> (N, C, H, W)
        y = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1
        return InMemoryDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
    except (OSError, ValueError) as e:  # a truncated file, or as many labels as images
        raise _unreadable(images_path, e) from None


def read_cifar10(root: str | Path | None, download: bool = False) -> RawData:
    """CIFAR-10 from ``root``/cifar-10-batches-py/ (required; ``download`` fetches it through torchvision): 50,000 train and 10,000 test images."""
    import torchvision

    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    base = _find_files(root, download, "cifar10", "cifar-10-batches-py", train_files + ["test_batch"], "data_batch_1..5, test_batch",
                       "cifar-10-python.tar.gz", CIFAR_HOME, lambda root: torchvision.datasets.CIFAR10(root, download=True))
    train = read_cifar_pickles([base / f for f in train_files], "labels")
    return _in_memory_raw(train, read_cifar_pickles([base / "test_batch"], "labels"), num_classes=10)


def read_cifar100(root: str | Path | None, download: bool = False) -> RawData:
    """CIFAR-100 (fine labels) from ``root``/cifar-100-python/ (required; ``download`` fetches it through torchvision)."""
    import torchvision

    base = _find_files(root, download, "cifar100", "cifar-100-python", ["train", "test"], "train, test",
                       "cifar-100-python.tar.gz", CIFAR_HOME, lambda root: torchvision.datasets.CIFAR100(root, download=True))
    train = read_cifar_pickles([base / "train"], "fine_labels")
    return _in_memory_raw(train, read_cifar_pickles([base / "test"], "fine_labels"), num_classes=100)


def read_stl10(root: str | Path | None, download: bool = False) -> RawData:
    """STL-10 from ``root``/stl10_binary/ (required; ``download`` fetches it through torchvision): the 5,000
    labelled train and 8,000 test 96x96 images; the unlabelled split is not used."""
    import torchvision

    files = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    base = _find_files(root, download, "stl10", "stl10_binary", files, ", ".join(files), "stl10_binary.tar.gz", STL10_HOME,
                       lambda root: torchvision.datasets.STL10(root, split="train", download=True))
    train = read_stl10_binaries(base / "train_X.bin", base / "train_y.bin")
    return _in_memory_raw(train, read_stl10_binaries(base / "test_X.bin", base / "test_y.bin"), num_classes=10)


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped when ``path`` ends in .gz: two zero bytes, a type code, the
    number of dimensions d, d big-endian uint32 sizes, then the values row-major. Returns an array of those sizes."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            content = f.read()
        if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in IDX_DTYPES:
            raise ValueError("not an IDX file (bad magic number)")
        ndim = content[3]
        shape = tuple(int(v) for v in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
        return np.frombuffer(content, dtype=IDX_DTYPES[content[2]], offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error) as e:  # truncated, or values that do not fill the sizes
        raise _unreadable(path, e) from None


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
        import torchvision

        try:
            torchvision.datasets.FashionMNIST(root, download=True)
        except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on bad md5
            raise UsageError(f"fashion-mnist download into {root!r} failed ({e}); install the Debian package "
                             f"(apt-get install dataset-fashion-mnist) and drop --data-dir") from None
    if (folder := found()) is None:
        raise UsageError(f"fashion-mnist not found: looked in {', '.join(str(p) for p in places)} for {', '.join(names)} "
                         f"(each plain or .gz); get it with 'apt-get install dataset-fashion-mnist' (read from "
                         f"{FASHION_MNIST_SYSTEM_DIR} when there is no --data-dir) or with --download --data-dir DIR")
    return folder


def read_fashion_mnist_split(folder: Path, images_name: str, labels_name: str) -> InMemoryDataset:
    """One split from its IDX files: images (n, 28, 28) uint8 -> (n, 1, 28, 28); labels (n,) uint8 0..9 -> long."""
    images_path, labels_path = _idx_file(folder, images_name), _idx_file(folder, labels_name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise _unreadable(images_path, ValueError(f"images {images.dtype} {images.shape}, labels {labels.shape}: "
                                                  "expected uint8 (n, H, W) and (n,)"))
    if len(labels) and labels.max() >= 10:
        raise _unreadable(labels_path, ValueError(f"label {labels.max()} outside 0..9"))
    return InMemoryDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def read_fashion_mnist(root: str | Path | None, download: bool = False) -> RawData:
    """Fashion-MNIST from its official IDX files (plain or gzipped): 60,000 train and 10,000 test 28x28 grey images.

    Looked for in ``root`` and its FashionMNIST/raw/, or in Debian's folder when ``root`` is None.
    """
    folder = _fashion_mnist_folder(root, download)
    train, test = (read_fashion_mnist_split(folder, *FASHION_MNIST_FILES[split]) for split in ("train", "test"))
    return _in_memory_raw(train, test, num_classes=10)


MNIST1D_CLASSES = 10


def mnist1d_arguments(samples: int | None = None) -> dict:
    """The MNIST-1D generator's arguments: the package's canonical ``get_dataset_args()`` (5,000 samples, length 40,
    seed 42), with ``num_samples`` set to ``samples`` (``--mnist1d-samples``) when given."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    if samples is not None:
        args["num_samples"] = samples
    return args


def mnist1d_cache_file(root: str | Path | None, args: dict) -> Path:
    """Where the generated set for ``args`` is cached: ``root``/mnist1d/ (``--data-dir``), or the user's cache folder
    ($XDG_CACHE_HOME, else ~/.cache)/hardbatch/mnist1d/. The name hashes every generator argument and the mnist1d
    package's version, so other arguments or another generator never read this file."""
    from importlib.metadata import version

    if root is not None:
        folder = Path(root) / "mnist1d"
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hardbatch" / "mnist1d"
    key = json.dumps({"mnist1d": version("mnist1d"), "args": args}, sort_keys=True)
    return folder / f"mnist1d_{args['num_samples']}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    """The package's own generator (``mnist1d.data.make_dataset``) run on ``args``, offline: x (n, L) and x_test
    float32, y (n,) and y_test int64, split as the generator splits. The global numpy and ``random`` states it
    reseeds are restored after."""
    import random

    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        made = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {"x": made["x"].astype(np.float32), "y": made["y"].astype(np.int64),
            "x_test": made["x_test"].astype(np.float32), "y_test": made["y_test"].astype(np.int64)}


def _cached_mnist1d(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is missing or unreadable (then it is generated again)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def read_mnist1d(root: str | Path | None = None, download: bool = False, samples: int | None = None) -> RawData:
    """MNIST-1D (Greydanus 2020): 1-D signals of length 40 from 10 digit templates, made by the mnist1d package's
    generator with its canonical arguments (4,000 train / 1,000 test; ``samples`` for more), never
    downloaded (``download`` unused). Generated once (a few seconds per 5,000) and cached (``mnist1d_cache_file``), written atomically;
    a sample is (float32 (1, 40), label)."""
    args = mnist1d_arguments(samples)
    path = mnist1d_cache_file(root, args)
    arrays = _cached_mnist1d(path)
    if arrays is None:
        arrays = generate_mnist1d(args)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as e:  # the data is in memory: a cache that cannot be written only costs time next run
            print(f"hardbatch: warning: cannot cache MNIST-1D in {path.parent} ({e}); it will be generated again",
                  file=sys.stderr)
    train, test = (InMemoryDataset(torch.from_numpy(arrays[x]).unsqueeze(1), torch.from_numpy(arrays[y]))
                   for x, y in (("x", "y"), ("x_test", "y_test")))
    mean, std = train.images.mean().item(), train.images.std().item()
    return RawData(train, test, num_classes=MNIST1D_CLASSES, in_channels=1, image_size=train.images.shape[-1],
                   mean=(mean,), std=(std,))


def check_images(paths: Sequence[str]) -> None:
    """UsageError naming the first file that PIL cannot identify or whose data fails ``verify()``.

    Reads every file once, without decoding pixels (about a millisecond per image), so a damaged image stops the
    run before training, not in a loader worker in the middle of an epoch.
    """
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for damaged files
            raise UsageError(f"imagefolder: cannot read image {path} ({e or type(e).__name__}); "
                             f"replace or remove it") from None


def read_imagefolder(root: str | Path | None, download: bool = False, image_size: int | None = None) -> RawData:
    """Your own images in ``root`` (required): train/<class>/<image> and test/<class>/<image>, or val/ when there is no test/.

    Decoded per sample, not held in memory: each image is converted to RGB and stretched to a square of side
    ``image_size`` (IMAGEFOLDER_SIZE = 64 when None) so batches collate; a sample is (uint8 (3, S, S), label).
    Classes are the sorted folder names, at least 2, and must be the same in both splits. Every image is checked
    to be readable first (``check_images``). Mean/std are estimated from at most
    STATS_IMAGES train images, evenly spaced in file order.
    """
    from torchvision import datasets, transforms

    root = _data_dir(root, "imagefolder", "train/<class>/<image> and test/<class>/<image>")
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    layout = f"expected {root / 'train'}/<class>/<image> and {root / 'test'}/<class>/<image> (or val/ instead of test/)"
    if not (root / "train").is_dir() or not test_dir.is_dir():
        raise UsageError(f"imagefolder not found in {str(root)!r}: {layout}")
    size = image_size or IMAGEFOLDER_SIZE
    to_tensor = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])

    def split(folder: Path):
        try:
            return datasets.ImageFolder(str(folder), transform=to_tensor)
        except FileNotFoundError as e:  # no class folders, or a class folder without images: name the split's folder
            raise UsageError(f"imagefolder: {folder.name}/ split ({folder}): {e}; {layout}") from None

    train, test = split(root / "train"), split(test_dir)
    if train.classes != test.classes:
        only_train, only_test = sorted(set(train.classes) - set(test.classes)), sorted(set(test.classes) - set(train.classes))
        raise UsageError(f"imagefolder: train/ and {test_dir.name}/ need the same class folders; only in train/: "
                         f"{', '.join(only_train) or '-'}; only in {test_dir.name}/: {', '.join(only_test) or '-'}")
    if len(train.classes) < 2:
        raise UsageError(f"imagefolder: {root / 'train'} has {len(train.classes)} class folder ({', '.join(train.classes)}); "
                         f"classification needs at least 2, one folder per class")
    check_images([path for d in (train, test) for path, _ in d.samples])
    picks = torch.linspace(0, len(train) - 1, min(len(train), STATS_IMAGES)).round().long()
    mean, std = channel_stats(torch.stack([train[i][0] for i in picks.tolist()]))
    return RawData(train, test, num_classes=len(train.classes), in_channels=3, image_size=size, mean=mean, std=std)


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the data-set table. ``dims``: 2 for images (samples (C, H, W)), 1 for signals (samples (C, L)).

    ``read(root, download, **options)`` returns both splits: ``root`` is ``--data-dir`` (None when not given),
    ``download`` is ``--download``, and ``options`` maps each further keyword the reader takes to the ``RunConfig``
    field it comes from.
    """

    name: str
    read: Callable[..., RawData]
    description: str
    dims: int = 2
    options: tuple[tuple[str, str], ...] = ()


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    if spec.name in DATASETS:
        raise ValueError(f"data set {spec.name!r} is already registered")
    DATASETS[spec.name] = spec


register_dataset(DatasetSpec("digits", read_digits, "scikit-learn 8x8 handwritten digits, 10 classes, bundled offline"))
register_dataset(DatasetSpec("cifar10", read_cifar10, "CIFAR-10, 32x32 colour, 10 classes; files in --data-dir or --download"))
register_dataset(DatasetSpec("cifar100", read_cifar100, "CIFAR-100, 32x32 colour, 100 fine classes; files in --data-dir or --download"))
register_dataset(DatasetSpec("stl10", read_stl10, "STL-10 labelled split, 96x96 colour, 10 classes; files in --data-dir or --download"))
register_dataset(DatasetSpec("fashion-mnist", read_fashion_mnist,
                             "Fashion-MNIST, 28x28 grey, 10 classes; Debian package dataset-fashion-mnist, --data-dir or --download"))
register_dataset(DatasetSpec("imagefolder", read_imagefolder,
                             "your images in --data-dir/{train,test}/<class>/, resized to --image-size (default 64)",
                             options=(("image_size", "image_size"),)))
register_dataset(DatasetSpec("mnist1d", read_mnist1d,
                             "MNIST-1D, 1-D signals of length 40, 10 classes, 4,000 / 1,000; generated offline by the "
                             "mnist1d package, cached", dims=1, options=(("samples", "mnist1d_samples"),)))


def check_signal_options(cfg: RunConfig) -> None:
    """UsageError for options that only images have (crop/flip, resizing, the small stem, ImageNet statistics),
    given for a data set of 1-D signals; the message says how to undo what a protocol preset set."""
    given = {f"--augment {cfg.augment}": (cfg.augment != "none", "--augment none"),
             f"--image-size {cfg.image_size}": (cfg.image_size is not None, None),
             f"--stem {cfg.stem}": (cfg.stem != "imagenet", "--stem imagenet"),
             "--normalize imagenet": (cfg.normalize == "imagenet", "--normalize dataset")}
    given = {text: undo for text, (on, undo) in given.items() if on}
    if not given:
        return
    if cfg.protocol is None:
        fix = "leave them out"
    elif None in given.values():
        fix = f"drop --protocol {cfg.protocol}"
    else:
        fix = f"add {' '.join(given.values())} or drop --protocol {cfg.protocol}"
    preset = f" (set by --protocol {cfg.protocol})" if cfg.protocol else ""
    raise UsageError(f"{cfg.dataset} holds 1-D signals, and {', '.join(given)}{preset} apply to images only; {fix}")


def load_dataset(cfg: RunConfig, device: torch.device | str = "cpu") -> DataSplits:
    """Read ``cfg.dataset``, hold out the validation split, and set up the transforms the config asks for.

    Unknown names list the valid ones. With ``cfg.data_on_device``, in-memory splits move to ``device``.
    """
    if cfg.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    if DATASETS[cfg.dataset].dims == 1:
        check_signal_options(cfg)
    spec = DATASETS[cfg.dataset]
    raw = spec.read(cfg.data_dir, cfg.download, **{keyword: getattr(cfg, name) for keyword, name in spec.options})
    train, val = raw.train, None
    if cfg.val_fraction > 0:
        labels = dataset_labels(raw.train)
        keep, held_out = stratified_split(labels, cfg.val_fraction)
        if len(held_out) == 0:
            largest = int(torch.unique(labels, return_counts=True)[1].max())
            raise UsageError(f"--val-fraction {cfg.val_fraction:g} holds out no samples (it rounds to 0 of every class; "
                             f"the largest has {largest}); use more than {0.5 / largest:.2g}, or 0 for no validation split")
        train, val = subset(raw.train, keep), subset(raw.train, held_out)
    train, relabelled = reshape_train(train, cfg, raw.num_classes)  # after the validation split: val stays clean
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
        eval_transform=BatchTransform(mean, std, cfg.image_size), relabelled=relabelled,
    )


DEFAULT_MODELS = {"digits": "small_cnn", "cifar10": "resnet18", "cifar100": "resnet18", "stl10": "resnet18",
                  "fashion-mnist": "lenet", "imagefolder": "resnet18", "mnist1d": "cnn1d"}


def default_model(dataset: str) -> str:
    """The network a run of ``dataset`` trains when none is given."""
    return DEFAULT_MODELS.get(dataset, "small_cnn")
