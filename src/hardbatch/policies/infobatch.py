"""InfoBatch (Qin et al., ICLR 2024, arXiv 2303.04947): each epoch, prune part of the well-learned samples, rescale
the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.functional import infobatch_prune
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round, SampleScores, Step
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class InfoBatch(Policy):
    """Every sample's score is its last training loss (none before it is first trained). At the start of
    each epoch, round(r·m) of the m samples scoring below the mean are drawn at random and pruned: they
    are never loaded that epoch. The kept below-mean samples' losses are weighted 1 / (1 − r), so the
    expected gradient is unchanged. The rest is shuffled and cut into batches of B (the remainder
    dropped). Only the first ⌊E·(1 − ``anneal``)⌋ epochs prune, as in the authors' code; the rest train on
    all the data with weight 1 (``keep_weights_in_anneal``: the last pruning epoch's weights where the authors'
    code keeps them, that is when E·(1 − ``anneal``) is not whole). An epoch is one such pass, so pruned epochs
    have fewer than N steps.
    """

    prune_ratio: float = param(
        0.5,
        "fraction r of the below-mean-loss samples pruned each epoch, in [0, 1); the kept ones are weighted 1/(1-r)",
        range=Range(0.0, 1.0, high_open=True),
        metavar="R",
    )
    anneal: float = param(
        0.125,
        "final fraction of the epochs trained on all the data, in [0, 1]: the first ⌊E·(1-A)⌋ epochs prune",
        range=Range(0.0, 1.0),
        metavar="A",
    )
    keep_weights_in_anneal: bool = param(
        False,
        "the annealing epochs keep the last pruning epoch's loss weights when "
        "E·(1-A) is not a whole number, as the authors' code does by mistake "
        "(it resets them when its epoch counter hits E·(1-A) exactly); off: "
        "weight 1",
    )

    name = "infobatch"
    per_sample = True
    epoch_is_round = True
    axis = "prune_ratio"

    def setup(self) -> None:
        self.scores = SampleScores(self.num_samples)
        self.boosted = torch.zeros(self.num_samples, dtype=torch.bool)  # weighted in the last pruning epoch

    @property
    def pruning_epochs(self) -> int:
        """Epochs 0 .. pruning_epochs - 1 prune, ⌊E·(1 − anneal)⌋ of them; the rest train on all the data."""
        # The epsilon keeps whole products whole: 10 · (1 − 0.9) is 0.9999999999999998 in floating point, not 1.
        return math.floor(self.epochs * (1.0 - self.anneal) + 1e-9)

    @property
    def _whole_pruning_span(self) -> bool:
        """Whether E·(1 − anneal) is a whole number: the authors' epoch counter then equals it exactly once, and
        their code resets the weights there; otherwise it never does."""
        span = self.epochs * (1.0 - self.anneal)
        return abs(span - round(span)) < 1e-9

    def plan(self) -> Round:
        self.round += 1
        if self.round < self.pruning_epochs and self.prune_ratio > 0:
            kept, boosted = infobatch_prune(self.scores.values.cpu(), self.prune_ratio, self.generator)
            self.boosted = torch.zeros(self.num_samples, dtype=torch.bool)
            self.boosted[kept[boosted]] = True
        else:
            kept = torch.randperm(self.num_samples, generator=self.generator)
            keep = self.keep_weights_in_anneal and not self._whole_pruning_span
            boosted = self.boosted[kept] if keep else torch.zeros(len(kept), dtype=torch.bool)
        weights = torch.where(boosted, torch.tensor(1.0 / (1.0 - self.prune_ratio)), torch.tensor(1.0))
        # The remainder is dropped, as in every cut; fewer than B kept samples make one shorter batch (never an
        # empty epoch).
        b = min(self.batch_size, len(kept))
        count = len(kept) // b
        return Round.of(kept[: count * b].view(count, b), weights=weights[: count * b].view(count, b))

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        assert sample_losses is not None  # per_sample: the sampler refuses a step without them
        self.scores.write(step.samples, sample_losses)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": self.scores.state_dict(), "boosted": self.boosted.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scores.load_state_dict(state["scores"])
        self.boosted = state["boosted"].clone()
