"""hardbatch.run.experiment: one run into its folder (config.json format 2 with the resolved configuration and the
machine, history.csv, trace.csv, summary.json), resumed exactly, and the run options that take the same path on CPU."""

from __future__ import annotations

import json
import platform
import re

import numpy
import pytest
import torch

import hardbatch
from hardbatch.config import RunConfig, make_config
from hardbatch.metrics import epochs_to_plateau, epochs_to_target
from hardbatch.policies import defaults
from hardbatch.records import RUN_FORMAT
from hardbatch.run.experiment import train_run
from hardbatch.run.machine import cpu_model

N_TRAIN = 1437  # digits training split (80 % of 1,797)
# conftest.py's finished train: δ 0.5, 2 epochs of N = 1437 // 64 = 22 steps, k = 11 batches per round.
B, E, DELTA = 64, 2, 0.5
N = N_TRAIN // B
K = int(DELTA * N)


@pytest.fixture(scope="module")
def trained(finished_train):
    assert finished_train.args[:8] == ("--delta", "0.5", "--epochs", "2", "--batch-size", "64", "--seed", "0")
    return finished_train.out


def test_config_json_holds_the_format_the_resolved_config_and_the_machine(trained):
    saved = json.loads((trained / "config.json").read_text())
    assert saved["format"] == RUN_FORMAT == 2
    cfg = saved["config"]
    assert (cfg["dataset"], cfg["model"], cfg["policy"]) == ("digits", "small_cnn", "hardbatch")  # the data set's model
    assert cfg["params"] == {**defaults("hardbatch"), "delta": DELTA}  # every hyper-parameter of the policy
    assert "delta" not in cfg and "cost" not in cfg
    assert (cfg["epochs"], cfg["batch_size"], cfg["seed"]) == (E, B, 0)
    assert cfg["eval_mode"] == "eval" and cfg["shuffle_partition"] is True  # "auto" resolved for digits
    assert cfg["precision"] == "fp32" and cfg["channels_last"] is False  # "auto" resolved for the CPU
    assert RunConfig.from_dict(cfg).delta == DELTA
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
    assert saved["world_size"] == 1
    # whether the source tree was modified, when it is a git checkout
    assert (saved["git_commit"] is None) == (saved["git_dirty"] is None)
    if saved["git_commit"] is not None:
        assert re.fullmatch("[0-9a-f]{40}", saved["git_commit"]) and isinstance(saved["git_dirty"], bool)


def test_history_has_one_row_per_epoch(trained, read_rows):
    rows = read_rows(trained / "history.csv")
    for column in (
        "epoch",
        "step",
        "train_loss",
        "test_loss",
        "test_acc",
        "test_top5",
        "train_seconds",
        "eval_seconds",
        "samples_loaded",
        "samples_backprop",
        "choose_seconds",
        "cpu_seconds",
    ):
        assert column in rows[0], column
    assert [int(r["epoch"]) for r in rows] == list(range(1, E + 1))
    assert [int(r["step"]) for r in rows] == [e * N for e in range(1, E + 1)]
    for r in rows:
        acc, top5 = float(r["test_acc"]), float(r["test_top5"])
        assert 0.0 <= acc <= top5 <= 1.0
        assert float(r["train_loss"]) > 0 and float(r["test_loss"]) > 0
        assert float(r["train_seconds"]) > 0 and float(r["eval_seconds"]) > 0
        assert int(r["samples_loaded"]) == int(r["samples_backprop"]) == N * B  # the paper's rule trains what it loads
    # Something was learned in two epochs of a 10-class problem.
    assert float(rows[-1]["test_acc"]) > 0.3


def test_trace_follows_the_rule(trained, read_rows):
    rows = read_rows(trained / "trace.csv")
    trace = [(int(r["step"]), int(r["round"]), int(r["batch"]), float(r["loss"])) for r in rows]
    assert [t[0] for t in trace] == list(range(1, E * N + 1))  # one row per optimizer step
    assert all(0 <= t[2] < N for t in trace)
    warmup = trace[:N]
    assert all(t[1] == 0 for t in warmup)
    assert [t[2] for t in warmup] == list(range(N))  # warm-up: every batch once, in index order
    stored = {b: loss for _, _, b, loss in warmup}
    i, expected_round = N, 1
    while i < len(trace):
        chunk = trace[i : i + K]
        assert all(t[1] == expected_round for t in chunk)
        chosen = sorted(sorted(range(N), key=lambda b: -stored[b])[:K])  # top-k stored losses, trained by index
        assert [t[2] for t in chunk] == chosen[: len(chunk)]
        for _, _, b, loss in chunk:
            stored[b] = loss
        i += K
        expected_round += 1
    # history's train_loss is the mean of that epoch's step losses
    history = read_rows(trained / "history.csv")
    for e, row in enumerate(history):
        losses = [t[3] for t in trace[e * N : (e + 1) * N]]
        assert float(row["train_loss"]) == pytest.approx(sum(losses) / N, rel=1e-5)


def test_summary_is_consistent_with_history_and_trace(trained, read_rows):
    s = json.loads((trained / "summary.json").read_text())
    history = read_rows(trained / "history.csv")
    trace = read_rows(trained / "trace.csv")
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
    assert s["cost"]["samples_backprop"] == E * N * B and s["cost"]["optimizer_steps"] == E * N
    visits = s["batch_visits"]
    assert len(visits) == N and sum(visits) == s["optimizer_steps"]
    assert visits == [sum(1 for r in trace if int(r["batch"]) == b) for b in range(N)]
    assert min(visits) >= 1  # the warm-up trains every batch
    assert not (trained / "checkpoint.pt").exists()  # removed once the run finished


@pytest.mark.parametrize(
    "model, val_fraction", [("mobilenet_v3_small", 0.0), ("mobilenet_v3_small", 0.1), ("small_cnn", 0.0)]
)
def test_resume_is_exact_with_dropout_mid_round_epochs_and_no_validation(
    tmp_path, interrupt, read_rows, model, val_fraction
):
    """δ = 0.3 makes epochs end inside a round (160 samples in batches of 8: N = 20, k = 6; epoch 2 ends 2 steps into
    round 4); MobileNetV3 has dropout."""
    cfg = RunConfig(
        model=model,
        stem="small",
        epochs=3,
        params={"delta": 0.3},
        val_fraction=val_fraction,
        seed=5,
        train_subset=160,
        batch_size=8,
    )
    straight = tmp_path / "straight"
    train_run(cfg, straight, progress=False)
    interrupt(cfg, tmp_path / "resumed", 2)
    train_run(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert (tmp_path / "resumed" / "trace.csv").read_text() == (straight / "trace.csv").read_text()
    resumed = read_rows(tmp_path / "resumed" / "history.csv", timing=False)
    assert resumed == read_rows(straight / "history.csv", timing=False)
    if val_fraction == 0:
        assert "nan" not in (tmp_path / "resumed" / "history.csv").read_text()


def test_gpu_speed_options_run_on_cpu_and_are_recorded(tmp_path):
    """bf16 autocast, channels-last and the device-resident data path take the same code path on CPU."""
    out = tmp_path / "run"
    summary = train_run(
        RunConfig(
            epochs=2,
            params={"delta": 0.5},
            precision="bf16",
            channels_last=True,
            data_on_device=True,
            augment="crop_flip",
        ),
        out,
        progress=False,
    )
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["precision"], saved["channels_last"], saved["data_on_device"]) == ("bf16", True, True)
    assert summary["best_test_acc"] > 0.5  # bf16 still learns the digits


def test_mlp_trains_under_the_modern_protocol_and_its_small_stem(tmp_path):
    out = tmp_path / "run"
    train_run(make_config("modern", model="mlp", epochs=1, train_subset=256), out, progress=False)
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["stem"], saved["model"], saved["protocol"]) == ("small", "mlp", "modern")


def test_a_policy_s_hyper_parameters_are_saved_complete_and_read_back_as_given(tmp_path):
    out = tmp_path / "run"
    cfg = RunConfig(policy="infobatch", params={"prune_ratio": 0.3}, epochs=3, train_subset=320)
    summary = train_run(cfg, out, progress=False)
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["params"] == {**defaults("infobatch"), "prune_ratio": 0.3}
    assert summary["optimizer_steps"] < 3 * 320 // 32  # a pruned epoch is shorter
    # the same run asked again (as given, incomplete) is that finished run: reused, not retrained
    mtime = (out / "summary.json").stat().st_mtime_ns
    assert train_run(cfg, out, resume=True, progress=False) == summary
    assert (out / "summary.json").stat().st_mtime_ns == mtime
