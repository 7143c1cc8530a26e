"""hardbatch.data.loaders: DataSplits and the DataLoaders that draw whole mini-batches from its splits."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, SequentialSampler

from hardbatch.config import RunConfig
from hardbatch.data import dataset_labels, load_dataset


def test_in_memory_splits_load_whole_batches_for_evaluation(tmp_path, fake):
    fake.cifar10(tmp_path)
    data = load_dataset(RunConfig(dataset="cifar10", data_dir=str(tmp_path), val_fraction=0.25))
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 32)
    batches = list(data.eval_loader(data.test, batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]  # sequential and complete: the last batch is not dropped
    x, y = batches[0]
    assert torch.equal(x, data.test.images[:4]) and torch.equal(y, data.test.labels[:4])
    out = data.eval_transform(x)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    shard = list(data.eval_loader(data.test, batch_size=4, shard=range(5, 10)))  # one process's share
    assert torch.cat([y for _, y in shard]).tolist() == data.test.labels[5:10].tolist()


def test_samples_decoded_one_by_one_are_collated_into_batches(tmp_path, fake):
    fake.image_folder(tmp_path)
    data = load_dataset(RunConfig(dataset="imagefolder", data_dir=str(tmp_path), val_fraction=0.25, image_size=16))
    assert data.image_size == 16
    train_labels, val_labels = dataset_labels(data.train), dataset_labels(data.val)
    assert sorted(data.train.indices + data.val.indices) == list(range(13))
    assert torch.bincount(val_labels).tolist() == [1, 1, 1] and torch.bincount(train_labels).tolist() == [3, 3, 4]
    sampler = BatchSampler(SequentialSampler(range(len(data.train))), 4, drop_last=False)
    x, y = next(iter(data.loader(data.train, sampler)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and y.tolist() == train_labels[:4].tolist()
    x, y = next(iter(data.eval_loader(data.val)))
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [0, 1, 2]


def test_opening_a_loader_leaves_the_global_random_state_alone():
    """Each iterator's base seed comes from the loader's own generator, not torch's global one that dropout draws
    from: a resumed run, which opens its iterators at other moments, draws the same dropout masks."""
    data = load_dataset(RunConfig(dataset="digits"))
    loader = data.loader(data.train, BatchSampler(SequentialSampler(range(64)), 32, drop_last=False))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert [len(y) for _, y in loader] == [32, 32] and [len(y) for _, y in loader] == [32, 32]
    assert torch.equal(torch.rand(3), expected)
