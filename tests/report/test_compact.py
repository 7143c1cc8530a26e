"""report.compact: an evidence benchmark's runs as compact records (one gzip'd JSON-lines file per benchmark, the same
bytes for the same runs) and read back as the Runs a page is rendered from, without run folders."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from hardbatch.errors import UsageError
from hardbatch.report import arm_stats, group_runs
from hardbatch.report.compact import (
    FLOAT_DIGITS,
    HISTORY_COLUMNS,
    Declared,
    archive_folders,
    read_records,
    write_records,
)
from hardbatch.report.load import UNFINISHED

from .scripted_runs import load, write_frontier, write_run


class Bench:
    name, title, settings, lrs, seeds, tune_seeds, target, metric = (
        "bench",
        "A bench",
        {"dataset": "digits"},
        (0.05,),
        3,
        1,
        None,
        "bacc",
    )
    arms = ("δ = 0.5", "δ = 1", "uniform")


def _evidence(root):
    """BENCH/main as FRONTIER_RUNS, a tuning run, a failed main run (no summary.json) and lr_choice.json."""
    write_frontier(root / "bench" / "main", metric_gap=0.05)
    write_run(
        root / "bench" / "tune" / "lr-0.05",
        "uniform_s0",
        accs=[0.5, 0.612345678],
        policy="uniform",
        epochs=4,
        budget=0.5,
    )
    failed = write_run(root / "bench" / "main", "diverged", accs=[0.1], epochs=4, budget=0.25, policy="uniform", seed=7)
    (failed / "summary.json").unlink()
    (root / "bench" / "lr_choice.json").write_text(json.dumps({"grid": [0.05], "arms": {}, "seeds": [0]}))
    return archive_folders(Bench, root)


def test_records_hold_every_run_and_read_back_as_its_runs(tmp_path):
    archive = _evidence(tmp_path / "runs")
    assert len(archive.main) == 21 and len(archive.tune) == 1
    (left,) = archive.left_out
    assert left.kind == UNFINISHED and left.path == tmp_path / "runs" / "bench" / "main" / "diverged"
    paths = write_records(tmp_path / "records", [archive], {"benchmarks": ["bench"], "date": "2026-12-02"})
    assert [p.name for p in paths] == ["bench.jsonl.gz", "page.json"]
    meta, (back,) = read_records(tmp_path / "records")
    assert meta == {"format": 1, "benchmarks": ["bench"], "date": "2026-12-02"}
    assert back.bench == Declared.of(Bench) and back.choice == archive.choice and back.root == archive.root
    assert [(item.path, item.kind, item.why) for item in back.left_out] == [(left.path, left.kind, left.why)]
    assert [r.path for r in back.main] == sorted(r.path for r in archive.main)
    for before, after in zip(sorted(archive.main, key=lambda r: r.path), back.main, strict=True):
        assert after.config == before.config and after.environment["device"] == before.environment["device"]
        for column in HISTORY_COLUMNS:
            assert [row[column] for row in after.history] == pytest.approx(
                [row[column] for row in before.history], rel=10**-FLOAT_DIGITS, nan_ok=True
            )
        assert after.summary["final_test_bacc"] == pytest.approx(before.summary["final_test_bacc"])
    (tune,) = back.tune
    assert tune.summary["final_test_acc"] == 0.612346  # FLOAT_DIGITS significant digits
    assert math.isnan(tune.history[0]["val_acc"])  # no validation split: NaN, as history.csv's empty cell
    # The statistics from the records are those from the folders (to far below the page's digits).
    (a,), (b,) = group_runs(archive.main), group_runs(back.main)
    for x, y in zip(arm_stats(a, metric="bacc"), arm_stats(b, metric="bacc"), strict=True):
        assert (x.arm, x.final.mean) == (y.arm, pytest.approx(y.final.mean))
        assert {c: p.d.mean for c, p in x.vs_frontier.items()} == pytest.approx(
            {c: p.d.mean for c, p in y.vs_frontier.items()}, nan_ok=True
        )


def test_the_same_runs_give_the_same_bytes_and_stale_records_go(tmp_path):
    archive = _evidence(tmp_path / "runs")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "gone.jsonl.gz").write_bytes(b"old")  # a benchmark no longer on the page
    first = write_records(tmp_path / "a", [archive], {"benchmarks": ["bench"]})
    again = archive_folders(Bench, tmp_path / "runs")
    again.main.reverse()  # the order runs were read in does not matter
    second = write_records(tmp_path / "b", [again], {"benchmarks": ["bench"]})
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert not (tmp_path / "a" / "gone.jsonl.gz").exists()
    lines = gzip.decompress(first[0].read_bytes()).decode().splitlines()
    assert json.loads(lines[0])["benchmark"]["metric"] == "bacc" and len(lines) == 1 + 21 + 1
    record = json.loads(lines[1])
    assert set(record) == {"phase", "path", "seed", "git_commit", "config", "environment", "history", "summary"}
    assert record["phase"] == "tune" and set(record["history"]) == set(HISTORY_COLUMNS)


def test_damaged_or_missing_records_are_one_line_naming_the_file(tmp_path):
    write_records(tmp_path, [_evidence(tmp_path / "runs")], {"benchmarks": ["bench"]})
    lines = gzip.decompress((tmp_path / "bench.jsonl.gz").read_bytes()).decode().splitlines()
    record = json.loads(lines[3])
    record["history"]["test_acc"][0] = 1.5  # not a fraction
    lines[3] = json.dumps(record)
    (tmp_path / "bench.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(UsageError, match=r"cannot read .*bench.jsonl.gz line 4: .*test_acc is 1.5"):
        read_records(tmp_path)
    (tmp_path / "bench.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(UsageError, match=r"cannot read .*bench.jsonl.gz line 0: BadGzipFile"):
        read_records(tmp_path)
    (tmp_path / "bench.jsonl.gz").unlink()
    with pytest.raises(UsageError, match=r"cannot read .*bench.jsonl.gz: the file is missing"):
        read_records(tmp_path)
    with pytest.raises(UsageError, match=r"no records in .*nowhere: no page.json"):
        read_records(tmp_path / "nowhere")


def test_a_run_record_keeps_what_the_issue_asks(tmp_path):
    """Settings (the resolved config), seed, per-epoch accuracy (test and validation, top-1 and balanced), cost per
    epoch and in total, and the commit."""
    path = write_run(tmp_path / "runs" / "bench" / "main", "r", accs=[0.5, 0.6], val_accs=[0.4, 0.55], seed=2)
    saved = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**saved, "git_commit": "abc123"}))
    (tmp_path / "runs" / "bench" / "lr_choice.json").write_text("{}")
    write_records(tmp_path / "rec", [archive_folders(Bench, tmp_path / "runs")], {"benchmarks": ["bench"]})
    record = json.loads(gzip.decompress((tmp_path / "rec" / "bench.jsonl.gz").read_bytes()).decode().splitlines()[1])
    assert (record["seed"], record["git_commit"], record["config"]["seed"]) == (2, "abc123", 2)
    assert record["history"]["val_acc"] == [0.4, 0.55] and record["history"]["test_bacc"] == [0.5, 0.6]
    assert record["history"]["samples_backprop"] == [320, 320] and record["summary"]["cost"]["samples_backprop"] == 640
    assert [r.path.name for r in load(tmp_path / "runs")] == ["r"]
