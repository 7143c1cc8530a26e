"""Selection inside each loaded batch, for any loader: streaming data sets and loaders hardbatch does not build.

An iterable data set (webdataset shards, Hugging Face ``datasets`` in streaming mode, litdata, ...) has no sampler
hook, so no policy can decide before loading what to load. The policies that choose among the samples of a batch
already loaded still work: ``selective-backprop``, ``composer-sb`` and ``rho-loss`` (their class attribute
``in_batch``). :class:`InBatchSelector` runs one of them over whatever batches your loader yields::

    selector = hardbatch.InBatchSelector("selective-backprop", epochs=10, steps_per_epoch=len(loader))
    while not selector.done:
        for batch in loader:                         # any loader; batches of equal size
            loss = hardbatch.training_loss(selector, model, batch)
            if loss is not None:
                optimizer.zero_grad(); loss.backward(); optimizer.step()

A policy that keeps state per sample (``rho-loss``'s irreducible losses) needs a stable id per sample, read from
the batch: ``id_key`` names the entry of a dict batch that holds it (webdataset's ``"__key__"``, or an index your
data set returns), as integers or strings (strings are hashed to 63-bit integers, the same on every process).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from hardbatch import batches, distributed
from hardbatch.cost import CostMeter
from hardbatch.errors import UsageError
from hardbatch.functional import key_ids, positive_int
from hardbatch.policies import POLICIES, Policy, Step, create_policy
from hardbatch.sampler import Recorded


def in_batch_policies() -> list[str]:
    """The registered policies that choose inside a loaded batch (those an :class:`InBatchSelector` runs)."""
    return [name for name, cls in POLICIES.items() if cls.in_batch]


class InBatchSelector:
    """Runs a policy that chooses inside each loaded batch over any loader; see the module docstring.

    ``policy``: a policy object or a registered name (with its hyper-parameters as keywords), one whose
    ``in_batch`` is true; ``epochs`` x ``steps_per_epoch`` loaded batches are the budget (without
    ``steps_per_epoch``, call ``set_epoch`` at the start of every epoch after the first, as loops do for a
    ``DistributedSampler``; the budget is then ``epochs`` epochs); ``id_key``: the entry of a dict batch holding
    each sample's stable id (needed by policies that keep per-sample state). Under several processes each rank loads
    its own batch (of the same size on every rank); the policy sees the global batch, so every rank chooses alike.
    ``group``: the data-parallel process group (default: the whole world).
    """

    def __init__(
        self,
        policy: str | Policy,
        *,
        epochs: int,
        steps_per_epoch: int | None = None,
        id_key: str | None = None,
        seed: int = 0,
        group: Any = None,
        **params: Any,
    ):
        if isinstance(policy, str):
            policy = create_policy(policy, **params)
        elif not isinstance(policy, Policy) or params:
            raise UsageError(
                f"policy must be a registered name or a policy object (its hyper-parameters on the "
                f"object), got {policy!r}"
            )
        if not policy.in_batch:
            raise UsageError(
                f"policy {policy.name!r} decides what to load before loading, which a streaming loader "
                f"cannot do; policies that choose inside a loaded batch: {', '.join(in_batch_policies())}"
            )
        self.epochs = positive_int("epochs", epochs)
        self.steps_per_epoch = None if steps_per_epoch is None else positive_int("steps_per_epoch", steps_per_epoch)
        self.id_key = id_key
        self.group = group  # the data-parallel process group (None: the whole world)
        self.policy = policy.bind(self.steps_per_epoch or 1, seed=seed, epochs=self.epochs, streaming=True)
        self.meter = CostMeter()
        self.last: Recorded | None = None
        self.batch_size: int | None = None  # B: the loaded batches' size (a pooled step trains B samples)
        self.pool: Any = None  # the step core's pool, for a policy that accumulates
        self.steps = 0  # optimizer steps recorded
        self.loaded = 0  # batches recorded (trained, scored or skipped)
        self.in_epoch = 0  # batches recorded in the current epoch
        self.epoch = 0  # epochs finished
        self.epoch_ended = False
        self._pending: Step | None = None
        self._scored = False  # were the pending batch's weights chosen from its scores?

    # -- what the step core reads ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the budget is spent."""
        return self.epoch >= self.epochs

    @property
    def round(self) -> int:
        """The current epoch (what a trace's round column holds for a stream)."""
        return self.epoch

    @property
    def progress(self) -> float:
        """The fraction of the budget spent, in [0, 1] (what a learning-rate schedule follows)."""
        within = self.in_epoch / self.steps_per_epoch if self.steps_per_epoch else 0.0
        return min(1.0, (self.epoch + within) / self.epochs)

    def step_for(self, batch: Any) -> Step:
        """The step of the loaded ``batch`` (this rank's; the ids of every rank's rows, gathered, in rank order)."""
        if self.done:
            raise RuntimeError("the selector's budget is spent; stop the loop on selector.done")
        if self._pending is None:
            rows = batches.batch_size(batch)
            if self.id_key is None:
                if self.policy.per_sample_state:
                    raise UsageError(
                        f"policy {self.policy.name!r} keeps state per sample: give each sample a stable "
                        f"id in the batch and name it with id_key (webdataset's '__key__', an index)"
                    )
                ids = torch.arange(rows) + self.loaded * rows * distributed.world_size(self.group)
            else:
                if not isinstance(batch, Mapping) or self.id_key not in batch:
                    raise UsageError(
                        f"id_key {self.id_key!r}: the batch holds no such entry (a dict batch is needed; "
                        f"got {type(batch).__name__}"
                        + (f" with keys {', '.join(map(repr, batch))})" if isinstance(batch, Mapping) else ")")
                    )
                ids = key_ids(batch[self.id_key])
                if len(ids) != rows:
                    raise UsageError(f"id_key {self.id_key!r} holds {len(ids)} ids for a batch of {rows} samples")
            ids = distributed.all_gather(ids, self.group)
            self.batch_size = self.batch_size or len(ids)
            preset = self.policy.in_batch_preset(self.steps, self.epoch)
            self._pending = Step(ids, self.loaded, weights=torch.ones(len(ids)) if preset else None)
        return self._pending

    @property
    def pending(self) -> Step:
        """The step of the batch being trained (``step_for`` makes it)."""
        if self._pending is None:
            raise RuntimeError("no batch pending: the step core reads it with step_for(batch)")
        return self._pending

    def weights(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss weights for the pending batch, shape (b,), chosen by the policy from the no-grad
        ``scores`` of the whole (global) batch; a second call returns the first answer."""
        step = self.pending
        if step.weights is None:
            if scores is None or not isinstance(scores, torch.Tensor) or scores.shape != step.samples.shape:
                raise UsageError(
                    f"weights(scores): scores must be the batch's per-sample losses, shape ({len(step.samples)},)"
                )
            started = time.perf_counter()
            self._scored = True
            step.weights = self.policy.select(step, scores)
            self.meter.choose_seconds += time.perf_counter() - started
        return step.weights

    def record(self, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> int:
        """Record the pending batch: its training loss (0-d), or its mean score when nothing of it was trained."""
        step = self.pending
        pooled = self.policy.accumulates and self._scored  # what it keeps waits in the pool for a step of its own
        weights = step.weights
        trained = not pooled and weights is not None and bool((weights > 0).any())
        self.policy.observe(step, loss, sample_losses)
        self._pending, self._scored = None, False
        self.loaded += 1
        self.in_epoch += 1
        if trained:
            self.steps += 1
        samples = int((weights > 0).sum()) if trained and weights is not None else 0
        self.last = Recorded(self.steps if trained else 0, self.epoch, step.batch, loss, samples)
        self.epoch_ended = self.steps_per_epoch is not None and self.in_epoch == self.steps_per_epoch
        if self.epoch_ended:
            self.epoch += 1
            self.in_epoch = 0
        return step.batch

    def record_pooled(self, loss: torch.Tensor | float, samples: torch.Tensor) -> int:
        """Record an optimizer step on samples pooled from batches already recorded (a policy that accumulates)."""
        if self.last is None:
            raise RuntimeError("record_pooled() before any batch was recorded")
        self.steps += 1
        self.last = Recorded(self.steps, self.last.round, self.last.batch, loss, len(samples))
        return self.last.batch

    def set_epoch(self, epoch: int) -> None:
        """Without ``steps_per_epoch``: epoch ``epoch`` (0-based) starts now, the one before it has ended. With it,
        epochs end by themselves and this does nothing."""
        if self.steps_per_epoch is None and epoch > self.epoch and self.in_epoch:
            self.epoch, self.in_epoch = epoch, 0

    # -- checkpoints --------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The selector's state (the policy's, the counters, the cost), for checkpoints."""
        return {
            "policy": self.policy.state_dict(),
            "steps": self.steps,
            "loaded": self.loaded,
            "in_epoch": self.in_epoch,
            "epoch": self.epoch,
            "cost": self.meter.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a ``state_dict``)."""
        self.policy.load_state_dict(state["policy"])
        self.steps, self.loaded, self.in_epoch, self.epoch = (
            int(state[k]) for k in ("steps", "loaded", "in_epoch", "epoch")
        )
        self.meter.load_state_dict(state["cost"])
        self._pending, self.epoch_ended = None, False
