"""Run folders read back by the commands (records.RunDir's checks end to end): a missing, truncated, out-of-range or
foreign file is one line naming the file and what is wrong, ``report`` leaves that run out and lists it, and a folder
of another format (1: before the policy's settings moved under "params") is refused by ``train --resume`` and
``report`` alike. The records' own checks, value by value: tests/test_records.py."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import one_line, snapshot

from hardbatch.records import RUN_FORMAT, RunDir


@pytest.fixture
def root(tmp_path, finished_compare) -> Path:
    """A copy of conftest.py's finished compare (δ 0.5 and 1, seeds 0 and 1), to damage."""
    copy = tmp_path / "copy"
    shutil.copytree(finished_compare.out, copy)
    return copy


def report_skips(root: Path, run: Path, invoke, *words: str, finished: int = 3) -> None:
    """``report root`` succeeds on the other runs, names ``run`` as damaged with ``words``, and leaves it out."""
    rc, _, err = invoke("report", root, "--no-plots")
    assert rc == 0, err
    one_line(err, "skipped damaged run", str(run), *words)
    report = (root / "report.md").read_text()
    assert f"{finished} finished runs" in report and f"`{run}`" in report.split("## Damaged runs, left out")[1]


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("no history", "the file is missing"),
        ("truncated summary", "not valid JSON"),
        ("no config", "the file is missing"),
    ],
)
def test_report_skips_a_damaged_run_folder_naming_the_file(root, invoke, damage, problem):
    run = root / "delta-0.5_seed-1"
    if damage == "no history":
        (run / "history.csv").unlink()
    elif damage == "truncated summary":
        (run / "summary.json").write_text('{"final_test_acc": 0.9')
    else:
        (run / "config.json").unlink()
    report_skips(root, run, invoke, "cannot read", problem)  # the other three runs are readable
    for other in root.iterdir():  # with every run damaged, nothing to report: one line, exit status 2
        if other.is_dir():
            (other / "history.csv").unlink(missing_ok=True)
    rc, _, err = invoke("report", root, "--no-plots")
    assert rc == 2
    one_line(err, "no readable finished runs")


def test_report_skips_damaged_runs_and_lists_them(root, invoke):
    bad_type, truncated = root / "delta-0.5_seed-1", root / "delta-1_seed-1"
    summary = json.loads((bad_type / "summary.json").read_text())
    (bad_type / "summary.json").write_text(json.dumps({**summary, "final_test_acc": "high"}))
    (truncated / "summary.json").write_text('{"final_test_acc": 0.9')
    rc, _, err = invoke("report", root, "--no-plots")
    assert rc == 0, err
    lines = err.splitlines()
    assert len(lines) == 2 and all("skipped damaged run" in line for line in lines)
    assert "final_test_acc is 'high', not a number" in lines[0] and str(bad_type) in lines[0]
    assert "not valid JSON" in lines[1] and str(truncated) in lines[1] and "Error" not in lines[1]
    report = (root / "report.md").read_text()
    assert "## Damaged runs, left out" in report and f"`{bad_type}`" in report and f"`{truncated}`" in report
    assert "2 finished runs" in report  # the two readable ones


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[row][column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize(
    "column, value",
    [
        ("test_acc", "1e308"),
        ("test_acc", "5"),
        ("test_acc", "-1"),
        ("test_acc", "inf"),
        ("test_loss", "-0.5"),
        ("train_seconds", "nan"),
        ("step", "2.5"),
        ("samples_backprop", "-3"),
    ],
)
def test_report_leaves_out_a_history_with_a_value_out_of_range(root, invoke, column, value):
    run = root / "delta-0.5_seed-1"
    _set_cell(run / "history.csv", 1, column, value)
    report_skips(root, run, invoke, "history.csv", "row 2", column)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("epochs", "four", "epochs must be an integer >= 1, got 'four' (str)"),
        ("lr", "abc", "lr must be a finite number > 0, got 'abc' (str)"),
        ("params.delta", "abc", "delta must be in (0, 1], got 'abc' (str)"),  # the policy's own check
        ("params.prune_ratio", 0.5, "policy 'hardbatch' does not take prune_ratio"),
        ("epochs", True, "epochs must be an integer >= 1, got True"),
        ("seed", -1, "seed must be an integer in [0, 2147483647], got -1"),
        ("lr", -0.1, "lr must be a finite number > 0, got -0.1"),
        ("nesterov", "yes", "nesterov must be true or false"),
        ("image_size", 12.5, "image_size must be an integer >= 8 (or unset), got 12.5"),
        ("delta", 0.5, "unknown setting 'delta'; valid: "),  # format 1's place for δ, in a format 2 folder
    ],
)
def test_report_leaves_out_a_config_with_a_value_of_the_wrong_type_or_range(root, invoke, key, value, words):
    run = root / "delta-0.5_seed-1"
    saved = json.loads((run / "config.json").read_text())
    where, _, name = key.rpartition(".")
    (saved["config"][where] if where else saved["config"])[name] = value
    (run / "config.json").write_text(json.dumps(saved))
    report_skips(root, run, invoke, "config.json", words)


@pytest.mark.parametrize(
    "key, value",
    [
        ("final_test_acc", 1.5),
        ("best_test_acc", -0.1),
        ("train_seconds", -1),
        ("epochs", 2.5),
        ("batch_visits", [1, -1]),
        ("final_test_bacc", "x"),
    ],
)
def test_report_leaves_out_a_summary_with_a_value_out_of_range(root, invoke, key, value):
    run = root / "delta-1_seed-0"
    summary = json.loads((run / "summary.json").read_text())
    summary[key] = value
    (run / "summary.json").write_text(json.dumps(summary))
    report_skips(root, run, invoke, "summary.json", key)


# ---------------------------------------------------------------- the run folder's format


def as_format_1(path: Path) -> None:
    """config.json as hardbatch wrote it before format 2: no "format" key, the policy's settings beside the others."""
    saved = json.loads(path.read_text())
    del saved["format"]
    config = saved["config"]
    config.update(config.pop("params"))
    path.write_text(json.dumps(saved))


def test_run_folders_record_format_2_and_read_back_their_config(root):
    configs = sorted(root.rglob("config.json"))
    assert len(configs) == 4 and {json.loads(p.read_text())["format"] for p in configs} == {RUN_FORMAT} == {2}
    assert sorted(RunDir(p.parent).config().delta for p in configs) == [0.5, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("version", [1, 3])
def test_a_run_folder_of_another_format_is_refused_by_resume_and_left_out_of_reports(root, invoke, version):
    run = root / "delta-0.5_seed-0"
    if version == 1:
        as_format_1(run / "config.json")
    else:
        saved = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**saved, "format": version}))
    words = (
        f"the run folder is format {version}, and this hardbatch reads format 2",
        "open it with the hardbatch version that wrote it",
    )
    report_skips(root, run, invoke, str(run / "config.json"), *words)
    before = snapshot(run)
    rc, _, err = invoke("train", "--resume", "--out", run, "--no-progress")
    assert rc == 2
    one_line(err, "hardbatch train: error: cannot read", str(run / "config.json"), *words)
    assert snapshot(run) == before


def test_a_tree_of_format_1_folders_is_refused_whole_in_one_line(root, invoke):
    for path in root.rglob("config.json"):
        as_format_1(path)
    before = snapshot(root)
    rc, _, err = invoke("report", root, "--no-plots")
    assert rc == 2
    one_line(err, "hardbatch report: error: no readable finished runs", "format 1", "reads format 2")
    assert {k: v for k, v in snapshot(root).items() if not k.startswith("report")} == {
        k: v for k, v in before.items() if not k.startswith("report")
    }
