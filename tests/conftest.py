"""Shared fixtures: one torch thread for tiny models, runs interrupted after an epoch, and launching a torchrun job of
several processes on the CPU (gloo).

Marks: ``slow`` tags the tests that start several processes or kill one (``pytest -m "not slow"`` for a quick loop;
the full suite, CI's, runs them all).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it (use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Stop(Exception):
    """What ``interrupt`` stops a run with."""


@pytest.fixture
def interrupt(monkeypatch):
    """``interrupt(cfg, out, epochs_done)``: ``train_run(cfg, out)``, stopped right after epoch ``epochs_done`` was
    checkpointed (by a last sink), as a kill there would leave the run folder."""
    import hardbatch.experiment as experiment

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
