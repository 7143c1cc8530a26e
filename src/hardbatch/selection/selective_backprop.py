"""Selective Backprop (Jiang et al. 2019, arXiv 1910.00762): back-propagate each sample with probability percentile^β."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hardbatch.functional import percentiles
from hardbatch.params import param, Range
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register


@dataclass(frozen=True)
class SelectiveBackpropParams:
    beta: float = param(1.0, "keep a sample with probability percentile^β: while losses are stable 1 keeps about 1/2 "
                             "of the samples, 2 about 1/3, 3 about 1/4", range=Range(0.0), metavar="β")
    loss_history: int = param(1024, "number of recent losses the percentiles are taken in",
                              range=Range(1, integer=True), metavar="H")
    warmup_epoch: bool = param(True, "the first epoch trains every sample and records no loss history; selection "
                                     "starts in the second (as the authors' code)", legacy=False)
    score_in_train_mode: bool = param(False, "score in training mode (BatchNorm batch statistics, buffers restored; "
                                             "hardbatch's earlier rule); off: in eval mode, as the authors' code",
                                      legacy=True)
    force_one: bool = param(False, "when the draw keeps no sample, train the highest-loss one (hardbatch's earlier "
                                   "rule); off: the batch is skipped, as in the authors' code", legacy=True)
    count_ties: bool = param(False, "a sample's percentile counts the history losses equal to its own too (<=, "
                                    "hardbatch's earlier rule); off: only smaller ones (<), as the authors' code",
                                    legacy=True)


@register
class SelectiveBackpropPolicy(Policy):
    """Batches come as in ``uniform`` (reshuffled every epoch). The first epoch trains every sample
    (``warmup_epoch``) and records nothing. From then on the loop runs a no-grad forward of each loaded batch (in
    eval mode unless ``score_in_train_mode``); each sample's loss joins a running history of the last
    ``loss_history`` losses, and the sample is kept with probability p^``beta``, p being the fraction of that
    history strictly below its loss (at or below with ``count_ties``). The forward with gradient and the backward
    run on the kept samples only. When the draw keeps none, the batch is consumed without an optimizer step
    (``force_one``: the highest loss is trained alone instead). An epoch is one pass over the data, so it has at
    most N steps. While the losses' distribution is stable, percentiles are uniform on [0, 1], so β = 1 keeps
    about half of the samples, β = 2 a third, β = 3 a quarter (E[u^β] = 1/(β+1)).
    """

    name = "selective-backprop"
    scores_first = True
    epoch_is_round = True
    axis = "beta"
    Params = SelectiveBackpropParams

    def __init__(self, batches, *, beta: float = 1.0, loss_history: int = 1024, warmup_epoch: bool = True,
                 score_in_train_mode: bool = False, force_one: bool = False, count_ties: bool = False, **common):
        super().__init__(batches, **common)
        self.beta = beta
        self.history_size = loss_history
        self.warmup_epoch = warmup_epoch
        self.score_train_mode = score_in_train_mode
        self.force_one = force_one
        self.count_ties = count_ties
        self.history = torch.empty(0)

    def plan(self) -> list[Step]:
        self.round += 1
        cut = self._shuffled_cut()
        # The warm-up epoch's steps are weighed before loading: every sample trained, nothing scored.
        warmup = self.round == 0 and self.warmup_epoch
        return [Step(cut[b], b, weights=torch.ones(self.batch_size) if warmup else None)
                for b in range(self.num_batches)]

    def needs_scores(self, step: Step) -> bool:
        """False for a step of the warm-up epoch (already weighed): the loop may skip its no-grad pass."""
        return step.weights is None

    def keep_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Add ``scores`` (shape (b,)) to the history, then return percentile^β per sample, shape (b,)."""
        scores = scores.detach().float()
        self.history = torch.cat([self.history.to(scores.device), scores])[-self.history_size:]
        return percentiles(scores, self.history, ties=self.count_ties) ** self.beta

    def select(self, step: Step, scores: torch.Tensor) -> torch.Tensor:
        probability = self.keep_probabilities(scores)
        draw = torch.rand(len(scores), generator=self.generator).to(probability.device)
        keep = draw < probability
        if self.force_one:
            keep[scores.argmax()] |= ~keep.any()
        return keep.float()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "history": self.history.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = state["history"].clone()
