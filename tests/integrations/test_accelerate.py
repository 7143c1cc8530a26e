"""hardbatch.integrations.accelerate in an accelerate loop (examples/accelerate_loop.py), on one process and on two
(torchrun, and ``accelerate launch``; gloo).

Every rank trains its contiguous share of the same planned batch at every step, and the steps, losses and counts are
those of one process; ``accelerator.prepare`` on the sampler's loader would hand the ranks different batches, which
is why ``prepare_loader`` exists. The loader stops the cost meter's clocks when a pass ends, and under a process group
``prepare_loader`` frees the group at interpreter exit, so no script calls ``distributed.shutdown()``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import hardbatch
from hardbatch import HardBatchSampler, UsageError, distributed, step
from hardbatch.integrations import accelerate as integration
from hardbatch.policies import POLICIES

pytest.importorskip("accelerate")  # the test extra installs it

ROOT = Path(__file__).resolve().parents[2]
JOB = str(Path(__file__).with_name("accelerate_job.py"))
RUNS = {"rule": ["--delta", "0.5"], "selective-backprop": ["--policy", "selective-backprop", "--epochs", "2"]}
TIMING = ("choose_seconds", "train_seconds", "cpu_seconds")  # what differs between equal runs


def load_example():
    spec = importlib.util.spec_from_file_location("accelerate_loop_example", ROOT / "examples" / "accelerate_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


@pytest.fixture
def trained(monkeypatch) -> list[list[int]]:
    """The sample ids (``batch[2]``) of the rows each optimizer step trains, in step order."""
    rows, losses_of = [], step.losses_of

    def recording(model, chosen, **kwargs):
        rows.append(chosen.batch[2].tolist())
        return losses_of(model, chosen, **kwargs)

    monkeypatch.setattr(step, "losses_of", recording)
    return rows


def test_one_process_trains_the_planned_batches_whole(tmp_path, trained):
    trace, meter = example.main([*RUNS["rule"], "--out", str(tmp_path)])
    partition = json.loads((tmp_path / "trace-rank0.json").read_text())["partition"]
    # 256 samples, B = 32: N = 8; δ = 0.5: the warm-up's 8 steps, then two rounds of 4 per later epoch.
    assert len(trace) == len(trained) == meter.optimizer_steps == 24
    assert [row["batch"] for row in trace[:8]] == list(range(8)) and [row["step"] for row in trace] == [*range(1, 25)]
    assert all(samples == partition[row["batch"]] for row, samples in zip(trace, trained, strict=True))
    assert meter.samples_loaded == meter.samples_backprop == 24 * 32
    assert meter.train_seconds > 0 and meter.cpu_seconds > 0


# Every registered policy with its example settings, and the rule's scoring passes.
CASES = {
    **{name: (name, cls.example) for name, cls in POLICIES.items()},
    "hardbatch+rescore": ("hardbatch", {"rescore": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_runs_in_the_accelerate_loop(case):
    from accelerate import Accelerator

    name, params = CASES[case]
    cls = POLICIES[name]
    train_set = example.regression_data()
    delta = {"delta": 0.5} if cls.takes("delta") else {}
    sampler = HardBatchSampler(
        len(train_set), 32, epochs=2, policy=name, shuffle_partition=True, seed=0, **delta, **params
    )
    if cls.holdout:  # rho-loss: the IL model's loss of every sample, set before training
        sampler.policy.irreducible = torch.zeros(len(train_set))
    trace, meter = example.train(Accelerator(cpu=True), sampler, train_set)
    assert sampler.done and sampler.epoch == 2 and len(trace) == meter.optimizer_steps == sampler.steps
    assert meter.samples_backprop == sampler.trained_samples["all"]
    if cls.scores_first or "rescore" in params:
        assert meter.samples_forward_nograd > 0
    assert meter.train_seconds > 0 and meter.cpu_seconds > 0 and not meter.running


@pytest.mark.parametrize("policy, params", [("hardbatch", {"delta": 0.5}), ("selective-backprop", {})])
def test_the_loader_stops_the_clocks_when_a_pass_ends(clock, policy, params):
    """Each step's backward and optimizer step "take" 10 s and what the loop does after each pass (evaluation)
    10,000 s (a fake clock): every step is counted, a pass's last one too, and nothing after a pass."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    train_set = example.regression_data()
    sampler = HardBatchSampler(len(train_set), 32, epochs=3, policy=policy, seed=0, **params)  # N = 8
    model = torch.nn.Linear(8, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    loader = integration.prepare_loader(accelerator, train_set, sampler)
    passes = 0
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch, loss_fn=hardbatch.losses.mse)
            if loss is not None:
                optimizer.zero_grad()
                accelerator.backward(loss)
                optimizer.step()
            clock.advance(10)
        clock.advance(10_000)
        passes += 1
    meter, batches = sampler.meter, sampler.meter.samples_loaded // 32
    assert passes >= 3 and not meter.running
    assert 10 * batches <= meter.train_seconds < 10 * batches + 5  # the real time of tiny steps: under 5 s
    assert 10 * batches <= meter.cpu_seconds < 10 * batches + 5


def test_prepare_loader_refuses_a_batch_that_does_not_divide_among_the_processes():
    accelerator = SimpleNamespace(num_processes=3, device=torch.device("cpu"))
    with pytest.raises(
        UsageError,
        match=r"the sampler's batch \(32\) does not divide among 3 processes.*multiple "
        r"of 3",
    ):
        integration.prepare_loader(accelerator, example.regression_data(), HardBatchSampler(256, 32))


def test_prepare_loader_frees_the_process_group_at_exit_once_and_only_under_one(monkeypatch):
    registered = []
    monkeypatch.setattr(integration.atexit, "register", registered.append)
    monkeypatch.setattr(integration, "_shutdown_registered", False)
    accelerator = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    integration.prepare_loader(accelerator, example.regression_data(), HardBatchSampler(256, 32))
    assert registered == []  # one process, no group: nothing to free
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        for _ in range(2):
            integration.prepare_loader(accelerator, example.regression_data(), HardBatchSampler(256, 32))
        assert registered == [distributed.shutdown]
    finally:
        distributed.shutdown()
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_two_processes_train_the_same_batches_as_one(tmp_path, launch, trained):
    done = launch(2, JOB, str(tmp_path), json.dumps(RUNS), timeout=200)
    assert done.returncode == 0, done.output[-3000:]
    assert "terminate called" not in done.output  # the group was freed before interpreter exit
    for name, argv in RUNS.items():
        trained.clear()
        one, one_meter = example.main(argv)
        one_samples = list(trained)
        ranks = [json.loads((tmp_path / name / f"trace-rank{r}.json").read_text()) for r in (0, 1)]
        samples = [json.loads((tmp_path / name / f"samples-rank{r}.json").read_text()) for r in (0, 1)]
        steps = [[(row["step"], row["batch"]) for row in rank["trace"]] for rank in ranks]
        assert steps[0] == steps[1] == [(row["step"], row["batch"]) for row in one]
        for rank in ranks:  # each rank trained samples of the planned batch, and together what one process trained
            assert [row["loss"] for row in rank["trace"]] == pytest.approx([row["loss"] for row in one], rel=1e-4)
            untimed = dict.fromkeys(TIMING, 0)
            assert rank["cost"] | untimed == one_meter.state_dict() | untimed
            assert rank["cost"]["train_seconds"] > 0 and rank["cost"]["cpu_seconds"] > 0
        assert len(samples[0]) == len(samples[1]) == len(one_samples)
        for step_samples, row0, row1 in zip(one_samples, *samples, strict=True):
            assert sorted(row0 + row1) == sorted(step_samples)
        if name == "rule":  # whole batches: rank r holds the r-th contiguous half of each
            partition = ranks[0]["partition"]
            assert all(
                rows == partition[row["batch"]][16 * r : 16 * (r + 1)]
                for r, (rank, rank_samples) in enumerate(zip(ranks, samples, strict=True))
                for row, rows in zip(rank["trace"], rank_samples, strict=True)
            )
    # Without prepare_loader: accelerate's BatchSamplerShard gives rank 1 the second planned batch, whole, while
    # rank 0 trains the first: the ranks would train and record different batches.
    partition = json.loads((tmp_path / "rule" / "trace-rank0.json").read_text())["partition"]
    prepared = [json.loads((tmp_path / f"prepared-rank{r}.json").read_text()) for r in (0, 1)]
    assert prepared == [partition[0], partition[1]]


ACCELERATE_FLAGS = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def accelerate_launch(flags: list[str], out: Path) -> subprocess.CompletedProcess:
    """``accelerate launch FLAGS examples/accelerate_loop.py --delta 0.5 --out OUT`` as a user types it, on CPUs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *flags,
            *ACCELERATE_FLAGS,
            str(ROOT / "examples" / "accelerate_loop.py"),
            "--delta",
            "0.5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_accelerate_launch_runs_the_example_on_two_cpu_processes_as_one_process_trains(tmp_path):
    # --multi_gpu starts accelerate's torchrun launcher, which on a machine without GPUs runs each rank on the CPU
    # (gloo); --cpu with two processes is accelerate's MPI path and starts one process (the guide says so).
    one, _ = example.main(["--delta", "0.5"])
    done = accelerate_launch(["--multi_gpu"], tmp_path / "multi")
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "multi" / f"trace-rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert [(row["step"], row["batch"]) for row in rank["trace"]] == [(row["step"], row["batch"]) for row in one]
        assert [row["loss"] for row in rank["trace"]] == pytest.approx([row["loss"] for row in one], rel=1e-4)
    done = accelerate_launch(["--cpu"], tmp_path / "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "cpu").iterdir()) == ["trace-rank0.json"]
