"""Shared fixtures: one torch thread for the whole session, the command line in-process and as the console entry, a CSV
reader, one finished ``hardbatch train`` and one ``hardbatch compare`` for the tests that only read them, runs
interrupted after an epoch, the checks every one-line error and untouched folder gets, the run settings a policy
requires, and launching a torchrun job of several processes on the CPU (gloo).

Marks: ``slow`` tags the tests that start several processes or kill one (``pytest -m "not slow"`` for a quick loop;
the full suite, CI's, runs them all).

Plain helpers (``from conftest import ...``) for the selection tests: ``drive`` runs a sampler as a training loop does,
with scripted losses (``scripted``, ``table``) instead of a model, and logs what it trained (``Rec``, ``rounds_of``);
``steps_of`` lists a planned round's steps, ``roundtrip`` a state through ``torch.save``, and ``IndexDataset``'s
labels name its samples.
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

import torch  # after OMP_NUM_THREADS is set
from torch import nn

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
        return subprocess.Popen(
            [sys.executable, "-m", "hardbatch", *map(str, argv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

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
                # pytest's capture writes to files of its own, so the child gets a real file for both
                sys.stdout = sys.stderr = open(null, "w")  # noqa: SIM115 - open until os._exit, which closes nothing
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


# ---- the selection tests' loop: a sampler driven with scripted losses instead of a model ---------------------------


# One recorded item of a pass: "train" (an optimizer step), "score" (a scoring-only batch) or "skip" (a batch whose
# weights keep no sample: consumed untrained); its samples, those trained, their weights and losses, and the loss.
class Rec(NamedTuple):
    kind: str
    round: int
    batch: int
    samples: list
    kept: list
    weights: list
    losses: list
    loss: float


def scripted(seed: int, ties: bool = False):
    """Scripted losses ``f(i, v)``: sample (or batch) i's loss the v-th time (0-based). Multiples of 2**-20 below 1,
    exact in float32 (the stored dtype), and so are means of two; ``ties``: the integers 0..3 (many equal losses)."""
    import random

    def loss_of(i: int, v: int) -> float:
        rng = random.Random(seed * 1_000_003 + i * 1009 + v)
        return float(rng.randint(0, 3)) if ties else rng.randrange(1 << 20) / (1 << 20)

    return loss_of


def table(rows: dict[int, list[float]]):
    """Scripted losses ``f(i, v) = rows[i][v]``; a visit the script does not hold fails the test."""

    def loss_of(i: int, v: int) -> float:
        assert v < len(rows[i]), f"{i} used a {v + 1}th time; the script has {len(rows[i])}"
        return rows[i][v]

    return loss_of


def drive(
    sampler,
    train_loss,
    score_loss=None,
    *,
    by: str = "sample",
    trained=None,
    stop_after: int | None = None,
    draw_ahead: int = 0,
    loader=None,
    progress: list | None = None,
    as_number: bool = False,
) -> list[Rec]:
    """Run ``sampler`` as a training loop does, with scripted losses for a model; returns what it recorded.

    ``train_loss(i, v)``: what training sees for sample i; ``score_loss(i, v)`` what a no-grad forward sees (default:
    the same). ``by``: v counts the times sample i was trained ("sample"), or i is the batch id and v its visits
    ("batch": every sample of the batch gets the batch's loss), or v is the epoch ("epoch"; a scoring pass sees the
    epoch it follows). Scoring-only steps record the mean of their scores; a policy that scores first trains the
    samples ``weights(scores)`` keeps, and a batch it keeps none of is recorded untrained ("skip"); the others record
    the weighted mean. ``stop_after``: stop after that many records, first drawing ``draw_ahead`` more (as a
    prefetching loader). ``loader``: draw through it (a DataLoader over ``IndexDataset`` with ``sampler`` as its batch
    sampler) instead of iterating the sampler. ``trained``: the visit counts to go on from (a resumed run's).
    ``as_number``: record losses as Python floats.
    """
    import collections

    import torch

    trained = collections.Counter() if trained is None else trained
    score_loss = score_loss or train_loss

    def losses(fn, step, samples) -> torch.Tensor:
        if by == "batch":
            return torch.full((len(samples),), fn(step.batch, trained[step.batch]))
        if by == "epoch":
            return torch.tensor([fn(i, sampler.epoch - step.score_only) for i in samples])
        return torch.tensor([fn(i, trained[i]) for i in samples])

    log: list[Rec] = []
    passes = 0
    while not sampler.done:
        passes += 1
        assert passes < 1000, "sampler never finished"
        it = iter(sampler) if loader is None else (batch[1].tolist() for batch in loader)
        for indices in it:
            step = sampler.pending
            assert step.samples.tolist() == indices
            policy = sampler.policy
            if step.score_only or policy.scores_first:
                scores = losses(score_loss, step, indices)
            if step.score_only:
                assert sampler.record(scores.mean().item() if as_number else scores.mean(), scores) == step.batch
                log.append(
                    Rec("score", sampler.round, step.batch, indices, [], None, scores.tolist(), scores.mean().item())
                )
            elif policy.scores_first and not (sampler.weights(scores) > 0).any():
                skipped = sampler.weights(scores).tolist()  # the answer given above: one draw per batch
                assert sampler.record(scores.mean()) == step.batch
                log.append(
                    Rec("skip", sampler.round, step.batch, indices, [], skipped, scores.tolist(), scores.mean().item())
                )
            else:
                if policy.scores_first:
                    keep = sampler.weights(scores) > 0
                    kept, weights = [i for i, k in zip(indices, keep.tolist(), strict=True) if k], None
                else:
                    kept, weights = indices, sampler.weights()
                values = losses(train_loss, step, kept)
                trained.update([step.batch] if by == "batch" else kept)
                loss = values.mean() if weights is None else (values * weights).mean()
                assert sampler.record(loss.item() if as_number else loss, values) == step.batch
                w = None if step.weights is None else step.weights.tolist()
                log.append(Rec("train", sampler.round, step.batch, indices, kept, w, values.tolist(), loss.item()))
            if progress is not None:
                progress.append(sampler.progress)
            if stop_after is not None and len(log) == stop_after:
                for _ in range(draw_ahead):
                    next(it, None)
                return log
    return log


def rounds_of(log: list[Rec]) -> list[list[int]]:
    """The batch ids each round of ``log`` trained, round by round."""
    rounds: dict[int, list[int]] = {}
    for r in log:
        if r.kind == "train":
            rounds.setdefault(r.round, []).append(r.batch)
    assert sorted(rounds) == list(range(len(rounds)))
    return [rounds[r] for r in sorted(rounds)]


def steps_of(planned) -> list:
    """The steps of a planned ``Round``, as the loop sees them."""
    return [planned.step(i) for i in range(len(planned))]


def roundtrip(state: dict) -> dict:
    """``state`` after ``torch.save`` and ``torch.load(weights_only=True)``, as a checkpoint gives it back."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class IndexDataset:
    """Sample i is (a feature equal to i, label i): a loaded batch's labels name its samples."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        return torch.tensor([float(i)]), i


def one_line(err: str, *words: str) -> str:
    """The one line of ``err`` (a command's stderr), which holds every one of ``words`` and no traceback."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected exactly one line on stderr, got {err!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under ``root``: bytes and modification time of each file, so that any write shows."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): ("dir",) if p.is_dir() else (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


class Finished(NamedTuple):
    out: Path  # the run or compare folder: never modified by tests (they work on copies)
    stdout: str
    args: tuple[str, ...]  # its flags, without --out


# δ 0.5, 2 epochs of N = 1437 // 64 = 22 steps on digits, k = 11 batches per round.
TRAIN_ARGS = (
    "--delta",
    "0.5",
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--no-progress",
)
COMPARE_ARGS = (
    "--deltas",
    "0.5",
    "1.0",
    "--seeds",
    "0",
    "1",
    "--epochs",
    "2",
    "--batch-size",
    "128",
    "--device",
    "cpu",
    "--no-progress",
)


@pytest.fixture(scope="session")
def finished_train(tmp_path_factory) -> Finished:
    """One finished ``hardbatch train`` of TRAIN_ARGS, shared by test_cli.py (the command) and run/test_experiment.py
    (the files it wrote)."""
    out = tmp_path_factory.mktemp("train") / "run"
    rc, stdout, stderr = run_cli("train", *TRAIN_ARGS, "--out", out)
    assert rc == 0, stderr
    return Finished(out, stdout, TRAIN_ARGS)


@pytest.fixture(scope="session")
def finished_compare(tmp_path_factory) -> Finished:
    """One finished ``hardbatch compare`` on digits (δ 0.5 and 1, seeds 0 and 1, 2 epochs), shared by test_cli.py and
    test_records.py."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    rc, stdout, stderr = run_cli("compare", *COMPARE_ARGS, "--out", out)
    assert rc == 0, stderr
    return Finished(out, stdout, COMPARE_ARGS)


# The value a small run gives each setting that a policy requires of its run (``Policy.requires``): rho-loss trains its
# irreducible-loss model on a validation split.
REQUIRED_SETTINGS = {"val_fraction": 0.2}


def required_settings(policy: str) -> dict:
    """The run settings policy ``policy`` requires, at the values of REQUIRED_SETTINGS (which must hold one)."""
    from hardbatch.policies import POLICIES

    needs = POLICIES[policy].requires
    missing = sorted(set(needs) - set(REQUIRED_SETTINGS))
    assert not missing, f"policy {policy!r} requires {missing}: give each a value in REQUIRED_SETTINGS (conftest.py)"
    for setting, (accepts, what) in needs.items():
        assert accepts(REQUIRED_SETTINGS[setting]), f"REQUIRED_SETTINGS[{setting!r}]: policy {policy!r} {what}"
    return {setting: REQUIRED_SETTINGS[setting] for setting in needs}


class Stop(Exception):
    """What ``interrupt`` stops a run with."""


@pytest.fixture
def interrupt(monkeypatch):
    """``interrupt(cfg, out, epochs_done)``: ``train_run(cfg, out)``, stopped right after epoch ``epochs_done`` was
    checkpointed (by a last sink; every epoch is: ``checkpoint_every=0``, a runtime setting that a resume with ``cfg``
    does not compare), as a kill there would leave the run folder."""
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
                experiment.train_run(cfg.replace(checkpoint_every=0), out, progress=False)

    return run


@dataclass
class Job:
    returncode: int
    output: str
    seconds: float


def torchrun(nproc: int, *args: str, timeout: float = 120, env: dict | None = None) -> Job:
    """``python -m torch.distributed.run --nproc-per-node NPROC ARGS`` on a free port; stdout and stderr together."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *args,
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    return Job(done.returncode, done.stdout + done.stderr, time.perf_counter() - started)


@pytest.fixture(scope="session")
def launch():
    """The ``torchrun`` helper, for tests that start several processes."""
    return torchrun


# ---- any batch: a regression set served as dicts, and a model called as a Hugging Face model is; a fake clock for
# the cost meter (what a loop counts as training time) -------------------------------------------------------------


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
