"""The training loop: every policy, ordinary training included, runs through ``fit``."""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from hardbatch.results import atomic_write_bytes, space_for
from hardbatch.selection import HardBatchSampler


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class EvalResult:
    loss: float
    acc: float
    top5: float


@dataclass
class EpochResult:
    """What one epoch (N optimizer steps) produced; ``trace`` holds (step, round, batch, loss) per step."""

    epoch: int
    step: int
    train_loss: float
    evals: dict[str, EvalResult]  # "test", and "val" when a validation split exists
    lr: float
    train_seconds: float
    eval_seconds: float
    trace: list[tuple[int, int, int, float]] = field(repr=False)

    def history_row(self) -> dict:
        row = {"epoch": self.epoch, "step": self.step, "train_loss": self.train_loss, "lr": self.lr,
               "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds}
        for name, result in self.evals.items():
            row.update({f"{name}_loss": result.loss, f"{name}_acc": result.acc, f"{name}_top5": result.top5})
        return row


Transform = Callable[..., torch.Tensor]  # (x, generator=None) -> model input


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_input(x: torch.Tensor, device: torch.device, transform: Transform | None, generator: torch.Generator | None,
              channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if transform is not None:
        x = transform(x, generator)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    train_mode: bool = False,
    transform: Transform | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> EvalResult:
    """Mean cross-entropy, top-1 and top-5 accuracy (fractions) over ``batches`` of (x, y).

    ``train_mode=True`` evaluates with BatchNorm batch statistics, as the released code did.
    """
    was_training = model.training
    model.train(train_mode)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for x, y in batches:
        x, y = _to_input(x, device, transform, None, channels_last), y.to(device, non_blocking=True)
        with _autocast(device, autocast_dtype):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == y[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        count += len(y)
    model.train(was_training)
    return EvalResult(loss_sum.item() / count, top1.item() / count, top5.item() / count)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimizer step on the mean cross-entropy of (x, y); returns the loss before the update (0-d)."""
    with _autocast(x.device, autocast_dtype):
        loss = F.cross_entropy(model(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: Iterable,
    sampler: HardBatchSampler,
    eval_sets: dict[str, Iterable],
    device: torch.device,
    *,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    augment_seed: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    eval_train_mode: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> None:
    """Train until ``sampler`` has spent its step budget, evaluating ``eval_sets`` every N steps.

    ``train_batches`` yields raw (x, y) for the batches ``sampler`` draws (a DataLoader built on it);
    one pass over it is one round. ``train_transform(x, generator)`` turns x into model input; with
    ``augment_seed`` the generator is seeded from (seed, step), so augmentation does not depend on
    how the run was interrupted. ``on_epoch`` receives each epoch's results at a step boundary, where
    ``sampler``, ``model``, ``optimizer`` and ``scheduler`` can be checkpointed.
    """
    n = sampler.num_batches
    model.train()
    generator = torch.Generator(device=device) if augment_seed is not None else None
    losses: list[torch.Tensor] = []  # this epoch's step losses, kept on the device: no sync per step
    steps: list[tuple[int, int, int]] = []
    started = time.perf_counter()
    while not sampler.done:
        for x, y in train_batches:
            if generator is not None:
                generator.manual_seed(augment_seed * 1_000_003 + sampler.steps)
            x = _to_input(x, device, train_transform, generator, channels_last)
            loss = train_step(model, optimizer, x, y.to(device, non_blocking=True), autocast_dtype)
            batch = sampler.record(loss)
            if scheduler is not None:
                scheduler.step()
            losses.append(loss)
            steps.append((sampler.steps, sampler.round, batch))
            if sampler.steps % n:
                continue
            # An epoch of N steps ended: evaluate and report.
            lr = optimizer.param_groups[0]["lr"]
            step_losses = torch.stack(losses).float().cpu().tolist()
            bad = next((s for (s, _, _), l in zip(steps, step_losses) if not math.isfinite(l)), None)
            if bad is not None:
                raise TrainingDiverged(f"training loss is not finite at step {bad}; try a lower --lr")
            _synchronize(device)
            train_seconds = time.perf_counter() - started
            started = time.perf_counter()
            evals = {name: evaluate(model, batches, device, eval_train_mode, eval_transform, autocast_dtype, channels_last)
                     for name, batches in eval_sets.items()}
            _synchronize(device)
            eval_seconds = time.perf_counter() - started
            if on_epoch is not None:
                on_epoch(EpochResult(
                    epoch=sampler.steps // n,
                    step=sampler.steps,
                    train_loss=sum(step_losses) / len(step_losses),
                    evals=evals,
                    lr=lr,
                    train_seconds=train_seconds,
                    eval_seconds=eval_seconds,
                    trace=[(s, r, b, l) for (s, r, b), l in zip(steps, step_losses)],
                ))
            losses, steps = [], []
            started = time.perf_counter()


# ---- checkpoints ---------------------------------------------------------------------------------


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Serialise ``state`` in memory, then write it atomically: a kill or a full disk (NoSpaceLeft, which says how
    much space the checkpoint needs) leaves the previous checkpoint intact and no temporary file."""
    path = Path(path)
    buffer = io.BytesIO()
    with space_for(path):
        torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)
