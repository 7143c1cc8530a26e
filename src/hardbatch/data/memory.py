"""Data sets as the loop reads them: images and labels held as tensors, and the views the splits take of any data set
(a subset, replaced labels, the labels alone)."""

from __future__ import annotations

from typing import Any, Protocol, cast

import torch
from torch.utils.data import Dataset, Subset


class SizedDataset(Protocol):
    """A map-style data set with a length, as every split here is (torch types ``Dataset`` without ``__len__``, which
    its iterable data sets lack): torchvision's data sets, ``TensorDataset``, ``Subset``, ``InMemoryDataset``."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


class InMemoryDataset(Dataset):
    """Images and labels held as tensors; ``__getitems__`` gathers a whole mini-batch in one indexing op.

    ``images``: (n, C, H, W), uint8 (0..255) or float (0..1), or (n, C, L) signals; ``labels``: (n,) long.
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

    def to(self, device: torch.device | str) -> InMemoryDataset:
        """The same samples with images and labels on ``device``."""
        return InMemoryDataset(self.images.to(device), self.labels.to(device))


def keep_batch(batch: Any) -> Any:
    """Collate function for data sets whose ``__getitems__`` already returns a batch."""
    return batch


def gives_batches(dataset: SizedDataset) -> bool:
    """Whether ``dataset.__getitems__`` returns a whole batch (an InMemoryDataset, or a Subset of one), not a list
    of samples."""
    base: object = dataset
    while isinstance(base, Subset):  # Subset always has __getitems__; it returns what its base returns
        base = base.dataset
    return hasattr(base, "__getitems__")


def dataset_labels(dataset: SizedDataset) -> torch.Tensor:
    """The class label of every sample, (n,) on the CPU, without loading images: an InMemoryDataset's ``labels``, a
    Subset's picks of its base's, or the ``targets`` of any other data set (torchvision's, ``RelabelledDataset``)."""
    if isinstance(dataset, InMemoryDataset):
        return dataset.labels.cpu()
    if isinstance(dataset, Subset):
        return dataset_labels(cast(SizedDataset, dataset.dataset))[torch.as_tensor(dataset.indices)]
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets)
    raise TypeError(f"cannot read labels of {type(dataset).__name__}")


def subset(dataset: SizedDataset, indices: torch.Tensor) -> SizedDataset:
    """The samples ``indices`` (k,) of ``dataset``, in that order: an InMemoryDataset of their tensors when
    ``dataset`` is one, else a ``Subset``."""
    if isinstance(dataset, InMemoryDataset):
        return InMemoryDataset(dataset.images[indices], dataset.labels[indices])
    return Subset(cast(Dataset, dataset), indices.tolist())


class RelabelledDataset(Dataset):
    """Another data set's samples with replaced labels (for data sets not held in memory)."""

    def __init__(self, dataset: SizedDataset, labels: torch.Tensor):
        self.dataset, self.targets = dataset, labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index][0], int(self.targets[index])


def with_labels(dataset: SizedDataset, labels: torch.Tensor) -> SizedDataset:
    """``dataset``'s samples, in order, with ``labels`` (n,) in place of theirs: an InMemoryDataset sharing the
    images when ``dataset`` is one, else a ``RelabelledDataset``."""
    if isinstance(dataset, InMemoryDataset):
        return InMemoryDataset(dataset.images, labels.to(dataset.labels.device))
    return RelabelledDataset(dataset, labels)
