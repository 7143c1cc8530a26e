"""Batches of any structure (a tensor, a tuple or list ``(x, y, ...)``, a dict) and what a training step does to them.

A selection keeps some rows of a batch (``take``), so every tensor whose first dimension is the batch's is indexed
alike: inputs, targets, attention masks, per-sample metadata. Entries that are not per-sample (a scalar, a string,
a tensor of another length) pass through unchanged. Structures nest (a tuple holding a dict, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from hardbatch.errors import UsageError

LABELS = "labels"  # where a dict batch holds its targets, as Hugging Face models name them

Forward = Callable[[nn.Module, Any], Any]  # (model, batch) -> outputs; the default is ``forward`` below


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``batch``, depth first, in the order of its entries."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, (tuple, list)):
        for value in batch:
            yield from _tensors(value)


def _map(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``fn`` applied to each tensor; a Mapping comes back as a dict, tuples (named too) and lists
    as their own type."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {key: _map(value, fn) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(_map(value, fn) for value in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map(value, fn) for value in batch)
    return batch


def batch_size(batch: Any) -> int:
    """The number of samples in ``batch``: the first dimension of its first tensor."""
    first = next(_tensors(batch), None)
    if first is None or first.dim() == 0:
        got = "no tensor" if first is None else "a 0-d tensor first"
        raise UsageError(
            f"a batch must hold tensors whose first dimension is the batch (a tensor, (x, y, ...) or a "
            f"dict of tensors), got {got} in a {type(batch).__name__}"
        )
    return len(first)


def device_of(batch: Any) -> torch.device:
    """The device of the batch's first tensor."""
    return next(_tensors(batch)).device


def take(batch: Any, rows: torch.Tensor) -> Any:
    """The same structure with every tensor whose first dimension is the batch size indexed by ``rows`` (a bool
    mask of shape (b,) or a LongTensor of row indices); other entries unchanged."""
    b = batch_size(batch)
    return _map(batch, lambda t: t[rows.to(t.device)] if t.dim() > 0 and len(t) == b else t)


def cat(parts: list[Any]) -> Any:
    """Batches of one structure joined along the batch: tensors whose first dimension is their batch's size are
    concatenated, lists of one entry per sample joined, any other entry taken from the first part."""
    first = parts[0]
    sizes = [batch_size(part) for part in parts]

    def join(values: list[Any]) -> Any:
        head = values[0]
        if isinstance(head, torch.Tensor):
            return torch.cat(values) if head.dim() > 0 and len(head) == sizes[0] else head
        if isinstance(head, Mapping):
            return {key: join([v[key] for v in values]) for key in head}
        if isinstance(head, tuple) and hasattr(head, "_fields"):  # a namedtuple
            return type(head)(*(join([v[i] for v in values]) for i in range(len(head))))
        if isinstance(head, (tuple, list)):
            if (
                isinstance(head, list)
                and len(head) == sizes[0]
                and not any(isinstance(x, (torch.Tensor, Mapping, list, tuple)) for x in head)
            ):
                return [x for v in values for x in v]  # one entry per sample (webdataset's keys, say)
            return type(head)(join([v[i] for v in values]) for i in range(len(head)))
        return head

    return join(parts) if len(parts) > 1 else first


def to_device(batch: Any, device: torch.device | str) -> Any:
    """The same structure with every tensor moved to ``device`` (asynchronously where it can be)."""
    return _map(batch, lambda t: t.to(device, non_blocking=True))


def forward(model: nn.Module, batch: Any) -> Any:
    """The default forward pass: ``model(batch[0])`` for a tuple or list, ``model(**batch)`` without its
    ``"labels"`` (the loss is hardbatch's ``loss_fn``, not the model's) and without the ``"__..."`` entries a
    streaming data set adds (webdataset's ``__key__``, ``__url__``) for a dict, ``model(batch)`` for a tensor.
    Returns what the model returns."""
    if isinstance(batch, Mapping):
        return model(**{key: value for key, value in batch.items() if key != LABELS and not key.startswith("__")})
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)
