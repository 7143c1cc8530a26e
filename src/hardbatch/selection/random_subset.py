"""The control for the loss signal (docs/peers.md, "Controls"): the paper's warm-up and k per round, chosen uniformly at random."""

from __future__ import annotations

import torch

from hardbatch.selection.hardbatch import HighLossPolicy
from hardbatch.params import NoParams
from hardbatch.selection.registry import register


@register
class RandomSubsetPolicy(HighLossPolicy):
    """Round 0 trains every batch in index order; each later round k = floor(δ·N) random batches, in index order."""

    name = "random"
    Params = NoParams

    def _choose(self) -> torch.Tensor:
        chosen = torch.randperm(self.num_batches, generator=self.generator)[: self.k]
        return torch.sort(chosen).values
