"""The paper's rule (docs/method.md "The rule (exact)"): a warm-up round over every batch, then rounds of the top-k; and its variants."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.errors import UsageError
from hardbatch.functional import batch_scores, num_selected, top_k_batches, trimmed_top_k
from hardbatch.params import param, Range
from hardbatch.selection.policy import Policy, Step
from hardbatch.selection.registry import register

FRACTION = Range(0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class HighLossParams:
    """The opt-in variants of the paper's rule (all off by default: the rule exactly)."""

    rescore: int | None = param(None, "before every K-th round, a no-grad forward over every batch refreshes all "
                                      "stored losses (its cost counted; default: never)",
                                range=Range(1, integer=True), metavar="K")
    repartition: bool = param(False, "re-cut the samples into new batches every round (seeded) and score each by "
                                     "the mean of its samples' last training losses")
    trim_top: float = param(0.0, "noise guard: never select the top q fraction of stored losses", range=FRACTION,
                            metavar="Q")
    mix: float = param(0.0, "noise guard: draw a fraction f of each round's k batches uniformly from the untrimmed "
                            "rest", range=FRACTION, metavar="F")


@register
class HighLossPolicy(Policy):
    """Round 0 trains batches 0..N-1 in index order. Each later round ranks the N batches by their
    stored loss, takes the k = floor(delta * N) highest and trains them in ascending index order.
    Only trained batches get their stored loss refreshed; the rest stay stale. ``delta = 1`` is
    ordinary mini-batch training.

    Opt-in variants (all off by default, which is the paper's rule exactly):
    ``rescore=K``: before every K-th round, a no-grad scoring pass over all N batches refreshes every
    stored loss. ``repartition``: from round 1 on, every round re-cuts the samples into new batches
    (seeded) and scores each by the mean of its samples' last training losses. ``trim_top=q``: the
    floor(q * N) highest stored losses are never chosen. ``mix=f``: floor(f * k) of the k batches are
    drawn uniformly from those not chosen by loss.
    """

    name = "hardbatch"
    uses_delta = True
    axis = "delta"
    Params = HighLossParams

    def __init__(self, batches: int | torch.Tensor, delta: float = 1.0, *, rescore: int | None = None, repartition: bool = False,
                 trim_top: float = 0.0, mix: float = 0.0, **common):
        super().__init__(batches, **common)
        self.delta = delta
        self.k = num_selected(self.num_batches, delta)
        self.rescore = rescore
        self.repartition = repartition
        self.per_sample = repartition
        self.trim = math.floor(trim_top * self.num_batches + 1e-9)
        self.mix = math.floor(mix * self.k + 1e-9)
        if self.k + self.trim > self.num_batches:
            raise UsageError(f"--trim-top {trim_top} leaves {self.num_batches - self.trim} of {self.num_batches} "
                             f"batches, fewer than the k = {self.k} to train per round; use a smaller --trim-top or δ")
        self.losses = torch.full((self.num_batches,), float("nan"))
        self.recorded = torch.zeros(self.num_batches, dtype=torch.bool)  # has the batch a stored loss yet?
        self.sample_losses = torch.full((self.num_samples,), float("nan")) if repartition else None
        self.cut = self.partition  # the batches the current round's ids refer to
        self.scored_round = -1  # the last round a scoring pass was planned for

    # -- the batch-level API: batch ids in, batch ids out ---------------------------------------------------------

    def next_round(self) -> list[int]:
        """The batch indices of the next round, in the order they are to be trained."""
        self.round += 1
        if self.round == 0:
            return list(range(self.num_batches))
        if not self.recorded.all():
            missing = (~self.recorded).nonzero().flatten().tolist()
            raise RuntimeError(f"no loss was recorded for batches {missing[:10]} before round {self.round}")
        return self._choose().tolist()

    def _choose(self) -> torch.Tensor:
        if self.trim or self.mix:
            return trimmed_top_k(self.losses, self.k, self.trim, self.mix, self.generator)
        return top_k_batches(self.losses, self.k)

    def record(self, batch: int, loss: torch.Tensor | float) -> None:
        """Store the training loss of ``batch`` from the step that just trained it."""
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            if loss.device != self.losses.device:
                # Keep the stored losses beside the loss so recording never forces a device sync;
                # the one sync per round happens in next_round().
                self.losses = self.losses.to(loss.device)
        self.losses[batch] = loss
        self.recorded[batch] = True

    # -- the protocol -----------------------------------------------------------------------------------------------

    def plan(self) -> list[Step]:
        upcoming = self.round + 1
        if self.rescore and upcoming >= 1 and upcoming % self.rescore == 0 and self.scored_round != upcoming:
            self.scored_round = upcoming
            return [Step(self.cut[b], b, score_only=True) for b in range(self.num_batches)]
        if self.repartition and upcoming >= 1:
            self.cut = self._shuffled_cut()
            self.losses = batch_scores(self.sample_losses, self.cut.to(self.sample_losses.device)).to(self.losses.device)
        return [Step(self.cut[b], b) for b in self.next_round()]

    def observe(self, step: Step, loss, sample_losses=None) -> None:
        if self.repartition:
            values = sample_losses.detach().float()
            self.sample_losses = self.sample_losses.to(values.device)
            self.sample_losses[step.samples.to(values.device)] = values
        self.record(step.batch, loss)

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "losses": self.losses.cpu().clone(), "recorded": self.recorded.clone(),
                 "cut": self.cut.clone(), "scored_round": self.scored_round}
        if self.sample_losses is not None:
            state["sample_losses"] = self.sample_losses.cpu().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.round = int(state["round"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
        self.losses = state["losses"].clone().to(self.losses.device)
        self.recorded = state["recorded"].clone()
        self.cut = state.get("cut", self.partition).clone()
        self.scored_round = int(state.get("scored_round", -1))
        if self.sample_losses is not None:
            self.sample_losses = state["sample_losses"].clone()
