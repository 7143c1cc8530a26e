"""The paper's rule (docs/method.md "The rule (exact)"): a warm-up round over every batch, then rounds of the top-k."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch

from hardbatch.errors import UsageError
from hardbatch.functional import batch_scores, num_selected, top_k_batches, trimmed_top_k
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round, Step
from hardbatch.policies.registry import register

FRACTION = Range(0.0, 1.0, high_open=True)


@dataclass(eq=False)
class RoundsOfK(Policy):
    """The rounds the paper's rule and its controls share: round 0 trains batches 0..N-1 in index order; each later
    round trains k = ⌊δ·N⌋ of the N fixed batches, chosen by ``choose`` (subclasses), in ascending index order.
    Each trained batch's loss is stored; the others keep theirs (stale). δ = 1 is ordinary mini-batch training."""

    delta: float = param(
        1.0,
        "fraction δ of the mini-batches trained per round: k = ⌊δ·N⌋ of the N",
        range=Range(0.0, 1.0, low_open=True),
        metavar="δ",
    )

    axis = "delta"

    def setup(self) -> None:
        self.k = num_selected(self.num_batches, self.delta)
        self._losses = torch.full((self.num_batches,), float("nan"))
        self._recorded = torch.zeros(self.num_batches, dtype=torch.bool)  # has the batch a stored loss yet?
        # Losses recorded since the last store, as (batch, loss): stored in one operation when they are read
        # (``_store``), so recording a step costs no tensor operation and no device sync.
        self._unstored: list[tuple[int, torch.Tensor | float]] = []

    def _store(self) -> None:
        """Write the losses recorded since the last store into the table (one indexing operation)."""
        if not self._unstored:
            return
        batches = torch.tensor([b for b, _ in self._unstored])
        recorded = [v for _, v in self._unstored]
        if all(isinstance(v, torch.Tensor) for v in recorded):
            values = cast(list[torch.Tensor], recorded)
        else:  # numbers among them: each as a 0-d tensor
            values = [v if isinstance(v, torch.Tensor) else torch.tensor(float(v)) for v in recorded]
        device = next((v.device for v in values if v.device.type != "cpu"), self._losses.device)
        # Kept beside the losses, so recording never forces a device sync; the one sync per round is next_round's.
        self._losses = self._losses.to(device)
        with torch.no_grad():  # 0-d losses (the sampler refuses any other shape), stacked in one operation
            stacked = torch.stack([v if v.device == device else v.to(device) for v in values])
        self._losses[batches.to(device)] = stacked.to(self._losses.dtype)
        self._recorded[batches] = True
        self._unstored = []

    @property
    def losses(self) -> torch.Tensor:
        """Each batch's stored loss, shape (N,) (NaN before its first step)."""
        self._store()
        return self._losses

    @property
    def recorded(self) -> torch.Tensor:
        """Whether each batch has a stored loss yet, bool (N,)."""
        self._store()
        return self._recorded

    # -- the batch-level API: batch ids in, batch ids out ---------------------------------------------------------

    def next_round(self) -> torch.Tensor:
        """The batch indices of the next round, in the order they are to be trained, shape (k,) (round 0: (N,))."""
        self.round += 1
        if self.round == 0:
            return torch.arange(self.num_batches)
        if not self.recorded.all():
            missing = (~self.recorded).nonzero().flatten().tolist()
            raise RuntimeError(f"no loss was recorded for batches {missing[:10]} before round {self.round}")
        return self.choose()

    def choose(self) -> torch.Tensor:
        """The k batches of a round after the warm-up, in ascending index order, shape (k,)."""
        raise NotImplementedError

    def record(self, batch: int, loss: torch.Tensor | float) -> None:
        """Store the training loss of ``batch`` from the step that just trained it."""
        self._unstored.append((batch, loss))

    # -- the protocol -----------------------------------------------------------------------------------------------

    def plan(self) -> Round:
        return Round.rows(self.partition, self.next_round())

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        self.record(step.batch, loss)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "losses": self.losses.cpu().clone(), "recorded": self.recorded.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._losses = state["losses"].clone().to(self.losses.device)
        self._recorded = state["recorded"].clone()
        self._unstored = []


@register
@dataclass(eq=False)
class HardBatch(RoundsOfK):
    """The paper's rule: round 0 trains batches 0..N-1 in index order. Each later round ranks the N batches by
    their stored loss, takes the k = ⌊δ·N⌋ highest and trains them in ascending index order. Only trained
    batches get their stored loss refreshed; the rest stay stale. ``delta = 1`` is ordinary mini-batch training.

    Opt-in variants (all off by default, which is the paper's rule exactly):
    ``rescore=K``: before every K-th round, a no-grad scoring pass over all N batches refreshes every
    stored loss. ``repartition``: from round 1 on, every round re-cuts the samples into new batches
    (seeded) and scores each by the mean of its samples' last training losses. ``trim_top=q``: the
    ⌊q·N⌋ highest stored losses are never chosen. ``mix=f``: ⌊f·k⌋ of the k batches are
    drawn uniformly from those not chosen by loss.
    """

    rescore: int | None = param(
        None,
        "before every K-th round, a no-grad forward over every batch refreshes all "
        "stored losses (its cost counted; default: never)",
        range=Range(1, integer=True),
        metavar="K",
    )
    repartition: bool = param(
        False,
        "re-cut the samples into new batches every round (seeded) and score each by "
        "the mean of its samples' last training losses",
    )
    trim_top: float = param(
        0.0, "noise guard: never select the top q fraction of stored losses", range=FRACTION, metavar="Q"
    )
    mix: float = param(
        0.0,
        "noise guard: draw a fraction f of each round's k batches uniformly from the untrimmed rest",
        range=FRACTION,
        metavar="F",
    )

    name = "hardbatch"

    @property
    def per_sample(self) -> bool:  # type: ignore[override]
        """``repartition`` scores batches by their samples' losses, so it needs each sample's."""
        return self.repartition

    def setup(self) -> None:
        super().setup()
        self.trim = math.floor(self.trim_top * self.num_batches + 1e-9)
        self.mixed = math.floor(self.mix * self.k + 1e-9)
        if self.k + self.trim > self.num_batches:
            raise UsageError(
                f"trim_top {self.trim_top} leaves {self.num_batches - self.trim} of {self.num_batches} "
                f"batches, fewer than the k = {self.k} to train per round; use a smaller trim_top or δ"
            )
        # each sample's last training loss, from which a fresh cut's batch losses are formed
        self.sample_losses: torch.Tensor | None = (
            torch.full((self.num_samples,), float("nan")) if self.repartition else None
        )
        self.cut = self.partition  # the batches the current round's ids refer to
        self.scored_round = -1  # the last round a scoring pass was planned for

    def choose(self) -> torch.Tensor:
        if self.trim or self.mixed:
            return trimmed_top_k(self.losses, self.k, self.trim, self.mixed, self.generator)
        return top_k_batches(self.losses, self.k)

    def plan(self) -> Round:
        upcoming = self.round + 1
        if self.rescore and upcoming >= 1 and upcoming % self.rescore == 0 and self.scored_round != upcoming:
            self.scored_round = upcoming
            return Round.rows(self.cut, torch.arange(self.num_batches), score_only=True)
        if self.sample_losses is not None and upcoming >= 1:  # repartition
            self.cut = self.shuffled_cut()
            self._store()
            scores = batch_scores(self.sample_losses, self.cut.to(self.sample_losses.device))
            self._losses = scores.to(self._losses.device)
        return Round.rows(self.cut, self.next_round().cpu())

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        if self.sample_losses is not None:  # repartition
            assert sample_losses is not None  # per_sample when repartitioning
            values = sample_losses.detach().float()
            self.sample_losses = self.sample_losses.to(values.device)
            self.sample_losses[step.samples.to(values.device)] = values
        self.record(step.batch, loss)

    def sources(self) -> dict[str, torch.Tensor]:
        return {**super().sources(), "cut": self.cut}

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "scored_round": self.scored_round}
        if self.sample_losses is not None:  # repartition: the current cut (else the partition, saved by the sampler)
            state["cut"] = self.cut.clone()
            state["sample_losses"] = self.sample_losses.cpu().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scored_round = int(state["scored_round"])
        if self.repartition:
            self.cut = state["cut"].clone()
            self.sample_losses = state["sample_losses"].clone()
