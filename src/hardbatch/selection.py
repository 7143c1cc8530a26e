"""Batch-selection policies: which fixed mini-batches to train next, and a DataLoader sampler over them."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from hardbatch.config import UsageError


def top_k_batches(losses: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest stored losses, returned in ascending index order.

    ``losses``: shape (N,), one stored loss per mini-batch. Ties go to the lower index
    (a stable sort over index order), so the result is deterministic.
    Returns a LongTensor of shape (k,) on the same device as ``losses``.
    """
    order = torch.sort(losses, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def num_selected(num_batches: int, delta: float) -> int:
    """k = floor(delta * N), the number of batches trained per round; refuses k < 1 or delta outside (0, 1]."""
    if not (0.0 < delta <= 1.0):
        raise UsageError(f"delta must be in (0, 1], got {delta}")
    # A tiny epsilon keeps floor(0.3 * 10) == 3 despite 0.3 * 10 == 2.9999999999999996.
    k = math.floor(delta * num_batches + 1e-9)
    if k < 1:
        raise UsageError(
            f"floor(delta * N) = floor({delta} * {num_batches}) = 0 batches per round; "
            f"use delta >= {1.0 / num_batches:.4g} or a smaller batch size (more batches)"
        )
    return k


class HighLossPolicy:
    """The paper's rule (METHOD.md "The rule"): a warm-up round over every batch, then rounds of the top-k.

    Round 0 trains batches 0..N-1 in index order. Each later round ranks the N batches by their
    stored loss, takes the k = floor(delta * N) highest and trains them in ascending index order.
    Only trained batches get their stored loss refreshed; the rest stay stale. ``delta = 1`` is
    ordinary mini-batch training. The policy never sees data, only batch indices and losses.
    """

    name = "hardbatch"

    def __init__(self, num_batches: int, delta: float = 1.0):
        self.num_batches = num_batches
        self.delta = delta
        self.k = num_selected(num_batches, delta)
        self.losses = torch.full((num_batches,), float("nan"))
        self.recorded = torch.zeros(num_batches, dtype=torch.bool)  # has the batch a stored loss yet?
        self.round = -1  # index of the round last planned; -1 before the warm-up

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

    def state_dict(self) -> dict:
        return {"round": self.round, "losses": self.losses.cpu().clone(), "recorded": self.recorded.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.round = int(state["round"])
        self.losses = state["losses"].clone().to(self.losses.device)
        self.recorded = state["recorded"].clone()


class RandomSubsetPolicy(HighLossPolicy):
    """Control for the loss signal (PEERS.md): the same warm-up and k per round, chosen uniformly at random."""

    name = "random"

    def __init__(self, num_batches: int, delta: float = 1.0, seed: int = 0):
        super().__init__(num_batches, delta)
        self.generator = torch.Generator().manual_seed(seed)

    def _choose(self) -> torch.Tensor:
        chosen = torch.randperm(self.num_batches, generator=self.generator)[: self.k]
        return torch.sort(chosen).values

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])


POLICIES = {"hardbatch": HighLossPolicy, "random": RandomSubsetPolicy}


def create_policy(name: str, num_batches: int, delta: float, seed: int = 0) -> HighLossPolicy:
    """Build a policy by name; unknown names list the valid ones."""
    if name not in POLICIES:
        raise UsageError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    if name == "random":
        return RandomSubsetPolicy(num_batches, delta, seed=seed)
    return POLICIES[name](num_batches, delta)


def fixed_partition(num_samples: int, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut sample indices into N = num_samples // batch_size fixed mini-batches; the remainder is dropped.

    Without a generator, batch i holds samples [i*B, (i+1)*B) (the released code's fixed order);
    with one, a seeded permutation is cut instead. Returns a LongTensor of shape (N, B).
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size}")
    if batch_size > num_samples:
        raise UsageError(f"batch size {batch_size} is larger than the training set ({num_samples} samples)")
    n = num_samples // batch_size
    order = torch.arange(num_samples) if generator is None else torch.randperm(num_samples, generator=generator)
    return order[: n * batch_size].view(n, batch_size)


class HardBatchSampler(Sampler[list[int]]):
    """A DataLoader batch sampler that trains the highest-loss fixed mini-batches of a data set.

    One pass over the sampler is one round of the policy: the warm-up pass first, then the top-k
    batches of each later round. Call :meth:`record` with each step's training loss, in the order
    the batches were drawn; loop ``while not sampler.done`` around ``for batch in loader``.
    The sampler stops after exactly ``epochs * N`` batches in total, cutting the last round short.
    Skipped batches are never yielded, so a DataLoader never loads them.
    """

    def __init__(
        self,
        data_len_or_partition: int | torch.Tensor,
        batch_size: int | None = None,
        delta: float = 1.0,
        epochs: int = 1,
        policy: str | HighLossPolicy = "hardbatch",
        shuffle_partition: bool = False,
        seed: int = 0,
    ):
        if isinstance(data_len_or_partition, torch.Tensor):
            self.partition = data_len_or_partition
        else:
            generator = torch.Generator().manual_seed(seed) if shuffle_partition else None
            self.partition = fixed_partition(data_len_or_partition, batch_size or 0, generator)
        self.num_batches = len(self.partition)
        if epochs < 1:
            raise UsageError(f"epochs must be a positive integer, got {epochs}")
        if isinstance(policy, str):
            policy = create_policy(policy, self.num_batches, delta, seed=seed)
        self.policy = policy
        self.total_steps = epochs * self.num_batches
        self.steps = 0  # optimizer steps recorded so far
        self.visits = torch.zeros(self.num_batches, dtype=torch.long)
        # The current round's batches; a DataLoader may draw (yield) ahead of what was recorded.
        self._round: list[int] = []
        self._yielded = 0
        self._recorded = 0

    @property
    def done(self) -> bool:
        """True once the step budget (epochs * N) is spent."""
        return self.steps >= self.total_steps

    @property
    def round(self) -> int:
        """The current round (0 = warm-up)."""
        return self.policy.round

    def _plan_if_needed(self) -> None:
        if self._recorded < len(self._round):
            if self._yielded == len(self._round):
                raise RuntimeError(
                    f"record() the loss of every batch before starting the next round "
                    f"({len(self._round) - self._recorded} pending)"
                )
            # A pass that stopped early goes on from its first unrecorded batch: batches a DataLoader
            # drew ahead (prefetch) but never recorded are drawn again, so each record() still
            # pairs with the batch it trained (as after load_state_dict).
            self._yielded = self._recorded
            return
        remaining = self.total_steps - self.steps
        if remaining > 0:
            self._round = self.policy.next_round()[:remaining]
            self._yielded = self._recorded = 0

    def __len__(self) -> int:
        """Batches left in the current round, or in the next one if the current is finished."""
        if self._recorded == len(self._round):
            remaining = self.total_steps - self.steps
            return min(self.policy.k if self.policy.round >= 0 else self.num_batches, remaining)
        return len(self._round) - self._yielded

    def __iter__(self) -> Iterator[list[int]]:
        self._plan_if_needed()
        while self._yielded < len(self._round):
            batch = self._round[self._yielded]
            self._yielded += 1
            yield self.partition[batch].tolist()

    def record(self, loss: torch.Tensor | float) -> int:
        """Record the training loss of the oldest drawn, unrecorded batch; returns that batch's index."""
        if self._recorded >= self._yielded:
            raise RuntimeError("record() called with no batch pending; call it once per batch drawn")
        batch = self._round[self._recorded]
        self._recorded += 1
        self.policy.record(batch, loss)
        self.visits[batch] += 1
        self.steps += 1
        return batch

    def state_dict(self) -> dict:
        """The state as of the last recorded step; batches drawn but not recorded are drawn again."""
        return {
            "policy": self.policy.state_dict(),
            "steps": self.steps,
            "visits": self.visits.clone(),
            "round_batches": list(self._round),
            "recorded": self._recorded,
            "partition": self.partition.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.steps = int(state["steps"])
        self.visits = state["visits"].clone()
        self._round = list(state["round_batches"])
        self._recorded = self._yielded = int(state["recorded"])
        self.partition = state["partition"].clone()
