"""IES, instance-dependent early stopping (Yuan et al., ICLR 2025, arXiv 2502.07547): stop training mastered samples."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.functional import fill_batches
from hardbatch.params import check_params, param, Range
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register


@dataclass(frozen=True)
class IESParams:
    """The hyper-parameters of ``ies``, with the authors' CIFAR-10 defaults."""

    threshold: float = param(1e-3, "τ: a sample is mastered while its smoothed |second difference of loss| stays below it; 0: never",
                            range=Range(0.0))
    smoothing: int = param(3, "consecutive |second differences| of a sample's per-epoch losses averaged into one value",
                          range=Range(1, integer=True))
    patience: int = param(1, "latest smoothed values whose sum must be below τ for a sample to count as mastered",
                         range=Range(1, integer=True))


def mastered(history: torch.Tensor, counts: torch.Tensor, threshold: float, smoothing: int,
             patience: int) -> torch.Tensor:
    """IES's test: which samples are mastered, bool shape (n,).

    ``history``: shape (n, L), each sample's last L = smoothing + patience + 2 recorded losses, oldest first;
    ``counts``: shape (n,), how many losses each sample has had recorded. From them come the last smoothing +
    patience second differences d_t = l_t − 2·l_{t−1} + l_{t−2}; their |d| are averaged over sliding windows of
    ``smoothing``, and a sample is mastered when the sum of the latest ``patience`` averages is below
    ``threshold``. A sample with fewer than L losses is not mastered.
    """
    h = history.double()
    second = (h[:, 2:] - 2 * h[:, 1:-1] + h[:, :-2]).abs()
    averaged = second.unfold(1, smoothing, 1).mean(dim=2)  # (n, patience + 1) sliding means
    return (counts >= history.shape[1]) & (averaged[:, -patience:].sum(dim=1) < threshold)


@register
class IESPolicy(Policy):
    """Every sample keeps its last L = ``smoothing`` + ``patience`` + 2 recorded losses, one per epoch: its
    training loss when it was trained, its no-grad loss when it was not (below). Before each epoch, the
    samples passing :func:`mastered` are left out; the others, shuffled, are cut into batches of B (the
    remainder dropped; fewer than B are topped up with mastered ones into one batch). After the epoch, a
    no-grad scoring pass (``score_only`` steps, no optimizer step) gives every left-out sample its loss for
    that epoch, so mastery is re-tested every epoch and a sample whose loss starts moving again comes back.
    The scoring batches are full batches of B: the last one repeats left-out samples, whose second loss is
    ignored. An epoch is one training pass; losses are not reweighted.
    """

    name = "ies"
    axis = "threshold"
    Params = IESParams
    per_sample = True
    epoch_is_round = True

    def __init__(self, batches, *, threshold: float = 1e-3, smoothing: int = 3, patience: int = 1, **common):
        super().__init__(batches, **common)
        check_params(IESParams(threshold=threshold, smoothing=smoothing, patience=patience))
        self.threshold, self.smoothing, self.patience = threshold, smoothing, patience
        self.history = torch.zeros(self.num_samples, smoothing + patience + 2)
        self.counts = torch.zeros(self.num_samples, dtype=torch.long)
        self.to_score = torch.zeros(0, dtype=torch.long)  # left out of the epoch just planned, to score after it
        self.scoring = 0  # samples in the scoring pass under way (its batches repeat some to fill the last one)

    def mastered(self) -> torch.Tensor:
        """Bool (n,): the samples the next epoch leaves out."""
        return mastered(self.history.cpu(), self.counts.cpu(), self.threshold, self.smoothing, self.patience)

    def plan(self) -> list[Step]:
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
        return [Step(cut[i], i) for i in range(len(cut))]

    def _scoring_pass(self) -> list[Step]:
        m, b = len(self.to_score), self.batch_size
        count = math.ceil(m / b)
        flat = self.to_score[torch.arange(count * b) % m]
        self.scoring, self.to_score = m, torch.zeros(0, dtype=torch.long)
        return [Step(flat[i * b:(i + 1) * b], i, score_only=True) for i in range(count)]

    def observe(self, step: Step, loss, sample_losses=None) -> None:
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
        self.counts[samples] += 1

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": self.history.cpu().clone(), "counts": self.counts.cpu().clone(),
                "to_score": self.to_score.clone(), "scoring": self.scoring}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = state["history"].clone()
        self.counts = state["counts"].clone()
        self.to_score = state["to_score"].clone()
        self.scoring = int(state["scoring"])
