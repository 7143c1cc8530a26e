"""MosaicML Composer's Selective Backprop: in a window of training, back-propagate ⌊keep·b⌋ samples by rank."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hardbatch.errors import UsageError
from hardbatch.functional import composer_select
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round, Step
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class ComposerSB(Policy):
    """Batches come as in ``uniform`` (a fresh seeded cut every epoch). Step s (0-based, of the budget
    T = epochs·N) selects when keep < 1, start ≤ s / T < end, and, with ``interrupt`` = I > 0,
    (s mod N + 1) mod I ≠ 0: Composer counts the batch within the epoch, so I = 2 trains the 2nd, 4th, ...
    batch of every epoch in full. A selecting step ranks the batch's no-grad losses and draws ⌊keep·b⌋
    (at least 1) of them without replacement, rank i with weight ((i + 0.5) / b)^(1/keep − 1)
    (``functional.composer_select``); those get weight 1, the rest 0. Every other step trains every sample: ``plan``
    presets its weights to 1, and the step core skips its scoring forward. Defaults are Composer's.
    """

    start: float = param(
        0.5,
        "fraction of the step budget after which selection starts",
        range=Range(0.0, 1.0, high_open=True),
        metavar="F",
    )
    end: float = param(
        0.9, "fraction of the step budget at which selection stops", range=Range(0.0, 1.0, low_open=True), metavar="F"
    )
    keep: float = param(
        0.5,
        "fraction of each batch back-propagated while selecting (⌊keep·b⌋, at least 1)",
        range=Range(0.0, 1.0, low_open=True),
        metavar="F",
    )
    interrupt: int = param(
        2,
        "every interrupt-th batch of an epoch trains in full, even inside the window; 0: never",
        range=Range(0, integer=True),
        metavar="I",
    )
    score_moves_batchnorm: bool = param(
        False,
        "the scoring forward (training mode) leaves BatchNorm's running "
        "statistics moved, as Composer's code does; off: restored (the "
        "selection is the same; evaluation can differ)",
    )

    name = "composer-sb"
    axis = "keep"
    scores_first = True
    in_batch = True

    def validate(self) -> None:
        """The check across fields (each field's own range is declared above)."""
        if self.start >= self.end:
            raise UsageError(f"ComposerSB: start must be below end, got start {self.start} and end {self.end}")

    def setup(self) -> None:
        self.total_steps = self.epochs * self.num_batches
        self.steps = 0  # optimizer steps observed so far

    def selects(self, step: int) -> bool:
        """Does optimizer step ``step`` (0-based over the whole budget) choose samples by loss?"""
        in_window = self.start <= step / self.total_steps < self.end
        interrupted = self.interrupt > 0 and (step % self.num_batches + 1) % self.interrupt == 0
        return self.keep < 1.0 and in_window and not interrupted

    def in_batch_preset(self, step: int, epoch: int) -> bool:
        return not self.selects(step)

    def plan(self) -> Round:
        self.round += 1
        cut = self.shuffled_cut()
        # Every step of the previous pass was observed before this plan, so step b here is step self.steps + b.
        steps = self.steps + torch.arange(len(cut), dtype=torch.float64)
        in_window = (self.start <= steps / self.total_steps) & (steps / self.total_steps < self.end)
        interrupted = (steps % self.num_batches + 1) % self.interrupt == 0 if self.interrupt > 0 else False
        selecting = in_window & ~torch.as_tensor(interrupted) & (self.keep < 1.0)
        return Round.of(cut, weights=torch.ones(cut.shape), preset=~selecting)

    def select(self, step: Step, scores: torch.Tensor) -> torch.Tensor:
        return composer_select(scores.detach().float().cpu(), self.keep, self.generator)

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps = int(state["steps"])
