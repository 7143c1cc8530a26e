"""Any hardbatch policy inside a PyTorch Lightning ``Trainer``, on one device or under its DDP strategy.

Needs ``pip install 'hardbatch[lightning]'``; the core package never imports this module. See
``examples/lightning_example.py``. The three pieces:

- ``hb = HardBatch(sampler, loss_fn=...)``: a Lightning callback around a :class:`~hardbatch.HardBatchSampler`; it
  stops the Trainer when the sampler's budget is spent and checkpoints the selection state with Lightning's
  checkpoints. ``loss_fn(outputs, batch)`` is any per-sample loss (``hardbatch.losses``; default cross-entropy).
- ``hb.loader(dataset, ...)``: the DataLoader; under DDP it yields this rank's contiguous share of every selected
  global mini-batch, so pass ``use_distributed_sampler=False`` to the Trainer (Lightning's DistributedSampler would
  shard the data its own way and break the shared plan).
- ``hb.training_loss(module, batch)`` in ``training_step``: the loss to return, for any batch ((x, y), (x, y, ...),
  a dict) and the module's forward as ``forward(module, batch)`` computes it. It runs the policy's no-grad scoring
  pass when it has one, applies its keep-masks and weights, and records the step's losses after combining them
  across ranks (per-sample losses gathered, batch losses averaged), so every rank holds the same tables and plans
  the same next round. It returns None for a scoring-only step (``--rescore``) and for a batch of which
  ``selective-backprop`` kept no sample; Lightning skips those.

A Lightning "epoch" is one pass of the policy (a round); ``sampler.epoch`` counts hardbatch epochs of N steps.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from hardbatch import batches, distributed
from hardbatch import step as step_core
from hardbatch.losses import LossFn, cross_entropy, target_of
from hardbatch.selection import HardBatchSampler
from hardbatch.training import CostMeter

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("hardbatch.integrations.lightning needs Lightning: pip install 'hardbatch[lightning]'") from e


class HardBatch(Callback):
    """Runs ``sampler``'s policy inside ``Trainer.fit``; see the module docstring for the three calls to make.

    ``loss_fn(outputs, batch)`` returns per-sample losses, shape (b,) (default: cross-entropy of class logits),
    from which the step's loss and the policy's signals are computed; ``outputs = forward(module, batch)``
    (default: ``module(x)`` for (x, y, ...), ``module(**batch)`` without its labels for a dict). A loss of another
    shape is refused at the first step. ``criterion(logits, y)``: the earlier per-sample loss argument, deprecated.
    """

    def __init__(self, sampler: HardBatchSampler, loss_fn: LossFn = cross_entropy,
                 forward: batches.Forward = batches.forward, *,
                 criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        if criterion is not None:
            warnings.warn("HardBatch(criterion=...) is deprecated: pass loss_fn(outputs, batch)", DeprecationWarning,
                          stacklevel=2)
            loss_fn = lambda outputs, batch: criterion(outputs, target_of(batch))  # noqa: E731
        self.sampler = sampler
        self.loss_fn = loss_fn
        self.forward = forward
        self.meter = CostMeter()  # what training spent (README "Cost"), logged as hardbatch/* metrics each epoch

    # -- the data -------------------------------------------------------------------------------------------------

    def loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        """A DataLoader over ``dataset`` that loads only the selected batches (this rank's share of each)."""
        return DataLoader(dataset, batch_sampler=distributed.LocalSlices(self.sampler), **kwargs)

    # -- the step -------------------------------------------------------------------------------------------------

    def training_loss(self, module: torch.nn.Module, batch: Any, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """The loss ``training_step`` returns for this rank's share ``batch`` of the pending global batch (0-d), or
        None. (``training_loss(module, x, y)``, the earlier call, still works and is deprecated.)

        The selection step is hardbatch's one step core (``hardbatch.step``), as in ``hardbatch train``: the same
        scoring pass, keep-masks, weights, cross-rank combination and cost counting. Under DDP each rank's loss is
        scaled so that DDP's gradient average is the gradient of the mean over the whole (kept) global batch.
        """
        if y is not None:
            warnings.warn("training_loss(module, x, y) is deprecated: pass the batch, training_loss(module, batch)",
                          DeprecationWarning, stacklevel=2)
            batch = (batch, y)
        chosen = step_core.select(self.sampler, module, batch, self.meter, batches.device_of(batch),
                                  loss_fn=self.loss_fn, forward=self.forward)
        if chosen is None:  # a scoring-only step, or a batch of which nothing was kept: already recorded
            return None
        losses = self.loss_fn(self.forward(module, chosen.batch), chosen.batch)
        loss = step_core.weighted_loss(chosen, losses)
        step_core.record(self.sampler, chosen, loss.detach(), losses.detach(), self.meter)
        return loss if chosen.scale == 1.0 else loss * chosen.scale

    # -- the callback ---------------------------------------------------------------------------------------------

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sampler.done:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log_dict({f"hardbatch/{name}": float(value) for name, value in self.meter.state_dict().items()
                            if name not in ("train_seconds",)}, rank_zero_only=True)
        if self.sampler.done:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "cost": self.meter.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        self.meter.load_state_dict(state.pop("cost", {}))
        self.sampler.load_state_dict(state)
