"""The ``hardbatch`` command line end to end on the bundled digits data: run files, bad input, resume, compare, report."""

from __future__ import annotations

import json
import platform
import re
import shutil
import struct
from pathlib import Path

import numpy
import pytest
import torch

import hardbatch
from hardbatch.data import DATASETS
from hardbatch.run.machine import cpu_model
from hardbatch.models import MODELS
from hardbatch.metrics import epochs_to_plateau, epochs_to_target
from hardbatch.selection import POLICIES

N_TRAIN = 1437  # digits training split (80 % of 1,797)
FAST = ["--device", "cpu", "--no-progress"]
# The shared trained run: delta 0.5, 2 epochs of N = 1437 // 64 = 22 steps, k = 11 batches per round.
TRAIN_ARGS = ["--delta", "0.5", "--epochs", "2", "--batch-size", "64", "--seed", "0", *FAST]
B, E, DELTA = 64, 2, 0.5
N = N_TRAIN // B
K = int(DELTA * N)
COMPARE_ARGS = ["--deltas", "0.5", "1.0", "--seeds", "0", "1", "--epochs", "2", "--batch-size", "128", *FAST]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected exactly one line on stderr, got {err!r}"
    assert "error" in lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under ``root``: bytes and mtime for files, so any write shows."""
    if not root.exists():
        return {}
    state = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        state[rel] = ("dir",) if p.is_dir() else (p.read_bytes(), p.stat().st_mtime_ns)
    return state


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("summary.json"))


# ---------------------------------------------------------------- shared expensive runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, invoke):
    """One finished ``hardbatch train`` run (never modified by tests: they work on copies)."""
    out = tmp_path_factory.mktemp("train") / "run"
    rc, stdout, stderr = invoke("train", *TRAIN_ARGS, "--out", out)
    assert rc == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def compared(finished_compare):
    """conftest.py's finished ``hardbatch compare`` of COMPARE_ARGS and its output (never modified: tests copy it)."""
    assert finished_compare.args == tuple(COMPARE_ARGS)
    return finished_compare.out, finished_compare.stdout


def copy_of(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)  # copy2: modification times are kept
    return dst


# ---------------------------------------------------------------- A: train writes a complete run directory


def test_train_prints_a_summary_line(trained):
    out, stdout = trained
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['optimizer_steps']} steps" in stdout
    assert str(out) in stdout
    assert f"{100 * summary['final_test_acc']:.2f}%" in stdout


def test_train_config_json_holds_resolved_config_and_versions(trained):
    out, _ = trained
    saved = json.loads((out / "config.json").read_text())
    cfg = saved["config"]
    assert (cfg["dataset"], cfg["model"], cfg["policy"]) == ("digits", "small_cnn", "hardbatch")
    assert (cfg["delta"], cfg["epochs"], cfg["batch_size"], cfg["seed"]) == (DELTA, E, B, 0)
    assert cfg["eval_mode"] == "eval"
    assert cfg["precision"] == "fp32" and cfg["channels_last"] is False  # "auto" resolved for the CPU
    assert saved["versions"]["hardbatch"] == hardbatch.__version__
    assert saved["versions"]["torch"] == torch.__version__
    assert saved["versions"]["python"] == platform.python_version()
    assert saved["versions"]["numpy"] == numpy.__version__  # the data packages too (MNIST-1D's generator)
    assert set(saved["versions"]) >= {"scipy", "mnist1d"}
    assert saved["device"]["type"] == "cpu"
    # What decides a CPU run's rounding, so that a report can tell runs from different machines apart.
    assert saved["device"]["cpu"] == saved["device"]["name"] == cpu_model() != ""
    assert saved["device"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert saved["device"]["threads"] == torch.get_num_threads()
    assert "git_commit" in saved


def test_cpu_model_reads_proc_cpuinfo_and_falls_back_to_platform(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7763 64-Core "
                    "Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
    assert cpu_model(info) == "AMD EPYC 7763 64-Core Processor"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())


def test_train_history_has_one_row_per_epoch(trained, read_rows):
    out, _ = trained
    rows = read_rows(out / "history.csv")
    for column in ("epoch", "step", "train_loss", "test_loss", "test_acc", "test_top5", "train_seconds", "eval_seconds"):
        assert column in rows[0], column
    assert [int(r["epoch"]) for r in rows] == list(range(1, E + 1))
    assert [int(r["step"]) for r in rows] == [e * N for e in range(1, E + 1)]
    for r in rows:
        acc, top5 = float(r["test_acc"]), float(r["test_top5"])
        assert 0.0 <= acc <= top5 <= 1.0
        assert float(r["train_loss"]) > 0 and float(r["test_loss"]) > 0
        assert float(r["train_seconds"]) > 0 and float(r["eval_seconds"]) > 0
    # Something was learned in two epochs of a 10-class problem.
    assert float(rows[-1]["test_acc"]) > 0.3


def test_train_trace_follows_the_rule(trained, read_rows):
    out, _ = trained
    trace = [(int(r["step"]), int(r["round"]), int(r["batch"]), float(r["loss"])) for r in read_rows(out / "trace.csv")]
    assert [t[0] for t in trace] == list(range(1, E * N + 1))  # one row per optimizer step
    assert all(0 <= t[2] < N for t in trace)
    warmup = trace[:N]
    assert all(t[1] == 0 for t in warmup)
    assert [t[2] for t in warmup] == list(range(N))  # warm-up: every batch once, in index order
    stored = {b: loss for _, _, b, loss in warmup}
    i, expected_round = N, 1
    while i < len(trace):
        chunk = trace[i:i + K]
        assert all(t[1] == expected_round for t in chunk)
        chosen = sorted(sorted(range(N), key=lambda b: -stored[b])[:K])  # top-k stored losses, trained by index
        assert [t[2] for t in chunk] == chosen[: len(chunk)]
        for _, _, b, loss in chunk:
            stored[b] = loss
        i += K
        expected_round += 1
    # history's train_loss is the mean of that epoch's step losses
    history = read_rows(out / "history.csv")
    for e, row in enumerate(history):
        losses = [t[3] for t in trace[e * N:(e + 1) * N]]
        assert float(row["train_loss"]) == pytest.approx(sum(losses) / N, rel=1e-5)


def test_train_summary_is_consistent_with_history_and_trace(trained, read_rows):
    out, _ = trained
    s = json.loads((out / "summary.json").read_text())
    history = read_rows(out / "history.csv")
    trace = read_rows(out / "trace.csv")
    accs = [float(r["test_acc"]) for r in history]
    assert s["final_test_acc"] == pytest.approx(accs[-1], rel=1e-12)
    assert s["best_test_acc"] == pytest.approx(max(accs), rel=1e-12)
    assert s["best_epoch"] == accs.index(max(accs)) + 1
    assert s["epochs"] == E
    assert s["target_acc"] == pytest.approx(0.99 * max(accs))
    assert s["epochs_to_target"] == epochs_to_target(accs, s["target_acc"])
    assert s["epochs_to_plateau"] == epochs_to_plateau(accs)
    assert s["optimizer_steps"] == E * N
    assert s["samples_backpropagated"] == E * N * B
    assert s["num_batches"] == N and s["batches_per_round"] == K
    assert s["train_seconds"] == pytest.approx(sum(float(r["train_seconds"]) for r in history))
    assert s["eval_seconds"] == pytest.approx(sum(float(r["eval_seconds"]) for r in history))
    visits = s["batch_visits"]
    assert len(visits) == N and sum(visits) == s["optimizer_steps"]
    assert visits == [sum(1 for r in trace if int(r["batch"]) == b) for b in range(N)]
    assert min(visits) >= 1  # the warm-up trains every batch
    assert not (out / "checkpoint.pt").exists()  # removed once the run finished


def test_train_in_eval_mode_train_saves_it_and_prints_the_result(tmp_path, invoke, read_rows):
    """--eval-mode train saved in config.json (the console entry itself: test_console_entry_exits_2_with_one_line)."""
    out = tmp_path / "run"
    rc, stdout, err = invoke("train", "--epochs", "1", "--batch-size", "128", "--eval-mode", "train", *FAST, "--out", out)
    assert rc == 0, err
    assert "final test top-1" in stdout
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["eval_mode"] == "train"
    s = json.loads((out / "summary.json").read_text())
    assert s["optimizer_steps"] == N_TRAIN // 128 and len(read_rows(out / "history.csv")) == 1


def test_console_entry_exits_2_with_one_line(tmp_path, console):
    """The real console entry (``python -m hardbatch``): a usage error is one line on stderr and exit status 2."""
    proc = console("train", "--delta", "0.001", *FAST, "--out", tmp_path / "run")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert_one_line_error(stderr, "delta")
    assert stdout == ""
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- B: bad input


BAD_TRAIN = [
    (["--delta", "0"], ["delta"]),
    (["--delta", "-0.5"], ["delta"]),
    (["--delta", "1.5"], ["delta"]),
    (["--delta", "0.001"], ["delta"]),  # floor(0.001 * 44) = 0 batches per round
    (["--epochs", "0"], ["epochs"]),
    (["--epochs", "-1"], ["epochs"]),
    (["--batch-size", "0"], ["batch"]),
    (["--batch-size", "100000"], ["batch", "100000"]),
    (["--dataset", "nope"], ["nope", *DATASETS]),
    (["--model", "nope"], ["nope", *MODELS]),
    (["--policy", "nope"], ["nope", *POLICIES]),
    (["--eval-mode", "nope"], ["nope", "eval", "train"]),
]


@pytest.mark.parametrize("args,words", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_train_bad_input_exits_2_with_one_line_and_writes_nothing(invoke, tmp_path, args, words):
    (tmp_path / "afile").write_text("keep")
    before = snapshot(tmp_path)
    rc, out, err = invoke("train", "--epochs", "1", "--batch-size", "128", *FAST, "--out", tmp_path / "run", *args)
    assert rc == 2
    assert_one_line_error(err, *words)
    assert out == ""
    assert snapshot(tmp_path) == before  # in particular no run directory was created


def test_train_unwritable_output_directory(invoke, tmp_path):
    (tmp_path / "afile").write_text("keep")  # a regular file: nothing can be created below it, even as root
    before = snapshot(tmp_path)
    rc, _, err = invoke("train", "--epochs", "1", "--batch-size", "128", *FAST, "--out", tmp_path / "afile" / "run")
    assert rc == 2
    assert_one_line_error(err, "afile")
    assert snapshot(tmp_path) == before


def test_train_refuses_an_existing_run_without_resume_or_overwrite(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, _, err = invoke("train", *TRAIN_ARGS, "--out", run)
    assert rc == 2
    assert_one_line_error(err, "--resume", "--overwrite")
    assert snapshot(run) == before  # byte for byte, and not even rewritten


def test_train_resume_and_overwrite_together_are_refused(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, _, err = invoke("train", *TRAIN_ARGS, "--resume", "--overwrite", "--out", run)
    assert rc == 2
    assert_one_line_error(err, "--resume", "--overwrite")
    assert snapshot(run) == before


BAD_COMPARE = [
    (["--deltas", "0.5", "1.5"], ["delta", "1.5"]),
    (["--deltas", "0", "1.0"], ["delta"]),
    (["--deltas", "1.0", "0.001"], ["delta", "0.001"]),  # k = 0 for the second delta only
    (["--deltas", "0.5", "1.0", "--model", "nope"], ["nope", *MODELS]),
    (["--deltas", "0.5", "1.0", "--dataset", "nope"], ["nope", *DATASETS]),
    (["--deltas", "0.5", "1.0", "--policy", "nope"], ["nope", *POLICIES]),
]


@pytest.mark.parametrize("args,words", BAD_COMPARE, ids=[" ".join(a) for a, _ in BAD_COMPARE])
def test_compare_bad_input_fails_before_any_run_directory(invoke, tmp_path, args, words):
    rc, out, err = invoke("compare", "--seeds", "0", "1", "--epochs", "1", "--batch-size", "128", *FAST,
                          "--out", tmp_path / "cmp", *args)
    assert rc == 2
    assert_one_line_error(err, *words)
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # neither the output directory nor any run directory


# ---------------------------------------------------------------- C: resume and overwrite


def test_resume_of_a_finished_run_changes_nothing(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, out, err = invoke("train", *TRAIN_ARGS, "--resume", "--out", run)
    assert rc == 0, err
    assert snapshot(run) == before
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['optimizer_steps']} steps" in out


def test_resume_with_other_settings_is_refused(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, _, err = invoke("train", *TRAIN_ARGS, "--epochs", "3", "--resume", "--out", run)
    assert rc == 2
    assert_one_line_error(err, "epochs")
    assert snapshot(run) == before


def test_overwrite_replaces_the_run(invoke, trained, tmp_path, read_rows):
    run = copy_of(trained[0], tmp_path)
    rc, _, err = invoke("train", "--delta", "1.0", "--epochs", "1", "--batch-size", "128", "--seed", "3", *FAST,
                        "--overwrite", "--out", run)
    assert rc == 0, err
    n = N_TRAIN // 128
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert (cfg["delta"], cfg["epochs"], cfg["batch_size"], cfg["seed"]) == (1.0, 1, 128, 3)
    assert len(read_rows(run / "history.csv")) == 1
    trace = read_rows(run / "trace.csv")
    assert [int(r["step"]) for r in trace] == list(range(1, n + 1))  # nothing left of the old trace
    s = json.loads((run / "summary.json").read_text())
    assert s["optimizer_steps"] == n and s["batch_visits"] == [1] * n and s["samples_backpropagated"] == n * 128
    # The records, and the lock file of the run directory (not a record: it stays, empty).
    assert sorted(p.name for p in run.iterdir()) == [".hardbatch.lock", "config.json", "history.csv", "summary.json",
                                                     "trace.csv"]
    assert (run / ".hardbatch.lock").stat().st_size == 0


# ---------------------------------------------------------------- D: compare


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width >= 100 and height >= 100 and len(data) > 2000


def test_compare_writes_one_run_per_delta_and_seed(compared, read_rows):
    out, _ = compared
    runs = run_dirs(out)
    assert all(p.parent == out for p in runs)  # one sub-directory each
    configs = [json.loads((p / "config.json").read_text())["config"] for p in runs]
    assert sorted((c["delta"], c["seed"]) for c in configs) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    n = N_TRAIN // 128
    for p, c in zip(runs, configs):
        assert c["epochs"] == 2 and c["batch_size"] == 128
        s = json.loads((p / "summary.json").read_text())
        assert s["optimizer_steps"] == 2 * n and s["batches_per_round"] == int(c["delta"] * n)
        assert len(read_rows(p / "history.csv")) == 2


def test_compare_writes_report_tables_and_plots(compared, read_rows):
    out, _ = compared
    summary = read_rows(out / "summary.csv")
    assert sorted(float(r["delta"]) for r in summary) == [0.5, 1.0]  # one row per arm
    assert all(int(r["n"]) == 2 for r in summary)
    ref = next(r for r in summary if float(r["delta"]) == 1.0)
    assert float(ref["diff_points"]) == 0.0 and int(ref["diff_pairs"]) == 2
    runs = read_rows(out / "runs.csv")
    assert sorted((float(r["delta"]), int(r["seed"])) for r in runs) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    report = (out / "report.md").read_text()
    assert "| δ = 0.5 |" in report and "| δ = 1 |" in report
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 3  # accuracy curves, final accuracy vs delta, batch visits
    for png in pngs:
        assert _is_png(png), png
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):  # every image the report links exists
        assert (out / name).is_file(), name
        assert _is_png(out / name)


def test_compare_prints_one_table_line_per_delta(compared):
    out, stdout = compared
    rows = [line for line in stdout.splitlines() if line.startswith("| δ")]
    assert [row.split("|")[1].strip() for row in rows] == ["δ = 0.5", "δ = 1"]
    assert str(out / "report.md") in stdout


def test_compare_repeated_skips_finished_runs(invoke, compared, tmp_path):
    out = copy_of(compared[0], tmp_path)
    runs_before = {p.name: snapshot(p) for p in run_dirs(out)}
    summary_before = (out / "summary.csv").read_text()
    rc, stdout, err = invoke("compare", *COMPARE_ARGS, "--out", out)
    assert rc == 0, err
    assert {p.name: snapshot(p) for p in run_dirs(out)} == runs_before  # no run was retrained or rewritten
    assert (out / "summary.csv").read_text() == summary_before
    assert len([line for line in stdout.splitlines() if line.startswith("| δ")]) == 2


def test_compare_repeated_with_other_epochs_fails_naming_the_setting(invoke, compared, tmp_path):
    out = copy_of(compared[0], tmp_path)
    before = snapshot(out)
    rc, stdout, err = invoke("compare", *COMPARE_ARGS, "--epochs", "3", "--out", out)
    assert rc == 2
    assert_one_line_error(err, "epochs")
    assert snapshot(out) == before
    # Any flag the message suggests must be one that compare accepts.
    rc_help, help_text, _ = invoke("compare", "--help")
    assert rc_help == 0
    for flag in re.findall(r"--[a-z][a-z-]*", err):
        assert flag in help_text, f"the error suggests {flag}, which compare does not have: {err!r}"


# ---------------------------------------------------------------- E: report


def test_report_rebuilds_from_saved_runs_without_training(invoke, compared, tmp_path):
    out = copy_of(compared[0], tmp_path)
    summary_before = (out / "summary.csv").read_text()
    runs_csv_before = (out / "runs.csv").read_text()
    (out / "report.md").unlink()
    (out / "summary.csv").unlink()
    for png in out.glob("*.png"):
        png.unlink()
    runs_before = {p.name: snapshot(p) for p in run_dirs(out)}
    rc, stdout, err = invoke("report", out)
    assert rc == 0, err
    assert (out / "summary.csv").read_text() == summary_before
    assert (out / "runs.csv").read_text() == runs_csv_before
    assert {p.name: snapshot(p) for p in run_dirs(out)} == runs_before  # nothing trained, nothing rewritten
    report = (out / "report.md").read_text()
    assert "| δ = 0.5 |" in report and "| δ = 1 |" in report
    assert len(list(out.glob("*.png"))) >= 3
    assert [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| δ")] == ["δ = 0.5", "δ = 1"]


def test_report_out_writes_elsewhere(invoke, compared, tmp_path):
    src = compared[0]
    before = snapshot(src)
    rc, _, err = invoke("report", src, "--out", tmp_path / "elsewhere", "--no-plots")
    assert rc == 0, err
    assert snapshot(src) == before
    assert (tmp_path / "elsewhere" / "summary.csv").read_text() == (src / "summary.csv").read_text()
    assert (tmp_path / "elsewhere" / "report.md").is_file()
    assert not list((tmp_path / "elsewhere").glob("*.png"))


@pytest.mark.parametrize("which", ["empty", "missing"])
def test_report_without_runs_exits_2_with_one_line(invoke, tmp_path, which):
    target = tmp_path / which
    if which == "empty":
        target.mkdir()
    before = snapshot(tmp_path)
    rc, out, err = invoke("report", target)
    assert rc == 2
    assert_one_line_error(err, which)
    assert out == ""
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- issue 17: progress off a terminal


def test_off_a_terminal_compare_prints_one_line_per_finished_run(invoke, tmp_path):
    rc, _, err = invoke("compare", "--deltas", "0.5", "1.0", "--seeds", "0", "--epochs", "1", "--batch-size",
                        "128", "--device", "cpu", "--out", tmp_path / "cmp")  # progress on, into no terminal
    assert rc == 0, err
    done = [line for line in err.splitlines() if ": done, test top-1 " in line]
    assert len(done) == 2 and done[0].startswith("[1/2] digits/small_cnn hardbatch δ=0.5 seed=0: done"), err
    assert "\r" not in err  # no progress bar drawn into a file


def test_progress_names_a_policy_by_its_delta_only_when_it_takes_one():
    from hardbatch.config import RunConfig
    from hardbatch.run.sinks import describe

    assert describe(RunConfig(policy="random", delta=0.5, seed=3)) == "digits/small_cnn random δ=0.5 seed=3"
    assert describe(RunConfig(policy="rho-loss", val_fraction=0.1)) == "digits/small_cnn rho-loss seed=0"
    assert describe(RunConfig(policy="uniform"), "[2/9] mine") == "[2/9] mine"


def test_off_a_terminal_long_runs_print_a_line_per_epoch(invoke, tmp_path, monkeypatch):
    from hardbatch.run.sinks import EpochLines

    monkeypatch.setattr(EpochLines, "LINE_SECONDS", 0.0)  # every epoch counts as long
    rc, _, err = invoke("train", "--epochs", "2", "--batch-size", "128", "--device", "cpu", "--out", tmp_path / "r")
    assert rc == 0, err
    assert [line.split(": ", 1)[1].split(",")[0] for line in err.splitlines()] == ["epoch 1/2", "epoch 2/2"], err
    rc, _, err = invoke("train", "--epochs", "2", "--batch-size", "128", "--device", "cpu", "--no-progress",
                        "--out", tmp_path / "quiet")
    assert rc == 0 and err == ""
