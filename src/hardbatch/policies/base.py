"""The policy protocol: what every selection policy offers the sampler and the step core.

A policy is a dataclass whose fields are its hyper-parameters, declared once with ``params.param``; its constructor
takes only them and checks each (``InfoBatch(prune_ratio=0.5)``). The sampler binds it to the data
(``policy.bind(partition, ...)`` returns a bound copy), and the bound copy plans, chooses and learns:

- ``plan()`` -> the next pass as a :class:`Round`, decided before anything is loaded;
- ``select(step, scores)`` -> per-sample weights (0 = skip), only for policies that score first: the step core hands
  it the no-grad losses of the loaded batch (``needs_scores(step)`` says where);
- ``observe(step, loss, sample_losses)`` after each step: the batch's mean training loss (0-d) and, for a
  ``per_sample`` policy, each sample's unweighted training loss, shape (b,);
- ``state_dict()`` / ``load_state_dict()`` for checkpoints.

The loop, not the policy, owns devices, autocast, BatchNorm mode and collectives.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hardbatch.functional import generator_for
from hardbatch.params import check_fields


@dataclass
class Step:
    """One step of a pass, as the loop sees it: the samples to load, in order, and what to do with them."""

    samples: torch.Tensor  # (b,) LongTensor of sample indices
    batch: int  # the batch's id in the trace: its fixed index, or its position in this round's cut
    score_only: bool = False  # a no-grad scoring forward (``rescore``, IES), not an optimizer step
    weights: torch.Tensor | None = None  # (b,) per-sample loss weights; None: the plain mean, or not chosen yet


@dataclass
class Round:
    """One pass of a policy, planned before loading: S steps of b samples each, as a few tensors.

    Step i trains the row ``samples[i]`` of an (S, b) table, or, for a policy that trains rows of a table it holds
    (the paper's rule over its fixed partition), row ``ids[i]`` of ``source`` (no copy of the chosen rows).
    ``ids``: (S,) each step's batch id in the trace; ``score_only``: the whole pass is no-grad scoring (no optimizer
    step); ``weights``: (S, b) per-sample loss weights set before loading, or None (the plain mean); ``preset``:
    (S,) bool, for policies that score first, the steps whose weights are already set (their no-grad scoring pass is
    skipped), None: none are.
    """

    samples: torch.Tensor | None
    ids: torch.Tensor
    score_only: bool = False
    weights: torch.Tensor | None = None
    preset: torch.Tensor | None = None
    source: torch.Tensor | None = None

    @classmethod
    def of(cls, samples: torch.Tensor, ids: torch.Tensor | None = None, **kwargs: Any) -> Round:
        """A round of the rows of ``samples`` (S, b), numbered 0..S-1 unless ``ids`` are given."""
        return cls(samples, torch.arange(len(samples)) if ids is None else ids, **kwargs)

    @classmethod
    def rows(cls, source: torch.Tensor, ids: torch.Tensor, **kwargs: Any) -> Round:
        """A round of rows ``ids`` (S,) of ``source`` (M, b), in that order, each step numbered by its row."""
        return cls(None, ids, source=source, **kwargs)

    def __len__(self) -> int:
        return len(self.ids)

    def __post_init__(self) -> None:
        self._ids = self.ids.tolist()  # step lookups read Python ints: no tensor indexing per step

    def row(self, i: int) -> torch.Tensor:
        """The sample indices of step ``i``, shape (b,)."""
        if self.source is not None:
            return self.source[self._ids[i]]
        assert self.samples is not None  # a round holds its rows or a source to take them from
        return self.samples[i]

    def rows_where(self, steps: torch.Tensor) -> torch.Tensor:
        """The sample indices of the steps ``steps`` (indices), shape (len(steps), b)."""
        if self.source is not None:
            return self.source[self.ids[steps]]
        assert self.samples is not None
        return self.samples[steps]

    def step(self, i: int) -> Step:
        """Step ``i`` as the loop sees it (weights only where they are set before loading)."""
        weights = None
        if self.weights is not None and (self.preset is None or bool(self.preset[i])):
            weights = self.weights[i]
        return Step(self.row(i), self._ids[i], self.score_only, weights)

    def head(self, count: int) -> Round:
        """The first ``count`` steps (the budget cuts a round short)."""
        return Round(
            None if self.samples is None else self.samples[:count],
            self.ids[:count],
            self.score_only,
            None if self.weights is None else self.weights[:count],
            None if self.preset is None else self.preset[:count],
            self.source,
        )

    def state_dict(self, sources: dict[str, torch.Tensor]) -> dict:
        """The round compactly: the name of its ``source`` among ``sources`` (the tables the policy holds) instead
        of the rows; sample indices as int32 below 2^31; weights as the codes of their few distinct values."""
        state = {"ids": _narrow(self.ids), "score_only": self.score_only, "preset": self.preset}
        if self.source is not None:
            state["source"] = next(name for name, table in sources.items() if table is self.source)
        else:
            assert self.samples is not None
            state["samples"] = _narrow(self.samples)
        if self.weights is not None:
            values, codes = torch.unique(self.weights, return_inverse=True)
            state["weights"] = (values, codes.to(torch.uint8)) if len(values) <= 256 else (None, self.weights)
        return state

    @classmethod
    def from_state(cls, state: dict, sources: dict[str, torch.Tensor]) -> Round:
        """The round ``state_dict`` saved, its rows taken from ``sources`` (the policy's tables) by name."""
        weights = None
        if state.get("weights") is not None:
            values, codes = state["weights"]
            weights = codes if values is None else values[codes.long()]
        source = sources[state["source"]] if "source" in state else None
        samples = None if source is not None else state["samples"].long()
        return cls(samples, state["ids"].long(), state["score_only"], weights, state["preset"], source)


def _narrow(indices: torch.Tensor) -> torch.Tensor:
    """Sample indices as int32 when they fit (half a checkpoint's bytes); ``.long()`` reads them back."""
    return indices.int() if indices.numel() == 0 or int(indices.max()) < 2**31 else indices


class SampleScores:
    """Each sample's last recorded loss (NaN before it has one), shape (n,), kept beside the losses (no device sync).

    ``write`` only remembers; the table is written in one operation when ``values`` is read (a policy reads it when
    it plans a round), so a step costs no tensor operation. A round never holds a sample twice, so the samples
    written between two reads are distinct.
    """

    def __init__(self, num_samples: int):
        self._values = torch.full((num_samples,), float("nan"))
        self._unwritten: list[tuple[Any, ...]] = []  # (samples, losses) of each write since the last read

    def write(self, samples: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the losses (b,) of samples (b,)."""
        self._unwritten.append((samples, losses.detach().float()))

    @property
    def values(self) -> torch.Tensor:
        """The table, shape (n,), with everything written so far."""
        if self._unwritten:
            device = self._unwritten[-1][1].device
            self._values = self._values.to(device)
            self._values[torch.cat([s for s, _ in self._unwritten]).to(device)] = torch.cat(
                [v.to(device) for _, v in self._unwritten]
            )
            self._unwritten = []
        return self._values

    def state_dict(self) -> torch.Tensor:
        return self.values.cpu().clone()

    def load_state_dict(self, values: torch.Tensor) -> None:
        self._values, self._unwritten = values.clone(), []


EMPTY_ROUND = Round(torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))


class Policy:
    """A selection policy: a dataclass of hyper-parameters (subclasses declare them with ``params.param``) that the
    sampler binds to the data. See the module docstring for the protocol.

    Class attributes say what the step core must do for it: ``per_sample`` (``observe`` needs each sample's loss),
    ``scores_first`` (a no-grad forward of the loaded batch comes first, and ``select`` weighs it), ``score_train_mode``
    (that forward runs in training mode with the BatchNorm buffers restored, else in eval mode),
    ``score_moves_batchnorm`` (a training-mode scoring forward leaves BatchNorm's running statistics moved, as some
    authors' code does), ``accumulates`` (the samples a scoring policy keeps are pooled across loaded batches and
    trained B at a time), ``epoch_is_round`` (an epoch is one pass, whatever its length, instead of N optimizer steps).
    ``axis`` names the hyper-parameter a policy's arms differ by in reports (None: one arm); ``example`` the
    hyper-parameters of a tiny run on small data (the registry-wide tests); ``requires`` what it needs of a run's
    settings (setting -> (test, what it needs, ``{}`` standing for the setting's name), checked by ``config``);
    ``holdout``: the run first trains an irreducible-loss model on the validation split (RHO-LOSS, ``run/holdout.py``);
    ``in_batch``: the policy chooses among the samples of a loaded batch, so it also runs over any loader
    (``hardbatch.InBatchSelector``), answering ``in_batch_preset``; ``per_sample_state``: it keeps state per sample (it
    needs stable sample ids there).
    """

    name: ClassVar[str] = ""
    per_sample: ClassVar[bool] = False
    scores_first: ClassVar[bool] = False
    score_train_mode: ClassVar[bool] = True
    score_moves_batchnorm: bool = False  # a hyper-parameter of the policies that offer both
    accumulates: ClassVar[bool] = False
    epoch_is_round: ClassVar[bool] = False
    axis: ClassVar[str | None] = None
    example: ClassVar[dict[str, Any]] = {}
    requires: ClassVar[dict[str, Any]] = {}
    holdout: ClassVar[bool] = False
    in_batch: ClassVar[bool] = False
    per_sample_state: ClassVar[bool] = False

    # Every subclass is a dataclass (its fields are the hyper-parameters); this says so to type checkers.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    # Set by ``bind`` on the bound copy (an unbound policy has none of them).
    streaming: bool
    partition: torch.Tensor  # (N, B) the fixed batches of sample indices
    num_batches: int  # N
    batch_size: int  # B
    num_samples: int  # n
    epochs: int  # the budget, in epochs
    generator: torch.Generator
    k: int  # optimizer steps per round after the first
    round: int  # index of the round last planned; -1 before the first
    # What a ``holdout`` policy offers the run: the irreducible-loss model's loss of every training sample, set
    # before training (None until then).
    irreducible: torch.Tensor | None

    def __post_init__(self) -> None:
        check_fields(self, owner=type(self).__name__)

    # -- hyper-parameters --------------------------------------------------------------------------------------

    def hyper_parameters(self) -> dict[str, Any]:
        """The policy's hyper-parameters by name (what its constructor takes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def takes(cls, name: str) -> bool:
        """Whether the policy has hyper-parameter ``name``."""
        return name in {f.name for f in dataclasses.fields(cls)}

    # -- binding to the data -------------------------------------------------------------------------------------

    def bind(
        self,
        partition: int | torch.Tensor,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        epochs: int = 1,
        streaming: bool = False,
    ) -> Policy:
        """A copy of this policy bound to the data: ``partition`` the fixed (N, B) batches of sample indices (a
        bare N stands for one sample per batch, enough for batch-level policies), ``num_samples`` n (default: the
        partition's size), ``seed`` its randomness, ``epochs`` the budget; ``streaming``: bound to a stream of
        loaded batches (``InBatchSelector``: N batches an epoch, sample ids read from the batches) rather than to a
        partition the sampler loads. This policy stays unbound."""
        bound = copy.copy(self)
        bound.streaming = streaming
        bound.partition = torch.arange(partition).view(-1, 1) if isinstance(partition, int) else partition
        bound.num_batches = len(bound.partition)
        bound.batch_size = bound.partition.shape[1]
        bound.num_samples = num_samples or bound.partition.numel()
        bound.epochs = epochs
        bound.generator = generator_for(seed, "policy")
        bound.k = bound.num_batches  # optimizer steps per round after the first
        bound.round = -1  # index of the round last planned; -1 before the first
        bound.setup()
        return bound

    def setup(self) -> None:
        """Make the per-data state of a bound policy (stored losses, scores, ...): called by ``bind``."""

    # -- the protocol ----------------------------------------------------------------------------------------------

    def plan(self) -> Round:
        """The next pass of the policy, decided before anything of it is loaded; advances ``round``."""
        raise NotImplementedError

    def needs_scores(self, step: Step) -> bool:
        """Whether the step core must run the no-grad scoring forward for ``step`` before training it: every step
        of a policy that ``scores_first`` whose weights are not set before loading."""
        return self.scores_first and step.weights is None

    def select(self, step: Step, scores: torch.Tensor) -> torch.Tensor:
        """For a policy that scores first: the weights of ``step``'s samples, shape (b,) (0: skip), from their
        no-grad losses ``scores`` (b,)."""
        raise NotImplementedError(f"policy {self.name!r} does not score batches before training them")

    def in_batch_preset(self, step: int, epoch: int) -> bool:
        """For an ``in_batch`` policy over a stream: whether the batch of optimizer step ``step`` (0-based) in epoch
        ``epoch`` trains whole, with no scoring forward (the plain steps of its plan)."""
        raise NotImplementedError(f"policy {self.name!r} does not choose inside a loaded batch")

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        """Default: nothing to learn from the loss."""

    def sources(self) -> dict[str, torch.Tensor]:
        """The tables the policy's rounds take rows from (see ``Round.rows``), by name, for checkpoints."""
        return {"partition": self.partition}

    def shuffled_cut(self) -> torch.Tensor:
        """A fresh seeded cut of every sample into N batches of B (the remainder dropped), shape (N, B)."""
        order = torch.randperm(self.num_samples, generator=self.generator)
        return order[: self.num_batches * self.batch_size].view(self.num_batches, self.batch_size)

    def state_dict(self) -> dict:
        """The bound policy's state (its round, its random generator and what it learned), for checkpoints."""
        return {"round": self.round, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a ``state_dict`` of a policy bound alike)."""
        self.round = int(state["round"])
        self.generator.set_state(state["generator"])
