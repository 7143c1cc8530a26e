"""Any hardbatch policy inside a PyTorch Lightning ``Trainer``, on one device or under its DDP strategy.

Needs ``pip install 'hardbatch[lightning]'``; the core package never imports this module. See
``examples/lightning_example.py``. The three pieces:

- ``hb = HardBatch(sampler)``: a Lightning callback around a :class:`~hardbatch.HardBatchSampler`; it stops the
  Trainer when the sampler's budget is spent and checkpoints the selection state with Lightning's checkpoints.
- ``hb.loader(dataset, ...)``: the DataLoader; under DDP it yields this rank's contiguous share of every selected
  global mini-batch, so pass ``use_distributed_sampler=False`` to the Trainer (Lightning's DistributedSampler would
  shard the data its own way and break the shared plan).
- ``hb.training_loss(module, x, y)`` in ``training_step``: the loss to return. It runs the policy's no-grad scoring
  pass when it has one, applies its keep-masks and weights, and records the step's losses after combining them
  across ranks (per-sample losses gathered, batch losses averaged), so every rank holds the same tables and plans
  the same next round. It returns None for a scoring-only step (``--rescore``), which Lightning skips.

A Lightning "epoch" is one pass of the policy (a round); ``sampler.epoch`` counts hardbatch epochs of N steps.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hardbatch import distributed
from hardbatch.selection import HardBatchSampler
from hardbatch.training import score_losses

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("hardbatch.integrations.lightning needs Lightning: pip install 'hardbatch[lightning]'") from e

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (b, C), y (b,)) -> per-sample losses (b,)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


class HardBatch(Callback):
    """Runs ``sampler``'s policy inside ``Trainer.fit``; see the module docstring for the three calls to make.

    ``criterion(logits, y)`` returns per-sample losses (default: cross-entropy), from which the step's loss and
    the policy's signals are computed.
    """

    def __init__(self, sampler: HardBatchSampler, criterion: Criterion = cross_entropy):
        self.sampler = sampler
        self.criterion = criterion

    # -- the data -------------------------------------------------------------------------------------------------

    def loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        """A DataLoader over ``dataset`` that loads only the selected batches (this rank's share of each)."""
        return DataLoader(dataset, batch_sampler=distributed.LocalSlices(self.sampler), **kwargs)

    # -- the step -------------------------------------------------------------------------------------------------

    def training_loss(self, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """The loss ``training_step`` returns for this rank's share (x, y) of the pending global batch (0-d), or None.

        Under DDP each rank's loss is scaled so that DDP's gradient average is the gradient of the mean over the
        whole (kept) global batch.
        """
        sampler, policy = self.sampler, self.sampler.policy
        step = sampler.pending
        total = len(step.samples)
        rows = distributed.local_rows(total)
        weights, scale, count = None, 1.0, len(y)
        if step.score_only or policy.needs_scores(step):
            scores = distributed.all_gather(score_losses(module, x, y))
            if step.score_only:
                sampler.record(scores.mean(), scores)
                return None
            kept, weights, scale, total = distributed.kept_share(sampler.weights(scores) > 0, y.device)
            count = 0 if weights is not None else len(kept)
            x, y = x[kept.to(x.device)], y[kept.to(y.device)]
        elif step.weights is not None:  # None: the plain mean, as in training.fit
            weights = step.weights[rows].to(y.device)
        losses = self.criterion(module(x), y)
        loss = losses.mean() if weights is None else (losses * weights).mean()
        sample_losses = distributed.all_gather(losses.detach()) if policy.per_sample else None
        sampler.record(distributed.global_mean(loss.detach(), count, total), sample_losses)
        return loss if scale == 1.0 else loss * scale

    # -- the callback ---------------------------------------------------------------------------------------------

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sampler.done:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.sampler.done:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.sampler.load_state_dict(state_dict)
