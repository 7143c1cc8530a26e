"""SeTa (Zhou, Gao, Wang, CVPR 2025, arXiv 2503.13385): random pruning, loss clusters, an easy-to-hard window."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.errors import UsageError
from hardbatch.functional import fill_batches
from hardbatch.params import check_params, param, Range
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register

LLOYD_ITERATIONS = 100  # 1-D k-means settles in a handful; the cap only bounds a pathological case


@dataclass(frozen=True)
class SeTaParams:
    """The hyper-parameters of ``seta``, with the authors' CIFAR settings (prune 0.1, 5 groups, window 0.9)."""

    random_prune: float = param(0.1, "fraction of all samples dropped at random each epoch before clustering",
                              range=Range(0.0, 1.0, high_open=True))
    groups: int = param(5, "k-means clusters of the kept samples by last loss, sorted easy to hard",
                       range=Range(1, integer=True))
    window: float = param(0.9, "fraction of the clusters trained each epoch: a window of round(groups·window) sliding easy to hard",
                         range=Range(0.0, 1.0, low_open=True))
    anneal: float = param(0.125, "final fraction of the epochs without clustering or window (random pruning only)",
                         range=Range(0.0, 1.0))

    def validate(self) -> None:
        """The check across fields (each field's own range is declared above; ``check_params`` runs both)."""
        if window_size(self.groups, self.window) < 1:
            raise UsageError(f"--window {self.window} with --groups {self.groups} makes a window of "
                             f"round({self.groups} · {self.window}) = 0 clusters; "
                             f"use a larger --window or more --groups")


def window_size(groups: int, window: float) -> int:
    """w = round(groups · window) clusters, Python's round as in the authors' code (5 · 0.9 = 4.5 → 4)."""
    return round(groups * window)


def kmeans_1d(values: torch.Tensor, k: int) -> torch.Tensor:
    """Deterministic k-means of 1-D ``values`` (shape (m,)); returns each value's cluster id, shape (m,).

    Ids are sorted by centre, 0 = lowest. The centres start at the sorted values' (j + 0.5) / k quantiles; Lloyd
    steps assign each value to the nearest centre (a tie to the lower one) until no assignment changes. An empty
    cluster keeps its centre. When all values are equal, they are split into k equal chunks in their given order.
    """
    m = len(values)
    if m == 0:
        return torch.zeros(0, dtype=torch.long)
    x = values.double().cpu()
    if bool((x == x[0]).all()):
        return torch.arange(m) * k // m
    centres = torch.sort(x).values[((torch.arange(k, dtype=torch.float64) + 0.5) * m / k).long()]
    labels = None
    for _ in range(LLOYD_ITERATIONS):
        centres = torch.sort(centres).values
        new = torch.searchsorted((centres[:-1] + centres[1:]) / 2, x, side="left")  # boundaries below x
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, x)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return labels


@register
class SeTaPolicy(Policy):
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
    with unselected ones into one batch). Losses are not reweighted. An epoch is one such pass.
    """

    name = "seta"
    axis = "random_prune"
    Params = SeTaParams
    per_sample = True
    epoch_is_round = True

    def __init__(self, batches, *, random_prune: float = 0.1, groups: int = 5, window: float = 0.9,
                 anneal: float = 0.125, **common):
        super().__init__(batches, **common)
        check_params(SeTaParams(random_prune=random_prune, groups=groups, window=window, anneal=anneal))
        self.random_prune, self.groups, self.window, self.anneal = random_prune, groups, window, anneal
        self.window_clusters = window_size(groups, window)
        self.scores = torch.full((self.num_samples,), float("nan"))

    @property
    def pruning_epochs(self) -> int:
        """Epochs 0 .. pruning_epochs - 1 cluster and slide the window; the rest only prune at random."""
        return math.floor(self.epochs * (1.0 - self.anneal) + 1e-9)

    def window_start(self, epoch: int) -> int:
        """The easiest cluster trained in ``epoch`` (1 <= epoch < pruning_epochs)."""
        return epoch % (self.groups - self.window_clusters + 1)

    def plan(self) -> list[Step]:
        self.round += 1
        order = torch.randperm(self.num_samples, generator=self.generator)
        kept = order[: math.floor((1.0 - self.random_prune) * self.num_samples + 1e-9)]
        chosen = kept
        if 1 <= self.round < self.pruning_epochs:
            scores = self.scores.cpu()[kept]
            known = ~torch.isnan(scores)
            labels = kmeans_1d(scores[known], self.groups)
            start = self.window_start(self.round)
            in_window = torch.zeros(len(kept), dtype=torch.bool)
            in_window[known] = (labels >= start) & (labels < start + self.window_clusters)
            chosen = kept[in_window | ~known]
            chosen = chosen[torch.randperm(len(chosen), generator=self.generator)]
        unchosen = torch.ones(self.num_samples, dtype=torch.bool)
        unchosen[chosen] = False
        cut = fill_batches(chosen, order[unchosen[order]], self.batch_size)
        return [Step(cut[i], i) for i in range(len(cut))]

    def observe(self, step: Step, loss, sample_losses=None) -> None:
        if sample_losses is None:
            raise RuntimeError("seta needs per-sample losses: record(loss, sample_losses)")
        values = sample_losses.detach().float()
        self.scores = self.scores.to(values.device)  # beside the losses: no device sync per step
        self.scores[step.samples.to(values.device)] = values

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": self.scores.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scores = state["scores"].clone()
