"""One selection step, for every training loop: what ``fit``, the Lightning callback and any other loop call.

A loop hands each loaded batch to ``select``, trains on what comes back, and hands the step's losses to ``record``:

    chosen = step.select(sampler, model, x, y, meter, device)   # None: nothing to train (a scoring-only step...)
    losses = loss_fn(model(chosen.x), chosen.y)                  # per-sample, shape (b,)
    loss = step.weighted_loss(chosen, losses)                    # back-propagate loss * chosen.scale
    step.record(sampler, chosen, loss.detach(), losses.detach(), meter)

``select`` runs the policy's no-grad scoring pass when it has one (``policy.needs_scores``), applies its keep-mask
or per-sample weights, and counts what was loaded and scored; ``record`` combines the step's signals across ranks
(batch losses averaged, per-sample losses gathered), records them with the sampler and counts what was trained.
So every loop spends, records and counts alike (README "Cost").
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hardbatch import distributed
from hardbatch.selection import HardBatchSampler


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast on ``device`` for ``dtype``, or nothing for full precision (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def score_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast_dtype: torch.dtype | None = None,
                 train_mode: bool = True) -> torch.Tensor:
    """Per-sample losses of (x, y) without gradient, shape (b,); leaves no trace in the model.

    ``train_mode``: a training-mode forward (BatchNorm batch statistics, dropout); the BatchNorm running statistics
    are restored afterwards and random layers draw from a forked generator, so the scoring forward changes nothing
    the next training step sees. Otherwise an eval-mode forward, which changes nothing. The model's mode is
    restored either way.
    """
    was_training = model.training
    model.train(train_mode)
    buffers = [(b, b.clone()) for b in model.buffers()] if train_mode else []  # only a training forward moves them
    devices = [x.device] if x.device.type == "cuda" else []
    forked = torch.random.fork_rng(devices=devices) if train_mode else contextlib.nullcontext()
    with forked, autocast(x.device, autocast_dtype):
        losses = F.cross_entropy(model(x).float(), y, reduction="none")
    for buffer, saved in buffers:
        buffer.copy_(saved)
    model.train(was_training)
    return losses


@dataclass
class Chosen:
    """What to train of the pending global batch, on this rank.

    ``x``/``y``: this rank's rows to train; ``weights``: their per-sample loss weights, or None for the plain mean;
    ``scale``: multiplies the back-propagated loss (ranks holding unequal shares of a kept set weigh their means,
    so DDP's average is the mean over all kept samples); ``count``: the samples this rank's mean is over (0: a
    rank that holds none of the kept samples trains one row at weight 0); ``total``: the samples trained over all
    ranks.
    """

    x: torch.Tensor
    y: torch.Tensor
    weights: torch.Tensor | None
    scale: float
    count: int
    total: int


def select(sampler: HardBatchSampler, model: nn.Module, x: torch.Tensor, y: torch.Tensor, meter,
           device: torch.device, autocast_dtype: torch.dtype | None = None) -> Chosen | None:
    """This rank's share (x, y) of the pending global batch -> what to train, or None for a scoring-only step and
    for a batch of which the policy keeps no sample (both recorded here: the loop trains nothing, and takes no
    optimizer step). ``model`` is the plain module (no DDP wrapper) for the scoring pass, run in the mode the policy
    asks for (``policy.score_train_mode``); ``meter`` (a training.CostMeter) counts the samples loaded and scored
    and the time spent choosing."""
    policy, step = sampler.policy, sampler.pending
    total = len(step.samples)  # the global batch; x and y hold this rank's rows of it
    meter.samples_loaded += total
    if step.score_only or policy.needs_scores(step):
        scoring = time.perf_counter()
        scores = distributed.all_gather(score_losses(model, x, y, autocast_dtype, policy.score_train_mode))
        meter.samples_forward_nograd += total
        meter.choose_seconds += time.perf_counter() - scoring
        if step.score_only:
            sampler.record(scores.mean(), scores)
            return None
        kept, weights, scale, total = distributed.kept_share(sampler.weights(scores) > 0, device)
        if total == 0:  # selective-backprop kept no sample: the batch is consumed untrained
            sampler.record(scores.mean())
            return None
        kept = kept.to(x.device)
        return Chosen(x[kept], y[kept], weights, scale, 0 if weights is not None else len(kept), total)
    weights = step.weights  # None: the plain mean, bit for bit (sampler.weights() would give ones)
    if weights is not None:
        weights = weights[distributed.local_rows(total)].to(device, non_blocking=True)
    return Chosen(x, y, weights, 1.0, len(y), total)


def weighted_loss(chosen: Chosen, losses: torch.Tensor) -> torch.Tensor:
    """This rank's loss to back-propagate (before ``chosen.scale``) from its per-sample losses (b,)."""
    return losses.mean() if chosen.weights is None else (losses * chosen.weights).mean()


def record(sampler: HardBatchSampler, chosen: Chosen, loss: torch.Tensor, sample_losses: torch.Tensor | None,
           meter) -> tuple[int, torch.Tensor]:
    """Record a trained step: ``loss`` is this rank's mean (0-d, detached), ``sample_losses`` its unweighted
    per-sample losses (kept only for policies that read them). Returns (the batch id, the global batch's loss)."""
    loss = distributed.global_mean(loss, chosen.count, chosen.total)
    if sampler.policy.per_sample:
        sample_losses = distributed.all_gather(sample_losses)
    meter.optimizer_steps += 1
    meter.samples_forward += chosen.total
    meter.samples_backprop += chosen.total
    return sampler.record(loss, sample_losses if sampler.policy.per_sample else None), loss
