"""Batch Loss Score (Zhou et al., CVPR 2026, arXiv 2604.04681): InfoBatch pruning scored from batch-mean losses only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hardbatch.functional import batch_loss_scores, batch_mean_weights
from hardbatch.params import Range, param
from hardbatch.policies.base import Round, SampleScores, Step
from hardbatch.policies.infobatch import InfoBatch
from hardbatch.policies.registry import register


class BatchLossScores(SampleScores):
    """Each sample's Batch Loss Score, shape (n,), 0 before its first batch (as the authors' code starts them).

    ``write`` only remembers a step's samples and its loss (no tensor operation, no device sync); the moving averages
    are updated in one operation when ``values`` is read (at each plan). A round never holds a sample twice, so each
    sample is updated at most once between two reads and the order of the updates does not matter.
    """

    def __init__(self, num_samples: int, alpha: float):
        self.alpha = alpha
        self._values = torch.zeros(num_samples)
        self._unwritten = []  # (samples, loss, weight) of each step since the last read

    def write(self, samples: torch.Tensor, loss: torch.Tensor | float, weight: torch.Tensor | float = 1.0) -> None:
        """Record that ``samples`` (b,) were trained in a batch whose mean loss times ``weight`` is ``loss`` (0-d)."""
        self._unwritten.append((samples, loss.detach() if isinstance(loss, torch.Tensor) else loss, weight))

    @property
    def values(self) -> torch.Tensor:
        """The scores, shape (n,), with every written step applied."""
        if self._unwritten:
            steps, losses, weights = zip(*self._unwritten, strict=True)
            if all(isinstance(loss, torch.Tensor) for loss in losses):
                trained = torch.stack([loss.float().reshape(()) for loss in losses]).cpu()  # one sync a round
            else:
                trained = torch.tensor([float(loss) for loss in losses])
            batch_losses = trained / torch.tensor([float(w) for w in weights])
            counts = torch.tensor([len(s) for s in steps])
            samples = torch.cat(steps)
            self._values[samples] = batch_loss_scores(
                self._values[samples], batch_losses.repeat_interleave(counts), self.alpha
            )
            self._unwritten = []
        return self._values

    def state_dict(self) -> torch.Tensor:
        return self.values.clone()

    def load_state_dict(self, values: torch.Tensor) -> None:
        self._values, self._unwritten = values.clone(), []


@register
@dataclass(eq=False)
class BLS(InfoBatch):
    """InfoBatch's pruning (see ``InfoBatch``) on Batch Loss Scores, as the authors' ``BLS`` wraps their InfoBatch.
    Each sample's score starts at 0 and, after every step that trains it, becomes α·s + (1 − α)·L, L the unweighted
    mean loss of that step's batch (``functional.batch_loss_scores``): no per-sample loss is needed. Each epoch
    prunes round(r·m) of the m samples scoring below the mean of all n scores (those never trained yet, at 0,
    included), while the first ⌊E·(1 − ``anneal``)⌋ epochs prune; the first epoch prunes none (all scores are 0). A
    step's loss is its batch's mean loss times the mean of its samples' InfoBatch weights (1/(1 − r) for the kept
    below-mean ones, 1 otherwise), as the authors' code scales it (``functional.batch_mean_weights``). An epoch is
    one pass over the kept samples, cut into batches of B (the remainder dropped).
    """

    prune_ratio: float = param(
        0.5,
        "fraction r of the below-mean-score samples pruned each epoch, in [0, 1); each "
        "batch's mean loss is weighted by the mean of its samples' weights, 1/(1-r) for "
        "the kept below-mean ones",
        range=Range(0.0, 1.0, high_open=True),
        metavar="R",
    )
    alpha: float = param(
        0.9,
        "α of the score's moving average s <- α·s + (1-α)·(mean loss of the batch): the "
        "authors' code's 0.9 (their README shows 0.7)",
        range=Range(0.0, 1.0, high_open=True),
        metavar="ALPHA",
    )

    name = "bls"
    per_sample = False
    # The defaults act on tiny data: at 4 epochs, epochs 1 and 2 prune (⌊4 · 0.875⌋ = 3 pruning epochs, the first
    # prunes nothing).
    example: ClassVar[dict[str, Any]] = {}

    def setup(self) -> None:
        super().setup()
        self.batch_scores = BatchLossScores(self.num_samples, self.alpha)
        self.scores = self.batch_scores  # what InfoBatch prunes by

    def plan(self) -> Round:
        planned = super().plan()
        assert planned.samples is not None and planned.weights is not None  # InfoBatch's rounds hold both
        return Round.of(planned.samples, weights=batch_mean_weights(planned.weights))

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        # The loss recorded is the trained one, mean(l)·w for the step's one weight w; the score takes mean(l), the
        # unweighted batch loss, as the authors' code does.
        self.batch_scores.write(step.samples, loss, 1.0 if step.weights is None else step.weights[0])
