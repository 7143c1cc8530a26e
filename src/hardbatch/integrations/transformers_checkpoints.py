"""A ``HardBatchTrainer`` checkpoint's selection state on disk: written atomically into the Trainer's checkpoint
folder, read back with one-line errors naming the file, and the newest complete checkpoint found after a kill.

Used by ``hardbatch.integrations.transformers``; needs transformers (its checkpoint names).
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from pathlib import Path

import torch

from hardbatch.errors import MissingExtra, UsageError
from hardbatch.fileio import atomic_write_bytes

try:
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtra("hardbatch.integrations.transformers", "transformers", "transformers") from None

STATE_FILE = "hardbatch_state.pt"  # the selection state, inside each Trainer checkpoint folder
STATE_MARK, STATE_FORMAT = "hardbatch_trainer", 1  # what tells the state file apart from another .pt file


class Unusable(Exception):
    """A checkpoint folder that cannot be resumed: ``file`` is what is missing or damaged, ``why`` says how."""

    def __init__(self, file: str, why: str):
        super().__init__(f"{file}: {why}")
        self.file, self.why = file, why


def write_state(path: str, state: dict) -> None:
    """Serialise ``state`` in memory, then write it atomically (a temporary file, fsync, rename): a kill or a full
    disk leaves no part of it, only no file (the checkpoint is then incomplete, see ``checkpoint_state``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path), buffer.getbuffer())  # a view of the buffer: no copy


def read_state(path: str) -> dict:
    """The selection state ``write_state`` wrote to ``path``; Unusable for a file that is empty, does not load
    (truncated, random bytes) or holds something else (torch's own message is not shown: for some files it advises
    ``weights_only=False``, which would run whatever code the file holds)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, OSError...
        if os.path.getsize(path) == 0:
            raise Unusable(path, "the file is empty") from None
        raise Unusable(path, f"not a readable PyTorch file ({type(e).__name__}; truncated or overwritten?)") from None
    if not isinstance(state, dict) or state.get(STATE_MARK) != STATE_FORMAT:
        raise Unusable(path, "it does not hold HardBatchTrainer's selection state (another file of that name?)")
    return state


def checkpoint_state(folder: str) -> dict:
    """The selection state of a complete checkpoint folder; Unusable for one a kill or a full disk left incomplete.

    A save writes the model, the selection state (atomically), the optimizer, scheduler and RNG, and the Trainer's
    ``trainer_state.json`` last: a folder is complete when its selection state loads and its trainer_state.json
    parses."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise Unusable(path, "there is no such file (a save was interrupted, or a plain Trainer wrote the folder)")
    state = read_state(path)
    trainer_state = os.path.join(folder, TRAINER_STATE_NAME)
    try:
        with open(trainer_state) as f:
            json.load(f)
    except FileNotFoundError:
        raise Unusable(trainer_state, "there is no such file (a save was interrupted)") from None
    except (OSError, ValueError):
        raise Unusable(trainer_state, "it is not valid JSON (a save was interrupted?)") from None
    return state


def _checkpoints(output_dir: str) -> list[str]:
    """The ``checkpoint-<step>`` folders of ``output_dir``, newest (highest step) first."""
    found = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return [folder for _, folder in sorted(found, reverse=True)]


def newest_complete_checkpoint(output_dir: str) -> tuple[str, dict]:
    """(the newest complete checkpoint folder of ``output_dir``, its selection state); a warning names each newer,
    incomplete one; UsageError when there is none."""
    folders = _checkpoints(output_dir)
    if not folders:
        raise UsageError(f"HardBatchTrainer: no checkpoint to resume from in {output_dir}")
    skipped = []
    for folder in folders:
        try:
            state = checkpoint_state(folder)
        except Unusable as e:
            skipped.append(e)
            continue
        if skipped:
            warnings.warn(
                f"HardBatchTrainer: resuming from {folder}, the newest complete checkpoint: "
                f"{'; '.join(map(str, skipped))}",
                stacklevel=3,
            )
        return folder, state
    raise UsageError(
        f"HardBatchTrainer: no complete checkpoint to resume from in {output_dir} ({skipped[0]}"
        f"{f'; {len(skipped) - 1} more' if len(skipped) > 1 else ''}); train from the start, without "
        f"resume_from_checkpoint, or in another output_dir"
    )


def explicit_checkpoint_state(folder: str) -> dict:
    """The selection state of the checkpoint ``folder`` a user named; UsageError naming the missing or damaged file
    and the newest complete checkpoint beside it, if any."""
    try:
        return checkpoint_state(folder)
    except Unusable as e:
        others = [
            other
            for other in _checkpoints(os.path.dirname(os.path.abspath(folder)))
            if os.path.abspath(other) != os.path.abspath(folder)
        ]
        for other in others:
            try:
                checkpoint_state(other)
            except Unusable:
                continue
            hint = f"resume from another checkpoint (the newest complete one is {other})"
            break
        else:
            hint = "train from the start, without resume_from_checkpoint"
        raise UsageError(f"HardBatchTrainer: cannot resume from {folder}: {e}; {hint}") from None
