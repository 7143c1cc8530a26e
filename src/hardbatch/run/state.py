"""A run's state as one object: model, optimizer, scheduler, sampler and policy, cost meter and RNG, saved and
loaded as one checkpoint dict (docs/guides/run-folders.md "Run directory": checkpoint.pt)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hardbatch import distributed
from hardbatch.errors import UsageError
from hardbatch.fileio import atomic_write_bytes, space_for
from hardbatch.sampler import HardBatchSampler


def rng_state() -> dict:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Serialise ``state`` in memory, then write it atomically: a kill or a full disk (NoSpaceLeft, which says how
    much space the checkpoint needs) leaves the previous checkpoint intact and no temporary file."""
    path = Path(path)
    buffer = io.BytesIO()
    with space_for(path):
        torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def damaged_checkpoint(path: Path, why: str) -> UsageError:
    """The one-line error for a checkpoint that cannot be resumed: names the file and how to start over."""
    return UsageError(
        f"cannot resume from {path}: {why}; delete that file to train the run again from its first "
        f"epoch (for train, --overwrite instead of --resume does the same)"
    )


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The state ``save_checkpoint`` wrote, loaded with ``weights_only=True``; a file that does not load (empty,
    truncated, other content) raises ``damaged_checkpoint``'s UsageError instead of torch's message."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        # torch's own text can advise weights_only=False, which would run whatever code the file holds.
        why = (
            "the file is empty"
            if path.exists() and path.stat().st_size == 0
            else f"not a readable PyTorch checkpoint ({type(e).__name__}; truncated or overwritten?)"
        )
        raise damaged_checkpoint(path, why) from None
    if not isinstance(state, dict):
        raise damaged_checkpoint(path, f"it holds a {type(state).__name__}, not a checkpoint's dict")
    return state


@dataclass
class RunState:
    """What a run continues from after an interruption, and what its checkpoint holds.

    ``model`` is the plain module, whatever wraps it for training (DDP, compile); ``epoch`` counts the epochs
    finished; ``test_per_class`` is the last epoch's per-class test accuracy (for summary.json);
    ``holdout_cost`` what the run spent before its first step (RHO-LOSS's irreducible-loss model), by history
    column, and ``irreducible_model`` that IL model's quality (``holdout.train_irreducible``). The torch RNG
    (dropout, in-model randomness) is the global one of each process.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    sampler: HardBatchSampler
    epoch: int = 0
    test_per_class: list[float | None] = field(default_factory=list)
    holdout_cost: dict = field(default_factory=dict)
    irreducible_model: dict = field(default_factory=dict)
    rng_ranks: list[dict] | None = None  # every rank's rng_state(), as ``capture_rng`` last gathered them

    def capture_rng(self) -> None:
        """Gather every rank's RNG state into ``rng_ranks`` (on the writer). A collective: every rank calls it."""
        self.rng_ranks = distributed.gather_objects(rng_state())

    def state_dict(self) -> dict:
        """The checkpoint dict: ``rng_ranks`` holds every rank's RNG state as last captured (this process's when
        none was); the sampler's state holds the cost meter."""
        rng_ranks = self.rng_ranks or [rng_state()]
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "sampler": self.sampler.state_dict(),
            "rng_ranks": rng_ranks,
            "test_per_class": self.test_per_class,
            "holdout_cost": self.holdout_cost,
            "irreducible_model": self.irreducible_model,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a ``state_dict``): this rank's RNG stream when the world size is the one saved,
        else rank 0's (correct, not bit for bit). Raises KeyError, ValueError, ... for a dict that is not this run's."""
        epoch = state["epoch"]
        if not (isinstance(epoch, int) and 1 <= epoch <= self.sampler.epochs):
            raise ValueError(f"epoch {epoch!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        ranks = state["rng_ranks"]
        set_rng_state(ranks[distributed.rank()] if len(ranks) == distributed.world_size() else ranks[0])
        self.epoch = epoch
        self.test_per_class = list(state["test_per_class"])
        self.holdout_cost.update(state["holdout_cost"])
        self.irreducible_model.update(state["irreducible_model"])

    def save(self, path: Path) -> None:
        """Write ``state_dict()`` to ``path`` (``save_checkpoint``: atomically); the writer's job."""
        save_checkpoint(path, self.state_dict())

    def load(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``, read once on the writer and sent to every rank (their nodes need
        not see the run folder). A file that does not hold this run's state raises ``damaged_checkpoint``'s error
        (the objects may then be half loaded: the run stops there)."""
        state = distributed.on_writer(load_checkpoint, path)
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise damaged_checkpoint(
                path,
                f"it does not hold this run's state ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            ) from None
