"""One typed run configuration, its validation, and the error type for bad user input."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with status 2."""


EVAL_MODES = ("eval", "train")


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
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    eval_mode: str = "eval"  # "train" reproduces the released code's train-mode (batch-statistics) evaluation
    shuffle_partition: bool = False  # False: batch i = samples [i*B, (i+1)*B) in data-set order
    target_acc: float | None = None  # accuracy for epochs_to_target; None: 0.99 x the run's own best
    data_dir: str | None = None
    download: bool = False
    num_workers: int = 0

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
    if cfg.num_workers < 0:
        raise UsageError(f"num workers must be >= 0, got {cfg.num_workers}")
