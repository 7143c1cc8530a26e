"""hardbatch.data.memory: data sets held as tensors, and the views the splits take of any data set."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from hardbatch.data.memory import (
    InMemoryDataset,
    RelabelledDataset,
    dataset_labels,
    gives_batches,
    keep_batch,
    subset,
    with_labels,
)


class Targets(Dataset):
    """A data set decoded per sample that lists its labels as ``targets``, as torchvision's do."""

    def __init__(self, n: int):
        self.targets = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return torch.full((1, 2, 2), float(i)), self.targets[i]


def _data(n: int = 10) -> InMemoryDataset:
    return InMemoryDataset(torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2), torch.arange(n) % 3)


def test_in_memory_batches_are_gathered_in_one_op_and_equal_the_samples():
    data = _data()
    x, y = data.__getitems__([7, 2, 2])
    assert torch.equal(x, torch.stack([data[i][0] for i in (7, 2, 2)])) and y.tolist() == [1, 2, 2]
    batches = list(DataLoader(data, batch_sampler=[[0, 1], [9]], collate_fn=keep_batch))
    assert [b[1].tolist() for b in batches] == [[0, 1], [0]] and batches[0][0].shape == (2, 1, 2, 2)
    moved = data.to("cpu")
    assert isinstance(moved, InMemoryDataset) and torch.equal(moved.images, data.images)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        InMemoryDataset(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.long))


def test_gives_batches_looks_through_subsets():
    assert gives_batches(_data()) and gives_batches(Subset(Subset(_data(), [1, 2]), [0]))
    assert not gives_batches(Targets(4)) and not gives_batches(Subset(Targets(4), [1]))
    assert not gives_batches(TensorDataset(torch.zeros(2)))


def test_labels_of_every_kind_of_data_set_without_loading_images():
    assert dataset_labels(_data()).tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert dataset_labels(Subset(Subset(_data(), [9, 4, 5]), [2, 0])).tolist() == [2, 0]
    assert dataset_labels(Targets(5)).tolist() == [0, 1, 2, 0, 1]
    assert dataset_labels(RelabelledDataset(Targets(3), torch.tensor([2, 2, 1]))).tolist() == [2, 2, 1]
    with pytest.raises(TypeError, match="TensorDataset"):
        dataset_labels(TensorDataset(torch.zeros(2)))


def test_subset_and_relabelling_keep_in_memory_data_in_memory():
    data, picks = _data(), torch.tensor([8, 3])
    part = subset(data, picks)
    assert isinstance(part, InMemoryDataset) and torch.equal(part.images, data.images[picks])
    other = subset(Targets(9), picks)
    assert isinstance(other, Subset) and other.indices == [8, 3] and dataset_labels(other).tolist() == [2, 0]
    new = torch.tensor([2, 2, 2, 2, 2, 2, 2, 2, 2, 0])
    relabelled = with_labels(data, new)
    assert isinstance(relabelled, InMemoryDataset) and relabelled.images is data.images
    assert relabelled.labels.tolist() == new.tolist() and data.labels[0] == 0  # the original keeps its labels
    decoded = with_labels(Targets(3), torch.tensor([1, 1, 0]))
    assert [decoded[i][1] for i in range(3)] == [1, 1, 0] and torch.equal(decoded[2][0], Targets(3)[2][0])
