"""Ordinary SGD as practitioners run it: every epoch, the data reshuffled (seeded) and cut into N batches."""

from __future__ import annotations

from dataclasses import dataclass

from hardbatch.policies.base import Policy, Round
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class Uniform(Policy):
    """Each round is one epoch: a fresh seeded permutation of the samples cut into N batches of B (the
    remainder dropped), trained in order. The baseline every peer reports against; the paper's δ = 1
    differs only in keeping one fixed cut and order for the whole run.
    """

    name = "uniform"

    def plan(self) -> Round:
        self.round += 1
        return Round.of(self.shuffled_cut())
