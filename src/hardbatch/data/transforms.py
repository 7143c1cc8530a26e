"""Batch transforms on any device: a raw batch scaled, augmented, resized and normalised into model input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalisation(
    normalize: str, mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std for ``normalize``: "dataset" gives ``mean`` and ``std`` (the data set's own),
    "imagenet" ImageNet's; statistics of another number of channels than the data's ``channels`` (ImageNet's on grey
    images) are averaged over their channels."""
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize == "imagenet" else (tuple(mean), tuple(std))
    if len(mean) != channels:
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return mean, std


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator, padding: int, part: tuple[slice, int] | None = None
) -> torch.Tensor:
    """Per-sample random crop from a zero-padded batch plus a random horizontal flip; works on any device.

    ``x``: (B, C, H, W) float; ``generator`` on x's device. Returns the same shape. ``part = (rows, total)``: x is
    rows ``rows`` of a global batch of ``total``; the draws are made for the global batch and sliced, so each
    sample gets the same crop and flip however many processes share the batch.
    """
    b, _, h, w = x.shape
    rows_taken, total = part if part is not None else (slice(0, b), b)
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, total), device=x.device, generator=generator)[:, rows_taken]
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(total, device=x.device, generator=generator)[rows_taken] < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


@dataclass
class BatchTransform:
    """Raw batch -> model input on x's device: scale to [0, 1], augment (if a generator is given), resize, normalise."""

    mean: Sequence[float]
    std: Sequence[float]
    size: int | None = None
    crop_flip: bool = False
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None, part: tuple[slice, int] | None = None
    ) -> torch.Tensor:
        """``x``: (B, C, H, W) images or (B, C, L) signals, uint8 (0..255) or float (0..1); returns float32 of the
        same shape, (B, C, size, size) for resized images. ``generator``: the crop and flip draws (none without it);
        ``part = (rows, total)``: x is that share of a global batch (several processes); see random_crop_flip."""
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if self.crop_flip and generator is not None:
            x = random_crop_flip(x, generator, padding=max(1, x.shape[-1] // 8), part=part)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        mean, std = self._statistics(x.device, x.dim())
        return (x - mean) / std

    def _statistics(self, device: torch.device, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std shaped (1, C, 1, ...) to broadcast over a batch of ``dims`` dimensions ((B, C, H, W) images,
        (B, C, L) signals), on ``device``, made once: a copy per batch would sync."""
        if (device, dims) not in self._cache:
            stats = torch.tensor([self.mean, self.std], dtype=torch.float32).view(2, 1, -1, *[1] * (dims - 2))
            self._cache[device, dims] = tuple(stats.to(device))
        return self._cache[device, dims]
