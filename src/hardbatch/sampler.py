"""The DataLoader batch sampler: loads what a policy planned, pairs each step's loss with its batch, keeps the
budget."""

from __future__ import annotations

import math
import numbers
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

from hardbatch.cost import CostMeter
from hardbatch.errors import TrainingDiverged, UsageError
from hardbatch.functional import fixed_partition, generator_for, positive_int, single_class_purity
from hardbatch.policies import Policy, Round, Step, create_policy
from hardbatch.policies.base import EMPTY_ROUND


@dataclass
class Recorded:
    """The step ``record`` took last: its optimizer step (1-based; 0 for a step that trained nothing), round, batch
    id, loss (the global batch's, 0-d, possibly still on the device) and the samples it trained."""

    step: int
    round: int
    batch: int
    loss: torch.Tensor | float
    samples: int


def _shape(value: Any) -> str:
    """How a wrong argument is named in an error: a tensor by its shape, anything else by its value and type."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{value!r} ({type(value).__name__})"


class HardBatchSampler(Sampler[list[int]]):
    """A DataLoader batch sampler that trains the batches a policy chooses (by default the paper's rule).

    ``HardBatchSampler(n, batch_size, epochs=E, policy=...)``: the n samples are cut into N = ⌊n / B⌋ fixed
    mini-batches (a seeded random cut with ``shuffle_partition``; or pass the (N, B) partition itself instead of
    n). ``policy`` is a policy object (``hardbatch.policies.InfoBatch(prune_ratio=0.5)``) or a registered name
    (``"infobatch"``, with its hyper-parameters as keywords: ``delta=0.5``, ``beta=2``, ...); the sampler binds a
    copy of it to the data (``sampler.policy``). The budget is ``epochs * N`` optimizer steps (the last round cut
    short), or ``epochs`` passes for policies whose epoch is a pass (``infobatch``).

    One pass over the sampler is one pass of the policy: the warm-up first, then the top-k batches of each later
    round (or a scoring pass, or a pruned epoch, depending on the policy). Loop ``while not sampler.done`` around
    ``for batch in loader`` and hand each batch to :func:`hardbatch.training_loss`, which runs the policy's step and
    records it here; or drive the step yourself (:meth:`weights`, :meth:`record`; see ``hardbatch.step``). Skipped
    samples are never yielded, so a DataLoader never loads them. ``meter`` counts what training spent.
    ``labels`` (optional, one class index per sample) only serve a warning when the fixed batches are mostly one
    class (a data set stored sorted by class: pass ``shuffle_partition=True``). ``group``: the data-parallel process
    group under tensor or sequence parallelism (default: the whole world is data parallel). ``watch``: sample
    indices whose share of the trained samples ``exposure()`` reports (label noise: the relabelled ones).
    """

    def __init__(
        self,
        data_len_or_partition: int | torch.Tensor,
        batch_size: int | None = None,
        *,
        epochs: int = 1,
        policy: str | Policy = "hardbatch",
        delta: float | None = None,
        shuffle_partition: bool = False,
        seed: int = 0,
        labels: torch.Tensor | Sequence[int] | None = None,
        group: Any = None,
        watch: torch.Tensor | Sequence[int] | None = None,
        **params: Any,
    ):
        given = isinstance(data_len_or_partition, torch.Tensor)
        seed = positive_int("seed", seed, "an integer >= 0", minimum=0)
        if isinstance(data_len_or_partition, torch.Tensor):
            self.partition = _checked_partition(data_len_or_partition)
            num_samples = int(self.partition.max()) + 1
        else:
            num_samples = positive_int(
                "data_len_or_partition",
                data_len_or_partition,
                "a positive int or an (N, B) integer tensor of sample indices",
            )
            generator = generator_for(seed, "partition") if shuffle_partition else None
            self.partition = fixed_partition(num_samples, positive_int("batch_size", batch_size), generator)
        self.num_batches = len(self.partition)
        epochs = positive_int("epochs", epochs)
        if labels is not None:
            how = (
                "mix the classes in the partition you pass"
                if given
                else "check the labels"
                if shuffle_partition
                else "pass shuffle_partition=True"
            )
            _warn_if_class_sorted(_checked_labels(labels, num_samples, exact=not given), self.partition, how)
        self.policy = _policy(policy, delta, params).bind(
            self.partition, num_samples=num_samples, seed=seed, epochs=epochs
        )
        self.epochs = epochs
        self.seed = seed
        self.group = group  # the data-parallel process group of the step's collectives (None: the whole world)
        self.total_steps = epochs * self.num_batches  # the budget, for policies that count it in steps
        self.steps = 0  # optimizer steps recorded so far
        self.epoch = 0  # epochs finished so far
        self.epoch_ended = False  # did the step just recorded end an epoch?
        self.meter = CostMeter()
        self.last: Recorded | None = None  # the step recorded last
        self.batch_size = int(self.partition.shape[1])
        self.pool: Any = None  # the step core's pool of kept samples, for a policy that accumulates (hardbatch.step)
        self.num_samples = num_samples
        self._built = None if given else (num_samples, int(self.partition.shape[1]), bool(shuffle_partition))
        self._visits = torch.zeros(self.num_batches, dtype=torch.long)
        # The watched samples (label noise: the relabelled ones), as a mask; how many samples were back-propagated, and
        # how many of them watched ones, in all and in the first epoch (the warm-up).
        self._watched = _watch_mask(watch, num_samples)
        self._trained_samples = {"all": 0, "first_epoch": 0, "watched": 0, "watched_first_epoch": 0}
        # This round's trained steps, kept in lists and counted in bulk when the round ends (``_settle``): a step
        # costs no tensor operation for the bookkeeping.
        self._trained_steps: list[int] = []
        self._first_epoch_steps: list[int] = []
        # The current pass; a DataLoader may draw (yield) ahead of what was recorded.
        self._round: Round = EMPTY_ROUND
        self._yielded = 0
        self._recorded = 0
        self._pass_start = 0  # steps recorded when the current pass over the sampler began
        self._chosen: dict[int, torch.Tensor] = {}  # weights ``select`` chose for drawn steps of this round
        # The Step ``pending`` handed out for the step being trained: the same object until it is recorded, so a loop
        # that holds it sees the weights ``weights(scores)`` chose for it.
        self._held: tuple[int, Step] | None = None
        # Has the loop read `pending` since this round was planned? A loop that records a scoring batch without
        # it cannot have honoured `score_only`: it trained that batch as well.
        self._looked = False
        self._unchecked: list[tuple[str, torch.Tensor]] = []  # device values, checked for finiteness at the next sync
        self._warned_torchdata = False

    @property
    def done(self) -> bool:
        """True once the budget is spent."""
        if self.policy.epoch_is_round:
            return self.epoch >= self.epochs
        return self.steps >= self.total_steps

    @property
    def round(self) -> int:
        """The current round (0 = warm-up)."""
        return self.policy.round

    @property
    def progress(self) -> float:
        """The fraction of the budget spent, in [0, 1] (what a learning-rate schedule follows)."""
        if not self.policy.epoch_is_round:
            return self.steps / self.total_steps
        trained = 0 if self._round.score_only else len(self._round)
        done = 0 if self._round.score_only else self._recorded
        fraction = done / trained if done < trained else 0.0  # a finished pass is counted in epoch
        return min(1.0, (self.epoch + fraction) / self.epochs)

    @property
    def pending(self) -> Step:
        """The oldest drawn step not yet recorded: the one the training loop is working on."""
        step = self._current()
        self._looked = True
        return step

    def step_for(self, batch: Any) -> Step:
        """The step ``batch`` was drawn for (the pending one: a sampler decides before loading, so the batch itself
        tells nothing more). The step core reads it this way from a sampler and from an ``InBatchSelector`` alike."""
        return self.pending

    def set_epoch(self, epoch: int) -> None:
        """Accepted for the loops that call it on every sampler (Lightning, ``DistributedSampler`` habits); the
        sampler keeps its own count (``epoch``), so what it selects never depends on these calls."""

    def _current(self) -> Step:
        if self._recorded >= self._yielded:
            raise RuntimeError("no batch pending; draw a batch from the loader first")
        if self._held is not None and self._held[0] == self._recorded:
            return self._held[1]
        step = self._round.step(self._recorded)
        if self._recorded in self._chosen:
            step.weights = self._chosen[self._recorded]
        self._held = (self._recorded, step)
        return step

    def _plan(self) -> None:
        self._check_unchecked()
        self._settle()
        self._looked = False
        started = time.perf_counter()
        planned = self.policy.plan()
        if not self.policy.epoch_is_round and not planned.score_only:
            planned = planned.head(self.total_steps - self.steps)
        self.meter.choose_seconds += time.perf_counter() - started
        self._round = planned
        self._chosen = {}
        self._held = None
        self._yielded = self._recorded = self._pass_start = 0

    def _start_pass(self) -> None:
        if self._recorded < len(self._round):
            if self._yielded == len(self._round) and self._recorded == self._pass_start:
                raise RuntimeError(
                    f"record() the loss of every batch before starting the next round "
                    f"({len(self._round) - self._recorded} pending)"
                )
            # A pass that stopped early goes on from its first unrecorded batch: batches a DataLoader
            # drew ahead (prefetch) but never recorded are drawn again, so each record() still
            # pairs with the batch it trained (as after load_state_dict).
            self._yielded = self._recorded
        elif not self.done:
            self._plan()
        self._pass_start = self._recorded

    def __len__(self) -> int:
        """Batches left in the current pass, or in the next one if the current is finished."""
        if self._recorded == len(self._round) and not self.done:
            self._plan()
        return len(self._round) - self._yielded

    def __iter__(self) -> Iterator[list[int]]:
        self._start_pass()
        while self._yielded < len(self._round):
            samples = self._round.row(self._yielded)
            self._yielded += 1
            yield samples.tolist()

    def weights(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss weights for the pending batch, shape (b,): train on ``(weights * per_sample_loss).mean()``.

        All ones for policies that weigh nothing (the batch policies: the weighted mean is the plain mean).
        Policies that score first (``selective-backprop``) need ``scores``, the no-grad per-sample losses
        of the loaded batch; their weights are 0 for samples to skip and 1 for samples to train. When none is
        kept, ``record`` the batch without training it (its mean score as the loss, say): it is consumed, and it
        is no optimizer step. A second call for the same pending batch returns the first answer: the policy's
        history and draws advance once per step.
        """
        step = self._current()
        if self.policy.needs_scores(step) and not step.score_only:
            if scores is None:
                raise RuntimeError(
                    f"policy {self.policy.name!r} chooses samples from their losses: "
                    f"call weights(scores) with the batch's no-grad per-sample losses"
                )
            self._check_per_sample("weights(scores)", "scores", scores, step, len(step.samples))
            started = time.perf_counter()
            step.weights = self._chosen[self._recorded] = self.policy.select(step, scores)
            self.meter.choose_seconds += time.perf_counter() - started
        return step.weights if step.weights is not None else torch.ones(len(step.samples))

    def record(self, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> int:
        """Record the loss of the oldest drawn, unrecorded batch; returns that batch's id.

        ``loss``: the step's training loss (0-d); ``sample_losses``: each sample's unweighted loss, shape (b,) (or
        (kept,): those of the samples a scoring policy's weights keep), needed by per-sample policies
        (``policy.per_sample``) and only checked by the others, so that a batch mean is refused for them too. A
        scoring batch (``pending.score_only``) takes the no-grad losses of its forward. A batch whose weights keep no
        sample (see :meth:`weights`) counts as no optimizer step; it can still end an epoch that is a pass. Misuse is
        refused before anything is recorded (UsageError); a loss that is not finite raises TrainingDiverged: at once
        for a number or a CPU tensor, and for a tensor on an accelerator when the round ends (checking each would
        wait for the device).
        """
        if self._recorded >= self._yielded:
            raise RuntimeError("record() called with no batch pending; call it once per batch drawn")
        step = self._current()
        call = "record(loss)" if sample_losses is None else "record(loss, sample_losses)"
        if step.score_only and not self._looked:
            raise UsageError(
                f"{call}: batch {step.batch} was drawn for scoring only, and the loop recorded it without "
                f"looking at sampler.pending: check sampler.pending.score_only for every batch and only "
                f"score those batches (a no-grad forward, record its losses, no optimizer step)"
            )
        one_number = isinstance(loss, numbers.Real) or (isinstance(loss, torch.Tensor) and loss.dim() == 0)
        if isinstance(loss, bool) or not one_number:
            raise UsageError(f"{call}: loss must be a 0-d tensor or a number, got {_shape(loss)}")
        if self.policy.per_sample and sample_losses is None:
            raise UsageError(
                f"policy {self.policy.name!r} needs per-sample losses: record(loss, sample_losses) "
                f"with sample_losses of shape ({len(step.samples)},)"
            )
        trained = self._trained(step)
        if sample_losses is not None:
            self._check_per_sample(call, "sample_losses", sample_losses, step, len(step.samples), len(trained))
        self._check_finite(call, "the loss is", loss, step)
        self._recorded += 1
        self.policy.observe(step, loss, sample_losses)
        self.epoch_ended = False
        stepped = False
        if not step.score_only:
            stepped = len(trained) > 0
            if stepped:
                self._trained_steps.append(self._recorded - 1)
                if self.epoch == 0:
                    self._first_epoch_steps.append(self._recorded - 1)
                self.steps += 1
            if self.policy.epoch_is_round:
                self.epoch_ended = self._recorded == len(self._round)
            else:
                self.epoch_ended = stepped and self.steps % self.num_batches == 0
            self.epoch += self.epoch_ended
        self.last = Recorded(self.steps if stepped else 0, self.round, step.batch, loss, len(trained) if stepped else 0)
        if self.done:
            self._check_unchecked()
        return step.batch

    def record_pooled(self, loss: torch.Tensor | float, samples: torch.Tensor) -> int:
        """Record an optimizer step on samples pooled from loaded batches already recorded (a policy that
        ``accumulates``: the loaded batches themselves are no steps): ``loss`` its training loss (0-d), ``samples``
        the sample indices it trained, shape (b,). Counted in the epoch of the batch that completed it (the last
        one recorded). Returns that batch's id."""
        if self.last is None:
            raise RuntimeError("record_pooled() before any batch was recorded")
        step = Step(samples, self.last.batch)
        self._check_finite("record_pooled(loss)", "the loss is", loss, step)
        self.steps += 1
        self._visits[step.batch] += 1
        first_epoch = self.epoch == 0 or (self.epoch == 1 and self.epoch_ended)
        watched = 0 if self._watched is None else int(self._watched[samples.cpu()].sum())
        self.trained_samples["all"] += len(samples)
        self.trained_samples["watched"] += watched
        if first_epoch:
            self.trained_samples["first_epoch"] += len(samples)
            self.trained_samples["watched_first_epoch"] += watched
        self.last = Recorded(self.steps, self.round, step.batch, loss, len(samples))
        return step.batch

    def _trained(self, step: Step) -> torch.Tensor:
        """The samples of ``step`` that training back-propagates: all of them, or those its weights keep for a
        policy that scores first; none for a policy that pools what it keeps (``record_pooled`` trains them)."""
        if self.policy.accumulates and self._recorded in self._chosen:  # its weights were chosen: it was pooled
            return step.samples[:0]
        if self.policy.scores_first and step.weights is not None:
            return step.samples[(step.weights > 0).cpu()]
        return step.samples

    def _check_per_sample(
        self, call: str, name: str, values: Any, step: Step, rows: int, kept: int | None = None
    ) -> None:
        """Refuse per-sample values that are not a tensor of shape (rows,) (or (kept,), the samples kept of them),
        or not finite (see ``record``)."""
        if not isinstance(values, torch.Tensor) or values.shape not in ((rows,), (kept,)):
            shapes = f"({rows},) (one loss per sample of the batch)" + (
                f" or ({kept},) (one per sample its weights keep)" if kept not in (None, rows) else ""
            )
            raise UsageError(f"{call}: {name} must have shape {shapes}, got {_shape(values)}")
        self._check_finite(call, f"{name} are", values, step)

    @staticmethod
    def _on_host(value: Any) -> bool:
        """Can ``value`` be checked without waiting for an accelerator?"""
        return not isinstance(value, torch.Tensor) or value.device.type == "cpu"

    def _check_finite(self, call: str, what: str, value: Any, step: Step) -> None:
        def context() -> str:
            where = f"step {self.steps + 1}" if not step.score_only else f"the scoring of batch {step.batch}"
            return f"{call}: {what} not finite at {where}"

        if not self._on_host(value):
            self._unchecked.append((context(), value.detach()))
        elif isinstance(value, torch.Tensor) and value.dim():
            if not torch.isfinite(value).all():
                raise _diverged(context())
        elif not math.isfinite(float(value.detach() if isinstance(value, torch.Tensor) else value)):  # 0-d, or a number
            raise _diverged(context())

    def _check_unchecked(self) -> None:
        """Raise TrainingDiverged for the first non-finite device value recorded since the last check (one sync)."""
        if not self._unchecked:
            return
        unchecked, self._unchecked = self._unchecked, []
        finite = torch.stack([torch.isfinite(value).all() for _, value in unchecked]).tolist()
        if not all(finite):
            raise _diverged(unchecked[finite.index(False)][0])

    def _settle(self) -> None:
        """Count the trained steps recorded since the last count, in bulk: the batches' visits and the samples
        trained (watched ones apart), only the samples its weights keep for a policy that scores first."""
        if not self._trained_steps:
            return
        steps = torch.tensor(self._trained_steps)
        self._visits.index_add_(0, self._round.ids[steps], torch.ones(len(steps), dtype=torch.long))
        for suffix, which in (("", self._trained_steps), ("_first_epoch", self._first_epoch_steps)):
            if not which:
                continue
            key = "all" if not suffix else "first_epoch"
            if not self.policy.scores_first and self._watched is None:  # whole rows, nobody watched: no gather
                self._trained_samples[key] += len(which) * len(self._round.row(which[0]))
                continue
            rows = self._round.rows_where(torch.tensor(which))
            kept = torch.ones(rows.shape, dtype=torch.bool)
            if self.policy.scores_first:
                for j, i in enumerate(which):
                    weights = self._step_weights(i)
                    if weights is not None:
                        kept[j] = weights.cpu() > 0
            self._trained_samples[key] += int(kept.sum())
            if self._watched is not None:
                self._trained_samples[f"watched{suffix}"] += int(self._watched[rows[kept]].sum())
        self._trained_steps, self._first_epoch_steps = [], []

    def _step_weights(self, i: int) -> torch.Tensor | None:
        """The weights step ``i`` of this round trains with (chosen by ``select``, or set before loading), or None."""
        if i in self._chosen:
            return self._chosen[i]
        return self._round.step(i).weights

    @property
    def trained_samples(self) -> dict[str, int]:
        """How many samples were back-propagated: ``all``, in the ``first_epoch``, and of those the ``watched`` ones
        (``watched_first_epoch``), up to the step recorded last."""
        self._settle()
        return self._trained_samples

    @property
    def visits(self) -> torch.Tensor:
        """How often each of the N fixed batches was trained (for the policies whose steps are batches of the
        partition; the others count the batch ids of their own cuts), shape (N,)."""
        self._settle()
        return self._visits

    def exposure(self) -> dict[str, float]:
        """The share of watched samples (``watch``) among the samples back-propagated, in all and after the first
        epoch, against their share of the data and of the samples the partition holds (NaN where undefined)."""
        self._settle()
        t = self._trained_samples
        after_all, after_watched = t["all"] - t["first_epoch"], t["watched"] - t["watched_first_epoch"]
        held = self.partition.flatten()
        watched = self._watched if self._watched is not None else torch.zeros(self.num_samples, dtype=torch.bool)
        return {
            "trained": t["watched"] / t["all"] if t["all"] else math.nan,
            "trained_after_warmup": after_watched / after_all if after_all else math.nan,
            "in_data": int(watched.sum()) / len(watched),
            "in_partition": int(watched[held].sum()) / len(held),
        }

    def state_dict(self) -> dict:
        """The state as of the last recorded step; batches drawn but not recorded are drawn again. Compact: the
        partition as a fingerprint (the sampler rebuilds it), the round as the rows it takes (``Round.state_dict``)."""
        if sys._getframe(1).f_globals.get("__name__", "").startswith("torchdata") and not self._warned_torchdata:
            # torchdata's StatefulDataLoader asks when it sends indices to its workers, ahead of training.
            self._warned_torchdata = True
            warnings.warn(
                "torchdata's StatefulDataLoader saves a batch sampler's state when it sends the indices "
                "to its workers, ahead of the steps recorded, so a resume would train the prefetched "
                "batches twice; use hardbatch.integrations.torchdata.StatefulDataLoader, which saves the "
                "sampler's state with the checkpoint",
                stacklevel=2,
            )
        self._check_unchecked()
        self._settle()
        sources = self.policy.sources()
        return {
            "policy": self.policy.state_dict(),
            "steps": self.steps,
            "epoch": self.epoch,
            "visits": self._visits.clone(),
            "trained_samples": dict(self._trained_samples),
            "round": self._round.state_dict(sources),
            # Weights chosen for a drawn step not recorded yet: the policy's draws for it are spent already.
            "chosen": {i: w.cpu() for i, w in self._chosen.items() if i >= self._recorded},
            "recorded": self._recorded,
            "partition": _fingerprint(self.partition),
            "cost": self.meter.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a ``state_dict`` of a sampler over the same partition; UsageError otherwise)."""
        if state["partition"] != _fingerprint(self.partition):
            raise UsageError(
                f"this state is of another partition ({state['partition'][0]} batches of "
                f"{state['partition'][1]}, fingerprint {state['partition'][2]}) than this sampler's "
                f"({self.num_batches} of {self.partition.shape[1]}, {_fingerprint(self.partition)[2]}): "
                f"build the sampler as the saved one was built"
            )
        self.policy.load_state_dict(state["policy"])
        self.steps = int(state["steps"])
        self.epoch = int(state["epoch"])
        self._visits = state["visits"].clone()
        self._trained_samples = dict(state["trained_samples"])
        self._round = Round.from_state(state["round"], self.policy.sources())
        self._chosen = dict(state["chosen"])
        self._held = None
        self._trained_steps, self._first_epoch_steps = [], []
        self._recorded = self._yielded = self._pass_start = int(state["recorded"])
        self.meter.load_state_dict(state["cost"])
        self.epoch_ended = False
        self._looked = False
        self._unchecked = []


def _fingerprint(partition: torch.Tensor) -> tuple[int, int, int]:
    """(N, B, a checksum of the indices and their order): what tells two partitions apart, in 3 numbers."""
    flat = partition.flatten().long()
    weights = torch.arange(len(flat), dtype=torch.long) % 1_000_003 + 1
    return len(partition), int(partition.shape[1]), int((flat * weights).sum())


def _watch_mask(watch: Any, num_samples: int) -> torch.Tensor | None:
    """The watched samples as a bool mask (n,), or None."""
    if watch is None:
        return None
    indices = torch.as_tensor(watch, dtype=torch.long)
    if indices.dim() != 1 or (len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= num_samples)):
        raise UsageError(f"watch must be sample indices in [0, {num_samples}), got {tuple(indices.shape)} values")
    mask = torch.zeros(num_samples, dtype=torch.bool)
    mask[indices] = True
    return mask


def _policy(policy: Any, delta: Any, params: dict[str, Any]) -> Policy:
    """The (unbound) policy a sampler was given: an object as it is, a name with its hyper-parameters."""
    if isinstance(policy, Policy):
        if delta is not None or params:
            given = ", ".join([*(["delta"] if delta is not None else []), *params])
            raise UsageError(
                f"pass {given} to the policy object, not to the sampler: "
                f"{type(policy).__name__}({given.split(', ')[0]}=...)"
            )
        return policy
    if not isinstance(policy, str):
        raise UsageError(
            f"policy must be a registered name (see hardbatch.policies.POLICIES) or a policy object "
            f"(hardbatch.policies.HardBatch(delta=0.5), ...), got {_shape(policy)}"
        )
    if delta is not None:
        from hardbatch.policies import policy_class

        if policy_class(policy).takes("delta"):
            params = {"delta": delta, **params}
        elif delta != 1.0:  # δ = 1 is every policy's way of training all the data: accepted and ignored
            raise UsageError(
                f"policy {policy!r} does not take delta (got {delta!r}); policies that do: hardbatch, random, cyclic"
            )
    return create_policy(policy, **params)


def _diverged(context: str) -> TrainingDiverged:
    return TrainingDiverged(f"{context}; try a lower learning rate, or check how the loss is computed")


def _checked_partition(partition: torch.Tensor) -> torch.Tensor:
    """``partition`` if it is an (N, B) integer tensor of sample indices >= 0 (N, B >= 1); else one line."""
    expected = "data_len_or_partition must be a positive int or an (N, B) integer tensor of sample indices"
    if partition.dim() != 2 or partition.numel() == 0:
        raise UsageError(f"{expected}, got a tensor of shape {tuple(partition.shape)}")
    if partition.dtype.is_floating_point or partition.dtype.is_complex or partition.dtype == torch.bool:
        raise UsageError(f"{expected}, got a tensor of dtype {partition.dtype}")
    if int(partition.min()) < 0:
        raise UsageError(f"sample indices must be >= 0, got {int(partition.min())}")
    return partition.long()


def _checked_labels(labels: Any, num_samples: int, exact: bool) -> torch.Tensor:
    """``labels`` (any sequence) as a LongTensor of shape (num_samples,), or at least that long unless ``exact``."""
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise UsageError(f"labels must be integer class indices, got {labels.dtype}")
    if labels.dim() != 1:
        raise UsageError(f"labels must hold one class per sample ({num_samples}), got shape {tuple(labels.shape)}")
    if len(labels) < num_samples or (exact and len(labels) != num_samples):
        raise UsageError(f"labels must hold one class per sample ({num_samples}), got {len(labels)}")
    if int(labels.min()) < 0:
        raise UsageError(f"labels must be class indices >= 0, got {int(labels.min())}")
    return labels.long()


def _warn_if_class_sorted(labels: torch.Tensor, partition: torch.Tensor, how: str) -> None:
    """Warn (UserWarning) when the batches of ``partition`` are mostly one class of ``labels``; ``how``: the fix."""
    purity = single_class_purity(labels, partition)
    if purity is not None:
        warnings.warn(
            f"each mini-batch is {100 * purity:.0f}% one class on average (the data set is ordered by "
            f"class); training on such batches rarely learns; {how}",
            stacklevel=3,
        )
