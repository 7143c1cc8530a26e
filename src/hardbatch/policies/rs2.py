"""RS2 (Okanovic et al., ICLR 2024): each epoch a fresh random fraction of the data, drawn without replacement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hardbatch.errors import UsageError
from hardbatch.functional import rs2_next_window, rs2_window_samples
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round
from hardbatch.policies.registry import register


@register
@dataclass(eq=False)
class RS2(Policy):
    """Repeated random sampling without replacement, as the authors' ``UniformNoReplacement`` runs it. Each epoch
    trains m = round(r·n) samples (Python's round, r = ``fraction``): the next window of m samples of a seeded
    permutation of all n, so a sample is drawn again only once every sample has been. A window that passes the end
    of the permutation takes its rest and then its first samples again, m − 1 in all, and the next epoch starts a
    new permutation (``functional.rs2_next_window``). The epoch's samples, shuffled, are cut into ⌊m / B⌋ batches
    of B, the remainder dropped, as the authors' loader does (``drop_last``). An epoch is one such pass, so with
    ``--epochs E`` a run trains about r·E epochs' worth of samples, and a cosine schedule decays over those E
    passes, as the authors' schedule spans their whole run. No loss is used.
    """

    fraction: float = param(
        0.1,
        "fraction r of the samples trained each epoch, round(r·n) of them, drawn without "
        "replacement across epochs (the authors' --fraction, the paper's selection ratio)",
        range=Range(0.0, 1.0, low_open=True),
        metavar="R",
    )

    name = "rs2"
    epoch_is_round = True
    axis = "fraction"
    # 96 of 320 samples (3 batches of 32) a round: the fourth round wraps around the permutation (95 samples).
    example: ClassVar[dict[str, Any]] = {"fraction": 0.3}

    @property
    def round_size(self) -> int:
        """m = round(r·n), the samples a round draws; Python's round, as the authors' ``round(n_train * fraction)``."""
        return round(self.num_samples * self.fraction)

    def setup(self) -> None:
        size = self.round_size
        if size < self.batch_size:
            raise UsageError(
                f"rs2: fraction {self.fraction:g} of {self.num_samples} samples is round"
                f"({self.num_samples} · {self.fraction:g}) = {size} samples an epoch, fewer than one "
                f"batch of {self.batch_size}; use a fraction of at least "
                f"{self.batch_size / self.num_samples:.4g} or a smaller batch size"
            )
        self.order = torch.arange(self.num_samples)  # replaced by a seeded permutation before the first round
        self.start = self.end = 0

    def plan(self) -> Round:
        self.round += 1
        self.start, self.end, fresh = rs2_next_window(self.start, self.end, self.round_size, self.num_samples)
        if fresh:
            self.order = torch.randperm(self.num_samples, generator=self.generator)
        drawn = rs2_window_samples(self.order, self.start, self.end)
        # The authors' loader reshuffles the drawn subset (shuffle=True) and drops its remainder (drop_last=True). A
        # wrapped window of m - 1 < B samples (only when m = B) trains them as one shorter batch: never an empty epoch.
        drawn = drawn[torch.randperm(len(drawn), generator=self.generator)]
        b = min(self.batch_size, len(drawn))
        count = len(drawn) // b
        return Round.of(drawn[: count * b].view(count, b))

    def state_dict(self) -> dict:
        order = self.order.int() if self.num_samples < 2**31 else self.order
        return {**super().state_dict(), "order": order, "start": self.start, "end": self.end}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.order = state["order"].long()
        self.start, self.end = int(state["start"]), int(state["end"])
