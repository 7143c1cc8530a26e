"""Selective Backprop (Jiang et al. 2019, arXiv 1910.00762): back-propagate each sample with probability percentile^β."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hardbatch.selection.functional import percentiles
from hardbatch.selection.params import Range, param
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register


@dataclass(frozen=True)
class SelectiveBackpropParams:
    beta: float = param(1.0, "keep a sample with probability percentile^β: while losses are stable 1 keeps about 1/2 "
                             "of the samples, 2 about 1/3, 3 about 1/4", range=Range(0.0), metavar="β")
    loss_history: int = param(1024, "number of recent losses the percentiles are taken in",
                              range=Range(1, integer=True), metavar="H")


@register
class SelectiveBackpropPolicy(Policy):
    """Batches come as in ``uniform`` (reshuffled every epoch). Before each step the loop runs a no-grad
    forward of the loaded batch; each sample's loss joins a running history of the last ``history``
    losses, and the sample is kept with probability (its percentile in that history)^``beta``. The
    forward with gradient and the backward run on the kept samples only (at least one: the highest
    loss when the draw keeps none). While the losses' distribution is stable, percentiles are uniform on
    [0, 1], so β = 1 keeps about half of the samples, β = 2 a third, β = 3 a quarter (E[u^β] = 1/(β+1)).
    """

    name = "selective-backprop"
    scores_first = True
    axis = "beta"
    Params = SelectiveBackpropParams

    def __init__(self, batches, *, beta: float = 1.0, loss_history: int = 1024, **common):
        super().__init__(batches, **common)
        self.beta = beta
        self.history_size = loss_history
        self.history = torch.empty(0)
        self.kept = 0

    def plan(self) -> list[Step]:
        self.round += 1
        cut = self._shuffled_cut()
        return [Step(cut[b], b) for b in range(self.num_batches)]

    def keep_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Add ``scores`` (shape (b,)) to the history, then return percentile^β per sample, shape (b,)."""
        scores = scores.detach().float()
        self.history = torch.cat([self.history.to(scores.device), scores])[-self.history_size:]
        return percentiles(scores, self.history) ** self.beta

    def select(self, step: Step, scores: torch.Tensor) -> torch.Tensor:
        probability = self.keep_probabilities(scores)
        draw = torch.rand(len(scores), generator=self.generator).to(probability.device)
        keep = draw < probability
        keep[scores.argmax()] |= ~keep.any()  # never an empty step
        return keep.float()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": self.history.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = state["history"].clone()
