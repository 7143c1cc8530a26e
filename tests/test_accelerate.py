"""The drop-in sampler in an accelerate loop (examples/accelerate_loop.py), on one process and on two (torchrun, gloo).

Every rank trains its contiguous share of the same planned batch at every step, and the steps, losses and cost are
those of one process; ``accelerator.prepare`` on the sampler's loader would hand the ranks different batches, which
is why ``hardbatch.integrations.accelerate.prepare_loader`` exists.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hardbatch import HardBatchSampler
from hardbatch.selection import POLICIES


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
JOB = str(Path(__file__).with_name("accelerate_job.py"))
RUNS = {"rule": ["--delta", "0.5"], "selective-backprop": ["--policy", "selective-backprop", "--epochs", "2"]}


def load_example():
    spec = importlib.util.spec_from_file_location("accelerate_loop_example", ROOT / "examples" / "accelerate_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def test_one_process_trains_the_planned_batches_whole(tmp_path):
    trace, meter = example.main([*RUNS["rule"], "--out", str(tmp_path)])
    partition = json.loads((tmp_path / "trace-rank0.json").read_text())["partition"]
    # 256 samples, B = 32: N = 8; δ = 0.5: the warm-up's 8 steps, then two rounds of 4 per later epoch.
    assert len(trace) == meter.optimizer_steps == 24
    assert [row["batch"] for row in trace[:8]] == list(range(8))
    assert all(row["samples"] == partition[row["batch"]] for row in trace)
    assert meter.samples_loaded == meter.samples_backprop == 24 * 32


def test_the_readmes_accelerate_loop_runs_as_written():
    section = README.read_text().split("### Accelerate\n", 1)[1].split("\n### ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    namespace = {"train_set": example.regression_data(), "model": model,
                 "optimizer": torch.optim.SGD(model.parameters(), lr=0.05)}
    exec(compile(code, str(README), "exec"), namespace)
    sampler, meter = namespace["sampler"], namespace["meter"]
    # 256 samples, B = 64: N = 4; δ = 0.5: the warm-up's 4 steps, then rounds of 2; 5 epochs of 4 steps.
    assert sampler.done and sampler.steps == meter.optimizer_steps == 20
    assert meter.samples_loaded == meter.samples_backprop == 20 * 64


# Every registered policy with its example settings, and the rule's scoring passes.
CASES = {**{name: (name, cls.example) for name, cls in POLICIES.items()}, "hardbatch+rescore": ("hardbatch", {"rescore": 2})}


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_runs_in_the_accelerate_loop(case):
    from accelerate import Accelerator

    name, params = CASES[case]
    cls = POLICIES[name]
    train_set = example.regression_data()
    sampler = HardBatchSampler(len(train_set), 32, delta=0.5 if cls.uses_delta else 1.0, epochs=2, policy=name,
                               shuffle_partition=True, seed=0, **params)
    if cls.needs_irreducible:  # rho-loss: the IL model's loss of every sample, set before training
        sampler.policy.irreducible = torch.zeros(len(train_set))
    trace, meter = example.train(Accelerator(cpu=True), sampler, train_set)
    assert sampler.done and sampler.epoch == 2 and len(trace) == meter.optimizer_steps == sampler.steps
    assert meter.samples_backprop == int(sampler.sample_visits.sum())
    if cls.scores_first or "rescore" in params:
        assert meter.samples_forward_nograd > 0


@pytest.mark.slow
def test_two_processes_train_the_same_batches_as_one(tmp_path, launch):
    done = launch(2, JOB, str(tmp_path), json.dumps(RUNS), timeout=200)
    assert done.returncode == 0, done.output[-3000:]
    for name, argv in RUNS.items():
        one, one_meter = example.main(argv)
        ranks = [json.loads((tmp_path / name / f"trace-rank{r}.json").read_text()) for r in (0, 1)]
        steps = [[(row["step"], row["batch"]) for row in rank["trace"]] for rank in ranks]
        assert steps[0] == steps[1] == [(row["step"], row["batch"]) for row in one]
        for rank in ranks:  # each rank trained samples of the planned batch, and together what one process trained
            assert [row["loss"] for row in rank["trace"]] == pytest.approx([row["loss"] for row in one], rel=1e-4)
            assert rank["cost"] | {"choose_seconds": 0} == one_meter.state_dict() | {"choose_seconds": 0}
        for step, (row0, row1) in enumerate(zip(*(rank["trace"] for rank in ranks))):
            assert sorted(row0["samples"] + row1["samples"]) == sorted(one[step]["samples"])
        if name == "rule":  # whole batches: rank r holds the r-th contiguous half of each
            partition = ranks[0]["partition"]
            assert all(row["samples"] == partition[row["batch"]][16 * r:16 * (r + 1)]
                       for r, rank in enumerate(ranks) for row in rank["trace"])
    # Without prepare_loader: accelerate's BatchSamplerShard gives rank 1 the second planned batch, whole, while
    # rank 0 trains the first: the ranks would train and record different batches.
    partition = json.loads((tmp_path / "rule" / "trace-rank0.json").read_text())["partition"]
    prepared = [json.loads((tmp_path / f"prepared-rank{r}.json").read_text()) for r in (0, 1)]
    assert prepared == [partition[0], partition[1]]
