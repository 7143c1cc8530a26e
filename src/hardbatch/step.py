"""One selection step, for every training loop: what ``fit``, the Lightning callback and any other loop call.

A loop hands each loaded batch (``(x, y)``, ``(x, y, ...)`` or a dict, on the device) to ``select``, trains on
what comes back, and hands the step's losses to ``record``:

    chosen = step.select(sampler, model, batch, meter, device, loss_fn=loss_fn)  # None: nothing to train (...)
    losses = loss_fn(forward(model, chosen.batch), chosen.batch)                 # per-sample, shape (b,)
    loss = step.weighted_loss(chosen, losses)                    # back-propagate loss * chosen.scale
    step.record(sampler, chosen, loss.detach(), losses.detach(), meter)

``select`` runs the policy's no-grad scoring pass when it has one (``policy.needs_scores``), applies its keep-mask
or per-sample weights to every tensor of the batch whose first dimension is the batch's, and counts what was loaded
and scored; ``record`` combines the step's signals across ranks (batch losses averaged, per-sample losses
gathered), records them with the sampler and counts what was trained. So every loop spends, records and counts
alike (README "Cost"). ``loss_fn`` is any per-sample loss (``hardbatch.losses``); one that does not return shape
(b,) is refused at the first step, in the scoring pass, ``weighted_loss`` or ``record``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hardbatch import batches, distributed
from hardbatch.batches import Forward
from hardbatch.losses import LossFn, check_per_sample, cross_entropy
from hardbatch.selection import HardBatchSampler


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast on ``device`` for ``dtype``, or nothing for full precision (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def score_losses(model: nn.Module, batch: Any, autocast_dtype: torch.dtype | None = None, train_mode: bool = True,
                 *, loss_fn: LossFn = cross_entropy, forward: Forward = batches.forward) -> torch.Tensor:
    """Per-sample losses ``loss_fn(forward(model, batch), batch)`` without gradient, shape (b,); leaves no trace in
    the model.

    ``train_mode``: a training-mode forward (BatchNorm batch statistics, dropout); the BatchNorm running statistics
    are restored afterwards and random layers draw from a forked generator, so the scoring forward changes nothing
    the next training step sees. Otherwise an eval-mode forward, which changes nothing. The model's mode is
    restored either way.
    """
    was_training = model.training
    model.train(train_mode)
    buffers = [(b, b.clone()) for b in model.buffers()] if train_mode else []  # only a training forward moves them
    device = batches.device_of(batch)
    devices = [device] if device.type == "cuda" else []
    forked = torch.random.fork_rng(devices=devices) if train_mode else contextlib.nullcontext()
    with forked:
        with autocast(device, autocast_dtype):
            outputs = forward(model, batch)
        losses = loss_fn(outputs, batch)
    for buffer, saved in buffers:
        buffer.copy_(saved)
    model.train(was_training)
    check_per_sample(losses, batches.batch_size(batch))
    return losses


@dataclass
class Chosen:
    """What to train of the pending global batch, on this rank.

    ``batch``: this rank's rows to train, in the structure the loader delivered (``batches.take``); ``weights``:
    their per-sample loss weights, or None for the plain mean; ``scale``: multiplies the back-propagated loss
    (ranks holding unequal shares of a kept set weigh their means, so DDP's average is the mean over all kept
    samples); ``count``: the samples this rank's mean is over (0: a rank that holds none of the kept samples trains
    one row at weight 0); ``total``: the samples trained over all ranks.
    """

    batch: Any
    weights: torch.Tensor | None
    scale: float
    count: int
    total: int


def select(sampler: HardBatchSampler, model: nn.Module, batch: Any, meter, device: torch.device,
           autocast_dtype: torch.dtype | None = None, *, loss_fn: LossFn = cross_entropy,
           forward: Forward = batches.forward) -> Chosen | None:
    """This rank's share ``batch`` of the pending global batch -> what to train, or None for a scoring-only step and
    for a batch of which the policy keeps no sample (both recorded here: the loop trains nothing, and takes no
    optimizer step). ``model`` is the plain module (no DDP wrapper) for the scoring pass
    ``loss_fn(forward(model, batch), batch)``, run in the mode the policy asks for (``policy.score_train_mode``);
    ``meter`` (a training.CostMeter) counts the samples loaded and scored and the time spent choosing."""
    policy, step = sampler.policy, sampler.pending
    total = len(step.samples)  # the global batch; ``batch`` holds this rank's rows of it
    meter.samples_loaded += total
    if step.score_only or policy.needs_scores(step):
        scoring = time.perf_counter()
        scores = distributed.all_gather(score_losses(model, batch, autocast_dtype, policy.score_train_mode,
                                                     loss_fn=loss_fn, forward=forward))
        meter.samples_forward_nograd += total
        meter.choose_seconds += time.perf_counter() - scoring
        if step.score_only:
            sampler.record(scores.mean(), scores)
            return None
        kept, weights, scale, total = distributed.kept_share(sampler.weights(scores) > 0, device)
        if total == 0:  # selective-backprop kept no sample: the batch is consumed untrained
            sampler.record(scores.mean())
            return None
        return Chosen(batches.take(batch, kept), weights, scale, 0 if weights is not None else len(kept), total)
    weights = step.weights  # None: the plain mean, bit for bit (sampler.weights() would give ones)
    if weights is not None:
        weights = weights[distributed.local_rows(total)].to(device, non_blocking=True)
    return Chosen(batch, weights, 1.0, batches.batch_size(batch), total)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None, b: int) -> torch.Tensor:
    """mean(losses), or mean(weights * losses), 0-d, from per-sample losses of shape (b,); refuses ``losses`` of any
    other shape (a batch mean included)."""
    check_per_sample(losses, b)
    return losses.mean() if weights is None else (losses * weights).mean()


def weighted_loss(chosen: Chosen, losses: torch.Tensor) -> torch.Tensor:
    """This rank's loss to back-propagate (before ``chosen.scale``) from its per-sample losses (b,), 0-d."""
    return weighted_mean(losses, chosen.weights, batches.batch_size(chosen.batch))


def record(sampler: HardBatchSampler, chosen: Chosen, loss: torch.Tensor, sample_losses: torch.Tensor | None,
           meter) -> tuple[int, torch.Tensor]:
    """Record a trained step: ``loss`` is this rank's mean (0-d, detached), ``sample_losses`` its unweighted
    per-sample losses, shape (b,) (kept only for policies that read them; None is fine for the others). Returns
    (the batch id, the global batch's loss)."""
    if sample_losses is not None:
        check_per_sample(sample_losses, batches.batch_size(chosen.batch))
    loss = distributed.global_mean(loss, chosen.count, chosen.total)
    if sampler.policy.per_sample:
        sample_losses = distributed.all_gather(sample_losses)
    meter.optimizer_steps += 1
    meter.samples_forward += chosen.total
    meter.samples_backprop += chosen.total
    return sampler.record(loss, sample_losses if sampler.policy.per_sample else None), loss
