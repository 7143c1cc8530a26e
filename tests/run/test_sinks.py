"""hardbatch.run.sinks: what a run does with each finished epoch besides its files: how progress names a run, a line
per epoch off a terminal, and the one warning when the training loss explodes."""

from __future__ import annotations

from hardbatch.config import RunConfig
from hardbatch.run.checks import prepare
from hardbatch.run.sinks import EpochLines, describe


def test_progress_names_a_run_by_its_model_and_by_delta_only_when_its_policy_takes_one():
    # progress is given resolved configurations: the model a run trains, the data set's own when none was given
    named = describe(prepare(RunConfig(policy="random", params={"delta": 0.5}, seed=3))[0])
    assert named == "digits/small_cnn random δ=0.5 seed=3"
    assert (
        describe(prepare(RunConfig(policy="rho-loss", val_fraction=0.1, model="mlp"))[0])
        == "digits/mlp rho-loss seed=0"
    )
    assert describe(RunConfig(policy="uniform"), "[2/9] mine") == "[2/9] mine"


def test_off_a_terminal_long_runs_print_a_line_per_epoch(invoke, tmp_path, monkeypatch):
    monkeypatch.setattr(EpochLines, "LINE_SECONDS", 0.0)  # every epoch counts as long
    rc, _, err = invoke("train", "--epochs", "2", "--batch-size", "128", "--device", "cpu", "--out", tmp_path / "r")
    assert rc == 0, err
    lines = err.splitlines()
    assert [line.split(": ", 1)[1].split(",")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], err
    assert lines[0].startswith("digits/small_cnn hardbatch δ=1 seed=0: epoch 1/2, train loss ")
    rc, _, err = invoke(
        "train", "--epochs", "2", "--batch-size", "128", "--device", "cpu", "--no-progress", "--out", tmp_path / "quiet"
    )
    assert rc == 0 and err == ""


def test_exploding_loss_warns_once_naming_the_learning_rate(tmp_path, invoke):
    rc, _, err = invoke("train", "--epochs", "2", "--lr", "1e6", "--out", tmp_path / "boom", "--no-progress")
    assert rc == 0, err
    line = err.splitlines()
    assert len(line) == 1 and "loss exploded" in line[0] and "--lr" in line[0] and "1e+06" in line[0], err
    rc, _, err = invoke("train", "--epochs", "2", "--out", tmp_path / "calm", "--no-progress")
    assert rc == 0 and err == ""
