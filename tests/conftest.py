"""Shared fixtures: one torch thread for the whole session, the command line in-process and as the console entry, a CSV
reader, one finished ``hardbatch compare`` for the tests that only read one, runs interrupted after an epoch, and
launching a torchrun job of several processes on the CPU (gloo).

Marks: ``slow`` tags the tests that start several processes or kill one (``pytest -m "not slow"`` for a quick loop;
the full suite, CI's, runs them all).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

# Tiny models run fastest on one thread, and two test workers on two cores cannot oversubscribe them; subprocesses
# (console runs, torchrun jobs) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
TIMING = ("train_seconds", "eval_seconds", "choose_seconds", "cpu_seconds")  # what differs between equal runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(items):
    """The files that hold ``slow`` tests run first, each file's tests in their order: with ``make test``'s
    ``-n 2 --dist loadfile --no-loadscope-reorder`` the two workers start on the long files and the short ones fill
    in behind them, instead of one worker taking a long file last while the other idles."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test runs torch on one thread (``OMP_NUM_THREADS`` set otherwise is overridden in the test process)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*argv) -> tuple[int, str, str]:
    """``hardbatch ARGV`` in-process (``cli.main``): its exit status (argparse's exit too), stdout and stderr."""
    from hardbatch.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def invoke():
    """``invoke(*argv) -> (status, stdout, stderr)``: the command line run in the test process."""
    return run_cli


@pytest.fixture(scope="session")
def console():
    """``console(*argv) -> Popen``: the real console entry (``python -m hardbatch ARGV``) as its own process, stdout
    and stderr piped as text; for what only a process shows (its exit status, signals, a kill)."""

    def start(*argv) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hardbatch", *map(str, argv)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    return start


class Forked:
    """A child process forked from the test process, running ``work()`` with its output discarded and ending with
    ``os._exit`` (status 0, or 1 if ``work`` raised): torch and hardbatch are imported already, so it starts in
    milliseconds where a new interpreter takes seconds. ``poll``, ``wait`` and ``send_signal`` as ``Popen``'s."""

    def __init__(self, work):
        self.returncode = None
        self.pid = os.fork()
        if self.pid == 0:
            status = 1
            try:  # never back into pytest: the child's only way out is os._exit
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
                sys.stdout = sys.stderr = open(null, "w")  # pytest's capture writes to files of its own
                work()
                status = 0
            finally:
                os._exit(status)

    def poll(self, flags: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, flags)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        return self.poll(0)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not to a finished child's pid, which the system may have given to another
            os.kill(self.pid, signum)


@pytest.fixture(scope="session")
def fork():
    """``fork(work) -> Forked``: ``work()`` in a forked child process, for tests that kill a process."""
    return Forked


def rows_of(path: Path, timing: bool = True) -> list[dict[str, str]]:
    """The rows of CSV file ``path`` as dicts; ``timing=False`` leaves out the seconds columns (``TIMING``)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if timing or k not in TIMING} for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def read_rows():
    """``read_rows(path, timing=True)``: a CSV file's rows as dicts (history.csv, trace.csv, summary.csv, ...)."""
    return rows_of


class Compared(NamedTuple):
    out: Path  # the compare folder: never modified by tests (they work on copies)
    stdout: str
    args: tuple[str, ...]  # its flags, without --out


COMPARE_ARGS = ("--deltas", "0.5", "1.0", "--seeds", "0", "1", "--epochs", "2", "--batch-size", "128",
                "--device", "cpu", "--no-progress")


@pytest.fixture(scope="session")
def finished_compare(tmp_path_factory) -> Compared:
    """One finished ``hardbatch compare`` on digits (δ 0.5 and 1, seeds 0 and 1, 2 epochs), shared by test_cli.py and
    test_robustness.py."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    rc, stdout, stderr = run_cli("compare", *COMPARE_ARGS, "--out", out)
    assert rc == 0, stderr
    return Compared(out, stdout, COMPARE_ARGS)


class Stop(Exception):
    """What ``interrupt`` stops a run with."""


@pytest.fixture
def interrupt(monkeypatch):
    """``interrupt(cfg, out, epochs_done)``: ``train_run(cfg, out)``, stopped right after epoch ``epochs_done`` was
    checkpointed (by a last sink), as a kill there would leave the run folder."""
    import hardbatch.run.experiment as experiment

    original = experiment.fit

    def run(cfg, out, epochs_done: int) -> None:
        class StopAfter:
            def on_epoch(self, result):
                if result.epoch == epochs_done:
                    raise Stop

        def fit_then_stop(*args, sinks, **kwargs):
            original(*args, sinks=[*sinks, StopAfter()], **kwargs)

        with monkeypatch.context() as m:
            m.setattr(experiment, "fit", fit_then_stop)
            with pytest.raises(Stop):
                experiment.train_run(cfg, out, progress=False)

    return run


@dataclass
class Job:
    returncode: int
    output: str
    seconds: float


def torchrun(nproc: int, *args: str, timeout: float = 120, env: dict | None = None) -> Job:
    """``python -m torch.distributed.run --nproc-per-node NPROC ARGS`` on a free port; stdout and stderr together."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return Job(done.returncode, done.stdout + done.stderr, time.perf_counter() - started)


@pytest.fixture(scope="session")
def launch():
    """The ``torchrun`` helper, for tests that start several processes."""
    return torchrun


# ---- any batch: a regression set served as dicts, and a model called as a Hugging Face model is; a fake clock for
# the cost meter (what a loop counts as training time) -------------------------------------------------------------

import torch  # here, after OMP_NUM_THREADS is set above
from torch import nn


class DictModel(nn.Module):
    """A regressor called with keywords, as a Hugging Face model is: ``model(features=..., mask=...)`` -> (b, 2)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 2)

    def forward(self, features, mask):
        return self.linear(features) * mask[:, None]


def dict_data(n: int = 64):
    """(features (n, 6), mask (n,) of ones, targets (n, 2)): a fixed linear regression problem."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n, 6, generator=generator)
    return features, torch.ones(n), features[:, :2] * 2 - 1


class DictSet(torch.utils.data.Dataset):
    """``dict_data(n)`` as a map-style data set of dicts ``{"features", "mask", "labels"}``."""

    def __init__(self, n: int = 64):
        self.features, self.mask, self.labels = dict_data(n)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "mask": self.mask[i], "labels": self.labels[i]}


class FakeClock:
    """Stands in for the ``time`` module of ``hardbatch.cost``: its clocks (``perf_counter``, ``process_time``) are the
    real ones plus ``offset``, which a test advances to stand for work of a known length (``advance(seconds)``)."""

    def __init__(self):
        import time

        self._time = time
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def perf_counter(self) -> float:
        return self._time.perf_counter() + self.offset

    def process_time(self) -> float:
        return self._time.process_time() + self.offset


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """A ``FakeClock`` in place of the cost meter's clocks, for tests of what a loop counts as training time."""
    import hardbatch.cost

    fake = FakeClock()
    monkeypatch.setattr(hardbatch.cost, "time", fake)
    return fake
