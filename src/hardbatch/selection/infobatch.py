"""InfoBatch (Qin et al., ICLR 2024, arXiv 2303.04947): each epoch, prune part of the well-learned samples, rescale the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.selection.functional import infobatch_prune
from hardbatch.selection.params import Range, param
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register


@dataclass(frozen=True)
class InfoBatchParams:
    prune_ratio: float = param(0.5, "fraction r of the below-mean-loss samples pruned each epoch, in [0, 1); the kept "
                                    "ones are weighted 1/(1-r)", range=Range(0.0, 1.0, high_open=True), metavar="R")
    anneal: float = param(0.125, "final fraction of the epochs trained on all the data, in [0, 1]",
                          range=Range(0.0, 1.0), metavar="A")


@register
class InfoBatchPolicy(Policy):
    """Every sample's score is its last training loss (none before it is first trained). At the start of
    each epoch, round(r·m) of the m samples scoring below the mean are drawn at random and pruned: they
    are never loaded that epoch. The kept below-mean samples' losses are weighted 1 / (1 − r), so the
    expected gradient is unchanged. The rest is shuffled and cut into batches of B (the remainder
    dropped). No pruning in the final ``anneal`` fraction of the epochs. An epoch is one such pass, so
    pruned epochs have fewer than N steps.
    """

    name = "infobatch"
    per_sample = True
    epoch_is_round = True
    axis = "prune_ratio"
    Params = InfoBatchParams

    def __init__(self, batches, *, prune_ratio: float = 0.5, anneal: float = 0.125, **common):
        super().__init__(batches, **common)
        self.ratio = prune_ratio
        self.anneal = anneal
        self.scores = torch.full((self.num_samples,), float("nan"))

    @property
    def pruning_epochs(self) -> int:
        """Epochs 0 .. pruning_epochs - 1 prune; the rest train on all the data."""
        return math.ceil(self.epochs * (1.0 - self.anneal) - 1e-9)

    def plan(self) -> list[Step]:
        self.round += 1
        if self.round < self.pruning_epochs and self.ratio > 0:
            kept, boosted = infobatch_prune(self.scores.cpu(), self.ratio, self.generator)
        else:
            kept = torch.randperm(self.num_samples, generator=self.generator)
            boosted = torch.zeros(len(kept), dtype=torch.bool)
        weights = torch.where(boosted, torch.tensor(1.0 / (1.0 - self.ratio)), torch.tensor(1.0))
        b = self.batch_size
        count = max(1, len(kept) // b)  # the remainder is dropped, as in every cut; never an empty epoch
        return [Step(kept[i * b:(i + 1) * b], i, weights=weights[i * b:(i + 1) * b]) for i in range(count)]

    def observe(self, step: Step, loss, sample_losses=None) -> None:
        values = sample_losses.detach().float()
        self.scores = self.scores.to(values.device)
        self.scores[step.samples.to(values.device)] = values

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": self.scores.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scores = state["scores"].clone()
