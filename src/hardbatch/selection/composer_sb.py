"""MosaicML Composer's Selective Backprop: in a window of training, back-propagate ⌊keep·b⌋ samples by rank."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.errors import UsageError
from hardbatch.params import check_params, param, Range
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register


@dataclass(frozen=True)
class ComposerSBParams:
    """The hyper-parameters of ``composer-sb``, with Composer's defaults."""

    start: float = param(0.5, "fraction of the step budget after which selection starts",
                        range=Range(0.0, 1.0, high_open=True))
    end: float = param(0.9, "fraction of the step budget at which selection stops",
                      range=Range(0.0, 1.0, low_open=True))
    keep: float = param(0.5, "fraction of each batch back-propagated while selecting (⌊keep·b⌋, at least 1)",
                       range=Range(0.0, 1.0, low_open=True))
    interrupt: int = param(2, "every interrupt-th batch of an epoch trains in full, even inside the window; 0: never",
                          range=Range(0, integer=True))

    def validate(self) -> None:
        """The check across fields (each field's own range is declared above; ``check_params`` runs both)."""
        if self.start >= self.end:
            raise UsageError(f"--start must be below --end, got start {self.start} and end {self.end}")


def rank_percentiles(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Composer's percentile of each rank: the i-th lowest of b losses (0-based) gets (i + 0.5) / b.

    ``scores``: shape (b,). Returns (order, percentile): ``order`` the positions sorted by ascending loss (ties
    keep their position order), and ``percentile[i]`` that of rank i, both shape (b,).
    """
    order = torch.sort(scores, stable=True).indices
    return order, (torch.arange(len(scores), dtype=torch.float64) + 0.5) / len(scores)


@register
class ComposerSBPolicy(Policy):
    """Batches come as in ``uniform`` (a fresh seeded cut every epoch). Step s (0-based, of the budget
    T = epochs·N) selects when keep < 1, start ≤ s / T < end, and, with ``interrupt`` = I > 0,
    (s mod N + 1) mod I ≠ 0: Composer counts the batch within the epoch, so I = 2 trains the 2nd, 4th, ...
    batch of every epoch in full. A selecting step ranks the batch's no-grad losses and draws ⌊keep·b⌋
    (at least 1) of them without replacement, rank i with weight ((i + 0.5) / b)^(1/keep − 1); those get
    weight 1, the rest 0. Every other step trains every sample: ``plan`` presets its weights to 1, and
    :meth:`needs_scores` tells the loop to skip its scoring forward.
    """

    name = "composer-sb"
    axis = "keep"
    Params = ComposerSBParams
    scores_first = True

    def __init__(self, batches, *, start: float = 0.5, end: float = 0.9, keep: float = 0.5, interrupt: int = 2,
                 **common):
        super().__init__(batches, **common)
        check_params(ComposerSBParams(start=start, end=end, keep=keep, interrupt=interrupt))
        self.start, self.end, self.keep, self.interrupt = start, end, keep, interrupt
        self.total_steps = self.epochs * self.num_batches
        self.steps = 0  # optimizer steps observed so far

    def selects(self, step: int) -> bool:
        """Does optimizer step ``step`` (0-based over the whole budget) choose samples by loss?"""
        in_window = self.start <= step / self.total_steps < self.end
        interrupted = self.interrupt > 0 and (step % self.num_batches + 1) % self.interrupt == 0
        return self.keep < 1.0 and in_window and not interrupted

    def needs_scores(self, step: Step) -> bool:
        """False for a step that trains its whole batch (or was already weighed): the loop may skip its no-grad pass."""
        return step.weights is None

    def plan(self) -> list[Step]:
        self.round += 1
        cut = self._shuffled_cut()
        # Every step of the previous pass was observed before this plan, so step b here is step self.steps + b.
        return [Step(cut[b], b, weights=None if self.selects(self.steps + b) else torch.ones(self.batch_size))
                for b in range(self.num_batches)]

    def select(self, step: Step, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.detach().float().cpu()
        order, percentile = rank_percentiles(scores)
        count = max(1, math.floor(self.keep * len(scores) + 1e-9))
        chosen = torch.multinomial(percentile ** (1.0 / self.keep - 1.0), count, replacement=False,
                                   generator=self.generator)
        weights = torch.zeros(len(scores))
        weights[order[chosen]] = 1.0
        return weights

    def observe(self, step: Step, loss, sample_losses=None) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps = int(state["steps"])
