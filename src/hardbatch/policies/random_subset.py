"""The control for the loss signal (docs/peers.md, "Controls"): the paper's warm-up and k per round, chosen at
random."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hardbatch.policies.hard_batch import RoundsOfK
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class Random(RoundsOfK):
    """Round 0 trains every batch in index order; each later round k = ⌊δ·N⌋ random batches, in index order."""

    name = "random"

    def choose(self) -> torch.Tensor:
        chosen = torch.randperm(self.num_batches, generator=self.generator)[: self.k]
        return torch.sort(chosen).values
