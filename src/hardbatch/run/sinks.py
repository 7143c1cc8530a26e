"""What a run does with each finished epoch: small sinks that ``fit`` hands every ``EpochResult``, and warning lines.

Each sink has ``on_epoch(result)``; those that hold something open (a progress bar, a TensorBoard log) also have
``close()``. ``experiment`` builds the list for a run (history, trace, loss watch, checkpoint, TensorBoard, progress)
and passes it as ``fit(..., sinks=[...])``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hardbatch import distributed
from hardbatch.config import DELTA_POLICIES, RunConfig
from hardbatch.records import TRACE_FIELDS, RunDir
from hardbatch.run.machine import summary_writer_class
from hardbatch.run.state import RunState
from hardbatch.training import EpochResult


def warn(message: str) -> None:
    """One warning line on stderr (between progress bars, if any), from the writing process only."""
    note(f"warning: {message}")


def note(message: str) -> None:
    """One ``hardbatch:`` line on stderr (between progress bars, if any), from the writing process only."""
    from tqdm.auto import tqdm

    if not distributed.is_writer():
        return
    tqdm.write(f"hardbatch: {message}", file=sys.stderr)


def terminal() -> bool:
    """Whether stderr is a terminal: progress bars there, progress lines (``EpochLines``, ``execute``) elsewhere."""
    return sys.stderr.isatty()


def describe(cfg: RunConfig, label: str | None = None) -> str:
    """How progress names a run: ``label``, or its data set, model, policy, δ (policies that take one) and seed."""
    delta = f" δ={cfg.delta:g}" if cfg.policy in DELTA_POLICIES else ""
    return label or f"{cfg.dataset}/{cfg.model} {cfg.policy}{delta} seed={cfg.seed}"


def history_row(result: EpochResult, holdout_cost: dict) -> dict:
    """The epoch's history.csv row (``EpochResult.history_row``); what the run spent before its first step
    (``holdout_cost``, by column: RHO-LOSS's irreducible-loss model) counts in its first epoch."""
    row = result.history_row()
    if result.epoch == 1:
        for name, value in holdout_cost.items():
            row[name] += value
    return row


class History:
    """history.csv: one row per epoch (``history_row``), rewritten whole after each epoch; ``rows`` holds the
    history so far (a resumed run's first epochs) and grows by one row an epoch."""

    def __init__(self, run: RunDir, rows: list[dict], holdout_cost: dict):
        self.run, self.rows, self.holdout_cost = run, rows, holdout_cost

    def on_epoch(self, result: EpochResult) -> None:
        self.rows.append(history_row(result, self.holdout_cost))
        self.run.write_history(self.rows)


class Trace:
    """trace.csv: the epoch's optimizer steps (step, round, batch, loss, samples), appended."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_epoch(self, result: EpochResult) -> None:
        self.run.append_trace([dict(zip(TRACE_FIELDS, step, strict=True)) for step in result.trace])


class CaptureRng:
    """Every rank's RNG state gathered into ``state`` (``RunState.capture_rng``), on every rank and first: a
    collective, so that the writer writes no file of an epoch that a dead rank never finished."""

    def __init__(self, state: RunState):
        self.state = state

    def on_epoch(self, result: EpochResult) -> None:
        self.state.capture_rng()


class Checkpoint:
    """The run's state saved to ``path`` (``RunState.save``, durable) at the end of the first epoch that ends
    ``every`` seconds or more after the last save, or after this sink was made (0: every epoch), after the epoch's
    other files; ``run``'s history and trace (when given) are flushed to the disk first (``RunDir.sync``), so that
    they hold at least the checkpoint's epochs after a power loss too. A killed process loses nothing written to its
    files, so between checkpoints they are written without a disk flush each."""

    def __init__(
        self,
        state: RunState,
        path: Path,
        run: RunDir | None = None,
        every: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.state, self.path, self.run, self.every, self.clock = state, path, run, every, clock
        self.last = clock()

    def on_epoch(self, result: EpochResult) -> None:
        self.state.epoch = result.epoch
        self.state.test_per_class = result.evals["test"].per_class if "test" in result.evals else []
        if self.every > 0 and self.clock() - self.last < self.every:
            return
        if self.run is not None:
            self.run.sync()
        self.state.save(self.path)
        self.last = self.clock()


class LossWatch:
    """Warns once when an epoch's mean training loss explodes: above EXPLODING x the first epoch's, or above
    EXPLODING x ln(C), where ln(C) is the loss of a uniform guess over C classes."""

    EXPLODING = 10.0

    def __init__(self, lr: float, num_classes: int, first: float | None = None):
        """``first``: the first epoch's mean training loss, when a resumed run has it already."""
        self.lr, self.first, self.warned = lr, first, False
        self.limit = self.EXPLODING * math.log(max(num_classes, 2))

    def on_epoch(self, result: EpochResult) -> None:
        loss = result.train_loss
        if self.first is None:
            self.first = loss
        if not self.warned and (loss > self.limit or loss > self.EXPLODING * self.first):
            self.warned = True
            warn(
                f"training loss exploded to {loss:.3g} at epoch {result.epoch} (over {self.EXPLODING:g}x the first "
                f"epoch's or {self.EXPLODING:g}x ln(classes)); the learning rate is probably too high: try a lower "
                f"--lr than {self.lr:g}"
            )


class TensorBoard:
    """Every finite number of the epoch's history row as a scalar in the TensorBoard log ``folder``, by epoch."""

    def __init__(self, folder: str, holdout_cost: dict):
        self.board, self.holdout_cost = summary_writer_class()(folder), holdout_cost

    def on_epoch(self, result: EpochResult) -> None:
        for name, value in history_row(result, self.holdout_cost).items():
            if name not in ("epoch", "step") and value is not None and math.isfinite(value):
                self.board.add_scalar(name, value, result.epoch)
        self.board.flush()

    def close(self) -> None:
        self.board.close()


class ProgressBar:
    """A tqdm bar over the run's ``epochs``, on a terminal only, starting at ``done`` (a resumed run's epochs)."""

    def __init__(self, desc: str, epochs: int, done: int):
        from tqdm.auto import tqdm

        # disable=None: bars only on a terminal, so CI logs and files get no carriage-return spam.
        self.bar = tqdm(
            total=epochs, initial=done, desc=desc, unit="epoch", disable=None, leave=True, dynamic_ncols=True
        )

    def on_epoch(self, result: EpochResult) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{result.train_loss:.3f}", acc=f"{result.evals['test'].acc:.3f}")

    def close(self) -> None:
        self.bar.close()


class EpochLines:
    """Off a terminal, where tqdm draws no bar: one line per finished epoch on stderr, once LINE_SECONDS have passed
    since the run started or since the last line. A short run prints none; a long one shows it is alive."""

    LINE_SECONDS = 30.0

    def __init__(self, desc: str, epochs: int):
        self.desc, self.epochs = desc, epochs
        self.last = time.monotonic()

    def on_epoch(self, result: EpochResult) -> None:
        if time.monotonic() - self.last < self.LINE_SECONDS:
            return
        self.last = time.monotonic()
        print(
            f"{self.desc}: epoch {result.epoch}/{self.epochs}, train loss {result.train_loss:.3f}, "
            f"test top-1 {100 * result.evals['test'].acc:.2f}%",
            file=sys.stderr,
            flush=True,
        )
