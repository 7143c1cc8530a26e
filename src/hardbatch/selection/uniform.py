"""Ordinary SGD as practitioners run it: every epoch, the data reshuffled (seeded) and cut into N batches."""

from __future__ import annotations

from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register


@register
class UniformPolicy(Policy):
    """Each round is one epoch: a fresh seeded permutation of the samples cut into N batches of B (the
    remainder dropped), trained in order. The baseline every peer reports against; the paper's δ = 1
    differs only in keeping one fixed cut and order for the whole run.
    """

    name = "uniform"

    def plan(self) -> list[Step]:
        self.round += 1
        cut = self._shuffled_cut()
        return [Step(cut[b], b) for b in range(self.num_batches)]
