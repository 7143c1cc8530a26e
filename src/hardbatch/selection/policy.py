"""The policy protocol: what every selection policy offers the sampler and the training loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hardbatch.functional import generator_for
from hardbatch.params import NoParams


@dataclass
class Step:
    """One item of a pass: the samples to load, in order, and what to do with them."""

    samples: torch.Tensor  # (b,) LongTensor of sample indices
    batch: int  # the batch's id in the trace: its fixed index, or its position in this round's cut
    score_only: bool = False  # a no-grad scoring forward (``--rescore``), not an optimizer step
    weights: torch.Tensor | None = None  # (b,) per-sample loss weights; None: the plain mean loss

    def to_state(self) -> dict:
        return {"samples": self.samples, "batch": self.batch, "score_only": self.score_only, "weights": self.weights}


class Policy:
    """A selection policy. The protocol, in five lines:

    - ``plan()`` -> the next pass as a list of :class:`Step`, decided before anything is loaded;
    - ``select(step, scores)`` -> per-sample weights (0 = skip), only when ``scores_first``: the loop hands it
      the no-grad losses of the loaded batch first;
    - ``observe(step, loss, sample_losses)`` after each step: the batch's mean training loss (0-d) and, when
      ``per_sample``, each sample's unweighted training loss, shape (b,);
    - ``state_dict()`` / ``load_state_dict()`` for checkpoints.

    The loop, not the policy, owns devices, autocast, BatchNorm mode and collectives; ``score_train_mode`` says
    which mode its no-grad scoring forwards run in (training mode with the BatchNorm buffers restored, or eval
    mode). A ``scores_first`` step whose weights keep no sample is consumed without an optimizer step. ``uses_delta``
    says whether δ means anything to the policy; ``epoch_is_round``: an epoch is one pass of the policy
    (whatever its length) instead of N optimizer steps.

    A policy is one file in this package: the class, decorated with ``@register`` (selection/registry.py), and
    its hyper-parameters as a frozen dataclass ``Params`` whose fields are declared with ``params.param`` (type,
    default, range, help). The constructor takes them by their field names. ``axis`` names the hyper-parameter
    the policy's arms differ by in reports (``"delta"`` for δ policies), None for a policy with one arm.
    """

    name = ""
    uses_delta = False
    per_sample = False
    scores_first = False
    score_train_mode = True
    epoch_is_round = False
    axis: str | None = None
    Params: type = NoParams
    needs_irreducible = False  # RHO-LOSS: the experiment first trains a model on held-out data (hardbatch/holdout.py)
    # A tiny run of the policy, for the registry-wide tests and the benchmarks: hyper-parameters that make it act on
    # small data (``example``), and run settings it cannot do without (``run_needs``: RHO-LOSS's validation split).
    example: dict = {}
    run_needs: dict = {}
    # What the policy needs of a run's settings, checked by ``config.validate``: setting -> (test, what it needs).
    requires: dict = {}

    def needs_scores(self, step: Step) -> bool:
        """Whether the loop must run the no-grad scoring forward for ``step`` before training it: every step of a
        policy that ``scores_first``, unless the policy knows it will not choose there (Composer's SB)."""
        return self.scores_first

    def __init__(self, batches: int | torch.Tensor, *, num_samples: int | None = None, seed: int = 0, epochs: int = 1):
        # A bare batch count stands for a partition of one sample per batch (enough for batch-level policies).
        self.partition = torch.arange(batches).view(-1, 1) if isinstance(batches, int) else batches
        self.num_batches = len(self.partition)
        self.batch_size = self.partition.shape[1]
        self.num_samples = num_samples or self.partition.numel()
        self.epochs = epochs
        self.generator = generator_for(seed, "policy")
        self.k = self.num_batches  # optimizer steps per round after the first
        self.round = -1  # index of the round last planned; -1 before the first

    def plan(self) -> list[Step]:
        raise NotImplementedError

    def select(self, step: Step, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"policy {self.name!r} does not score batches before training them")

    def observe(self, step: Step, loss: torch.Tensor | float, sample_losses: torch.Tensor | None = None) -> None:
        """Default: nothing to learn from the loss."""

    def _shuffled_cut(self) -> torch.Tensor:
        """A fresh seeded cut of every sample into N batches of B (the remainder dropped), shape (N, B)."""
        order = torch.randperm(self.num_samples, generator=self.generator)
        return order[: self.num_batches * self.batch_size].view(self.num_batches, self.batch_size)

    def state_dict(self) -> dict:
        return {"round": self.round, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.round = int(state["round"])
        self.generator.set_state(state["generator"])

