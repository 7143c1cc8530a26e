"""A run's parts built from its configuration: the sampler, the optimizer, the schedule and the loader workers."""

from __future__ import annotations

import math
import os

import torch

from hardbatch.config import RunConfig
from hardbatch.data import DataSplits, gives_batches
from hardbatch.errors import UsageError
from hardbatch.policies import create_policy
from hardbatch.sampler import HardBatchSampler


def make_sampler(cfg: RunConfig, data: DataSplits) -> HardBatchSampler:
    """The run's sampler over ``data.train``; a training split that a validation split left too small names it.

    Every process builds the same sampler (same seed, same data), so the processes need not exchange plans.
    """
    if cfg.val_fraction > 0 and len(data.train) < cfg.batch_size:
        raise UsageError(
            f"val_fraction {cfg.val_fraction:g} leaves {len(data.train)} training samples, fewer than "
            f"one batch of {cfg.batch_size}; use a smaller val_fraction"
        )
    return HardBatchSampler(
        len(data.train),
        cfg.batch_size,
        epochs=cfg.trained_epochs,
        policy=create_policy(cfg.policy, **cfg.params),
        shuffle_partition=bool(cfg.shuffle_partition),
        seed=cfg.seed,
        watch=None if data.relabelled is None else data.relabelled.indices,
    )


def loader_workers(cfg: RunConfig, data: DataSplits) -> int:
    """``--num-workers``, or by default none for in-memory data (one gather per batch) and up to 8 otherwise."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    return 0 if gives_batches(data.train) else min(8, os.cpu_count() or 1)


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def make_scheduler(
    cfg: RunConfig, optimizer: torch.optim.Optimizer, sampler: HardBatchSampler
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """None for a constant rate; "cosine" decays to 0 over the whole budget, stepped once per optimizer step.

    The rate follows ``sampler.progress`` (steps / budget), so a policy whose epochs are shorter than N
    steps (``infobatch``) still reaches 0 at its last step.
    """
    if cfg.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 0.5 * (1.0 + math.cos(math.pi * sampler.progress)))
