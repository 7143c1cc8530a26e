"""A run that breaks: killed (SIGKILL at any moment, SIGTERM), a full disk while it writes, a damaged checkpoint, a
folder another process holds. Each ends in one line at most, leaves the last good state on disk, and the same
command (or --resume) continues to the records of a run that never broke."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import one_line, snapshot

from hardbatch.cli import main
from hardbatch.config import RunConfig
from hardbatch.fileio import LOCK, NoSpaceLeft, atomic_write_text, run_lock
from hardbatch.records import RELABELLED, RunDir

# Settings that exercise every source of randomness and state a checkpoint must carry; on 640 digits in batches of
# 32, δ = 0.3 makes epochs end inside rounds (N = 20, k = 6), and no validation split leaves val_* cells empty.
# A checkpoint every epoch (--checkpoint-every 0), so that kills land after some checkpoint.
RESUME_FLAGS = [
    "--dataset",
    "digits",
    "--train-subset",
    "640",
    "--epochs",
    "6",
    "--delta",
    "0.3",
    "--augment",
    "crop_flip",
    "--shuffle-partition",
    "--schedule",
    "cosine",
    "--seed",
    "3",
    "--no-progress",
    "--checkpoint-every",
    "0",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, invoke) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    rc, _, err = invoke("train", *RESUME_FLAGS, "--out", out)
    assert rc == 0, err
    return out


def _trace_lines(run: Path) -> int:
    try:
        return sum(1 for _ in open(run / "trace.csv")) - 1
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------- killed


@pytest.mark.parametrize("kill_after_steps, extra_seconds", [(1, 0.0), (20, 0.05), (40, 0.2), (60, 0.0)])
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_history_and_trace(
    tmp_path, uninterrupted, fork, invoke, read_rows, kill_after_steps, extra_seconds
):
    """SIGKILL of a training process at some moment (at or inside an epoch), then --resume: the records equal an
    uninterrupted run's."""
    out = tmp_path / "run"
    proc = fork(lambda: main(["train", *RESUME_FLAGS, "--out", str(out)]))
    deadline = time.time() + 240
    while _trace_lines(out) < kill_after_steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(extra_seconds)  # trace.csv grows at epoch ends: sleeping lands the kill inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    rc, _, err = invoke("train", *RESUME_FLAGS, "--out", out, "--resume")
    assert rc == 0, err
    assert read_rows(out / "history.csv", timing=False) == read_rows(uninterrupted / "history.csv", timing=False)
    assert (out / "trace.csv").read_text() == (uninterrupted / "trace.csv").read_text()
    assert "nan" not in (out / "history.csv").read_text()
    a, b = json.loads((out / "summary.json").read_text()), json.loads((uninterrupted / "summary.json").read_text())
    assert a["batch_visits"] == b["batch_visits"] and a["final_test_acc"] == b["final_test_acc"]
    assert a["cost"]["samples_backprop"] == b["cost"]["samples_backprop"]  # the cost resumed with the sampler
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start_to_the_same_records(
    tmp_path, uninterrupted, fork, invoke, read_rows
):
    """With checkpoints by time, a kill can come after epochs whose history and trace rows are written but before any
    checkpoint: --resume trains from the start and writes history.csv and trace.csv afresh (no stale row kept)."""
    out = tmp_path / "run"
    flags = [*RESUME_FLAGS[:-2], "--checkpoint-every", "3600"]
    proc = fork(lambda: main(["train", *flags, "--out", str(out)]))
    deadline = time.time() + 240
    while _trace_lines(out) < 40 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    assert not (out / "checkpoint.pt").exists() and _trace_lines(out) >= 40  # rows of two epochs, no checkpoint
    rc, _, err = invoke("train", *flags, "--out", out, "--resume")
    assert rc == 0, err
    assert read_rows(out / "history.csv", timing=False) == read_rows(uninterrupted / "history.csv", timing=False)
    assert (out / "trace.csv").read_text() == (uninterrupted / "trace.csv").read_text()


@pytest.mark.slow
def test_sigterm_ends_with_one_line_and_resume_matches_the_uninterrupted_run(
    tmp_path, uninterrupted, console, invoke, read_rows
):
    out = tmp_path / "run"
    proc = console("train", *RESUME_FLAGS, "--out", out)
    deadline = time.time() + 240
    # Epoch 1 ends with its trace, history and then its checkpoint written: wait for all three.
    while (
        (_trace_lines(out) < 20 or not (out / "checkpoint.pt").exists())
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.01)
    time.sleep(0.05)  # inside the second epoch
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    one_line(proc.stderr.read(), "terminated", f"train --resume --out {out}")
    assert not (out / "summary.json").exists() and (out / "checkpoint.pt").exists()
    rc, _, err = invoke("train", "--resume", "--out", out, "--no-progress")  # the saved settings: no other flag
    assert rc == 0, err
    assert read_rows(out / "history.csv", timing=False) == read_rows(uninterrupted / "history.csv", timing=False)
    assert (out / "trace.csv").read_text() == (uninterrupted / "trace.csv").read_text()


# ---------------------------------------------------------------- a full disk


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _debris(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if "tmp" in p.name or "probe" in p.name]


def test_full_disk_while_checkpointing_is_one_line_and_resume_continues(tmp_path, invoke, monkeypatch):
    straight, out = tmp_path / "straight", tmp_path / "run"
    flags = ["--epochs", "3", "--delta", "0.5", "--train-subset", "320", "--no-progress", "--checkpoint-every", "0"]
    rc, _, err = invoke("train", *flags, "--out", straight)
    assert rc == 0, err
    save, calls = torch.save, []

    def full_on_second(*args, **kwargs):
        calls.append(1)
        return _enospc() if len(calls) == 2 else save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_second)
    rc, _, err = invoke("train", *flags, "--out", out)
    assert rc == 1
    one_line(err, "no space left", str(out / "checkpoint.pt"), "--resume")
    assert _debris(out) == []
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1  # the last good checkpoint
    monkeypatch.setattr(torch, "save", save)
    rc, _, err = invoke("train", *flags, "--out", out, "--resume")
    assert rc == 0, err
    assert (out / "trace.csv").read_text() == (straight / "trace.csv").read_text()

    def columns(run):
        return [
            {k: v for k, v in row.items() if not k.endswith("seconds")}
            for row in csv.DictReader(open(run / "history.csv"))
        ]

    assert columns(out) == columns(straight)


def test_full_disk_while_writing_a_record_needs_a_number(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old\n")
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(NoSpaceLeft, match=r"summary.json \(needs about 3.0 KB, .* free there\)"):
        atomic_write_text(path, "x" * 3000)
    assert path.read_text() == "old\n" and _debris(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads the flushed paths from /proc")
def test_history_and_trace_are_written_without_a_disk_flush_and_flushed_by_sync(tmp_path, monkeypatch):
    """A killed process loses nothing its files were given; only a power loss needs fsync, which ``RunDir.sync`` does
    (before each checkpoint and before summary.json) for both records and then their folder."""
    flushed = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd)))
    run = RunDir(tmp_path)
    run.write_history([{"epoch": 1}])
    run.append_trace([{"step": 1, "round": 0, "batch": 0, "loss": 1.5, "samples": 32}])
    assert flushed == [] and (tmp_path / "trace.csv").read_text().splitlines()[1] == "1,0,0,1.5,32"
    run.sync()
    assert flushed == [str(tmp_path / "history.csv"), str(tmp_path / "trace.csv"), str(tmp_path)]


# ---------------------------------------------------------------- a damaged checkpoint


RESUMABLE = RunConfig(epochs=3, params={"delta": 0.5}, batch_size=64, seed=3, train_subset=640)
RESUMABLE_FLAGS = ["--epochs", "3", "--delta", "0.5", "--batch-size", "64", "--seed", "3", "--train-subset", "640"]


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(1000)
    elif how == "random bytes":
        path.write_bytes(bytes(range(256)) * 64)
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a PyTorch file, but not a checkpoint of this run
        torch.save({"epoch": 1, "model": {"weight": torch.zeros(2)}}, path)


@pytest.mark.parametrize("how", ["truncated", "random bytes", "empty", "other content"])
def test_a_damaged_checkpoint_is_one_line_and_touches_nothing(tmp_path, interrupt, invoke, how):
    out = tmp_path / "run"
    interrupt(RESUMABLE, out, 1)
    _damage(out / "checkpoint.pt", how)
    before = snapshot(out)
    rc, _, err = invoke("train", *RESUMABLE_FLAGS, "--resume", "--out", out, "--no-progress")
    assert rc == 2
    line = one_line(err, str(out / "checkpoint.pt"), "delete", "--overwrite")
    assert "weights_only" not in line  # torch's advice to load it unsafely
    assert snapshot(out) == before
    if how == "truncated":  # the advice works: without the checkpoint, --resume trains the run from its start
        (out / "checkpoint.pt").unlink()
        rc, _, err = invoke("train", *RESUMABLE_FLAGS, "--resume", "--out", out, "--no-progress")
        assert rc == 0, err
        assert json.loads((out / "summary.json").read_text())["epochs"] == 3


# ---------------------------------------------------------------- a folder another process holds


def test_a_run_folder_in_use_is_refused_and_the_lock_is_not_a_record(tmp_path, invoke):
    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):
        assert not RunDir(out).started  # the lock file alone is not a started run
        rc, _, err = invoke("train", "--epochs", "1", "--out", out, "--no-progress")
        assert rc == 2
        one_line(err, "in use", str(out))
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    rc, _, err = invoke("train", "--epochs", "1", "--out", out, "--no-progress")  # released: trains
    assert rc == 0, err


def test_a_killed_process_leaves_no_lock(tmp_path, fork):
    def lock_and_die():
        with run_lock(tmp_path):
            os.kill(os.getpid(), signal.SIGKILL)

    assert fork(lock_and_die).wait() == -9
    with run_lock(tmp_path):
        pass


COMPARE = ["compare", "--deltas", "0.5", "1.0", "--seeds", "0", "--epochs", "1", "--no-progress"]


def test_compare_skips_a_run_another_process_holds_and_says_so(tmp_path, invoke):
    out = tmp_path / "cmp"
    busy = out / "delta-0.5_seed-0"
    busy.mkdir(parents=True)
    with run_lock(busy):
        rc, _, err = invoke(*COMPARE, "--out", out)
        assert rc == 1
    assert f"not done: {busy}: skipped" in err and "another hardbatch process" in err
    assert not (busy / "summary.json").exists() and (out / "delta-1_seed-0" / "summary.json").exists()
    assert (out / "report.md").exists()
    rc, _, err = invoke(*COMPARE, "--out", out)  # once free, the same command finishes it
    assert rc == 0, err
    assert (busy / "summary.json").exists()


def test_compare_skips_a_run_another_process_is_starting_before_its_config_is_written(tmp_path, invoke):
    # Two shards: one has locked the run and written its first file (relabelled.json), not config.json yet. The
    # other's look at the folder, before it tries the lock, must see a run in use, not a stranger's folder.
    out = tmp_path / "cmp"
    busy = out / "delta-0.5_seed-0"
    busy.mkdir(parents=True)
    with run_lock(busy):
        (busy / RELABELLED).write_text("{}")
        rc, _, err = invoke(*COMPARE, "--out", out)
        assert rc == 1
        assert f"not done: {busy}: skipped" in err and "not a hardbatch run directory" not in err
        assert (out / "delta-1_seed-0" / "summary.json").exists()
    # released with config.json still missing (its process died then): a stranger's folder, refused in one line
    rc, _, err = invoke(*COMPARE, "--out", out)
    assert rc == 2
    one_line(err, "not a hardbatch run directory (no config.json)")
