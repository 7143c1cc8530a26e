"""Per-sample losses for any task: the ``loss_fn(outputs, batch) -> (b,)`` contract and its built-in reducers.

Every loop (``fit``, the drop-in sampler, Lightning, Hugging Face) ranks and weighs samples by one loss per sample,
so a loss function returns shape (b,), b the batch's first dimension: each sample's loss reduced over its own
dimensions (labels, output dims, pixels, tokens), never over the batch. ``outputs`` is what the model returned (a
tensor, or an object with ``.logits`` such as a Hugging Face ``ModelOutput``), ``batch`` the batch as the loader
delivered it, on the device: ``(x, y)``, ``(x, y, ...)`` or a dict with its targets under ``"labels"``.
The built-in reducers compute in float32 (outputs under autocast are cast first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from hardbatch.batches import LABELS
from hardbatch.errors import UsageError

LossFn = Callable[[Any, Any], torch.Tensor]  # (outputs, batch) -> per-sample losses, shape (b,)


def logits_of(outputs: Any) -> torch.Tensor:
    """``outputs.logits`` if it has that attribute, ``outputs["logits"]`` for a dict, else ``outputs`` itself."""
    if hasattr(outputs, "logits"):
        return outputs.logits
    if isinstance(outputs, Mapping):
        return outputs["logits"]
    return outputs


def target_of(batch: Any) -> torch.Tensor:
    """The targets of ``batch``: ``batch["labels"]`` for a dict, ``batch[1]`` for a tuple or list."""
    if isinstance(batch, Mapping):
        if LABELS not in batch:
            raise UsageError(
                f"the loss needs targets: a dict batch holds them under {LABELS!r}, got the keys "
                f"{', '.join(map(repr, batch))}"
            )
        return batch[LABELS]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    got = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    raise UsageError(f"the loss needs targets: a batch is (x, y, ...) or a dict with {LABELS!r}, got {got}")


def check_per_sample(losses: Any, b: int) -> None:
    """Refuse (UsageError, one line) anything but a tensor of shape (b,): one loss per sample of the batch."""
    if isinstance(losses, torch.Tensor) and losses.shape == (b,):
        return
    if not isinstance(losses, torch.Tensor):
        got = f"a {type(losses).__name__}"
    elif losses.dim() == 0:
        got = "shape () (a batch mean: compute it with reduction='none' and reduce only each sample's own dimensions)"
    else:
        got = f"shape {tuple(losses.shape)}"
    raise UsageError(f"loss_fn must return one loss per sample, shape ({b},), got {got}")


def _masked_mean(losses: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Each sample's mean of ``losses`` (b, ...) over its positions whose target is not ``ignore_index``; 0 for a
    sample with none. Shape (b,)."""
    counted = (target != ignore_index).flatten(1).sum(1)
    return losses.flatten(1).sum(1) / counted.clamp(min=1)


def _same_shape(prediction: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """``target`` as float32 in the prediction's shape; a (b,) target for a (b, 1) prediction is fine, a mismatch in
    size is refused (broadcasting (b, 1) against (b,) would compare every sample with every target)."""
    if target.shape != prediction.shape:
        if target.numel() != prediction.numel():
            raise UsageError(
                f"{name}: the model's output has shape {tuple(prediction.shape)} and the targets "
                f"{tuple(target.shape)}; they must hold the same number of values per sample"
            )
        target = target.reshape(prediction.shape)
    return target.float()


def cross_entropy(outputs: Any, batch: Any) -> torch.Tensor:
    """Classification: cross-entropy of class logits (b, C) against class indices (b,). Shape (b,)."""
    return F.cross_entropy(logits_of(outputs).float(), target_of(batch), reduction="none")


def multilabel_bce(outputs: Any, batch: Any) -> torch.Tensor:
    """Multi-label: binary cross-entropy of logits (b, L) against 0/1 targets (b, L), mean over the labels. (b,)"""
    logits = logits_of(outputs).float()
    target = _same_shape(logits, target_of(batch), "multilabel_bce")
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").reshape(len(logits), -1).mean(1)


def mse(outputs: Any, batch: Any) -> torch.Tensor:
    """Regression: squared error, mean over the output dimensions (any shape (b, ...)). Shape (b,)."""
    prediction = logits_of(outputs).float()
    target = _same_shape(prediction, target_of(batch), "mse")
    return F.mse_loss(prediction, target, reduction="none").reshape(len(prediction), -1).mean(1)


def l1(outputs: Any, batch: Any) -> torch.Tensor:
    """Regression: absolute error, mean over the output dimensions (any shape (b, ...)). Shape (b,)."""
    prediction = logits_of(outputs).float()
    target = _same_shape(prediction, target_of(batch), "l1")
    return F.l1_loss(prediction, target, reduction="none").reshape(len(prediction), -1).mean(1)


def dense(ignore_index: int = 255) -> LossFn:
    """Dense targets (segmentation): a loss function taking logits (b, C, ...) and class maps (b, ...); each
    sample's cross-entropy is the mean over its positions whose class is not ``ignore_index`` (0 if it has none)."""

    def dense_cross_entropy(outputs: Any, batch: Any) -> torch.Tensor:
        target = target_of(batch)
        losses = F.cross_entropy(logits_of(outputs).float(), target, ignore_index=ignore_index, reduction="none")
        return _masked_mean(losses, target, ignore_index)

    return dense_cross_entropy


def token_lm(ignore_index: int = -100, shift: bool = True) -> LossFn:
    """Token-level language-model loss, as Hugging Face causal LMs compute it: logits (b, T, V), labels (b, T);
    with ``shift`` the logits at t predict the label at t + 1. Each sequence's loss is the mean cross-entropy over
    its tokens whose label is not ``ignore_index`` (0 for a sequence with none). ``shift=False``: per-token
    classification (NER and the like)."""

    def token_cross_entropy(outputs: Any, batch: Any) -> torch.Tensor:
        logits, labels = logits_of(outputs).float(), target_of(batch)
        if shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=ignore_index, reduction="none")
        return _masked_mean(losses, labels, ignore_index)

    return token_cross_entropy
