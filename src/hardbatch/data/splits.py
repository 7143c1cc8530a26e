"""How a training split is cut and reshaped: the stratified validation split, a class-balanced subset, a long tail
and label noise, each drawn from its own seeded generator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hardbatch.config import RunConfig
from hardbatch.data.memory import SizedDataset, dataset_labels, subset, with_labels
from hardbatch.errors import UsageError
from hardbatch.functional import generator_for

SPLIT_SEED = 0  # the validation split is the same for every run, whatever its seed


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out): ``fraction`` of each class held out at random, both sorted ascending.

    ``labels``: (n,). Drawn from a generator seeded with ``seed`` itself (not derived from a run's seed), so every
    run of a data set holds out the same samples."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for c in torch.unique(labels).tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held.append(members[: round(fraction * len(members))])
    held_out = torch.sort(torch.cat(held)).values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return mask.nonzero().flatten(), held_out


def hold_out(train: SizedDataset, fraction: float) -> tuple[SizedDataset, SizedDataset | None]:
    """(train, validation): ``fraction`` of each class of ``train`` held out by ``stratified_split``; ``train`` and
    None when ``fraction`` is 0. A fraction that holds out no sample at all is a UsageError."""
    if fraction <= 0:
        return train, None
    labels = dataset_labels(train)
    keep, held_out = stratified_split(labels, fraction)
    if len(held_out) == 0:
        largest = int(torch.unique(labels, return_counts=True)[1].max())
        raise UsageError(
            f"--val-fraction {fraction:g} holds out no samples (it rounds to 0 of every class; "
            f"the largest has {largest}); use more than {0.5 / largest:.2g}, or 0 for no validation split"
        )
    return subset(train, keep), subset(train, held_out)


# ---- reshaping the training split: a class-balanced subset, a long tail, label noise (all seeded by the run) ----
# Each draws from its own generator of the run seed (generator_for: the package's one seed derivation).


def balanced_subset(labels: torch.Tensor, size: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (sorted) of ``size`` samples, as equal per class as the classes allow, drawn at random within each.

    ``labels``: (n,). Classes with fewer samples than their share give all of them and the rest goes to the others;
    the ``size % classes`` left over go to the classes with the most samples.
    """
    if not (num_classes <= size <= len(labels)):
        raise UsageError(
            f"train subset must be between the number of classes ({num_classes}) and the training "
            f"split's {len(labels)} samples, got {size}"
        )
    available = torch.bincount(labels, minlength=num_classes)
    order = torch.sort(available, stable=True).indices.tolist()  # fewest samples first
    quota, remaining = {}, size
    for i, c in enumerate(order):
        quota[c] = min(int(available[c]), remaining // (len(order) - i))
        remaining -= quota[c]
    return _draw_per_class(labels, quota, generator)


def long_tail_counts(counts: torch.Tensor, rho: float) -> torch.Tensor:
    """How many samples class c keeps of its ``counts[c]``: floor(counts[c] * rho^(-c / (C - 1))). ``counts``: (C,)."""
    c = len(counts)
    if c < 2:
        return counts.clone()
    # The 1e-9 keeps an exact product such as 6000 * 10^-1 = 600 from flooring to 599 through rounding error.
    return torch.tensor([math.floor(int(n) * rho ** (-i / (c - 1)) + 1e-9) for i, n in enumerate(counts)])


def long_tailed(labels: torch.Tensor, rho: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (sorted) of a long-tailed subset: class c keeps ``long_tail_counts`` of its samples, drawn at random."""
    counts = torch.bincount(labels, minlength=num_classes)
    keep = long_tail_counts(counts, rho)
    emptied = [c for c in range(num_classes) if counts[c] > 0 and keep[c] == 0]
    if emptied:
        # Class c keeps at least one sample while rho <= n_c^((C - 1) / c).
        most = min(int(counts[c]) ** ((num_classes - 1) / c) for c in range(1, num_classes) if counts[c] > 0)
        raise UsageError(
            f"imbalance {rho:g} leaves class {emptied[0]} with none of its {int(counts[emptied[0]])} "
            f"training samples; use an imbalance between 1 and {math.floor(most * (1 + 1e-12)):d}"
        )
    return _draw_per_class(labels, dict(enumerate(keep.tolist())), generator)


def _draw_per_class(labels: torch.Tensor, quota: dict[int, int], generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``quota[c]`` samples of each class c, chosen uniformly at random (classes in index order)."""
    chosen = []
    for c in sorted(quota):
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[: quota[c]]])
    return torch.sort(torch.cat(chosen)).values


def noisy_labels(
    labels: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with exactly round(fraction * n) of them replaced by another class drawn uniformly (never their own).

    ``labels``: (n,). Returns (new labels (n,), sorted indices (m,) of the replaced ones).
    """
    m = round(fraction * len(labels))
    if m and num_classes < 2:
        raise UsageError("label noise needs at least 2 classes")
    indices = torch.sort(torch.randperm(len(labels), generator=generator)[:m]).values
    new = labels.clone()
    # An offset of 1..C-1 classes, uniform, moves each label to one of the C - 1 others, uniformly.
    new[indices] = (labels[indices] + torch.randint(1, max(num_classes, 2), (m,), generator=generator)) % num_classes
    return new, indices


@dataclass
class Relabelling:
    """The training samples whose label the label noise replaced. ``indices``: (m,) sorted, into the training
    split as the sampler sees it; ``true_labels``, ``given_labels``: (m,) their labels before and after."""

    indices: torch.Tensor
    true_labels: torch.Tensor
    given_labels: torch.Tensor


def reshape_train(train: SizedDataset, cfg: RunConfig, num_classes: int) -> tuple[SizedDataset, Relabelling | None]:
    """The training split as ``cfg`` asks: a class-balanced subset (``train_subset``), then a long tail
    (``imbalance``), then label noise (``label_noise``), each from its own generator of ``cfg.seed``."""
    labels = dataset_labels(train)
    if cfg.train_subset is not None:
        keep = balanced_subset(labels, cfg.train_subset, num_classes, generator_for(cfg.seed, "train-subset"))
        train, labels = subset(train, keep), labels[keep]
    if cfg.imbalance != 1:
        keep = long_tailed(labels, cfg.imbalance, num_classes, generator_for(cfg.seed, "imbalance"))
        train, labels = subset(train, keep), labels[keep]
    if cfg.label_noise == 0:
        return train, None
    given, indices = noisy_labels(labels, cfg.label_noise, num_classes, generator_for(cfg.seed, "label-noise"))
    return with_labels(train, given), Relabelling(indices, labels[indices], given[indices])
