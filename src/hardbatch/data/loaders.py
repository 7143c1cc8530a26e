"""A loaded data set's splits and transforms, and the DataLoaders that draw whole mini-batches from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from hardbatch.data.memory import SizedDataset, gives_batches, keep_batch
from hardbatch.data.splits import Relabelling
from hardbatch.data.transforms import BatchTransform


@dataclass
class DataSplits:
    """A loaded data set: train, optional validation and test splits, and the transforms to model input."""

    train: SizedDataset
    val: SizedDataset | None
    test: SizedDataset
    num_classes: int
    in_channels: int
    image_size: int  # side length the model sees (a 1-D signal's length)
    train_transform: BatchTransform
    eval_transform: BatchTransform
    relabelled: Relabelling | None = None  # the training samples label noise relabelled, if any

    def loader(
        self, dataset: SizedDataset, batch_sampler: Sampler, num_workers: int = 0, pin_memory: bool = False
    ) -> DataLoader:
        """A DataLoader that draws whole mini-batches from ``batch_sampler``: each batch (inputs (B, ...), labels
        (B,)) gathered in one op from a data set that gives batches, else collated from its samples."""
        collate = keep_batch if gives_batches(dataset) else None
        return DataLoader(
            cast(Dataset, dataset),
            batch_sampler=batch_sampler,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # Each new iterator draws a base seed; from its own generator, not the global RNG that dropout
            # uses, so a resumed run (which opens its iterators at other moments) draws the same dropout masks.
            generator=torch.Generator().manual_seed(0),
        )

    def eval_loader(
        self,
        dataset: SizedDataset,
        batch_size: int = 1024,
        num_workers: int = 0,
        pin_memory: bool = False,
        shard: range | None = None,
    ) -> DataLoader:
        """Sequential, complete batches over ``dataset`` (or its indices ``shard``: one process's share) for
        evaluation."""
        indices = shard if shard is not None else SequentialSampler(range(len(dataset)))
        sampler = BatchSampler(indices, batch_size, drop_last=False)
        return self.loader(dataset, sampler, num_workers, pin_memory)
