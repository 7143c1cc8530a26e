"""IES, instance-dependent early stopping (Yuan et al., ICLR 2025, arXiv 2502.07547): stop training mastered samples."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.functional import fill_batches, mastered
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round, Step
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class IES(Policy):
    """Every sample keeps its last L = ``smoothing`` + ``patience`` + 2 recorded losses, one per epoch: its
    training loss when it was trained, its no-grad loss when it was not (below). Before each epoch, the
    samples passing :func:`hardbatch.functional.mastered` are left out; the others, shuffled, are cut into batches
    of B (the remainder dropped; fewer than B are topped up with mastered ones into one batch). After the epoch, a
    no-grad scoring pass (``score_only`` steps, no optimizer step) gives every left-out sample its loss for
    that epoch, so mastery is re-tested every epoch and a sample whose loss starts moving again comes back.
    The scoring batches are full batches of B: the last one repeats left-out samples, whose second loss is
    ignored. An epoch is one training pass; losses are not reweighted. Defaults: the authors' for CIFAR-10.
    """

    threshold: float = param(
        1e-3,
        "τ: a sample is mastered while its smoothed |second difference of loss| stays below it; 0: never",
        range=Range(0.0),
        metavar="τ",
    )
    smoothing: int = param(
        3,
        "consecutive |second differences| of a sample's per-epoch losses averaged into one value",
        range=Range(1, integer=True),
        metavar="S",
    )
    patience: int = param(
        1,
        "latest smoothed values whose sum must be below τ for a sample to count as mastered",
        range=Range(1, integer=True),
        metavar="P",
    )

    name = "ies"
    axis = "threshold"
    per_sample = True
    epoch_is_round = True

    def setup(self) -> None:
        self.history = torch.zeros(self.num_samples, self.smoothing + self.patience + 2)
        # How many losses each sample has recorded, up to L (the test only asks whether it has L): one byte each.
        self.counts = torch.zeros(self.num_samples, dtype=torch.uint8)
        self.to_score = torch.zeros(0, dtype=torch.long)  # left out of the epoch just planned, to score after it
        self.scoring = 0  # samples in the scoring pass under way (its batches repeat some to fill the last one)

    def mastered(self) -> torch.Tensor:
        """Bool (n,): the samples the next epoch leaves out."""
        return mastered(self.history.cpu(), self.counts.cpu(), self.threshold, self.smoothing, self.patience)

    def plan(self) -> Round:
        if len(self.to_score):
            return self._scoring_pass()
        self.round += 1
        out = self.mastered()
        active, left_out = (~out).nonzero().flatten(), out.nonzero().flatten()
        active = active[torch.randperm(len(active), generator=self.generator)]
        left_out = left_out[torch.randperm(len(left_out), generator=self.generator)]
        cut = fill_batches(active, left_out, self.batch_size)
        out[cut.flatten()] = False  # a left-out sample topping up the one batch is trained, so not scored
        self.to_score = out.nonzero().flatten()
        return Round.of(cut)

    def _scoring_pass(self) -> Round:
        m, b = len(self.to_score), self.batch_size
        count = math.ceil(m / b)
        flat = self.to_score[torch.arange(count * b) % m]
        self.scoring, self.to_score = m, torch.zeros(0, dtype=torch.long)
        return Round.of(flat.view(count, b), score_only=True)

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        if sample_losses is None:
            raise RuntimeError("ies needs per-sample losses: record(loss, sample_losses)")
        values = sample_losses.detach().float()
        samples = step.samples.to(values.device)
        if step.score_only:  # only the first pass over the left-out samples counts, not the repeats
            real = min(self.batch_size, self.scoring - step.batch * self.batch_size)
            samples, values = samples[:real], values[:real]
        # Kept beside the losses, so recording forces no device sync.
        self.history, self.counts = self.history.to(values.device), self.counts.to(values.device)
        self.history[samples] = torch.cat([self.history[samples, 1:], values[:, None]], dim=1)
        self.counts[samples] = (self.counts[samples] + 1).clamp(max=self.history.shape[1])

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "history": self.history.cpu().clone(),
            "counts": self.counts.cpu().clone(),
            "to_score": self.to_score.clone(),
            "scoring": self.scoring,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = state["history"].clone()
        self.counts = state["counts"].clone()
        self.to_score = state["to_score"].clone()
        self.scoring = int(state["scoring"])
