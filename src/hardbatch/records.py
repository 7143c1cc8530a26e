"""A run folder's records: file names, the checks every value read back passes, the summary and label-noise
exposure computed from them."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.fileio import (
    LOCK,
    atomic_write_text,
    csv_text,
    read_csv,
    read_json,
    space_for,
)
from hardbatch.metrics import epochs_to_plateau, epochs_to_target

CONFIG, HISTORY, TRACE, SUMMARY, CHECKPOINT = "config.json", "history.csv", "trace.csv", "summary.json", "checkpoint.pt"
RELABELLED = "relabelled.json"  # runs with label noise: which training samples got another label, and the batches
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
RUN_FORMAT = 2  # config.json "format": the layout of a run folder's files (2: the policy's hyper-parameters under "params")
TARGET_FRACTION = 0.99  # default target: 99% of the reference's best accuracy


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


def _val_summary(history: list[dict]) -> dict:
    """Validation accuracy at the end and at its best epoch, when the run had a validation split."""
    vals = [row.get("val_acc", math.nan) for row in history]
    if not vals or any(v is None or math.isnan(v) for v in vals):
        return {}
    best = max(vals)
    return {"final_val_acc": vals[-1], "best_val_acc": best, "best_val_epoch": vals.index(best) + 1,
            "final_val_bacc": _or_none(history[-1].get("val_bacc", math.nan))}


