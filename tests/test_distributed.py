"""Training split over processes (torchrun, gloo on the CPU) takes the steps one process takes, for every policy.

Process start-up dominates these tiny runs, so each torchrun job runs many commands (tests/ddp_job.py): one job
trains every configuration, resumes the interrupted runs and checks one step's gradient; one job loses a rank
mid-run; one gives an indivisible batch. Single-process references run in the test process.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import required_settings, rows_of

from hardbatch.cli import main
from hardbatch.config import DELTA_POLICIES
from hardbatch.policies import POLICIES
from hardbatch.run import experiment, machine
from hardbatch.run import state as run_state
from hardbatch.run.checks import differing_settings
from hardbatch.run.plan import run_name

JOB = str(Path(__file__).with_name("ddp_job.py"))

pytestmark = pytest.mark.slow  # every test here starts torchrun jobs
# B = 32 on a 640-sample subset of digits: N = 20 steps per epoch, 16 samples per rank and step with P = 2.
BASE = [
    "--dataset",
    "digits",
    "--train-subset",
    "640",
    "--model",
    "mlp",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]
N = 20


def policy_args(name: str) -> list[str]:
    """The flags of a small run of policy ``name``: δ 0.5 where it applies, its example hyper-parameters, and the run
    settings it requires (conftest.py)."""
    own = {**POLICIES[name].example, **required_settings(name)}
    return [
        "--policy",
        name,
        *(["--delta", "0.5"] if name in DELTA_POLICIES else []),
        *(arg for key, value in own.items() for arg in (f"--{key.replace('_', '-')}", str(value))),
    ]


# Every registered policy (a new one is covered by registering it), and the paper rule's opt-in variants. One
# `compare` trains the policies that need nothing beyond their own flags; the others (rho-loss: a validation
# split) train as their own runs.
POLICY_RUNS = {name: policy_args(name) for name in POLICIES}
COMPARED = [name for name, cls in POLICIES.items() if not cls.requires]


def example_flags(names: list[str]) -> list[str]:
    """The flags of the example hyper-parameters of policies ``names``, for one command that trains them all."""
    merged: dict = {}
    for name in names:
        for key, value in POLICIES[name].example.items():
            assert merged.setdefault(key, value) == value, f"two examples set {key}: train {name} as its own run"
    return [arg for key, value in merged.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


VARIANTS = {
    "hardbatch-rescore-augment": [*policy_args("hardbatch"), "--rescore", "1", "--augment", "crop_flip"],
    "hardbatch-repartition": [*policy_args("hardbatch"), "--repartition"],
    "hardbatch-trim-mix": [*policy_args("hardbatch"), "--trim-top", "0.1", "--mix", "0.25"],
}
CONFIGS = {**POLICY_RUNS, **VARIANTS}
# the run a rank dies in, and the one resumed elsewhere; a checkpoint every epoch
RESUMED = [*policy_args("hardbatch"), "--epochs", "3", "--checkpoint-every", "0"]


def trace(run: Path) -> list[dict]:
    return rows_of(run / "trace.csv")


def history(run: Path) -> list[dict]:
    return rows_of(run / "history.csv")


def assert_same_steps(one: Path, many: Path, exact: bool = False) -> None:
    """Same rounds, batches and sample counts step by step; losses equal to float rounding (or bit for bit)."""
    a, b = trace(one), trace(many)
    assert len(a) == len(b) > 0
    assert [(r["step"], r["round"], r["batch"], r["samples"]) for r in a] == [
        (r["step"], r["round"], r["batch"], r["samples"]) for r in b
    ]
    losses_a, losses_b = [float(r["loss"]) for r in a], [float(r["loss"]) for r in b]
    if exact:
        assert losses_a == losses_b
    else:
        assert losses_b == pytest.approx(losses_a, rel=1e-4, abs=1e-5)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process: every configuration, the run a rank dies in, and that run interrupted after its first epoch."""
    root = tmp_path_factory.mktemp("single")
    for name, args in CONFIGS.items():
        assert main(["train", *BASE, *args, "--out", str(root / name)]) == 0
    assert main(["train", *BASE, *RESUMED, "--out", str(root / "resumed")]) == 0
    save = run_state.save_checkpoint

    def save_then_stop(path, state):
        save(path, state)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_state, "save_checkpoint", save_then_stop)
        assert main(["train", *BASE, *RESUMED, "--out", str(root / "partial")]) == 130
    return root


@pytest.fixture(scope="module")
def killed(tmp_path_factory, launch):
    """Two processes; rank 1 is SIGKILLed after its second evaluation of three."""
    root = tmp_path_factory.mktemp("killed")
    spec = {
        "log_dir": str(root),
        "kill_rank": 1,
        "kill_after_evals": 2,
        "commands": [["train", *BASE, *RESUMED, "--out", str(root / "run")]],
    }
    (root / "spec.json").write_text(json.dumps(spec))
    done = launch(2, JOB, str(root / "spec.json"), timeout=100)
    # What the run folder kept, read before the main job resumes (and finishes) the run.
    checkpoint = torch.load(root / "run" / "checkpoint.pt", weights_only=True)
    return root, done, checkpoint, len(trace(root / "run"))


@pytest.fixture(scope="module")
def job(tmp_path_factory, launch, single, killed):
    """Two processes: `compare` of the policies, the variants, the others, the 3-epoch run, and two resumes (same and
    other world size)."""
    root = tmp_path_factory.mktemp("ddp")
    commands = [
        [
            "compare",
            "--policies",
            *COMPARED,
            *example_flags(COMPARED),
            "--deltas",
            "0.5",
            "--seeds",
            "0",
            *BASE,
            "--tensorboard",
            str(root / "tb"),
            "--out",
            str(root / "compare"),
        ],
        *(["train", *BASE, *args, "--out", str(root / name)] for name, args in VARIANTS.items()),
        *(["train", *BASE, *POLICY_RUNS[name], "--out", str(root / name)] for name in POLICIES if name not in COMPARED),
        ["train", *BASE, *RESUMED, "--out", str(root / "resumed")],
        ["train", *BASE, *RESUMED, "--resume", "--out", str(killed[0] / "run")],
        ["train", *BASE, *RESUMED, "--resume", "--out", str(single / "partial")],
    ]
    spec = {"log_dir": str(root), "grad_check": True, "commands": commands}
    (root / "spec.json").write_text(json.dumps(spec))
    done = launch(2, JOB, str(root / "spec.json"), timeout=150)
    assert done.returncode == 0, done.output[-3000:]
    return root


def ddp_run(root: Path, name: str) -> Path:
    if name in COMPARED:
        return root / "compare" / run_name(0.5 if name in DELTA_POLICIES else 1.0, 0, name)
    return root / name


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_processes_take_the_steps_of_one(name, single, job):
    run = ddp_run(job, name)
    assert_same_steps(single / name, run)
    one, two = history(single / name), history(run)
    for column in ("test_acc", "samples_loaded", "samples_backprop", "samples_forward_nograd"):
        # Evaluation sums are reduced over both halves of the test set; costs count the global batch.
        assert [float(r[column]) for r in two] == pytest.approx([float(r[column]) for r in one], abs=1 / 360)
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and (run / "summary.json").exists()


def test_every_rank_recorded_the_same_steps_and_losses(job):
    ranks = [(job / f"rank-{r}.jsonl").read_text().splitlines() for r in (0, 1)]
    assert len(ranks[0]) > 10 * 2 * N and ranks[0] == ranks[1]


def test_ddp_gradient_of_unequal_shares_is_the_global_mean_gradient(job):
    for r in (0, 1):
        assert json.loads((job / f"grad-{r}.json").read_text()) < 1e-6


def test_only_rank_0_writes_tensorboard_logs(job):
    for name in COMPARED:
        logs = job / "tb" / run_name(0.5 if name in DELTA_POLICIES else 1.0, 0, name)
        events = list(logs.glob("events.out.tfevents.*"))
        assert len(events) == 1
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        scalars = EventAccumulator(str(logs)).Reload().Scalars("test_acc")
        assert [s.step for s in scalars] == [1, 2]
    assert (job / "compare" / "report.md").exists()


def test_a_killed_rank_ends_the_job_and_resume_continues_bit_for_bit(killed, job):
    root, done, state, steps = killed
    assert done.returncode != 0
    assert "exitcode  : -9" in done.output  # rank 1's SIGKILL, reported by torchrun
    assert done.seconds < 60, f"the surviving rank took {done.seconds:.0f} s to stop"
    # Rank 0 never finished epoch 2 (it waited for rank 1): the epoch-1 checkpoint and trace are what is left.
    assert state["epoch"] == 1 and len(state["rng_ranks"]) == 2 and steps == N
    # The resume (same world size, in the main job) finishes the run exactly as the uninterrupted two-process one.
    assert_same_steps(job / "resumed", root / "run", exact=True)
    assert history(root / "run")[-1]["test_acc"] == history(job / "resumed")[-1]["test_acc"]


def test_resume_under_another_world_size_continues_the_selection(single, job):
    # Interrupted after epoch 1 in one process, finished by two: same rounds and batches as one process throughout.
    assert_same_steps(single / "resumed", single / "partial")
    assert len(history(single / "partial")) == 3


def test_a_batch_that_does_not_divide_among_the_processes_is_one_line_exit_2(tmp_path, launch):
    done = launch(
        2,
        "-m",
        "hardbatch",
        "train",
        *BASE[:6],
        "--batch-size",
        "33",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
        timeout=60,
    )
    errors = [line for line in done.output.splitlines() if line.startswith("hardbatch train: error:")]
    assert errors == [
        "hardbatch train: error: --batch-size 33 does not divide among 2 processes; each trains 1/2 of "
        "every mini-batch: use a multiple of 2"
    ]
    assert "exitcode  : 2" in done.output and "[rank" not in done.output  # every worker exited 2, no traceback
    assert done.returncode == 1  # torchrun's own status for failed workers (README "Multi-GPU")
    assert not (tmp_path / "run").exists()


def test_lightning_example_runs_a_policy_under_lightning_ddp():
    example = Path(__file__).resolve().parents[1] / "examples" / "lightning_example.py"
    done = subprocess.run(
        [sys.executable, str(example), "--devices", "2", "--policy", "selective-backprop"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.findall(r"rank (\d)/2: (.*?val_acc \d\.\d+)", done.stdout)
    assert sorted(rank for rank, _ in lines) == ["0", "1"]
    (_, first), (_, second) = lines
    assert first == second  # one plan, the same steps and the same (synced) accuracy on both ranks
    assert "63 steps of budget 63, 3 epochs" in first and float(first.rsplit(" ", 1)[1]) > 0.5


def test_compile_trains_the_same_steps(single, tmp_path):
    # aot_eager traces the model through dynamo and AOT autograd like inductor, without minutes of C++ code generation.
    args = [*BASE, *POLICY_RUNS["uniform"], "--epochs", "1"]
    assert main(["train", *args, "--compile", "aot_eager", "--out", str(tmp_path / "compiled")]) == 0
    eager = trace(single / "uniform")[:N]
    compiled = trace(tmp_path / "compiled")
    assert [r["batch"] for r in compiled] == [r["batch"] for r in eager]
    assert [float(r["loss"]) for r in compiled] == pytest.approx([float(r["loss"]) for r in eager], rel=1e-4)


@pytest.fixture
def one_rank_group():
    """A process group of one (gloo, in memory): ``distributed.active()`` is True, as under torchrun."""
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_wrap_with_sync_bn_converts_batchnorm_in_place_keeping_parameters(one_rank_group, monkeypatch):
    from hardbatch import distributed
    from hardbatch.models import create_model

    # DDP itself refuses SyncBatchNorm on CPU modules; record what it would wrap instead.
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda module, device_ids: module)
    model = create_model("small_cnn", 10, 1)
    params, keys = list(model.parameters()), list(model.state_dict())
    plain = distributed.wrap(model, torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in plain.modules())
    wrapped = distributed.wrap(model, torch.device("cpu"), sync_bn=True)
    assert wrapped is model  # in place: the run's checkpoints and scoring see the converted model
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == 3
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    # the optimizer built before still steps them
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert list(model.state_dict()) == keys  # checkpoints load either way


def test_sync_bn_in_one_process_leaves_the_model_alone():
    from hardbatch import distributed
    from hardbatch.models import create_model

    model = create_model("small_cnn", 10, 1)
    assert distributed.wrap(model, torch.device("cpu"), sync_bn=True) is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


def test_sync_bn_is_a_setting_of_the_run_passed_to_wrap(tmp_path, monkeypatch):
    from hardbatch import distributed
    from hardbatch.config import RunConfig

    # It changes what a run computes under DDP: a finished run without it is not reused for a run with it.
    assert differing_settings(RunConfig(), RunConfig(sync_bn=True)) == ["sync_bn"]
    seen = []
    wrap = distributed.wrap
    monkeypatch.setattr(
        distributed, "wrap", lambda model, device, sync_bn=False: seen.append(sync_bn) or wrap(model, device)
    )
    monkeypatch.setattr(machine, "check_sync_bn", lambda cfg: None)  # as on a GPU machine
    cfg = RunConfig(dataset="digits", train_subset=64, model="mlp", batch_size=32, epochs=1, device="cpu", sync_bn=True)
    experiment.train_run(cfg, tmp_path / "run", progress=False)
    assert seen == [True]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["sync_bn"] is True


@pytest.mark.parametrize("leave", ["destroy_process_group", "shutdown"])
def test_shutdown_frees_a_process_group_a_reference_cycle_holds_and_joins_its_gloo_threads(leave):
    # A Trainer's objects hold the group in reference cycles: destroy_process_group alone left it and gloo's worker
    # threads alive until interpreter exit, where one of them aborted rank 0 of a torchrun job after all its work
    # ("terminate called without an active exception", CI on tests/integrations/test_transformers.py). shutdown()
    # collects them.
    from hardbatch import distributed

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = threads()
    gc.disable()  # no automatic collection between here and the count
    try:
        torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
        cycle = {"group": torch.distributed.group.WORLD}
        cycle["self"] = cycle
        del cycle  # once the group is unregistered, only the cycle collector frees it
        assert threads() > before  # gloo's worker threads run
        if leave == "shutdown":
            distributed.shutdown()
        else:
            torch.distributed.destroy_process_group()
        assert not torch.distributed.is_initialized()
        assert (threads() == before) == (leave == "shutdown")
        distributed.shutdown()  # outside a group: does nothing
    finally:
        if torch.distributed.is_initialized():  # a failed assertion above leaves no group to the next test
            torch.distributed.destroy_process_group()
        gc.enable()
        gc.collect()
