"""Damaged folders, odd devices and numbers, resume of a non-run, report-time targets, the random control's reference."""

import csv
import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from hardbatch.cli import main

FAST = ["--epochs", "2", "--train-subset", "320", "--no-progress"]  # 10 steps an epoch


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def compared(finished_compare) -> Path:
    """conftest.py's finished compare (δ 0.5 and 1, seeds 0 and 1): tests that change it work on a copy."""
    return finished_compare.out


@pytest.mark.parametrize("damage, problem", [("no history", "the file is missing"),
                                             ("truncated summary", "not valid JSON"), ("no config", "the file is missing")])
def test_report_skips_a_damaged_run_folder_naming_the_file(tmp_path, compared, capsys, damage, problem):
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
    assert main(["report", str(root), "--no-plots"]) == 0  # the other three runs are readable
    line = _one_error_line(capsys)
    assert "skipped damaged run" in line and "cannot read" in line and str(run) in line and problem in line
    for other in root.iterdir():  # with every run damaged, nothing to report: one line, exit status 2
        if other.is_dir():
            (other / "history.csv").unlink(missing_ok=True)
    assert main(["report", str(root), "--no-plots"]) == 2
    assert "no readable finished runs" in _one_error_line(capsys)


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


def test_target_can_be_set_when_reporting_and_on_finished_runs(tmp_path, finished_compare, capsys):
    compared = tmp_path / "copy"
    shutil.copytree(finished_compare.out, compared)  # copy2: modification times are kept
    mtimes = {p: p.stat().st_mtime_ns for p in compared.rglob("summary.json")}
    assert main(["report", str(compared), "--out", str(tmp_path / "r"), "--target-acc", "0.5", "--no-plots"]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Target T = 50.00% test top-1 (given to report --target-acc)" in report
    # compare with a target on finished runs reuses them: the target only changes the report.
    assert main(["compare", *finished_compare.args, "--out", str(compared), "--target-acc", "0.5"]) == 0
    assert {p: p.stat().st_mtime_ns for p in compared.rglob("summary.json")} == mtimes
    assert main(["report", str(compared), "--target-acc", "1.5", "--no-plots"]) == 2


def test_random_control_compares_against_its_own_delta_one(tmp_path, capsys):
    out = tmp_path / "random"
    assert main(["compare", "--policy", "random", "--deltas", "0.5", "1.0", "--seeds", "0", "1", "--out", str(out),
                 *FAST]) == 0
    table = capsys.readouterr().out
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| random")}
    assert "reference" in lines["random δ = 1"]
    # a paired difference (after top-1 and balanced); two seeds give no interval, and the cell says so
    assert "(no CI: 2 pairs, needs 3)" in lines["random δ = 0.5"].split("|")[5]


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


# ---------------------------------------------------------------- issue 9


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def finished(tmp_path) -> Path:
    out = tmp_path / "done"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("flags, words", [
    (["--val-fraction", "0.001"], "--val-fraction 0.001"),
    (["--batch-size", "5000"], "batch size 5000"),
    (["--delta", "0.001"], "floor(delta * N)"),
])
def test_overwrite_keeps_the_finished_run_when_the_new_one_is_refused(finished, capsys, flags, words):
    before = _files(finished)
    capsys.readouterr()
    assert main(["train", "--overwrite", *flags, "--epochs", "1", "--out", str(finished), "--no-progress"]) == 2
    assert words in _one_error_line(capsys)
    assert _files(finished) == before


def test_a_run_folder_in_use_is_refused_and_the_lock_is_not_a_record(tmp_path, capsys):
    from hardbatch.fileio import LOCK, run_lock
    from hardbatch.records import RunDir

    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):
        assert not RunDir(out).started  # the lock file alone is not a started run
        assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
        line = _one_error_line(capsys)
        assert "in use" in line and str(out) in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0  # released: trains


def test_a_killed_process_leaves_no_lock(tmp_path, fork):
    from hardbatch.fileio import run_lock

    def lock_and_die():
        with run_lock(tmp_path):
            os.kill(os.getpid(), signal.SIGKILL)

    assert fork(lock_and_die).wait() == -9
    with run_lock(tmp_path):
        pass


def test_compare_skips_a_run_another_process_holds_and_says_so(tmp_path, capsys):
    from hardbatch.fileio import run_lock

    out = tmp_path / "cmp"
    busy = out / "delta-0.5_seed-0"
    busy.mkdir(parents=True)
    with run_lock(busy):
        assert main(["compare", "--deltas", "0.5", "1.0", "--seeds", "0", "--epochs", "1", "--out", str(out),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"not done: {busy}: skipped" in err and "another hardbatch process" in err
    assert not (busy / "summary.json").exists() and (out / "delta-1_seed-0" / "summary.json").exists()
    assert (out / "report.md").exists()
    assert main(["compare", "--deltas", "0.5", "1.0", "--seeds", "0", "--epochs", "1", "--out", str(out),
                 "--no-progress"]) == 0  # once free, the same command finishes it
    assert (busy / "summary.json").exists()


def test_compare_skips_a_run_another_process_is_starting_before_its_config_is_written(tmp_path, capsys):
    # Two shards: one has locked the run and written its first file (relabelled.json), not config.json yet. The
    # other's look at the folder, before it tries the lock, must see a run in use, not a stranger's folder.
    from hardbatch.fileio import run_lock
    from hardbatch.records import RELABELLED

    out = tmp_path / "cmp"
    busy = out / "delta-0.5_seed-0"
    busy.mkdir(parents=True)
    args = ["compare", "--deltas", "0.5", "1.0", "--seeds", "0", "--epochs", "1", "--out", str(out), "--no-progress"]
    with run_lock(busy):
        (busy / RELABELLED).write_text("{}")
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"not done: {busy}: skipped" in err and "not a hardbatch run directory" not in err
        assert (out / "delta-1_seed-0" / "summary.json").exists()
    # released with config.json still missing (its process died then): a stranger's folder, refused in one line
    assert main(args) == 2
    assert "not a hardbatch run directory (no config.json)" in _one_error_line(capsys)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _debris(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if "tmp" in p.name or "probe" in p.name]


def test_full_disk_while_checkpointing_is_one_line_and_resume_continues(tmp_path, capsys, monkeypatch):
    import torch

    straight, out = tmp_path / "straight", tmp_path / "run"
    flags = ["--epochs", "3", "--delta", "0.5", "--train-subset", "320", "--no-progress"]
    assert main(["train", *flags, "--out", str(straight)]) == 0
    save, calls = torch.save, []

    def full_on_second(*args, **kwargs):
        calls.append(1)
        return _enospc() if len(calls) == 2 else save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_second)
    capsys.readouterr()
    assert main(["train", *flags, "--out", str(out)]) == 1
    line = _one_error_line(capsys)
    assert "no space left" in line and str(out / "checkpoint.pt") in line and "--resume" in line
    assert _debris(out) == []
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1  # the last good checkpoint
    monkeypatch.setattr(torch, "save", save)
    assert main(["train", *flags, "--out", str(out), "--resume"]) == 0
    assert (out / "trace.csv").read_text() == (straight / "trace.csv").read_text()
    columns = lambda run: [{k: v for k, v in row.items() if not k.endswith("seconds")}
                           for row in csv.DictReader(open(run / "history.csv"))]
    assert columns(out) == columns(straight)


def test_full_disk_while_writing_a_record_needs_a_number(tmp_path, monkeypatch):
    from hardbatch.fileio import atomic_write_text, NoSpaceLeft

    path = tmp_path / "summary.json"
    path.write_text("old\n")
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(NoSpaceLeft, match=r"summary.json \(needs about 3.0 KB, .* free there\)"):
        atomic_write_text(path, "x" * 3000)
    assert path.read_text() == "old\n" and _debris(tmp_path) == []


def test_full_disk_while_reporting_is_one_line_and_keeps_the_old_report(tmp_path, compared, capsys, monkeypatch):
    from matplotlib.figure import Figure

    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    before = {name: (root / name).read_bytes() for name in ("report.md", "summary.csv", "runs.csv")}
    monkeypatch.setattr(Figure, "savefig", _enospc)
    capsys.readouterr()
    assert main(["report", str(root)]) == 1
    line = _one_error_line(capsys)
    assert "no space left" in line and ".png" in line and ".tmp" not in line
    assert {name: (root / name).read_bytes() for name in before} == before and _debris(root) == []


def test_report_skips_damaged_runs_and_lists_them(tmp_path, compared, capsys):
    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    bad_type, truncated = root / "delta-0.5_seed-1", root / "delta-1_seed-1"
    summary = json.loads((bad_type / "summary.json").read_text())
    (bad_type / "summary.json").write_text(json.dumps({**summary, "final_test_acc": "high"}))
    (truncated / "summary.json").write_text('{"final_test_acc": 0.9')
    capsys.readouterr()
    assert main(["report", str(root), "--no-plots"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("skipped damaged run" in line for line in err)
    assert "final_test_acc is 'high', not a number" in err[0] and str(bad_type) in err[0]
    assert "not valid JSON" in err[1] and str(truncated) in err[1] and "Error" not in err[1]
    report = (root / "report.md").read_text()
    assert "## Damaged runs, left out" in report and f"`{bad_type}`" in report and f"`{truncated}`" in report
    assert "2 finished runs" in report  # the two readable ones


def test_exploding_loss_warns_once_naming_the_learning_rate(tmp_path, capsys):
    assert main(["train", "--epochs", "2", "--lr", "1e6", "--out", str(tmp_path / "boom"), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "loss exploded" in err[0] and "--lr" in err[0] and "1e+06" in err[0]
    assert main(["train", "--epochs", "2", "--out", str(tmp_path / "calm"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("text", ["-1/2", "--x"])
def test_a_negative_shard_gets_the_house_error(tmp_path, capsys, text):
    assert main(["sweep", "--datasets", "digits", "--models", "small_cnn", "--shard", text, "--epochs", "1",
                 "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "I/N" in line and "0 <= I < N" in line and repr(text) in line
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- issue 17: networks that do not take the data


def test_a_network_that_does_not_take_the_images_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "'lenet'" in line and "1x8x8" in line and "digits" in line and "--image-size 16 or larger" in line
    assert not out.exists()
    # the corrected command goes through: no leftover blocks it
    assert main(["train", "--model", "lenet", "--image-size", "16", "--epochs", "1", "--train-subset", "100",
                 "--out", str(out), "--no-progress"]) == 0


@pytest.mark.parametrize("command", [["compare", "--model", "lenet", "--deltas", "0.5", "1.0", "--seeds", "0"],
                                     ["sweep", "--datasets", "digits", "--models", "small_cnn", "lenet",
                                      "--deltas", "1.0", "--seeds", "0"]])
def test_compare_and_sweep_refuse_a_network_that_does_not_take_the_images_in_one_line(tmp_path, capsys, command):
    out = tmp_path / "grid"
    assert main([*command, "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "'lenet'" in line and "1x8x8" in line and "--image-size 16" in line
    assert not any(out.rglob("summary.json"))  # no run of the grid trained, small_cnn's neither


def test_mlp_trains_under_the_modern_protocol_and_its_small_stem(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "mlp", "--protocol", "modern", "--epochs", "1", "--train-subset", "256",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["stem"] == "small"


# ---------------------------------------------------------------- issue 17: values read back are checked


def _report_skips(root: Path, run: Path, capsys, *words: str) -> None:
    """``report root`` succeeds on the other runs, names ``run`` as damaged with ``words``, and leaves it out."""
    capsys.readouterr()
    assert main(["report", str(root), "--no-plots"]) == 0
    line = _one_error_line(capsys)
    assert "skipped damaged run" in line and str(run) in line, line
    for word in words:
        assert word in line, (word, line)
    report = (root / "report.md").read_text()
    assert "3 finished runs" in report and f"`{run}`" in report.split("## Damaged runs, left out")[1]


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    rows = list(csv.DictReader(open(path, newline="")))
    rows[row][column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("column, value", [("test_acc", "1e308"), ("test_acc", "5"), ("test_acc", "-1"),
                                           ("test_acc", "inf"), ("test_loss", "-0.5"), ("train_seconds", "nan"),
                                           ("step", "2.5"), ("samples_backprop", "-3")])
def test_report_leaves_out_a_history_with_a_value_out_of_range(tmp_path, compared, capsys, column, value):
    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    run = root / "delta-0.5_seed-1"
    _set_cell(run / "history.csv", 1, column, value)
    _report_skips(root, run, capsys, "history.csv", "row 2", column)


@pytest.mark.parametrize("key, value, words", [
    ("epochs", "four", "epochs must be an integer, got 'four'"), ("lr", "abc", "lr must be a number, got 'abc'"),
    ("delta", "abc", "delta must be a number"), ("epochs", True, "epochs must be an integer, got True"),
    ("seed", -1, "seed must be an integer in [0, "), ("lr", -0.1, "learning rate must be a positive finite number"),
    ("nesterov", "yes", "nesterov must be true or false"), ("image_size", 12.5, "image_size must be an integer or null"),
])
def test_report_leaves_out_a_config_with_a_value_of_the_wrong_type_or_range(tmp_path, compared, capsys, key, value,
                                                                            words):
    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    run = root / "delta-0.5_seed-1"
    saved = json.loads((run / "config.json").read_text())
    saved["config"][key] = value
    (run / "config.json").write_text(json.dumps(saved))
    _report_skips(root, run, capsys, "config.json", words)


@pytest.mark.parametrize("key, value", [("final_test_acc", 1.5), ("best_test_acc", -0.1), ("train_seconds", -1),
                                        ("epochs", 2.5), ("batch_visits", [1, -1]), ("final_test_bacc", "x")])
def test_report_leaves_out_a_summary_with_a_value_out_of_range(tmp_path, compared, capsys, key, value):
    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    run = root / "delta-1_seed-0"
    summary = json.loads((run / "summary.json").read_text())
    summary[key] = value
    (run / "summary.json").write_text(json.dumps(summary))
    _report_skips(root, run, capsys, "summary.json", key)


def test_trace_and_relabelled_records_are_checked_when_read(tmp_path):
    from hardbatch.errors import UsageError
    from hardbatch.records import RunDir

    run = RunDir(tmp_path)
    (tmp_path / "trace.csv").write_text("step,round,batch,loss,samples\n1,0,0,2.3,32\n2,0,1,-inf,32\n")
    with pytest.raises(UsageError, match=r"trace.csv: row 2: loss is -inf, not a finite number >= 0"):
        run.trace()
    record = {"train_samples": 10, "relabelled": [3], "true_labels": [1], "given_labels": [2], "partition": [[0, 1]]}
    (tmp_path / "relabelled.json").write_text(json.dumps(record))
    assert run.relabelled() == record
    (tmp_path / "relabelled.json").write_text(json.dumps({**record, "relabelled": [12]}))
    with pytest.raises(UsageError, match="relabelled.json: .*12.*train_samples 10"):
        run.relabelled()


# ---------------------------------------------------------------- issue 13: run folders record their format


def test_run_folders_record_their_format_and_a_folder_without_it_is_format_1(tmp_path, compared, capsys):
    from hardbatch.records import RUN_FORMAT

    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    configs = sorted(root.rglob("config.json"))
    assert {json.loads(p.read_text())["format"] for p in configs} == {RUN_FORMAT} == {1}
    for path in configs:  # as written before the key existed
        saved = json.loads(path.read_text())
        del saved["format"]
        path.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(["report", str(root), "--no-plots"]) == 0
    assert capsys.readouterr().err == "" and "4 finished runs" in (root / "report.md").read_text()


def test_a_run_folder_of_another_format_is_refused_by_resume_and_left_out_of_reports(tmp_path, compared, capsys):
    root = tmp_path / "copy"
    shutil.copytree(compared, root)
    run = root / "delta-0.5_seed-0"
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "format": 2}))
    _report_skips(root, run, capsys, "format 2", "format 1")
    before = _files(run)
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "format 2" in line and "format 1" in line and str(run / "config.json") in line
    assert _files(run) == before
