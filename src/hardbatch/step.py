"""One selection step, for every training loop: ``training_loss`` in a loop of your own, ``step_loss`` under it.

A loop hands each loaded batch (``(x, y)``, ``(x, y, ...)`` or a dict, on the device) to ``training_loss`` and
back-propagates what comes back::

    loss = hardbatch.training_loss(sampler, model, batch)   # None: nothing to train this time
    if loss is not None:
        optimizer.zero_grad(); loss.backward(); optimizer.step()

Under it, ``step_loss`` runs the policy's no-grad scoring pass when it has one (``select``), applies its keep-mask
or per-sample weights to every tensor of the batch whose first dimension is the batch's, computes the loss to
train on (``losses_of``) and records the step with the sampler after combining its signals across ranks (batch
losses averaged, per-sample losses gathered: ``record``), counting what was loaded, scored and trained in
``sampler.meter``. ``fit``, the Lightning callback, the Hugging Face Trainer and the Accelerate helper call
``step_loss`` (they time training themselves); so every loop spends, records and counts alike. ``loss_fn`` is any
per-sample loss (``hardbatch.losses``); one that does not return shape (b,) is refused at the first step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hardbatch import batches, distributed
from hardbatch.batches import Forward
from hardbatch.losses import LossFn, check_per_sample, cross_entropy, logits_of, target_of
from hardbatch.sampler import HardBatchSampler


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast on ``device`` for ``dtype``, or nothing for full precision (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _autocast_for(batch: Any, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``autocast`` on ``batch``'s device (read only when there is a dtype to cast to)."""
    return contextlib.nullcontext() if dtype is None else autocast(batches.device_of(batch), dtype)


@torch.no_grad()
def score_losses(
    model: nn.Module,
    batch: Any,
    autocast_dtype: torch.dtype | None = None,
    train_mode: bool = True,
    *,
    loss_fn: LossFn = cross_entropy,
    forward: Forward = batches.forward,
    restore_buffers: bool = True,
) -> torch.Tensor:
    """Per-sample losses ``loss_fn(forward(model, batch), batch)`` without gradient, shape (b,); leaves no trace in
    the model.

    ``train_mode``: a training-mode forward (BatchNorm batch statistics, dropout); the BatchNorm running statistics
    are restored afterwards (unless ``restore_buffers`` is off: a policy that follows its authors in letting them
    move) and random layers draw from a forked generator, so the scoring forward changes nothing the next training
    step sees. Otherwise an eval-mode forward, which changes nothing. The model's mode is restored either way.
    """
    was_training = model.training
    model.train(train_mode)
    # Only a training forward moves the buffers.
    buffers = [(b, b.clone()) for b in model.buffers()] if train_mode and restore_buffers else []
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
    pooled: torch.Tensor | None = None  # a step of pooled samples (an accumulating policy): their indices (total,)


class Pool:
    """The samples an accumulating policy kept of loaded batches already recorded, waiting for a full batch: this
    rank's rows of each batch (on the device), with each row's place among the batch's kept samples over all ranks,
    so that every rank cuts the same global batches out of it."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, torch.Tensor, int, torch.Tensor]] = []  # (rows, places, kept, sample ids)
        self.size = 0  # kept samples waiting, over all ranks
        self.template: Any = None  # a row to train at weight 0 on a rank that holds none of a step's samples

    def add(self, batch: Any, keep: torch.Tensor, samples: torch.Tensor, group: Any = None) -> None:
        """Pool what ``keep`` (bool, (b,), the global batch's) keeps of this rank's share ``batch``."""
        keep = keep.cpu()
        places = torch.cumsum(keep.long(), 0) - 1
        rows = distributed.local_rows(len(keep), group)
        mine = keep[rows]
        local = batches.take(batch, mine.nonzero().flatten()) if mine.any() else None
        self.entries.append((local, places[rows][mine], int(keep.sum()), samples.cpu()[keep]))
        self.template = batches.take(batch, torch.zeros(1, dtype=torch.long))
        self.size += int(keep.sum())

    def take(self, count: int, device: torch.device, group: Any = None) -> Chosen:
        """The first ``count`` pooled samples as one step (the rest stay pooled)."""
        parts, pooled, taken = [], [], 0
        while taken < count:
            local, places, kept, samples = self.entries[0]
            need = count - taken
            if kept <= need:
                self.entries.pop(0)
                parts += [local] if local is not None else []
                pooled.append(samples)
                taken += kept
                continue
            first = places < need
            if local is not None and first.any():
                parts.append(batches.take(local, first.nonzero().flatten()))
            rest = None if local is None or first.all() else batches.take(local, (~first).nonzero().flatten())
            self.entries[0] = (rest, places[~first] - need, kept - need, samples[need:])
            pooled.append(samples[:need])
            taken = count
        self.size -= count
        rows = sum(batches.batch_size(part) for part in parts)
        if rows == 0:  # this rank holds none of the step's samples: it still joins DDP's gradient all-reduce
            return Chosen(self.template, torch.zeros(1, device=device), 0.0, 0, count, torch.cat(pooled))
        return Chosen(
            batches.cat(parts), None, distributed.world_size(group) * rows / count, rows, count, torch.cat(pooled)
        )


def select(
    sampler: HardBatchSampler,
    model: nn.Module,
    batch: Any,
    *,
    autocast_dtype: torch.dtype | None = None,
    loss_fn: LossFn = cross_entropy,
    forward: Forward = batches.forward,
) -> Chosen | None:
    """This rank's share ``batch`` of the pending global batch -> what to train, or None for a scoring-only step and
    for a batch of which the policy keeps no sample (both recorded here: the loop trains nothing, and takes no
    optimizer step). The scoring pass ``loss_fn(forward(model, batch), batch)`` runs on the plain module (no DDP or
    compile wrapper) in the mode the policy asks for (``policy.score_train_mode``); ``sampler.meter`` counts the
    samples loaded and scored and the time spent choosing. The device is the batch's."""
    policy, step, meter, group = sampler.policy, sampler.step_for(batch), sampler.meter, sampler.group
    total = len(step.samples)  # the global batch; ``batch`` holds this rank's rows of it
    meter.samples_loaded += total
    if step.score_only or policy.needs_scores(step):
        scoring = time.perf_counter()
        scores = distributed.all_gather(
            score_losses(
                distributed.unwrap(model),
                batch,
                autocast_dtype,
                policy.score_train_mode,
                loss_fn=loss_fn,
                forward=forward,
                restore_buffers=not policy.score_moves_batchnorm,
            ),
            group,
        )
        meter.samples_forward_nograd += total
        meter.choose_seconds += time.perf_counter() - scoring
        device = batches.device_of(batch)
        if step.score_only:
            sampler.record(scores.mean(), scores)
            return None
        keep = sampler.weights(scores) > 0
        if policy.accumulates:  # the batch is consumed; what it keeps waits in the pool for a full batch
            sampler.record(scores.mean())
            return _from_pool(sampler, batch, keep, step.samples, device, group)
        kept, weights, scale, total = distributed.kept_share(keep, device, group)
        if total == 0:  # selective-backprop kept no sample: the batch is consumed untrained
            sampler.record(scores.mean())
            return None
        return Chosen(batches.take(batch, kept), weights, scale, 0 if weights is not None else len(kept), total)
    weights = step.weights  # None: the plain mean, bit for bit (sampler.weights() would give ones)
    if weights is not None:
        weights = weights[distributed.local_rows(total, group)].to(batches.device_of(batch), non_blocking=True)
    return Chosen(batch, weights, 1.0, batches.batch_size(batch), total)


def _from_pool(
    sampler: HardBatchSampler, batch: Any, keep: torch.Tensor, samples: torch.Tensor, device: torch.device, group: Any
) -> Chosen | None:
    """Pool what ``keep`` keeps of ``batch``; a step of B pooled samples once there are B, and at the end of a pass a
    last step of everything pooled (up to 2B − 1 samples), so that nothing waits across an epoch's end, where
    checkpoints are taken."""
    if sampler.pool is None:
        sampler.pool = Pool()
    pool = sampler.pool
    pool.add(batch, keep, samples, group)
    if sampler.epoch_ended and pool.size:
        return pool.take(pool.size, device, group)
    if pool.size >= sampler.batch_size:
        return pool.take(sampler.batch_size, device, group)
    return None


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None, b: int) -> torch.Tensor:
    """mean(losses), or mean(weights * losses), 0-d, from per-sample losses of shape (b,); refuses ``losses`` of any
    other shape (a batch mean included)."""
    check_per_sample(losses, b)
    return losses.mean() if weights is None else (losses * weights).mean()


def weighted_loss(chosen: Chosen, losses: torch.Tensor) -> torch.Tensor:
    """This rank's loss to back-propagate (before ``chosen.scale``) from its per-sample losses (b,), 0-d."""
    return weighted_mean(losses, chosen.weights, batches.batch_size(chosen.batch))


def losses_of(
    model: nn.Module,
    chosen: Chosen,
    *,
    per_sample: bool,
    autocast_dtype: torch.dtype | None = None,
    loss_fn: LossFn = cross_entropy,
    forward: Forward = batches.forward,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The forward with gradient on ``chosen.batch``: (this rank's loss to back-propagate, before ``chosen.scale``,
    0-d; the unweighted per-sample losses (b,), detached, when ``per_sample``, else None).

    The per-sample losses are ``loss_fn(forward(model, batch), batch)``; the loss is their mean, or their weighted
    mean with ``chosen.weights``. With the default loss and no weights it is the fused mean cross-entropy (bit for
    bit what ``F.cross_entropy(logits, y)`` computes), the per-sample losses taken from the same logits.
    """
    batch = chosen.batch
    with _autocast_for(batch, autocast_dtype):
        outputs = forward(model, batch)
    if chosen.weights is None and loss_fn is cross_entropy:
        logits, y = logits_of(outputs).float(), target_of(batch)
        loss = F.cross_entropy(logits, y)
        sample_losses = F.cross_entropy(logits.detach(), y, reduction="none") if per_sample else None
        return loss, sample_losses
    sample_losses = loss_fn(outputs, batch)
    loss = weighted_mean(sample_losses, chosen.weights, batches.batch_size(batch))
    return loss, sample_losses.detach() if per_sample else None


def record(
    sampler: HardBatchSampler, chosen: Chosen, loss: torch.Tensor, sample_losses: torch.Tensor | None
) -> torch.Tensor:
    """Record a trained step: ``loss`` is this rank's mean (0-d, detached), ``sample_losses`` its unweighted
    per-sample losses, shape (b,) (read only by policies that need them; None is fine for the others). Returns the
    global batch's loss; ``sampler.last`` holds the step's record."""
    if sample_losses is not None:
        check_per_sample(sample_losses, batches.batch_size(chosen.batch))
    loss = distributed.global_mean(loss, chosen.count, chosen.total, sampler.group)
    if sampler.policy.per_sample and sample_losses is not None:  # (None: refused by sampler.record below)
        sample_losses = distributed.all_gather(sample_losses, sampler.group)
    meter = sampler.meter
    meter.optimizer_steps += 1
    meter.samples_forward += chosen.total
    meter.samples_backprop += chosen.total
    if chosen.pooled is not None:
        sampler.record_pooled(loss, chosen.pooled)
    else:
        sampler.record(loss, sample_losses if sampler.policy.per_sample else None)
    return loss


def step_loss(
    sampler: HardBatchSampler,
    model: nn.Module,
    batch: Any,
    *,
    loss_fn: LossFn = cross_entropy,
    forward: Forward = batches.forward,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor | None:
    """The selection step on this rank's share ``batch`` of the pending global batch: ``select``, ``losses_of``,
    ``record``. Returns the loss to back-propagate (scaled for DDP's average when ranks hold unequal shares of a
    kept set), or None when there is nothing to train (a scoring-only step, or a batch the policy keeps none of:
    both recorded). ``model`` is what you train (DDP-wrapped or not). Times nothing (see ``training_loss``)."""
    chosen = select(sampler, model, batch, autocast_dtype=autocast_dtype, loss_fn=loss_fn, forward=forward)
    if chosen is None:
        return None
    loss, sample_losses = losses_of(
        model,
        chosen,
        per_sample=sampler.policy.per_sample,
        autocast_dtype=autocast_dtype,
        loss_fn=loss_fn,
        forward=forward,
    )
    record(sampler, chosen, loss.detach(), sample_losses)
    return loss if chosen.scale == 1.0 else loss * chosen.scale


def training_loss(
    sampler: HardBatchSampler,
    model: nn.Module,
    batch: Any,
    *,
    loss_fn: LossFn = cross_entropy,
    forward: Forward = batches.forward,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor | None:
    """The whole selection step in one call, for every registered policy: the loss to back-propagate, or None when
    there is nothing to train.

    ``batch``: a batch the loader drew from ``sampler`` ((x, y), (x, y, ...) or a dict of tensors), on the device
    the model computes on; ``loss_fn(outputs, batch)``: per-sample losses, shape (b,) (default: cross-entropy of
    class logits; see ``hardbatch.losses``); ``forward(model, batch)``: the model's outputs (default: ``model(x)``,
    or ``model(**batch)`` without its ``"labels"``). Runs the policy's no-grad scoring pass when it has one, its
    keep-mask and weights, the cross-rank combination under DDP, and records the step and its cost
    (``sampler.meter``).

    Time: ``sampler.meter`` counts ``train_seconds`` and ``cpu_seconds`` from one call to the next (loading,
    forward, backward and optimizer step of the step before), leaving out the gap after each epoch's last step,
    where loops evaluate; so in your own loop they miss one step's backward per epoch. ``fit`` and the
    integrations time training exactly.
    """
    meter = sampler.meter
    if sampler.last is not None and sampler.epoch_ended:
        meter.discard()
    meter.lap()
    return step_loss(sampler, model, batch, loss_fn=loss_fn, forward=forward, autocast_dtype=autocast_dtype)
