"""The null model of stale ranking: each round the k batches trained longest ago, in index order."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hardbatch.functional import oldest_k
from hardbatch.policies.hard_batch import RoundsOfK
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class Cyclic(RoundsOfK):
    """Round 0 trains every batch in index order; each later round the k = ⌊δ·N⌋ batches trained longest
    ago (ties to the lower index), in ascending index order. The losses are recorded but never used: if the
    paper's rule does no better than this, its ranking adds nothing beyond cycling through the data.
    """

    name = "cyclic"

    def setup(self) -> None:
        super().setup()
        self.clock = 0  # optimizer steps recorded
        self.last_trained = torch.full((self.num_batches,), -1, dtype=torch.long)
        self._stamps: list[tuple[int, int]] = []  # (batch, clock) recorded since ``trained_when`` last wrote them

    def record(self, batch: int, loss: torch.Tensor | float) -> None:
        super().record(batch, loss)
        self.clock += 1
        self._stamps.append((batch, self.clock))

    def choose(self) -> torch.Tensor:
        return oldest_k(self.trained_when(), self.k)

    def trained_when(self) -> torch.Tensor:
        """The step at which each batch was last trained, shape (N,) (-1: never)."""
        if self._stamps:
            batches, clocks = zip(*self._stamps, strict=True)
            self.last_trained[torch.tensor(batches)] = torch.tensor(clocks)
            self._stamps = []
        return self.last_trained

    def state_dict(self) -> dict:
        return {**super().state_dict(), "clock": self.clock, "last_trained": self.trained_when().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.clock = int(state["clock"])
        self.last_trained = state["last_trained"].clone()
        self._stamps = []
