"""SeTa (Zhou, Gao, Wang, CVPR 2025, arXiv 2503.13385): random pruning, loss clusters, an easy-to-hard window."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.errors import UsageError
from hardbatch.functional import fill_batches, kmeans_1d
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round, SampleScores, Step
from hardbatch.policies.registry import register


def window_size(groups: int, window: float) -> int:
    """w = round(groups · window) clusters, Python's round as in the authors' code (5 · 0.9 = 4.5 → 4)."""
    return round(groups * window)


@register
@dataclass(eq=False)
class SeTa(Policy):
    """Every sample's score is its last training loss (none before it is first trained). Each epoch e:

    1. **Random pruning:** a seeded permutation keeps its first ⌊(1 − r)·n⌋ samples (r = ``random_prune``).
    2. **Clusters:** the kept samples that have a score are split by k-means on that score into K = ``groups``
       clusters, sorted easy (low loss) to hard.
    3. **Sliding window:** from epoch 1 on, only clusters s .. s + w − 1 are trained, w = round(K·``window``),
       s = e mod (K − w + 1): the window moves one cluster harder each epoch and wraps back to the easiest.
       Epoch 0 trains every cluster. Kept samples without a score are always trained.
    4. **Annealing:** epochs e ≥ ⌊E·(1 − ``anneal``)⌋ skip steps 2-3 (random pruning only, as the authors'
       "partial annealing").

    The selected samples, shuffled, are cut into batches of B (the remainder dropped; fewer than B are topped up
    with unselected ones into one batch). Losses are not reweighted. An epoch is one such pass. The authors'
    defaults for CIFAR: prune 0.1, 5 groups, window 0.9.
    """

    random_prune: float = param(
        0.1,
        "fraction of all samples dropped at random each epoch before clustering",
        range=Range(0.0, 1.0, high_open=True),
        metavar="R",
    )
    groups: int = param(
        5,
        "k-means clusters of the kept samples by last loss, sorted easy to hard",
        range=Range(1, integer=True),
        metavar="K",
    )
    window: float = param(
        0.9,
        "fraction of the clusters trained each epoch: a window of round(groups·window) sliding easy to hard",
        range=Range(0.0, 1.0, low_open=True),
        metavar="W",
    )
    anneal: float = param(
        0.125,
        "final fraction of the epochs without clustering or window (random pruning only)",
        range=Range(0.0, 1.0),
        metavar="A",
    )

    name = "seta"
    axis = "random_prune"
    per_sample = True
    epoch_is_round = True

    def validate(self) -> None:
        """The check across fields (each field's own range is declared above)."""
        if window_size(self.groups, self.window) < 1:
            raise UsageError(
                f"SeTa: window {self.window} with groups {self.groups} makes a window of "
                f"round({self.groups} · {self.window}) = 0 clusters; use a larger window or more groups"
            )

    def setup(self) -> None:
        self.window_clusters = window_size(self.groups, self.window)
        self.scores = SampleScores(self.num_samples)

    @property
    def pruning_epochs(self) -> int:
        """Epochs 0 .. pruning_epochs - 1 cluster and slide the window; the rest only prune at random."""
        return math.floor(self.epochs * (1.0 - self.anneal) + 1e-9)

    def window_start(self, epoch: int) -> int:
        """The easiest cluster trained in ``epoch`` (1 <= epoch < pruning_epochs)."""
        return epoch % (self.groups - self.window_clusters + 1)

    def plan(self) -> Round:
        self.round += 1
        order = torch.randperm(self.num_samples, generator=self.generator)
        kept = order[: math.floor((1.0 - self.random_prune) * self.num_samples + 1e-9)]
        chosen = kept
        if 1 <= self.round < self.pruning_epochs:
            scores = self.scores.values.cpu()[kept]
            known = ~torch.isnan(scores)
            labels = kmeans_1d(scores[known], self.groups)
            start = self.window_start(self.round)
            in_window = torch.zeros(len(kept), dtype=torch.bool)
            in_window[known] = (labels >= start) & (labels < start + self.window_clusters)
            chosen = kept[in_window | ~known]
            chosen = chosen[torch.randperm(len(chosen), generator=self.generator)]
        unchosen = torch.ones(self.num_samples, dtype=torch.bool)
        unchosen[chosen] = False
        return Round.of(fill_batches(chosen, order[unchosen[order]], self.batch_size))

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        if sample_losses is None:
            raise RuntimeError("seta needs per-sample losses: record(loss, sample_losses)")
        self.scores.write(step.samples, sample_losses)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": self.scores.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scores.load_state_dict(state["scores"])
