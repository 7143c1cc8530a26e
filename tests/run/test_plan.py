"""hardbatch.run.plan: the compare and sweep grids (one folder per run, each run's own policy settings), their shards,
the data sets runs share, and executing a plan: checked whole before any run trains, a crash reported and the rest
trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import one_line

import hardbatch.run.plan as plans
from hardbatch.config import PROTOCOLS, RunConfig, make_config
from hardbatch.errors import UsageError
from hardbatch.run.plan import DataCache, check_plan, execute, parse_shard, plan_compare, plan_sweep, run_name, shard

SMALL = ["--epochs", "2", "--train-subset", "320", "--no-progress"]  # 10 steps an epoch


def test_run_names_are_short_distinct_and_leave_out_what_a_policy_does_not_take():
    assert run_name(0.5, 0) == "delta-0.5_seed-0"
    assert run_name(1.0, 2, "random") == "random_delta-1_seed-2"
    assert run_name(1.0, 1, "infobatch") == "infobatch_seed-1"  # no δ
    assert run_name(1 / 3, 0, "cyclic", budget=0.25) == "cyclic_delta-0.3333333333333333_seed-0_budget-0.25"
    assert run_name(1.0, 0, "uniform", budget=0.5) == "uniform_seed-0_budget-0.5"


def test_compare_plans_each_policy_at_its_own_settings():
    base = RunConfig(params={"prune_ratio": 0.3}, tensorboard="tb")
    plan = plan_compare(
        base, [0.5, 1.0], [0, 1], "out", policies=["hardbatch", "random", "infobatch", "uniform"], budgets=[0.5]
    )
    runs = {run.path.name: run.cfg for run in plan}
    assert list(runs) == [
        "delta-0.5_seed-0",
        "delta-0.5_seed-1",
        "delta-1_seed-0",
        "delta-1_seed-1",
        "random_delta-0.5_seed-0",
        "random_delta-0.5_seed-1",  # random at δ = 1 trains what hardbatch at δ = 1 does
        "infobatch_seed-0",
        "infobatch_seed-1",
        "uniform_seed-0",
        "uniform_seed-1",
        "uniform_seed-0_budget-0.5",
        "uniform_seed-1_budget-0.5",  # the frontier: uniform at half the epochs
    ]
    assert all(run.path.parent == Path("out") for run in plan)
    assert runs["delta-0.5_seed-1"].params == {"delta": 0.5} and runs["delta-0.5_seed-1"].seed == 1
    assert runs["infobatch_seed-0"].params == {"prune_ratio": 0.3}  # each policy keeps its own hyper-parameters
    assert runs["uniform_seed-0"].params == {} and runs["uniform_seed-0_budget-0.5"].budget == 0.5
    assert runs["random_delta-0.5_seed-0"].tensorboard == str(Path("tb") / "random_delta-0.5_seed-0")
    everything = plan_compare(RunConfig(val_fraction=0.2), [0.5], [0], "out", policies=["all"])
    assert [run.cfg.policy for run in everything] == list(plans.POLICY_NAMES)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"policies": ["nope"]}, "unknown policy 'nope'; valid: hardbatch, "),
        ({"budgets": [0.5], "budget_policies": ["nope"]}, "unknown budget policy 'nope'"),
        ({"deltas": [0.5, 1.5]}, "HardBatch: delta must be in (0, 1], got 1.5"),  # every run checked before any trains
        ({"deltas": [0.5, 0.5]}, "two planned runs would share"),
        ({"deltas": []}, "need at least one delta and one seed"),
    ],
)
def test_a_compare_plan_that_cannot_run_is_refused_whole(kwargs, words):
    values = {"deltas": [0.5], "seeds": [0], **kwargs}
    with pytest.raises(UsageError) as error:
        plan_compare(RunConfig(), values.pop("deltas"), values.pop("seeds"), "out", **values)
    assert words in str(error.value)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_split_the_grid_exactly_once(count, tmp_path):
    bases = [make_config(p) for p in PROTOCOLS]
    plan = plan_sweep(
        bases, ["cifar10", "stl10"], ["resnet18", "mobilenet_v3_small"], [0.2, 0.5, 1.0], [0, 1], tmp_path
    )
    assert len(plan) == 2 * 2 * 2 * 3 * 2
    parts = [shard(plan, i, count) for i in range(count)]
    paths = [r.path for part in parts for r in part]
    assert sorted(paths) == sorted(r.path for r in plan) and len(set(paths)) == len(plan)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert {r.path.relative_to(tmp_path).parts[:3] for r in plan} >= {("stl10", "resnet18", "paper")}
    assert {r.cfg.model for r in plan} == {"resnet18", "mobilenet_v3_small"}


@pytest.mark.parametrize("text", ["1/1", "2/2", "-1/3", "a/b", "3", "0/0"])
def test_bad_shards_are_usage_errors(text):
    with pytest.raises(UsageError, match="I/N"):
        parse_shard(text)


def test_runs_share_a_data_set_unless_their_training_split_depends_on_the_seed(monkeypatch):
    loads = []
    monkeypatch.setattr(plans, "load_dataset", lambda cfg, device: loads.append(cfg.seed) or object())
    cache = DataCache(torch.device("cpu"))
    assert cache(RunConfig(seed=0)) is cache(RunConfig(seed=1, lr=0.5, params={"delta": 0.5}))
    assert cache(RunConfig(seed=0, train_subset=100)) is not cache(RunConfig(seed=1, train_subset=100))
    assert loads == [0, 0, 1]


def test_a_crashed_run_in_a_sweep_is_reported_and_the_rest_go_on(tmp_path, monkeypatch):
    plan = plan_sweep([RunConfig(epochs=1)], ["digits"], ["small_cnn"], [0.5, 1.0], [0], tmp_path)
    original = plans.train_run

    def crash_on_half(cfg, path, **kwargs):
        if cfg.delta == 0.5:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(cfg, path, **kwargs)

    monkeypatch.setattr(plans, "train_run", crash_on_half)
    failures = execute(plan, progress=False, keep_going=True)
    assert [run.cfg.delta for run, _ in failures] == [0.5]
    assert "out of memory" in failures[0][1]
    assert (plan[1].path / "summary.json").exists()


def test_a_plan_is_checked_whole_before_any_run_trains(tmp_path):
    plan = plan_compare(RunConfig(epochs=1), [0.5, 0.001], [0], tmp_path)  # k = 0 for the second run only
    with pytest.raises(UsageError, match=r"floor\(delta \* N\)"):
        check_plan(plan)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["compare", "--model", "lenet", "--deltas", "0.5", "1.0", "--seeds", "0"],
        ["sweep", "--datasets", "digits", "--models", "small_cnn", "lenet", "--deltas", "1.0", "--seeds", "0"],
    ],
)
def test_compare_and_sweep_refuse_a_network_that_does_not_take_the_images_in_one_line(tmp_path, invoke, command):
    out = tmp_path / "grid"
    rc, _, err = invoke(*command, "--epochs", "1", "--out", out, "--no-progress")
    assert rc == 2
    one_line(err, "'lenet'", "1x8x8", "--image-size 16")
    assert not any(out.rglob("summary.json"))  # no run of the grid trained, small_cnn's neither


def test_sharded_sweep_folders_merge_into_one_report(tmp_path, invoke):
    common = [
        "sweep",
        "--datasets",
        "digits",
        "--models",
        "small_cnn",
        "--deltas",
        "0.5",
        "1.0",
        "--seeds",
        "0",
        "1",
        "--out",
        tmp_path,
        *SMALL,
    ]
    for part in ("0/2", "1/2"):
        rc, _, err = invoke(*common, "--shard", part)
        assert rc == 0, err
        assert f"shard {part} done; when every shard is, run: hardbatch report {tmp_path}" in err
    runs = sorted(p.parent.name for p in tmp_path.rglob("summary.json"))
    assert runs == ["delta-0.5_seed-0", "delta-0.5_seed-1", "delta-1_seed-0", "delta-1_seed-1"]
    assert {p.parent.parent for p in tmp_path.rglob("summary.json")} == {tmp_path / "digits" / "small_cnn" / "custom"}
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")}
    rc, _, err = invoke(*common)  # all finished: nothing retrained, the report is written
    assert rc == 0, err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")} == mtimes
    assert "digits / small_cnn" in (tmp_path / "report.md").read_text()
