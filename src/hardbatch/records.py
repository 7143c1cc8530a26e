"""A run folder's records: one typed declaration per file (its columns or keys, each value's range), the checks every
value read back passes, and the summary computed from them."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.fileio import LOCK, atomic_write_text, csv_text, read_csv, read_json, space_for, sync_files
from hardbatch.metrics import epochs_to_plateau, epochs_to_target
from hardbatch.params import Range, param

CONFIG, HISTORY, TRACE, SUMMARY, CHECKPOINT = "config.json", "history.csv", "trace.csv", "summary.json", "checkpoint.pt"
RELABELLED = "relabelled.json"  # runs with label noise: which training samples got another label, and the batches
RUN_FORMAT = (
    2  # config.json "format": the layout of a run folder's files (2: the policy's hyper-parameters under "params")
)
TARGET_FRACTION = 0.99  # default target: 99% of the reference's best accuracy

# The ranges of a record's values. NaN is in none of them: an empty cell or a null is allowed only where a field's
# type says ``| None``.
COUNT = Range(0, integer=True)  # epochs, steps, samples, indices
AMOUNT = Range(0.0)  # losses, seconds, the learning rate: finite and >= 0
FRACTION = Range(0.0, 1.0)  # accuracies and shares


# ---- the records: each file's fields, declared once ------------------------------------------------------------


@dataclass(kw_only=True)
class HistoryRow:
    """history.csv: one row per epoch; docs/guides/command-line.md "Cost" explains the cost columns
    (``train_seconds`` includes ``choose_seconds``)."""

    epoch: int = param(help="the epoch, from 1", range=COUNT)
    step: int = param(help="optimizer steps so far", range=COUNT)
    train_loss: float = param(help="mean training loss of the epoch", range=AMOUNT)
    test_loss: float = param(help="test loss at the epoch's end", range=AMOUNT)
    test_acc: float = param(help="test top-1", range=FRACTION)
    test_top5: float = param(help="test top-5", range=FRACTION)
    lr: float = param(help="learning rate at the epoch's end", range=AMOUNT)
    train_seconds: float = param(help="wall-clock seconds in training steps", range=AMOUNT)
    eval_seconds: float = param(help="wall-clock seconds evaluating", range=AMOUNT)
    val_loss: float | None = param(None, "validation loss (empty without a validation split)", range=AMOUNT)
    val_acc: float | None = param(None, "validation top-1 (empty without a validation split)", range=FRACTION)
    val_top5: float | None = param(None, "validation top-5 (empty without a validation split)", range=FRACTION)
    test_bacc: float = param(help="balanced (mean per-class) test top-1", range=FRACTION)
    val_bacc: float | None = param(None, "balanced validation top-1 (empty without one)", range=FRACTION)
    samples_loaded: int = param(help="samples loaded", range=COUNT)
    samples_forward: int = param(help="samples forwarded with gradient", range=COUNT)
    samples_forward_nograd: int = param(help="samples forwarded without gradient (scoring)", range=COUNT)
    samples_backprop: int = param(help="samples back-propagated", range=COUNT)
    choose_seconds: float = param(help="seconds spent choosing", range=AMOUNT)
    cpu_seconds: float = param(help="the process's CPU seconds in training steps", range=AMOUNT)


@dataclass(kw_only=True)
class TraceRow:
    """trace.csv: one row per optimizer step."""

    step: int = param(help="the optimizer step, from 1", range=COUNT)
    round: int = param(help="the round (0: the warm-up)", range=COUNT)
    batch: int = param(help="the batch's id: its row of the fixed partition, or the policy's own cut", range=COUNT)
    loss: float = param(help="the step's training loss", range=AMOUNT)
    samples: int = param(help="samples back-propagated", range=COUNT)


@dataclass(kw_only=True)
class CostTotals:
    """summary.json ``cost``: what the run spent in all (docs/guides/command-line.md "Cost")."""

    optimizer_steps: int = param(help="optimizer steps", range=COUNT)
    samples_loaded: int = param(help="samples loaded", range=COUNT)
    samples_forward: int = param(help="samples forwarded with gradient", range=COUNT)
    samples_forward_nograd: int = param(help="samples forwarded without gradient", range=COUNT)
    samples_backprop: int = param(help="samples back-propagated", range=COUNT)
    train_seconds: float = param(help="seconds in training steps", range=AMOUNT)
    choose_seconds: float = param(help="seconds choosing", range=AMOUNT)
    cpu_seconds: float = param(help="CPU seconds in training steps", range=AMOUNT)


@dataclass(kw_only=True)
class MislabelledExposure:
    """summary.json ``mislabelled`` (runs with label noise): how much of the training was on relabelled samples,
    against their share of the data; counted during training (null where undefined)."""

    trained: float | None = param(None, "the relabelled share of all samples back-propagated", range=FRACTION)
    trained_after_warmup: float | None = param(None, "the same after the first epoch", range=FRACTION)
    in_data: float | None = param(None, "relabelled samples / training-split samples", range=FRACTION)
    in_partition: float | None = param(None, "their share of the fixed mini-batches' samples", range=FRACTION)


@dataclass(kw_only=True)
class IrreducibleModel:
    """summary.json ``irreducible_model`` (rho-loss): what its irreducible-loss model reached on the training split."""

    holdout_samples: int = param(help="the validation samples it trained on", range=COUNT)
    train_top1: float = param(help="its top-1 on the training split", range=FRACTION)
    train_loss: float = param(help="its mean cross-entropy there", range=AMOUNT)


@dataclass(kw_only=True)
class Summary:
    """summary.json, written last: its presence marks a finished run (``summarize``, plus what ``run`` adds)."""

    final_test_acc: float = param(help="test top-1 after the last epoch", range=FRACTION)
    final_test_top5: float = param(help="test top-5 after the last epoch", range=FRACTION)
    final_test_bacc: float = param(help="balanced test top-1 after the last epoch", range=FRACTION)
    final_test_per_class_acc: list[float | None] | None = param(
        None, "each class's final test top-1 (null: absent)", range=FRACTION
    )
    best_test_acc: float = param(help="the best test top-1 of any epoch", range=FRACTION)
    best_epoch: int = param(help="its epoch", range=COUNT)
    target_acc: float = param(help="T for epochs to target", range=FRACTION)
    target_source: str = param(help="where T came from", choices=("given", "0.99 x own best"))
    epochs_to_target: int | None = param(None, "the first epoch at or above T (null: never)", range=COUNT)
    epochs_to_plateau: int | None = param(None, "the first epoch within 1 point of the run's best", range=COUNT)
    epochs: int = param(help="epochs trained", range=COUNT)
    optimizer_steps: int = param(help="optimizer steps", range=COUNT)
    num_batches: int = param(help="N, the fixed mini-batches", range=COUNT)
    batches_per_round: int = param(help="k, the batches a round after the warm-up trains", range=COUNT)
    samples_backpropagated: int = param(help="samples back-propagated", range=COUNT)
    train_seconds: float = param(help="seconds in training steps", range=AMOUNT)
    cost: CostTotals = param(help="what the run spent in all")
    eval_seconds: float = param(help="seconds evaluating", range=AMOUNT)
    final_val_acc: float | None = param(None, "final validation top-1 (with a validation split)", range=FRACTION)
    best_val_acc: float | None = param(None, "the best validation top-1", range=FRACTION)
    best_val_epoch: int | None = param(None, "its epoch", range=COUNT)
    final_val_bacc: float | None = param(None, "balanced validation top-1 after the last epoch", range=FRACTION)
    batch_visits: list[int] = param(help="how often each batch was trained", range=COUNT)
    batches_never_selected_after_warmup: int = param(help="batches trained in the warm-up only", range=COUNT)
    mislabelled: MislabelledExposure | None = param(None, "runs with label noise: training on relabelled samples")
    holdout_cost: dict[str, float] | None = param(None, "rho-loss: its IL model's cost, by column", range=AMOUNT)
    irreducible_model: IrreducibleModel | None = param(None, "rho-loss: what its irreducible-loss model reached")


@dataclass(kw_only=True)
class Relabelled:
    """relabelled.json (runs with label noise): the relabelled samples, their labels, and the fixed mini-batches that
    trace.csv's batch column numbers; indices into the training split as the sampler sees it."""

    train_samples: int = param(help="samples in the training split", range=COUNT)
    relabelled: list[int] = param(help="indices of the relabelled samples", range=COUNT)
    true_labels: list[int] = param(help="their labels before", range=COUNT)
    given_labels: list[int] = param(help="their labels after", range=COUNT)
    partition: list[list[int]] = param(help="the N fixed mini-batches of B indices", range=COUNT)


def field_names(record: type) -> tuple[str, ...]:
    """A record's fields in declaration order: a CSV file's columns."""
    return tuple(f.name for f in dataclasses.fields(record))


HISTORY_FIELDS = field_names(HistoryRow)
TRACE_FIELDS = field_names(TraceRow)
COST_COLUMNS = (
    "samples_loaded",
    "samples_forward",
    "samples_forward_nograd",
    "samples_backprop",
    "choose_seconds",
    "cpu_seconds",
)  # the history columns that count cost


# ---- checking the values read back against the declarations ----------------------------------------------------


class BadRecord(ValueError):
    """A run file that parses but holds a value of the wrong type or out of range; the message names it."""


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(name: str, value: Any, kind: Any, f: dataclasses.Field) -> None:
    """``value`` checked against type ``kind`` (int, float, str, ``X | None``, ``list[X]``, ``dict[str, X]`` or a
    record) and field ``f``'s declared range or choices, which apply to every number or name inside it."""
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, _UNION) else (kind,)
    if _empty(value):
        if type(None) in options:
            return
        raise BadRecord(f"{name} is missing")
    (kind,) = [k for k in options if k is not type(None)]
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise BadRecord(f"{name} is not a JSON object")
        check_record(kind, value, f"{name}.")
    elif origin is list:
        if not isinstance(value, list):
            raise BadRecord(f"{name} is not a list")
        for i, item in enumerate(value):
            _check(f"{name}[{i}]", item, typing.get_args(kind)[0], f)
    elif origin is dict:
        if not isinstance(value, dict):
            raise BadRecord(f"{name} is not a JSON object")
        for key, item in value.items():
            _check(f"{name}.{key}", item, typing.get_args(kind)[1], f)
    elif kind is str:
        choices = f.metadata.get("choices")
        if not isinstance(value, str) or (choices and value not in choices):
            raise BadRecord(f"{name} is {value!r}, not {'one of ' + ', '.join(choices) if choices else 'a string'}")
    elif not _is_real(value):
        raise BadRecord(f"{name} is {value!r}, not a number")
    elif (kind is int and not isinstance(value, int)) or value not in f.metadata["range"]:
        raise BadRecord(f"{name} is {value!r}, not {f.metadata['range']}")


_UNION = type(int | None)


def _types(record: type) -> dict[str, typing.Any]:
    return typing.get_type_hints(record, globalns={**globals(), **vars(typing)})


def check_record(record: type, values: Any, prefix: str = "") -> dict:
    """``values`` (a dict: a CSV row, a JSON object) checked against ``record``'s declaration: every field without
    ``| None`` present, every value of its type and in its range; keys not declared are not checked. Returns
    ``values``; BadRecord names the first bad field."""
    if not isinstance(values, dict):
        raise BadRecord("not a JSON object")
    kinds = _types(record)
    for f in dataclasses.fields(record):
        _check(prefix + f.name, values.get(f.name), kinds[f.name], f)
    return values


def check_rows(rows: list[dict], record: type) -> list[dict]:
    """``rows`` (read_csv's) each checked against ``record``; BadRecord names the first bad cell by row (1-based)."""
    for i, row in enumerate(rows, start=1):
        try:
            check_record(record, row)
        except BadRecord as e:
            raise BadRecord(f"row {i}: {e}") from None
    return rows


def check_relabelled(record: Any) -> dict:
    """relabelled.json checked: its declaration, one label pair per index, indices below ``train_samples``."""
    check_record(Relabelled, record)
    for key in ("true_labels", "given_labels"):
        if len(record[key]) != len(record["relabelled"]):
            raise BadRecord(f"{key} has {len(record[key])} entries for {len(record['relabelled'])} relabelled samples")
    indices = record["relabelled"] + [j for batch in record["partition"] for j in batch]
    n = record["train_samples"]
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
        raise BadRecord(
            f"the run folder is format {version!r}, and this hardbatch reads format {RUN_FORMAT}; "
            f"open it with the hardbatch version that wrote it"
        )
    return RunConfig.from_dict(saved["config"])


# ---- a run folder ------------------------------------------------------------------------------------------------


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

    def _read(self, name: str, reader: Callable[[Path], Any]) -> Any:
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
            problem = (
                f"not in the expected layout (no {e} entry)"
                if isinstance(e, KeyError)
                else "not in the expected layout"
            )
        except (ValueError, csv.Error) as e:  # a non-numeric cell, a binary file
            problem = f"damaged content ({e})"
        except OSError as e:
            problem = e.strerror or str(e)
        raise UsageError(f"cannot read {path}: {problem}; rerun that run or move its directory away") from None

    # Every reader checks each value it returns (type and range), so a damaged record never reaches a caller.
    def config(self) -> RunConfig:
        return self._read(CONFIG, read_config)

    def environment(self) -> dict:
        """What config.json records beside the configuration: ``versions``, ``device``, ``git_commit``, ..."""
        return self._read(CONFIG, lambda p: {k: v for k, v in read_json(p).items() if k not in ("format", "config")})

    def history(self) -> list[dict[str, float]]:
        return self._read(HISTORY, lambda p: check_rows(read_csv(p), HistoryRow))

    def trace(self) -> list[dict[str, float]]:
        return self._read(TRACE, lambda p: check_rows(read_csv(p), TraceRow))

    def summary(self) -> dict:
        return self._read(SUMMARY, lambda p: check_record(Summary, read_json(p)))

    def relabelled(self) -> dict | None:
        """The label-noise record (see ``write_relabelled``), or None for a run without label noise."""
        return (
            self._read(RELABELLED, lambda p: check_relabelled(read_json(p))) if self.file(RELABELLED).exists() else None
        )

    def write_relabelled(
        self,
        train_samples: int,
        indices: list[int],
        true_labels: list[int],
        given_labels: list[int],
        partition: list[list[int]],
    ) -> None:
        """``relabelled.json`` (``Relabelled``)."""
        record = {
            "train_samples": train_samples,
            "relabelled": indices,
            "true_labels": true_labels,
            "given_labels": given_labels,
            "partition": partition,
        }
        atomic_write_text(
            self.file(RELABELLED), json.dumps(record, separators=(",", ":")) + "\n"
        )  # compact: 60k indices

    def write_history(self, rows: list[dict]) -> None:
        """Replace history.csv by ``rows``, atomically (a killed writer leaves the old file or the new one); made
        durable on disk by ``sync`` (before each checkpoint), not here."""
        atomic_write_text(self.file(HISTORY), csv_text(rows, HISTORY_FIELDS), durable=False)

    def append_trace(self, rows: list[dict]) -> None:
        """Append per-step rows; the header is written when the file is new. Made durable by ``sync``, not here.

        A failed append can leave a partial last row; resuming cuts the trace back to the checkpoint's steps.
        """
        path = self.file(TRACE)
        new = not path.exists()
        with space_for(path), open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(TRACE_FIELDS), lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def sync(self) -> None:
        """Flush history.csv and trace.csv to the disk: the run's records up to now survive a power loss (a killed
        process loses nothing the files were given). Called before each checkpoint and before summary.json."""
        sync_files(self.file(HISTORY), self.file(TRACE))

    def truncate_trace(self, steps: int) -> None:
        """Keep only the first ``steps`` rows of the trace (after resuming from a checkpoint)."""
        path = self.file(TRACE)
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))[:steps]
        atomic_write_text(path, csv_text(rows, TRACE_FIELDS), durable=False)


def find_runs(root: Path | str) -> list[RunDir]:
    """Every finished run under ``root`` (``root`` itself included), in path order."""
    root = Path(root)
    return [RunDir(p.parent) for p in sorted(root.rglob(SUMMARY))]


def find_unfinished(root: Path | str) -> list[RunDir]:
    """Every run folder under ``root`` that has a config.json but no summary.json (training, stopped or failed)."""
    root = Path(root)
    return [RunDir(p.parent) for p in sorted(root.rglob(CONFIG)) if not (p.parent / SUMMARY).exists()]


# ---- the summary, from a run's history --------------------------------------------------------------------------


def mislabelled_exposure(run: RunDir) -> MislabelledExposure | None:
    """The share of relabelled samples in what ``run`` back-propagated against their share of its training split, as
    counted during training (summary.json ``mislabelled``, NaN where undefined); None for a run without label noise."""
    return exposure_of(run.summary())


def exposure_of(summary: dict) -> MislabelledExposure | None:
    """``mislabelled_exposure`` from a run's summary (summary.json's content)."""
    counted = summary.get("mislabelled")
    if counted is None:
        return None
    return MislabelledExposure(**{k: math.nan if v is None else v for k, v in counted.items()})


def _or_none(value: float) -> float | None:
    """JSON has no NaN: a missing number is null."""
    return None if math.isnan(value) else value


def summarize(
    history: list[dict],
    cfg: RunConfig,
    batch_visits: list[int],
    batches_per_round: int,
    test_per_class: list[float | None] | None = None,
) -> dict:
    """The summary of a finished run (``Summary``), computed from its per-epoch history (``HistoryRow``s) and
    selection counts; ``test_per_class``: the last epoch's top-1 accuracy of each class on the test split (None: a
    class absent)."""
    accs = [row["test_acc"] for row in history]
    best = max(accs)
    target, source = (
        (cfg.target_acc, "given") if cfg.target_acc is not None else (TARGET_FRACTION * best, "0.99 x own best")
    )
    cost = cost_totals(history)
    return {
        "final_test_acc": accs[-1],
        "final_test_top5": history[-1]["test_top5"],
        "final_test_bacc": history[-1]["test_bacc"],
        **({"final_test_per_class_acc": list(test_per_class)} if test_per_class else {}),
        "best_test_acc": best,
        "best_epoch": accs.index(best) + 1,
        "target_acc": target,
        "target_source": source,
        "epochs_to_target": epochs_to_target(accs, target),
        "epochs_to_plateau": epochs_to_plateau(accs),
        "epochs": len(history),
        "optimizer_steps": cost["optimizer_steps"],
        "num_batches": len(batch_visits),
        "batches_per_round": batches_per_round,
        "samples_backpropagated": cost["samples_backprop"],
        "train_seconds": cost["train_seconds"],
        "cost": cost,
        "eval_seconds": sum(row["eval_seconds"] for row in history),
        **_val_summary(history),
        "batch_visits": batch_visits,
        "batches_never_selected_after_warmup": sum(1 for v in batch_visits if v <= 1),
    }


def cost_totals(history: list[dict]) -> dict:
    """A run's total cost (``CostTotals``, docs/guides/command-line.md "Cost") from its per-epoch history."""
    totals = {"optimizer_steps": int(history[-1]["step"]) if history else 0}
    for column in COST_COLUMNS[:4]:
        totals[column] = sum(row[column] for row in history)
    totals["train_seconds"] = sum(row["train_seconds"] for row in history)
    for column in COST_COLUMNS[4:]:
        totals[column] = sum(row[column] for row in history)
    return totals


def _val_summary(history: list[dict]) -> dict:
    """Validation accuracy at the end and at its best epoch, when the run had a validation split."""
    vals = [row.get("val_acc", math.nan) for row in history]
    if not vals or any(v is None or math.isnan(v) for v in vals):
        return {}
    best = max(vals)
    return {
        "final_val_acc": vals[-1],
        "best_val_acc": best,
        "best_val_epoch": vals.index(best) + 1,
        "final_val_bacc": _or_none(history[-1].get("val_bacc", math.nan)),
    }
