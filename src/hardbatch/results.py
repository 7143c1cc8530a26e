"""Run records on disk (config, per-epoch history, per-step trace, summary) and metrics derived from them."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from hardbatch.config import RunConfig, UsageError

CONFIG, HISTORY, TRACE, SUMMARY, CHECKPOINT = "config.json", "history.csv", "trace.csv", "summary.json", "checkpoint.pt"
RELABELLED = "relabelled.json"  # runs with label noise: which training samples got another label, and the batches
LOCK = ".hardbatch.lock"  # held (flock) by the process writing the run; not a record, never removed
HISTORY_FIELDS = (
    "epoch", "step", "train_loss", "test_loss", "test_acc", "test_top5", "lr", "train_seconds", "eval_seconds",
    "val_loss", "val_acc", "val_top5",  # empty without a validation split
    "test_bacc", "val_bacc",  # balanced (mean per-class) top-1 accuracy; val_bacc empty without a validation split
    # what the epoch spent (README "Cost"); train_seconds above includes choose_seconds
    "samples_loaded", "samples_forward", "samples_forward_nograd", "samples_backprop", "choose_seconds", "cpu_seconds",
)
COST_COLUMNS = ("samples_loaded", "samples_forward", "samples_forward_nograd", "samples_backprop", "choose_seconds",
                "cpu_seconds")
TRACE_FIELDS = ("step", "round", "batch", "loss", "samples")
RUN_FORMAT = 1  # config.json "format": the layout of a run folder's files; a folder without the key is format 1
PLATEAU_POINTS = 0.01  # "within 1 percentage point of the run's own best"
TARGET_FRACTION = 0.99  # default target: 99% of the reference's best accuracy


class NoSpaceLeft(OSError):
    """A write failed for lack of disk space (or quota); the message names the file and the space it needs."""

    def __init__(self, path: Path | str, needed: int | None = None):
        path = Path(path)
        try:
            free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
        except (OSError, StopIteration):
            free = None
        need = f"needs about {_size(needed)}" if needed is not None else "needs more space"
        have = f", {_size(free)} free there" if free is not None else ""
        super().__init__(errno.ENOSPC, f"no space left on the device to write {path} ({need}{have})", str(path))

    def __str__(self) -> str:
        return self.strerror


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


@contextlib.contextmanager
def space_for(path: Path | str, needed: int | None = None):
    """Turn a full disk (ENOSPC, EDQUOT) while writing ``path`` into NoSpaceLeft, which says what and how much."""
    try:
        yield
    except NoSpaceLeft:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceLeft(path, needed) from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A failure (a full disk: NoSpaceLeft) leaves the old file as it was and no temporary file behind.
    """
    path = Path(path)
    with space_for(path, len(data)):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; results should read like any written file
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode())


def _file_mode(path: Path) -> int:
    """The existing file's permissions, else what open() would give a new file (0666 minus the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def csv_text(rows: Iterable[dict], fields: Sequence[str]) -> str:
    """CSV with a header; missing values and NaN become empty cells (read_csv turns them back into NaN)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _number(text: str) -> int | float:
    """An int if ``text`` is one (so it writes back unchanged), else a float; empty cells become NaN."""
    if text == "":
        return math.nan
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_csv(path: Path) -> list[dict[str, int | float]]:
    """Rows of a numeric CSV file as dicts of numbers."""
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


# ---- checking the values read back: each field's kind, and the kinds' ranges -------------------------

class BadRecord(ValueError):
    """A run file that parses but holds a value of the wrong type or out of range; the message names it."""


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# kind -> (accepts, what it accepts). NaN fails every kind: an empty cell is only allowed where a field is optional.
KINDS = {
    "fraction": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),  # accuracies
    "amount": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),  # losses, seconds, the learning rate
    "count": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),  # epochs, steps, samples, indices
}
HISTORY_KINDS = {
    "epoch": "count", "step": "count", "train_loss": "amount", "test_loss": "amount", "test_acc": "fraction",
    "test_top5": "fraction", "lr": "amount", "train_seconds": "amount", "eval_seconds": "amount",
    "val_loss": "amount", "val_acc": "fraction", "val_top5": "fraction", "test_bacc": "fraction", "val_bacc": "fraction",
    "samples_loaded": "count", "samples_forward": "count", "samples_forward_nograd": "count",
    "samples_backprop": "count", "choose_seconds": "amount", "cpu_seconds": "amount",
}
# Columns a run may leave empty or lack: no validation split, or written before the column existed.
HISTORY_OPTIONAL = {"val_loss", "val_acc", "val_top5", "test_bacc", "val_bacc", *COST_COLUMNS}
TRACE_KINDS = {"step": "count", "round": "count", "batch": "count", "loss": "amount", "samples": "count"}
TRACE_OPTIONAL = {"samples"}
SUMMARY_KINDS = {
    **dict.fromkeys(("final_test_acc", "final_test_top5", "best_test_acc", "target_acc", "final_val_acc",
                     "best_val_acc"), "fraction"),
    **dict.fromkeys(("best_epoch", "epochs", "optimizer_steps", "num_batches", "batches_per_round", "best_val_epoch",
                     "batches_never_selected_after_warmup"), "count"),
    **dict.fromkeys(("samples_backpropagated", "train_seconds", "eval_seconds"), "amount"),
}
SUMMARY_NULLABLE = {"final_test_bacc": "fraction", "final_val_bacc": "fraction", "epochs_to_target": "count",
                    "epochs_to_plateau": "count"}


def value_problem(value, kind: str) -> str | None:
    """Why ``value`` is not of ``kind`` (a KINDS key), or None when it is."""
    if not _is_real(value):
        return "not a number"
    accepts, what = KINDS[kind]
    return None if accepts(value) else f"not {what}"


def _check(name: str, value, kind: str) -> None:
    problem = value_problem(value, kind)
    if problem:
        raise BadRecord(f"{name} is {value!r}, {problem}")


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_rows(rows: list[dict], kinds: dict[str, str], optional: set[str]) -> list[dict]:
    """``rows`` (read_csv's), each value checked against its column's kind; returns them. BadRecord names the
    first bad cell by row (1-based) and column; columns not in ``kinds`` are not checked."""
    for i, row in enumerate(rows, start=1):
        for column, kind in kinds.items():
            value = row.get(column)
            if _is_empty(value):
                if column in optional:
                    continue
                raise BadRecord(f"row {i} has no {column}")
            try:
                _check(column, value, kind)
            except BadRecord as e:
                raise BadRecord(f"row {i}: {e}") from None
    return rows


def _check_list(name: str, values, kind: str, nullable: bool = False) -> None:
    if not isinstance(values, list):
        raise BadRecord(f"{name} is not a list")
    for i, value in enumerate(values):
        if not (nullable and value is None):
            _check(f"{name}[{i}]", value, kind)


def check_summary(summary) -> dict:
    """summary.json's values checked by kind (the keys it holds; a run of an older version lacks some); returns it."""
    if not isinstance(summary, dict):
        raise BadRecord("not a JSON object")
    for key, kind in SUMMARY_KINDS.items():
        if key in summary:
            _check(key, summary[key], kind)
    for key, kind in SUMMARY_NULLABLE.items():
        if summary.get(key) is not None:
            _check(key, summary[key], kind)
    if "batch_visits" in summary:
        _check_list("batch_visits", summary["batch_visits"], "count")
    if "final_test_per_class_acc" in summary:
        _check_list("final_test_per_class_acc", summary["final_test_per_class_acc"], "fraction", nullable=True)
    for key, kind, empty in (("cost", "amount", _is_empty), ("mislabelled", "fraction", lambda v: v is None)):
        if summary.get(key) is None:
            continue
        if not isinstance(summary[key], dict):
            raise BadRecord(f"{key} is not a JSON object")
        for name, value in summary[key].items():  # a cost not counted (older runs) is NaN; a share without data null
            if not empty(value):
                _check(f"{key}.{name}", value, kind)
    return summary


def check_relabelled(record) -> dict:
    """relabelled.json's values checked: counts, indices below ``train_samples``, one label pair per index."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    _check("train_samples", record["train_samples"], "count")
    n = record["train_samples"]
    for key in ("relabelled", "true_labels", "given_labels"):
        _check_list(key, record[key], "count")
        if len(record[key]) != len(record["relabelled"]):
            raise BadRecord(f"{key} has {len(record[key])} entries for {len(record['relabelled'])} relabelled samples")
    if not isinstance(record["partition"], list):
        raise BadRecord("partition is not a list")
    for i, batch in enumerate(record["partition"]):
        _check_list(f"partition[{i}]", batch, "count")
    indices = record["relabelled"] + [j for batch in record["partition"] for j in batch]
    if any(j >= n for j in indices):
        raise BadRecord(f"a sample index is {max(indices)}, not below train_samples {n}")
    return record


def read_config(path: Path) -> RunConfig:
    """config.json's run configuration, checked by ``RunConfig.from_dict``; BadRecord for a folder of another
    RUN_FORMAT (one without the key is format 1: it predates the key, not the layout)."""
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise BadRecord("not a JSON object")
    version = saved.get("format", 1)
    if version != RUN_FORMAT or not isinstance(version, int) or isinstance(version, bool):
        raise BadRecord(f"the run folder is format {version!r}, and this hardbatch reads format {RUN_FORMAT}; "
                        f"open it with the hardbatch version that wrote it")
    return RunConfig.from_dict(saved["config"])


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written there; UsageError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", delete=True)
        probe.close()
    except OSError as e:
        raise UsageError(f"cannot write to output directory {str(path)!r}: {e.strerror or e}") from None
    return path


class RunInUse(UsageError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def run_lock(path: Path | str):
    """Hold an exclusive lock on run directory ``path`` for the block, or raise RunInUse at once.

    An OS lock (``flock``) on ``path``/LOCK: the OS drops it when the process ends, however it ends, so a
    killed run can be resumed at once. The lock file stays; it is not part of the run's records.
    """
    path = Path(path)
    with space_for(path / LOCK, 0):
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(f"run directory {str(path)!r} is in use by another hardbatch process; wait for it to "
                           f"finish, or use another --out") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def locked_elsewhere(path: Path | str) -> bool:
    """Whether another process holds run directory ``path``'s lock now (False if it has no lock file). Creates
    nothing; call it without holding the lock yourself (a second flock in the same process conflicts with the first).
    """
    try:
        fd = os.open(Path(path) / LOCK, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class RunDir:
    """The files of one training run. ``summary.json`` is written last: its presence marks a finished run."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def finished(self) -> bool:
        return self.file(SUMMARY).exists()

    @property
    def started(self) -> bool:
        """Whether the directory holds anything (the lock file of a run that never wrote a record aside)."""
        return self.path.is_dir() and any(p.name != LOCK for p in self.path.iterdir())

    def _read(self, name: str, reader):
        """``reader(path)``, with a missing or damaged file reported as one UsageError line that says what is wrong."""
        path = self.file(name)
        try:
            return reader(path)
        except FileNotFoundError:
            problem = "the file is missing"
        except json.JSONDecodeError as e:
            problem = f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (truncated?)"
        except (BadRecord, UsageError) as e:  # parsed, but a value of the wrong type or out of range
            problem = str(e)
        except (KeyError, TypeError, AttributeError) as e:
            problem = f"not in the expected layout (no {e} entry)" if isinstance(e, KeyError) else "not in the expected layout"
        except (ValueError, csv.Error) as e:  # a non-numeric cell, a binary file
            problem = f"damaged content ({e})"
        except OSError as e:
            problem = e.strerror or str(e)
        raise UsageError(f"cannot read {path}: {problem}; rerun that run or move its directory away") from None

    # Every reader checks each value it returns (type and range), so a damaged record never reaches a caller.
    def config(self) -> RunConfig:
        return self._read(CONFIG, read_config)

    def history(self) -> list[dict[str, float]]:
        return self._read(HISTORY, lambda p: check_rows(read_csv(p), HISTORY_KINDS, HISTORY_OPTIONAL))

    def trace(self) -> list[dict[str, float]]:
        return self._read(TRACE, lambda p: check_rows(read_csv(p), TRACE_KINDS, TRACE_OPTIONAL))

    def summary(self) -> dict:
        return self._read(SUMMARY, lambda p: check_summary(read_json(p)))

    def relabelled(self) -> dict | None:
        """The label-noise record (see ``write_relabelled``), or None for a run without label noise."""
        return self._read(RELABELLED, lambda p: check_relabelled(read_json(p))) if self.file(RELABELLED).exists() else None

    def write_relabelled(self, train_samples: int, indices: list[int], true_labels: list[int], given_labels: list[int],
                         partition: list[list[int]]) -> None:
        """``relabelled.json``: indices into the training split (as the sampler sees it) of the relabelled samples,
        their labels before and after, and the fixed mini-batches (N lists of B indices) that trace.csv's batch
        column numbers."""
        record = {"train_samples": train_samples, "relabelled": indices, "true_labels": true_labels,
                  "given_labels": given_labels, "partition": partition}
        atomic_write_text(self.file(RELABELLED), json.dumps(record, separators=(",", ":")) + "\n")  # compact: 60k indices

    def write_history(self, rows: list[dict]) -> None:
        atomic_write_text(self.file(HISTORY), csv_text(rows, HISTORY_FIELDS))

    def append_trace(self, rows: list[dict]) -> None:
        """Append per-step rows; the header is written when the file is new.

        A failed append can leave a partial last row; resuming cuts the trace back to the checkpoint's steps.
        """
        path = self.file(TRACE)
        new = not path.exists()
        with space_for(path), open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(TRACE_FIELDS), lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def truncate_trace(self, steps: int) -> None:
        """Keep only the first ``steps`` rows of the trace (after resuming from a checkpoint)."""
        path = self.file(TRACE)
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))[:steps]
        atomic_write_text(path, csv_text(rows, TRACE_FIELDS))


def find_runs(root: Path | str) -> list[RunDir]:
    """Every finished run under ``root`` (``root`` itself included), in path order."""
    root = Path(root)
    return [RunDir(p.parent) for p in sorted(root.rglob(SUMMARY))]


# ---- metrics derived from a saved history --------------------------------------------------------


@dataclass
class MislabelledExposure:
    """How much of a run's training was on relabelled samples, against their share of the data (fractions)."""

    trained: float  # of all samples back-propagated (every step, warm-up included), the share that was relabelled
    trained_after_warmup: float  # the same after the first epoch (the warm-up); NaN for a run of one epoch
    in_data: float  # relabelled samples / training-split samples
    in_partition: float  # their share of the samples the fixed mini-batches hold (the remainder is never trained)


def exposure(partition: Sequence[Sequence[int]], relabelled: Iterable[int], train_samples: int,
             batches: Sequence[int], rounds: Sequence[int]) -> MislabelledExposure:
    """``partition``: N mini-batches of sample indices; ``batches``/``rounds``: trace.csv's columns, one per step."""
    noisy = set(relabelled)
    per_batch = [sum(i in noisy for i in batch) for batch in partition]
    sizes = [len(batch) for batch in partition]

    def share(steps: list[int]) -> float:
        total = sum(sizes[b] for b in steps)
        return sum(per_batch[b] for b in steps) / total if total else math.nan

    batches = [int(b) for b in batches]
    return MislabelledExposure(
        trained=share(batches),
        trained_after_warmup=share([b for b, r in zip(batches, rounds) if r >= 1]),
        in_data=len(noisy) / train_samples,
        in_partition=share(list(range(len(partition)))),
    )


def exposure_from_visits(sample_visits, first_epoch_visits, relabelled, partition) -> dict:
    """Shares of relabelled samples among the samples back-propagated (all, and after the first epoch), in the
    training split and in the fixed partition; ``*_visits``: how often each sample was back-propagated (n,)."""
    noisy = torch_index(relabelled)
    total, first = int(sample_visits.sum()), int(first_epoch_visits.sum())
    noisy_total, noisy_first = int(sample_visits[noisy].sum()), int(first_epoch_visits[noisy].sum())
    held = {int(i) for batch in partition for i in batch}
    return {
        "trained": noisy_total / total if total else math.nan,
        "trained_after_warmup": (noisy_total - noisy_first) / (total - first) if total > first else math.nan,
        "in_data": len(noisy) / len(sample_visits),
        "in_partition": len(held & {int(i) for i in relabelled}) / len(held) if held else math.nan,
    }


def _nan(value) -> float:
    return math.nan if value is None else value


def torch_index(values):
    import torch

    return torch.as_tensor(list(values), dtype=torch.long)


def mislabelled_exposure(run: RunDir) -> MislabelledExposure | None:
    """The share of relabelled samples in what ``run`` back-propagated against their share of its training split;
    None for a run without label noise. Counted during training (summary.json ``mislabelled``); for runs from
    before that, from trace.csv's batch column and relabelled.json's partition (fixed-partition policies only)."""
    record = run.relabelled()
    if record is None:
        return None
    counted = run.summary().get("mislabelled")
    if counted:
        return MislabelledExposure(**{k: _nan(v) for k, v in counted.items()})
    trace = run.trace()
    return exposure(record["partition"], record["relabelled"], record["train_samples"],
                    [row["batch"] for row in trace], [row["round"] for row in trace])



def epochs_to_target(accuracies: Sequence[float], target: float) -> int | None:
    """First epoch (1-based) whose accuracy is >= ``target``; None if never reached."""
    for epoch, acc in enumerate(accuracies, start=1):
        if acc >= target - 1e-12:
            return epoch
    return None


def epochs_to_plateau(accuracies: Sequence[float], points: float = PLATEAU_POINTS) -> int | None:
    """First epoch (1-based) within ``points`` (a fraction: 0.01 = 1 pp) of the run's own best accuracy."""
    if not accuracies:
        return None
    return epochs_to_target(accuracies, max(accuracies) - points)


MIN_PAIRS = 3  # fewer values than this give no interval: a t-interval over 2 pairs is too wide to use, or empty


@dataclass
class Interval:
    """A mean with its two-sided 95% t interval (of values, or of paired differences method - reference).

    ``low``/``high`` are NaN when there is no interval: fewer than MIN_PAIRS values, or all equal (zero spread,
    which is no evidence of precision); ``no_interval`` then says which.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return has_interval(self.low, self.high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2 if self.has_interval else math.nan

    @property
    def no_interval(self) -> str:
        """Why there is no interval ("" when there is one)."""
        return no_interval_reason(self.n, self.low, self.high)

    @property
    def detectable(self) -> float:
        """The smallest difference this comparison could have detected (``detectable_difference``); NaN without
        an interval."""
        return detectable_difference(self.half_width, self.n)


def has_interval(low: float, high: float) -> bool:
    """Whether (low, high) is a usable interval: both ends finite (reports store NaN for "no interval")."""
    return math.isfinite(low) and math.isfinite(high)


def no_interval_reason(n: int, low: float, high: float) -> str:
    """"" for a usable interval, else why there is none: too few values, or all of them equal."""
    if has_interval(low, high):
        return ""
    if n < MIN_PAIRS:
        return f"no CI: {n} pair{'s' if n != 1 else ''}, needs {MIN_PAIRS}"
    return "no CI: zero spread"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with a two-sided Student-t interval; no interval (NaN ends) for fewer than MIN_PAIRS
    values or for values that are all equal."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(values) / n
    if n < MIN_PAIRS:
        return Interval(mean, math.nan, math.nan, n)
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if not sd > 1e-12 * max(1.0, abs(mean)):
        return Interval(mean, math.nan, math.nan, n)
    half = t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(method: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> Interval:
    """Differences paired by position (by seed); no interval (NaN ends) as ``mean_interval`` says."""
    if len(method) != len(reference):
        raise ValueError("paired values need equal lengths")
    return mean_interval([m - r for m, r in zip(method, reference)], confidence)


POWER = 0.8  # the power at which reports state the smallest difference a comparison could have detected


def detectable_difference(half_width: float, n: int, power: float = POWER, confidence: float = 0.95) -> float:
    """The minimum detectable effect of a mean (or seed-paired difference) over ``n`` values whose two-sided
    ``confidence`` t interval has ``half_width``: (t_{(1+c)/2, n-1} + t_{power, n-1}) x SE, with the standard error
    SE = half_width / t_{(1+c)/2, n-1}. A true difference this large is detected (its interval excludes 0) with
    about ``power`` probability; NaN where there is no interval (NaN half-width, fewer than 2 values)."""
    if not (n >= 2 and math.isfinite(half_width)):
        return math.nan
    from scipy.stats import t

    crit = t.ppf(0.5 + confidence / 2, n - 1)
    return (crit + t.ppf(power, n - 1)) * half_width / crit


def seeds_for_half_width(half_width: float, n: int, target: float, confidence: float = 0.95,
                         most: int = 10_000) -> int | None:
    """How many values (at least MIN_PAIRS) would bring a ``confidence`` t interval that has ``half_width`` over ``n``
    values down to ``target``, at the same spread: the standard deviation sd = half_width x sqrt(n) / t_{(1+c)/2, n-1},
    then the fewest m with t_{(1+c)/2, m-1} x sd / sqrt(m) <= target. None without an interval (NaN half-width, n < 2)
    or if more than ``most`` would be needed."""
    if not (n >= 2 and math.isfinite(half_width) and target > 0):
        return None
    from scipy.stats import t

    sd = half_width * math.sqrt(n) / t.ppf(0.5 + confidence / 2, n - 1)
    for m in range(MIN_PAIRS, most + 1):
        if t.ppf(0.5 + confidence / 2, m - 1) * sd / math.sqrt(m) <= target:
            return m
    return None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _or_none(value: float | None) -> float | None:
    """JSON has no NaN: a missing number is null."""
    return None if value is None or math.isnan(value) else value


def summarize(history: list[dict], cfg: RunConfig, batch_visits: list[int], batches_per_round: int,
              test_per_class: list[float | None] | None = None) -> dict:
    """The summary of a finished run, computed from its per-epoch history and selection counts.

    ``test_per_class``: the last epoch's top-1 accuracy of each class on the test split (None: a class absent).
    """
    accs = [row["test_acc"] for row in history]
    best = max(accs)
    target, source = (cfg.target_acc, "given") if cfg.target_acc is not None else (TARGET_FRACTION * best, "0.99 x own best")
    steps = int(history[-1]["step"])
    return {
        "final_test_acc": accs[-1],
        "final_test_top5": history[-1]["test_top5"],
        "final_test_bacc": _or_none(history[-1].get("test_bacc", math.nan)),
        **({"final_test_per_class_acc": list(test_per_class)} if test_per_class else {}),
        "best_test_acc": best,
        "best_epoch": accs.index(best) + 1,
        "target_acc": target,
        "target_source": source,
        "epochs_to_target": epochs_to_target(accs, target),
        "epochs_to_plateau": epochs_to_plateau(accs),
        "epochs": len(history),
        "optimizer_steps": steps,
        "num_batches": len(batch_visits),
        "batches_per_round": batches_per_round,
        "samples_backpropagated": _total(history, "samples_backprop", steps * cfg.batch_size),
        "train_seconds": sum(row["train_seconds"] for row in history),
        "cost": cost_totals(history),
        "eval_seconds": sum(row["eval_seconds"] for row in history),
        **_val_summary(history),
        "batch_visits": batch_visits,
        "batches_never_selected_after_warmup": sum(1 for v in batch_visits if v <= 1),
    }


def _total(history: list[dict], column: str, default: float) -> float:
    values = [row.get(column, math.nan) for row in history]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return default  # a run from before cost was counted
    return sum(values)


def cost_totals(history: list[dict]) -> dict:
    """A run's total cost (README "Cost") from its per-epoch history; NaN where it was not counted."""
    totals = {"optimizer_steps": int(history[-1]["step"]) if history else 0}
    for column in COST_COLUMNS[:4]:
        totals[column] = _total(history, column, math.nan)
    totals["train_seconds"] = sum(row["train_seconds"] for row in history)
    totals["choose_seconds"] = _total(history, "choose_seconds", math.nan)
    totals["cpu_seconds"] = _total(history, "cpu_seconds", math.nan)
    return totals


def cumulative(history: list[dict], column: str) -> list[float]:
    """The running total of a per-epoch column (cost at the end of each epoch)."""
    out, total = [], 0.0
    for row in history:
        total += row.get(column, math.nan)
        out.append(total)
    return out


def _val_summary(history: list[dict]) -> dict:
    """Validation accuracy at the end and at its best epoch, when the run had a validation split."""
    vals = [row.get("val_acc", math.nan) for row in history]
    if not vals or any(v is None or math.isnan(v) for v in vals):
        return {}
    best = max(vals)
    return {"final_val_acc": vals[-1], "best_val_acc": best, "best_val_epoch": vals.index(best) + 1,
            "final_val_bacc": _or_none(history[-1].get("val_bacc", math.nan))}


def value_at_budget(costs: Sequence[float], values: Sequence[float], budget: float) -> float:
    """``values`` at the last evaluation whose cumulative cost is within ``budget`` (NaN if none is).

    ``costs``: the cumulative cost at the end of each epoch, ascending. This is what the run had reached
    had it been stopped once the budget was spent: no interpolation between evaluations.
    """
    reached = [v for c, v in zip(costs, values) if c <= budget * (1 + 1e-9)]
    return reached[-1] if reached else math.nan
