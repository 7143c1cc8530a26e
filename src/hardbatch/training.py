"""The training loop: every policy, ordinary training included, runs through ``fit``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hardbatch import batches as batching
from hardbatch import distributed
from hardbatch.batches import Forward
from hardbatch.errors import TrainingDiverged, UsageError
from hardbatch.losses import LossFn, check_per_sample, cross_entropy, logits_of, target_of
from hardbatch.sampler import HardBatchSampler
from hardbatch.step import autocast, step_loss


@dataclass
class EvalResult:
    """Mean loss, top-1 and top-5 accuracy (fractions), and per class c: correct top-1 answers and samples."""

    loss: float
    acc: float
    top5: float
    class_hits: list[int] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)

    @property
    def per_class(self) -> list[float | None]:
        """Top-1 accuracy of each class; None for a class with no samples in the split."""
        return [h / n if n else None for h, n in zip(self.class_hits, self.class_counts, strict=True)]

    @property
    def balanced_acc(self) -> float:
        """Mean per-class top-1 accuracy over the classes present (NaN without per-class counts)."""
        present = [a for a in self.per_class if a is not None]
        return sum(present) / len(present) if present else math.nan


@dataclass
class EpochResult:
    """What one epoch produced; ``trace`` holds (step, round, batch, loss, samples) per optimizer step.

    An epoch is N optimizer steps, or one pass of a policy whose epoch is a pass (``infobatch``).
    ``cost`` holds what the epoch spent (CostMeter fields), ``train_seconds`` included.
    """

    epoch: int
    step: int
    train_loss: float
    evals: dict[str, EvalResult]  # "test", and "val" when a validation split exists
    lr: float
    train_seconds: float
    eval_seconds: float
    trace: list[tuple[int, int, int, float, int]] = field(repr=False)
    cost: dict = field(default_factory=dict)

    def history_row(self) -> dict:
        """The epoch as one history.csv row: losses, accuracies, seconds and cost, by column."""
        row = {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": self.train_loss,
            "lr": self.lr,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            **{k: v for k, v in self.cost.items() if k not in ("train_seconds", "optimizer_steps")},
        }
        for name, result in self.evals.items():
            row.update(
                {
                    f"{name}_loss": result.loss,
                    f"{name}_acc": result.acc,
                    f"{name}_top5": result.top5,
                    f"{name}_bacc": result.balanced_acc,
                }
            )
        return row


class Sink(Protocol):
    """What ``fit`` hands each finished epoch to (hardbatch.run.sinks holds a run's)."""

    def on_epoch(self, result: EpochResult) -> None:
        """Receive a finished epoch's results."""


# (x, generator=None) -> model input; under several processes also part=(rows, total): x is that share of a global
# batch of ``total``, so per-sample randomness is drawn for the global batch (BatchTransform does).
Transform = Callable[..., torch.Tensor]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to_input(
    x: torch.Tensor,
    device: torch.device,
    transform: Transform | None,
    generator: torch.Generator | None,
    channels_last: bool,
    part: tuple[slice, int] | None = None,
) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if transform is not None:
        # A one-process transform (the user's own, in fit) need not know about shares of a batch.
        x = transform(x, generator) if part is None else transform(x, generator, part=part)
    # channels-last is a layout of 4-D image batches; 1-D signal batches (B, C, L) have none.
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _to_batch(
    batch: Any,
    device: torch.device,
    transform: Transform | None,
    generator: torch.Generator | None,
    channels_last: bool,
    part: tuple[slice, int] | None = None,
) -> Any:
    """A loaded batch on ``device``: for (x, y, ...) the input x = batch[0] through ``_to_input`` (transform,
    layout), every other tensor moved; a dict has every tensor moved and takes no transform."""
    if isinstance(batch, (tuple, list)):
        items = [
            _to_input(batch[0], device, transform, generator, channels_last, part),
            *batching.to_device(list(batch[1:]), device),
        ]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)  # a namedtuple, or not
    if transform is not None:
        raise UsageError(
            "a transform (train_transform, eval_transform) applies to the input x of (x, y, ...) "
            f"batches; a {type(batch).__name__} batch must be transformed in its Dataset or collate_fn"
        )
    return batching.to_device(batch, device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    train_mode: bool = False,
    transform: Transform | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    *,
    loss_fn: LossFn = cross_entropy,
    forward: Forward = batching.forward,
) -> EvalResult:
    """Mean loss, top-1 and top-5 accuracy (fractions), and per-class top-1 counts over ``batches``: (x, y),
    (x, y, ...) or dicts.

    The loss is ``loss_fn``'s mean over the samples (default: cross-entropy). Accuracy is that of class logits
    against class indices, so it is reported for the default loss only: with another ``loss_fn`` (any batch
    structure, see ``fit``) ``acc`` and ``top5`` are NaN and the class counts empty. ``train_mode=True`` evaluates
    with BatchNorm batch statistics, as the released code did. Under several processes each evaluates its share of
    the set and the sums are added up across them.
    """
    was_training = model.training
    model.train(train_mode)
    classify = loss_fn is cross_entropy
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    class_hits: torch.Tensor | None = None  # (C,) sums kept on the device: no sync per batch
    class_counts: torch.Tensor | None = None
    count = 0
    for batch in batches:
        batch = _to_batch(batch, device, transform, None, channels_last)
        with autocast(device, autocast_dtype):
            outputs = forward(model, batch)
        count += batching.batch_size(batch)
        if not classify:
            sample_losses = loss_fn(outputs, batch)
            check_per_sample(sample_losses, batching.batch_size(batch))
            loss_sum += sample_losses.sum()
            continue
        logits, y = logits_of(outputs).float(), target_of(batch)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == y[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        if class_hits is None or class_counts is None:
            class_hits = torch.zeros(logits.shape[1], device=device, dtype=torch.long)
            class_counts = torch.zeros_like(class_hits)
        class_hits.scatter_add_(0, y, hits[:, 0].long())
        class_counts.scatter_add_(0, y, torch.ones_like(y))
    model.train(was_training)
    sums = distributed.all_reduce_sum(
        torch.stack(
            [loss_sum, top1.double(), top5.double(), torch.tensor(float(count), dtype=torch.float64, device=device)]
        )
    )
    loss_sum, top1, top5, count = sums.tolist()
    if not classify:
        return EvalResult(loss_sum / count, math.nan, math.nan)
    assert class_hits is not None and class_counts is not None  # set by the first batch
    classes = distributed.all_reduce_sum(torch.cat([class_hits, class_counts]))
    hits_by_class, counts_by_class = classes.view(2, -1).tolist()
    return EvalResult(loss_sum / count, top1 / count, top5 / count, hits_by_class, counts_by_class)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: Iterable,
    sampler: HardBatchSampler,
    eval_sets: Mapping[str, Iterable],
    device: torch.device,
    *,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    augment_seed: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    eval_train_mode: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    sinks: Sequence[Sink] = (),
    on_epoch: Callable[[EpochResult], None] | None = None,
    loss_fn: LossFn = cross_entropy,
    forward: Forward = batching.forward,
) -> None:
    """Train until ``sampler`` has spent its budget, evaluating ``eval_sets`` at the end of every epoch.

    ``train_batches`` yields raw batches for the batches ``sampler`` draws (a DataLoader built on it): (x, y),
    (x, y, ...) or dicts; one pass over it is one pass of the policy. ``loss_fn(outputs, batch)`` gives the
    per-sample losses (b,) of ``outputs = forward(model, batch)`` (defaults: cross-entropy of ``model(x)``; see
    ``hardbatch.losses`` and ``hardbatch.batches.forward``); a loss of another shape is refused at the first step.
    ``train_transform(x, generator)`` turns x = batch[0] into model input (a dict batch takes no transform: a
    UsageError); with ``augment_seed`` the generator is seeded from (seed, step), so augmentation does not
    depend on how the run was interrupted. ``sampler.meter`` counts the cost (continued when resuming).
    Each of ``sinks``, in order, receives each epoch's results (``sink.on_epoch(result)``) at a step boundary,
    where ``sampler`` (with its meter), ``model``, ``optimizer`` and ``scheduler`` can be checkpointed; ``on_epoch``
    is one more, a plain function. fit closes none of them.

    Under several processes (``hardbatch.distributed``), ``model`` is DDP-wrapped, ``train_batches`` yields this
    rank's share of each global batch and ``eval_sets`` this rank's share of each set. Every signal a policy reads
    is first combined across ranks (per-sample losses gathered, batch losses averaged), so each rank's sampler
    sees the global batch's tensors, as in one process, and makes the same choice.
    """
    meter = sampler.meter
    receivers = [sink.on_epoch for sink in sinks] + ([on_epoch] if on_epoch is not None else [])
    world = distributed.world_size()
    plain = distributed.unwrap(model)  # evaluation needs no gradient sync, so no DDP (or compile) wrapper
    model.train()
    generator = torch.Generator(device=device) if augment_seed is not None else None
    losses: list[torch.Tensor | float] = []  # this epoch's step losses, kept on the device: no sync per step
    steps: list[tuple[int, int, int, int]] = []
    epoch_start = meter.state_dict()
    meter.start()
    while not sampler.done:
        for batch in train_batches:
            total = len(sampler.pending.samples)  # the global batch; ``batch`` holds this rank's rows of it
            if generator is not None and augment_seed is not None:
                generator.manual_seed(augment_seed * 1_000_003 + sampler.steps)
            batch = _to_batch(
                batch,
                device,
                train_transform,
                generator,
                channels_last,
                None if world == 1 else (distributed.local_rows(total), total),
            )
            loss = step_loss(sampler, model, batch, loss_fn=loss_fn, forward=forward, autocast_dtype=autocast_dtype)
            # None: a scoring-only step, or a batch of which nothing was kept (recorded by the step); the second
            # can end an epoch that is a pass.
            if loss is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                last = sampler.last
                assert last is not None  # the step just recorded
                losses.append(last.loss)
                steps.append((last.step, last.round, last.batch, last.samples))
            if not sampler.epoch_ended:
                continue
            # An epoch ended: evaluate and report.
            lr = optimizer.param_groups[0]["lr"]
            step_losses = torch.stack([torch.as_tensor(v) for v in losses]).float().cpu().tolist() if losses else []
            bad = next((s for (s, *_), value in zip(steps, step_losses, strict=True) if not math.isfinite(value)), None)
            if bad is not None:
                raise TrainingDiverged(f"training loss is not finite at step {bad}; try a lower learning rate")
            _synchronize(device)
            meter.stop()
            cost = meter.since(epoch_start)
            started = time.perf_counter()
            distributed.sync_buffers(model)
            evals = {
                name: evaluate(
                    plain,
                    batches,
                    device,
                    eval_train_mode,
                    eval_transform,
                    autocast_dtype,
                    channels_last,
                    loss_fn=loss_fn,
                    forward=forward,
                )
                for name, batches in eval_sets.items()
            }
            _synchronize(device)
            eval_seconds = time.perf_counter() - started
            result = EpochResult(
                epoch=sampler.epoch,
                step=sampler.steps,
                train_loss=sum(step_losses) / len(step_losses) if step_losses else math.nan,
                evals=evals,
                lr=lr,
                train_seconds=cost["train_seconds"],
                eval_seconds=eval_seconds,
                trace=[(s, r, b, value, n) for (s, r, b, n), value in zip(steps, step_losses, strict=True)],
                cost=cost,
            )
            for receive in receivers:
                receive(result)
            losses, steps = [], []
            epoch_start = meter.state_dict()
            meter.start()
    meter.discard()  # started after the last epoch's report: nothing trained since
