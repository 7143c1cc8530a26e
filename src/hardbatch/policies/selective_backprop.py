"""Selective Backprop (Jiang et al. 2019, arXiv 1910.00762): back-propagate each sample with probability
percentile^β."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hardbatch.functional import percentiles
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round, Step
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class SelectiveBackprop(Policy):
    """Batches come as in ``uniform`` (reshuffled every epoch). The first epoch trains every sample
    (``warmup_epoch``) and records nothing. From then on the step core runs a no-grad forward of each loaded batch
    (in eval mode unless ``score_in_train_mode``); each sample's loss joins a running history of the last
    ``loss_history`` losses, and the sample is kept with probability p^``beta``, p being the fraction of that
    history strictly below its loss (at or below with ``count_ties``). The forward with gradient and the backward
    run on the kept samples only. When the draw keeps none, the batch is consumed without an optimizer step
    (``force_one``: the highest loss is trained alone instead). An epoch is one pass over the data, so it has at
    most N steps. While the losses' distribution is stable, percentiles are uniform on [0, 1], so β = 1 keeps
    about half of the samples, β = 2 a third, β = 3 a quarter (E[u^β] = 1/(β+1)).
    """

    beta: float = param(
        1.0,
        "keep a sample with probability percentile^β: while losses are stable 1 keeps about 1/2 "
        "of the samples, 2 about 1/3, 3 about 1/4",
        range=Range(0.0),
        metavar="β",
    )
    loss_history: int = param(
        1024, "number of recent losses the percentiles are taken in", range=Range(1, integer=True), metavar="H"
    )
    warmup_epoch: bool = param(
        True,
        "the first epoch trains every sample and records no loss history; selection "
        "starts in the second (as the authors' code)",
    )
    score_in_train_mode: bool = param(
        False,
        "score in training mode (BatchNorm batch statistics, buffers restored; "
        "hardbatch's earlier rule); off: in eval mode, as the authors' code",
    )
    force_one: bool = param(
        False,
        "when the draw keeps no sample, train the highest-loss one (hardbatch's earlier "
        "rule); off: the batch is skipped, as in the authors' code",
    )
    count_ties: bool = param(
        False,
        "a sample's percentile counts the history losses equal to its own too (<=, "
        "hardbatch's earlier rule); off: only smaller ones (<), as the authors' code",
    )
    accumulate: bool = param(
        False,
        "pool the kept samples of successive batches and take one optimizer step per B "
        "of them, as the authors' code does (about 1/(β+1) as many steps); off: one step "
        "per loaded batch on what it keeps",
    )

    name = "selective-backprop"
    scores_first = True
    epoch_is_round = True
    in_batch = True
    axis = "beta"

    @property
    def score_train_mode(self) -> bool:  # type: ignore[override]
        return self.score_in_train_mode

    @property
    def accumulates(self) -> bool:  # type: ignore[override]
        return self.accumulate

    def setup(self) -> None:
        self.history = torch.empty(0)

    def plan(self) -> Round:
        self.round += 1
        cut = self.shuffled_cut()
        if self.round == 0 and self.warmup_epoch:
            # The warm-up epoch's steps are weighed before loading: every sample trained, nothing scored.
            return Round.of(cut, weights=torch.ones(cut.shape), preset=torch.ones(len(cut), dtype=torch.bool))
        return Round.of(cut)

    def in_batch_preset(self, step: int, epoch: int) -> bool:
        """The warm-up epoch trains every batch whole."""
        return epoch == 0 and self.warmup_epoch

    def keep_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Add ``scores`` (shape (b,)) to the history, then return percentile^β per sample, shape (b,)."""
        scores = scores.detach().float()
        self.history = torch.cat([self.history.to(scores.device), scores])[-self.loss_history :]
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
