"""One typed run configuration, its validation, and the error type for bad user input."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with status 2."""


EVAL_MODES = ("eval", "train")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("none", "crop_flip")
NORMALIZATIONS = ("dataset", "imagenet")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class RunConfig:
    """Everything that decides a training run. Stored as given; ``validate`` checks it where used."""

    dataset: str = "digits"
    model: str = "small_cnn"
    policy: str = "hardbatch"
    delta: float = 1.0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"  # or "cosine": cosine decay to 0 over the whole step budget
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 elsewhere
    channels_last: bool | None = None  # None: on for CUDA
    eval_mode: str = "eval"  # "train" reproduces the released code's train-mode (batch-statistics) evaluation
    shuffle_partition: bool = False  # False: batch i = samples [i*B, (i+1)*B) in data-set order
    target_acc: float | None = None  # accuracy for epochs_to_target; None: 0.99 x the run's own best
    image_size: int | None = None  # square resize of every image; None keeps the native size
    augment: str = "none"  # or "crop_flip": random crop (4 px padding) + horizontal flip, on the device
    normalize: str = "dataset"  # mean/std of the data set's training split, or "imagenet"
    val_fraction: float = 0.0  # stratified hold-out of the training set, evaluated every epoch
    data_dir: str | None = None
    download: bool = False
    data_on_device: bool = False  # keep the whole data set on the device (uint8 when possible)
    num_workers: int = 0
    protocol: str | None = None  # preset the defaults came from ("paper", "modern"), for the record

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a saved dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def validate(cfg: RunConfig) -> None:
    """Check ranges that need no data; registries check names, the data set checks sizes."""
    if not (0.0 < cfg.delta <= 1.0):
        raise UsageError(f"delta must be in (0, 1], got {cfg.delta}")
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{name.replace('_', ' ')} must be a positive integer, got {value}")
    if cfg.lr <= 0:
        raise UsageError(f"learning rate must be positive, got {cfg.lr}")
    if not (0.0 <= cfg.momentum < 1.0):
        raise UsageError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.weight_decay < 0:
        raise UsageError(f"weight decay must be >= 0, got {cfg.weight_decay}")
    if cfg.eval_mode not in EVAL_MODES:
        raise UsageError(f"eval mode must be one of {', '.join(EVAL_MODES)}, got {cfg.eval_mode!r}")
    if cfg.target_acc is not None and not (0.0 < cfg.target_acc <= 1.0):
        raise UsageError(f"target accuracy must be a fraction in (0, 1], got {cfg.target_acc}")
    for name, allowed in (("schedule", SCHEDULES), ("augment", AUGMENTS), ("normalize", NORMALIZATIONS),
                          ("precision", PRECISIONS)):
        if getattr(cfg, name) not in allowed:
            raise UsageError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.image_size is not None and cfg.image_size < 8:
        raise UsageError(f"image size must be an integer >= 8, got {cfg.image_size}")
    if not (0.0 <= cfg.val_fraction < 1.0):
        raise UsageError(f"validation fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.num_workers < 0:
        raise UsageError(f"num workers must be >= 0, got {cfg.num_workers}")
