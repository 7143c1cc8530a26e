"""Damaged folders, odd devices and numbers, resume of a non-run, report-time targets, the random control's reference."""

import json
import re
import shutil
from pathlib import Path

import pytest

from hardbatch.cli import main

FAST = ["--epochs", "2", "--no-progress"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    assert main(["compare", "--deltas", "0.5", "1.0", "--seeds", "0", "1", "--out", str(out), *FAST]) == 0
    return out


@pytest.mark.parametrize("damage", ["no history", "truncated summary", "no config"])
def test_report_on_a_damaged_run_folder_names_the_file(tmp_path, compared, capsys, damage):
    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    run = root / "delta-0.5_seed-1"
    if damage == "no history":
        (run / "history.csv").unlink()
    elif damage == "truncated summary":
        (run / "summary.json").write_text('{"final_test_acc": 0.9')
    else:
        (run / "config.json").unlink()
    capsys.readouterr()
    assert main(["report", str(root)]) == 2
    line = _one_error_line(capsys)
    assert "cannot read" in line and str(run) in line


def test_report_to_an_unwritable_place_is_one_line(tmp_path, compared, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    capsys.readouterr()
    assert main(["report", str(compared), "--out", str(blocker / "sub")]) == 2
    assert "cannot write" in _one_error_line(capsys)


@pytest.mark.parametrize("flags, words", [
    (["--device", "meta"], "unsupported device"),
    (["--device", "cuda:7"], "cuda"),
    (["--device", "tpu"], "device"),
    (["--lr", "nan"], "learning rate"),
    (["--weight-decay", "nan"], "weight decay"),
    (["--seed", "100000000000000000000000"], "seed"),
    (["--seed", "-1"], "seed"),
])
def test_more_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    assert main(["train", *flags, "--out", str(out), *FAST]) == 2
    assert words in _one_error_line(capsys)
    assert not out.exists()


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "history.csv").write_text("precious\n")
    assert main(["train", "--resume", "--out", str(out), *FAST]) == 2
    assert "not a hardbatch run directory" in _one_error_line(capsys)
    assert (out / "history.csv").read_text() == "precious\n"


def test_target_can_be_set_when_reporting_and_on_finished_runs(tmp_path, compared, capsys):
    mtimes = {p: p.stat().st_mtime_ns for p in compared.rglob("summary.json")}
    assert main(["report", str(compared), "--out", str(tmp_path / "r"), "--target-acc", "0.5", "--no-plots"]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Target T = 50.00% test top-1 (given to report --target-acc)" in report
    # compare with a target on finished runs reuses them: the target only changes the report.
    assert main(["compare", "--deltas", "0.5", "1.0", "--seeds", "0", "1", "--out", str(compared),
                 "--target-acc", "0.5", *FAST]) == 0
    assert {p: p.stat().st_mtime_ns for p in compared.rglob("summary.json")} == mtimes
    assert main(["report", str(compared), "--target-acc", "1.5", "--no-plots"]) == 2


def test_random_control_compares_against_its_own_delta_one(tmp_path, capsys):
    out = tmp_path / "random"
    assert main(["compare", "--policy", "random", "--deltas", "0.5", "1.0", "--seeds", "0", "1", "--out", str(out),
                 *FAST]) == 0
    table = capsys.readouterr().out
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| random")}
    assert "reference" in lines["random δ = 1"]
    assert "[" in lines["random δ = 0.5"].split("|")[5]  # a paired difference with its interval (after top-1, balanced)


def test_sweep_with_a_bad_name_prints_exactly_one_line(tmp_path, capsys):
    assert main(["sweep", "--datasets", "digits", "--models", "resnet19", "--out", str(tmp_path / "s"), *FAST]) == 2
    assert "unknown model 'resnet19'" in _one_error_line(capsys)


def test_config_records_whether_the_source_tree_was_modified(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["git_commit"] is None) == (saved["git_dirty"] is None)
    if saved["git_commit"] is not None:  # an editable install inside a git checkout, as `make setup` makes
        assert re.fullmatch("[0-9a-f]{40}", saved["git_commit"]) and isinstance(saved["git_dirty"], bool)


def test_overview_rows_of_the_same_network_are_told_apart(tmp_path, capsys):
    root = tmp_path / "two_lrs"
    for lr in ("0.01", "0.02"):
        assert main(["compare", "--deltas", "0.5", "1.0", "--seeds", "0", "--lr", lr, "--out", str(root / lr), *FAST]) == 0
    assert main(["report", str(root), "--no-plots"]) == 0
    report = (root / "report.md").read_text()
    overview = report.split("## Overview", 1)[1].split("\n## ", 1)[0]
    assert "| digits / small_cnn, lr=0.01 |" in overview and "| digits / small_cnn, lr=0.02 |" in overview
