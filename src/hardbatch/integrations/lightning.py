"""Any hardbatch policy inside a PyTorch Lightning ``Trainer``, on one device or under its DDP strategy.

Needs ``pip install 'hardbatch[lightning]'``; the core package never imports this module. See
``examples/lightning_example.py``. The three pieces:

- ``hb = HardBatchCallback(sampler, loss_fn=...)``: a Lightning callback around a :class:`~hardbatch.HardBatchSampler`;
  it stops the Trainer when the sampler's budget is spent, times training for the cost meter and checkpoints the
  selection state with Lightning's checkpoints. ``loss_fn(outputs, batch)`` is any per-sample loss
  (``hardbatch.losses``; default cross-entropy).
- ``hb.loader(dataset, ...)``: the DataLoader; under DDP it yields this rank's contiguous share of every selected
  global mini-batch, so pass ``use_distributed_sampler=False`` to the Trainer (Lightning's DistributedSampler would
  shard the data its own way and break the shared plan).
- ``hb.training_loss(module, batch)`` in ``training_step``: the loss to return, for any batch ((x, y), (x, y, ...),
  a dict) and the module's forward as ``forward(module, batch)`` computes it: hardbatch's one selection step
  (``hardbatch.step.step_loss``), as in every other loop. It returns None for a scoring-only step and for a batch of
  which the policy keeps no sample; Lightning skips those.

A Lightning "epoch" is one pass of the policy (a round); ``sampler.epoch`` counts hardbatch epochs of N steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from hardbatch import batches, distributed
from hardbatch.cost import CostMeter
from hardbatch.errors import MissingExtra, UsageError
from hardbatch.losses import LossFn, cross_entropy
from hardbatch.sampler import HardBatchSampler
from hardbatch.step import step_loss

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.trainer.states import TrainerFn
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtra("hardbatch.integrations.lightning", "Lightning", "lightning") from None


class HardBatchCallback(Callback):
    """Runs ``sampler``'s policy inside ``Trainer.fit``; see the module docstring for the three calls to make.

    ``loss_fn(outputs, batch)`` returns per-sample losses, shape (b,) (default: cross-entropy of class logits),
    from which the step's loss and the policy's signals are computed; ``outputs = forward(module, batch)``
    (default: ``module(x)`` for (x, y, ...), ``module(**batch)`` without its labels for a dict). A loss of another
    shape is refused at the first step. ``sampler.meter`` counts the cost, logged as ``hardbatch/*`` metrics each
    epoch; its clocks (``train_seconds``, ``cpu_seconds``) run from each training epoch's start to its end, and
    pause while the Trainer validates (at the epoch's end, or within it with ``val_check_interval``).
    """

    def __init__(
        self, sampler: HardBatchSampler, loss_fn: LossFn = cross_entropy, forward: batches.Forward = batches.forward
    ):
        self.sampler = sampler
        self.loss_fn = loss_fn
        self.forward = forward

    @property
    def meter(self) -> CostMeter:
        """What training spent (``sampler.meter``)."""
        return self.sampler.meter

    # -- the data -------------------------------------------------------------------------------------------------

    def loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        """A DataLoader over ``dataset`` that loads only the selected batches (this rank's share of each)."""
        return DataLoader(dataset, batch_sampler=distributed.LocalSlices(self.sampler), **kwargs)

    # -- the step -------------------------------------------------------------------------------------------------

    def training_loss(self, module: torch.nn.Module, batch: Any) -> torch.Tensor | None:
        """The loss ``training_step`` returns for this rank's share ``batch`` of the pending global batch (0-d), or
        None: hardbatch's one step (``hardbatch.step.step_loss``), the same scoring pass, keep-masks, weights,
        cross-rank combination and cost counting as every other loop. Under DDP each rank's loss is scaled so that
        DDP's gradient average is the gradient of the mean over the whole (kept) global batch."""
        return step_loss(self.sampler, module, batch, loss_fn=self.loss_fn, forward=self.forward)

    # -- the callback ---------------------------------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Refuse, in one line, a Trainer on several devices that would put its DistributedSampler under
        ``hb.loader``'s batch sampler (Lightning's ``use_distributed_sampler=True``, its default)."""
        connector = getattr(trainer, "_accelerator_connector", None)
        if (
            stage == "fit"
            and getattr(connector, "use_distributed_sampler", False)
            and getattr(connector, "is_distributed", False)
        ):
            raise UsageError(
                "HardBatchCallback: pass use_distributed_sampler=False to the Trainer: hb.loader(...) "
                "already gives each device its share of every global batch the policy chose, and "
                "Lightning's DistributedSampler would shard the data its own way"
            )

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.meter.start()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self.meter.stop()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # Validation inside fit (at an epoch's end, or mid-epoch with val_check_interval): training goes on after
        # it. ``trainer.training`` is False here (the stage is still validating); the sanity check runs before
        # training starts.
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.meter.start()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.sampler.done:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.meter.stop()
        pl_module.log_dict(
            {f"hardbatch/{name}": float(value) for name, value in self.meter.state_dict().items()}, rank_zero_only=True
        )
        if self.sampler.done:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.sampler.load_state_dict(state_dict)
