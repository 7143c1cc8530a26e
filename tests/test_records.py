"""hardbatch.records: each run file declared once (its fields, their ranges, optional or not), what a run writes
passing those declarations, damaged values refused in one line naming the file, row and field, and the summary."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
from conftest import rows_of

from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.records import (
    CONFIG,
    HISTORY,
    HISTORY_FIELDS,
    RELABELLED,
    SUMMARY,
    TRACE,
    TRACE_FIELDS,
    BadRecord,
    HistoryRow,
    RunDir,
    Summary,
    check_record,
    check_rows,
    cost_totals,
    mislabelled_exposure,
    summarize,
)
from hardbatch.run.experiment import train_run

N, B = 10, 32


def _row(epoch: int, acc: float, **changes) -> dict:
    """A history.csv row as a run writes it: N steps of B samples an epoch, 1.5 s training."""
    return {
        "epoch": epoch,
        "step": epoch * N,
        "train_loss": 1.0,
        "test_loss": 1.0,
        "test_acc": acc,
        "test_top5": 1.0,
        "lr": 0.1,
        "train_seconds": 1.5,
        "eval_seconds": 0.25,
        "test_bacc": acc,
        "samples_loaded": N * B,
        "samples_forward": N * B,
        "samples_forward_nograd": 0,
        "samples_backprop": N * B,
        "choose_seconds": 0.01,
        "cpu_seconds": 1.0,
        **changes,
    }


def test_the_csv_columns_are_the_declared_fields():
    assert tuple(f.name for f in dataclasses.fields(HistoryRow)) == HISTORY_FIELDS
    assert TRACE_FIELDS == ("step", "round", "batch", "loss", "samples")
    optional = {f.name for f in dataclasses.fields(HistoryRow) if "None" in str(f.type)}
    assert optional == {"val_loss", "val_acc", "val_top5", "val_bacc"}  # only what a run without a validation split


def test_summarize_matches_history():
    cfg = RunConfig(params={"delta": 0.5}, epochs=3, batch_size=B)
    history = [_row(e, a) for e, a in enumerate([0.5, 0.8, 0.79], start=1)]
    s = summarize(history, cfg, [6, 1, 3, 3, 3, 3, 3, 3, 3, 2], 5)
    assert s["final_test_acc"] == 0.79 and s["best_test_acc"] == 0.8 and s["best_epoch"] == 2
    assert s["epochs_to_plateau"] == 2 and s["epochs"] == 3 and s["final_test_bacc"] == 0.79
    assert s["optimizer_steps"] == 3 * N and s["samples_backpropagated"] == 3 * N * B
    assert s["train_seconds"] == pytest.approx(4.5) and s["eval_seconds"] == pytest.approx(0.75)
    assert s["batches_never_selected_after_warmup"] == 1
    assert s["target_acc"] == pytest.approx(0.99 * 0.8) and s["epochs_to_target"] == 2
    assert (
        s["cost"]
        == cost_totals(history)
        == {
            "optimizer_steps": 30,
            "samples_loaded": 960,
            "samples_forward": 960,
            "samples_forward_nograd": 0,
            "samples_backprop": 960,
            "train_seconds": pytest.approx(4.5),
            "choose_seconds": pytest.approx(0.03),
            "cpu_seconds": 3.0,
        }
    )
    assert check_record(Summary, s) is s and set(s) <= {f.name for f in dataclasses.fields(Summary)}
    assert "final_val_acc" not in s  # no validation split
    with_val = summarize([_row(1, 0.5, val_acc=0.6, val_bacc=0.55)], cfg, [1] * 10, 5)
    assert (with_val["final_val_acc"], with_val["best_val_epoch"], with_val["final_val_bacc"]) == (0.6, 1, 0.55)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"test_acc": 1.5}, "row 2: test_acc is 1.5, not in [0, 1]"),
        ({"step": 2.5}, "row 2: step is 2.5, not an integer >= 0"),
        ({"train_loss": math.inf}, "row 2: train_loss is inf, not a finite number >= 0"),
        ({"test_bacc": math.nan}, "row 2: test_bacc is missing"),  # an empty cell reads as NaN
        ({"cpu_seconds": "x"}, "row 2: cpu_seconds is 'x', not a number"),
        ({"samples_backprop": True}, "row 2: samples_backprop is True, not a number"),
    ],
)
def test_a_bad_history_cell_is_named_by_row_and_column(change, message):
    rows = [_row(1, 0.5), _row(2, 0.6, **change)]
    with pytest.raises(BadRecord) as e:
        check_rows(rows, HistoryRow)
    assert str(e.value) == message
    assert check_rows([_row(1, 0.5, val_acc=math.nan)], HistoryRow)  # no validation split: empty val cells


def test_a_history_without_a_column_of_this_format_is_refused():
    """Runs of older versions lacked the cost or balanced-accuracy columns; this format reads only its own."""
    rows = [{k: v for k, v in _row(1, 0.5).items() if k != "cpu_seconds"}]
    with pytest.raises(BadRecord, match="row 1: cpu_seconds is missing"):
        check_rows(rows, HistoryRow)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("final_test_acc", 1.5, "final_test_acc is 1.5, not in [0, 1]"),
        ("final_test_bacc", "x", "final_test_bacc is 'x', not a number"),
        ("epochs", 2.5, "epochs is 2.5, not an integer >= 0"),
        ("batch_visits", [1, -1], "batch_visits[1] is -1, not an integer >= 0"),
        ("batch_visits", 3, "batch_visits is not a list"),
        ("cost", None, "cost is missing"),
        ("target_source", "guess", "target_source is 'guess', not one of given, 0.99 x own best"),
        ("mislabelled", {"trained": 1.2}, "mislabelled.trained is 1.2, not in [0, 1]"),
        ("final_test_per_class_acc", [0.5, "x"], "final_test_per_class_acc[1] is 'x', not a number"),
    ],
)
def test_a_bad_summary_value_is_named(key, value, message):
    summary = summarize([_row(1, 0.5)], RunConfig(), [1] * 10, 10)
    assert check_record(Summary, {**summary, "final_test_per_class_acc": [0.5, None], "mislabelled": {"trained": None}})
    with pytest.raises(BadRecord) as e:
        check_record(Summary, {**summary, key: value})
    assert str(e.value) == message
    with pytest.raises(BadRecord, match=re.escape("cost.cpu_seconds is missing")):
        check_record(Summary, {**summary, "cost": {**summary["cost"], "cpu_seconds": None}})


def test_trace_and_relabelled_records_are_checked_when_read(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / TRACE).write_text("step,round,batch,loss,samples\n1,0,0,2.3,32\n2,0,1,-inf,32\n")
    with pytest.raises(UsageError, match=r"trace.csv: row 2: loss is -inf, not a finite number >= 0"):
        run.trace()
    (tmp_path / TRACE).write_text("step,round,batch,loss\n1,0,0,2.3\n")  # no samples column: an older trace
    with pytest.raises(UsageError, match=r"trace.csv: row 1: samples is missing"):
        run.trace()
    record = {"train_samples": 10, "relabelled": [3], "true_labels": [1], "given_labels": [2], "partition": [[0, 1]]}
    (tmp_path / RELABELLED).write_text(json.dumps(record))
    assert run.relabelled() == record
    for bad, message in (
        ({"relabelled": [12]}, "a sample index is 12, not below train_samples 10"),
        ({"true_labels": [1, 2]}, "true_labels has 2 entries for 1 relabelled samples"),
        ({"partition": [[0, -1]]}, r"partition\[0\]\[1\] is -1, not an integer >= 0"),
    ):
        (tmp_path / RELABELLED).write_text(json.dumps({**record, **bad}))
        with pytest.raises(UsageError, match=f"relabelled.json: {message}"):
            run.relabelled()


def test_a_run_folder_of_another_format_is_refused_in_one_line(tmp_path):
    (tmp_path / CONFIG).write_text(json.dumps({"config": RunConfig().to_dict()}))  # no "format": format 1
    with pytest.raises(UsageError) as e:
        RunDir(tmp_path).config()
    assert str(e.value) == (
        f"cannot read {tmp_path / CONFIG}: the run folder is format 1, and this hardbatch reads "
        "format 2; open it with the hardbatch version that wrote it; rerun that run or move its "
        "directory away"
    )


def test_a_trained_run_writes_what_its_records_declare(tmp_path):
    """Balanced accuracy every epoch, per-class accuracy and the label-noise exposure in the summary; every file
    reads back through its declaration; the exposure is the one counted during training."""
    cfg = RunConfig(
        dataset="digits", epochs=2, batch_size=64, val_fraction=0.2, imbalance=5.0, label_noise=0.2, device="cpu"
    )
    summary = train_run(cfg, tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    rows = rows_of(tmp_path / "run" / HISTORY)
    assert (
        len(rows) == 2
        and all(row["test_bacc"] and row["val_bacc"] for row in rows)
        and list(rows[0]) == list(HISTORY_FIELDS)
    )
    per_class = summary["final_test_per_class_acc"]
    assert len(per_class) == 10 and all(0 <= a <= 1 for a in per_class)
    assert summary["final_test_bacc"] == pytest.approx(sum(per_class) / 10)
    assert summary["final_test_bacc"] == pytest.approx(float(rows[-1]["test_bacc"]))
    assert summary["final_val_bacc"] == pytest.approx(float(rows[-1]["val_bacc"]))
    assert json.loads((tmp_path / "run" / SUMMARY).read_text())["final_test_per_class_acc"] == per_class
    assert run.summary() == json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert len(run.trace()) == summary["optimizer_steps"] and run.relabelled()["train_samples"] > 0
    exposure = mislabelled_exposure(run)
    assert dataclasses.asdict(exposure) == pytest.approx(summary["mislabelled"])
    assert 0 < exposure.trained < 1 and exposure.in_data == pytest.approx(0.2, abs=0.01)
    no_val = train_run(cfg.replace(val_fraction=0.0, label_noise=0.0, epochs=1), tmp_path / "plain", progress=False)
    assert rows_of(tmp_path / "plain" / HISTORY)[0]["val_bacc"] == "" and "final_val_bacc" not in no_val
    assert mislabelled_exposure(RunDir(tmp_path / "plain")) is None  # no label noise


def test_per_class_accuracy_survives_a_resume_after_the_last_epoch(tmp_path, interrupt):
    cfg = RunConfig(dataset="digits", epochs=2, batch_size=64, device="cpu")
    straight = train_run(cfg, tmp_path / "straight", progress=False)
    interrupt(cfg, tmp_path / "resumed", 2)  # killed after the last checkpoint, before summary.json
    resumed = train_run(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed["final_test_per_class_acc"] == straight["final_test_per_class_acc"]
    assert resumed["final_test_bacc"] == straight["final_test_bacc"]


def test_cpu_seconds_are_counted_per_epoch_and_in_total(tmp_path):
    cfg = RunConfig(dataset="digits", model="mlp", epochs=2, batch_size=64, device="cpu")
    summary = train_run(cfg, tmp_path / "run", progress=False)
    cpu = [row["cpu_seconds"] for row in RunDir(tmp_path / "run").history()]
    assert all(c > 0 for c in cpu)
    assert summary["cost"]["cpu_seconds"] == pytest.approx(sum(cpu))
    # process CPU time of one thread cannot run far ahead of the wall-clock of the same span
    assert sum(cpu) <= 1.5 * summary["train_seconds"] + 0.05
