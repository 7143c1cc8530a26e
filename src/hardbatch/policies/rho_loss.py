"""RHO-LOSS (Mindermann et al., ICML 2022, arXiv 2206.07137): of a large candidate batch, train the most reducible."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from hardbatch import batches as batching
from hardbatch.errors import UsageError
from hardbatch.functional import key_ids, top_reducible
from hardbatch.losses import LossFn, check_per_sample, cross_entropy
from hardbatch.models import check_model_name
from hardbatch.params import Range, param
from hardbatch.policies.base import Policy, Round, Step
from hardbatch.policies.registry import register


@torch.no_grad()
def irreducible_losses(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    transform: Callable | None = None,
    *,
    loss_fn: LossFn = cross_entropy,
    forward: batching.Forward = batching.forward,
) -> torch.Tensor:
    """Each training sample's loss under ``model`` (the IL model) in eval mode, without gradient, shape (n,).

    ``loader`` yields batches of the training set in index order (no shuffling), so entry i is sample i: (x, y, ...)
    or dicts, as ``fit`` takes them; ``loss_fn(forward(model, batch), batch)`` gives each sample's loss (default:
    cross-entropy of ``model(x)``; any ``hardbatch.losses`` reducer). ``transform(x, None)``, when given, turns x =
    batch[0] into model input (tuple batches). The model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    losses = []
    for batch in loader:
        batch = batching.to_device(batch, device)
        if transform is not None:
            if not isinstance(batch, (tuple, list)):
                raise UsageError(
                    "irreducible_losses: a transform applies to x of (x, y, ...) batches; a dict batch "
                    "takes none (transform it in the dataset or collate_fn)"
                )
            batch = (transform(batch[0], None), *batch[1:])
        sample_losses = loss_fn(forward(model, batch), batch)
        check_per_sample(sample_losses, batching.batch_size(batch))
        losses.append(sample_losses.float().cpu())
    model.train(was_training)
    return torch.cat(losses)


@register
@dataclass(eq=False)
class RhoLoss(Policy):
    """Each pass, a fresh seeded permutation of the n samples is cut into ⌊n / C⌋ candidate batches of
    C = ⌈B / select_fraction⌉ (the remainder dropped). The step core runs a no-grad forward over each candidate
    batch; the reducible loss of a sample is that loss minus its irreducible loss (``irreducible``, the IL model's
    loss, computed once), and the B highest are trained (weight 1, the rest 0; ties go to the earlier position in
    the candidate batch). The budget stays epochs·N optimizer steps of B samples, so an epoch (N steps) spans about
    1 / select_fraction passes over the data. A run (``hardbatch train``) first trains the irreducible-loss model on
    its validation split; in your own loop, set ``sampler.policy.irreducible`` (``irreducible_losses``) before
    training. The paper's default selects 10% of each candidate batch.
    """

    select_fraction: float = param(
        0.1,
        "fraction of each candidate batch trained: of ⌈B / select_fraction⌉ candidates, the B most reducible losses",
        range=Range(0.0, 1.0, low_open=True),
        metavar="F",
    )
    il_model: str = param(
        "",
        "network of the irreducible-loss model, trained first on the validation split",
        metavar="NAME",
        default_text="the run's model",
    )
    il_epochs: int = param(
        0,
        "epochs of the irreducible-loss model's training (0: the run's epochs)",
        range=Range(0, integer=True),
        metavar="E",
    )
    score_moves_batchnorm: bool = param(
        False,
        "the scoring forward (training mode) leaves BatchNorm's running "
        "statistics moved, as the authors' code does; off: restored (the "
        "selection is the same; evaluation can differ)",
    )

    name = "rho-loss"
    axis = "select_fraction"
    scores_first = True
    holdout = True
    in_batch = True
    per_sample_state = True
    example: ClassVar[dict[str, Any]] = {"select_fraction": 0.5}
    requires: ClassVar[dict[str, Any]] = {
        "val_fraction": (
            lambda fraction: fraction > 0,
            "trains its irreducible-loss model on the validation split: set {} (e.g. 0.1)",
        )
    }

    def validate(self) -> None:
        """The irreducible-loss model, when named, must be a registered network."""
        if self.il_model:
            check_model_name(self.il_model)

    def setup(self) -> None:
        self.candidates = math.ceil(self.batch_size / self.select_fraction - 1e-9)  # C: 0.1 → 10·B, not 10·B + 1
        self._irreducible: torch.Tensor | None = None
        self._ids: torch.Tensor | None = None  # over a stream: the sorted sample ids the irreducible losses are of
        if self.streaming:
            return
        if self.candidates > self.num_samples:
            raise UsageError(
                f"select_fraction {self.select_fraction} makes candidate batches of "
                f"⌈{self.batch_size} / {self.select_fraction}⌉ = {self.candidates} samples, more than the "
                f"{self.num_samples} training samples; use a larger select_fraction or a smaller batch"
            )

    @property
    def irreducible(self) -> torch.Tensor | None:
        """The IL model's loss of every training sample, shape (n,), or None before the run sets it."""
        return self._irreducible

    @irreducible.setter
    def irreducible(self, losses: torch.Tensor | Mapping | None) -> None:
        """Set from a tensor (n,), entry i the loss of sample i; over a stream also from a mapping of sample ids
        (integers, or the strings of a batch's ``id_key``) to losses."""
        self._ids = None
        if isinstance(losses, Mapping):
            if not self.streaming:
                raise ValueError(
                    "irreducible losses by sample id are for a stream (InBatchSelector); a sampler's "
                    "samples are 0..n-1: give a tensor of shape (n,)"
                )
            ids = key_ids(list(losses))
            order = torch.sort(ids).indices
            self._ids, losses = ids[order], torch.tensor([float(v) for v in losses.values()])[order]
        elif losses is not None:
            losses = losses.detach().float().cpu()
            if not self.streaming and losses.shape != (self.num_samples,):
                raise ValueError(
                    f"irreducible losses must have shape ({self.num_samples},), one per training "
                    f"sample, got {tuple(losses.shape)}"
                )
        self._irreducible = None if losses is None else losses.clone()

    def irreducible_of(self, samples: torch.Tensor) -> torch.Tensor:
        """The irreducible losses of ``samples`` (indices, or a stream's sample ids), shape (b,)."""
        table = self._irreducible
        if table is None:
            raise RuntimeError(
                "rho-loss has no irreducible losses: set policy.irreducible to the IL model's loss of "
                "every training sample (irreducible_losses(il_model, loader, device)) before training"
            )
        samples = samples.cpu()
        if self._ids is None:
            if self.streaming and int(samples.max()) >= len(table):
                raise UsageError(
                    f"no irreducible loss for sample id {int(samples.max())}: the tensor set holds {len(table)}"
                )
            return table[samples]
        at = torch.searchsorted(self._ids, samples).clamp(max=len(self._ids) - 1)
        missing = self._ids[at] != samples
        if missing.any():
            raise UsageError(
                f"no irreducible loss for sample id {int(samples[missing][0])}: set one for every id the stream yields"
            )
        return table[at]

    def in_batch_preset(self, step: int, epoch: int) -> bool:
        return False

    def plan(self) -> Round:
        self.round += 1
        order = torch.randperm(self.num_samples, generator=self.generator)
        count = self.num_samples // self.candidates
        return Round.of(order[: count * self.candidates].view(count, self.candidates))

    def select(self, step: Step, scores: torch.Tensor) -> torch.Tensor:
        # A sampler's candidate batch of C = ⌈B / f⌉ keeps B; a stream's loaded batch of C keeps ⌊f·C⌋ (at least 1).
        count = self.batch_size if not self.streaming else max(1, math.floor(self.select_fraction * len(scores) + 1e-9))
        return top_reducible(scores.detach().float().cpu(), self.irreducible_of(step.samples), count)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "irreducible": self._irreducible, "ids": self._ids}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.irreducible = state["irreducible"]
        self._ids = state["ids"]
