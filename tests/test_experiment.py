"""Runs end to end: kill-and-resume equality, protocol presets, sweeps and their shards, diverging runs."""

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from hardbatch.cli import main
from hardbatch.config import PROTOCOLS, make_config, RunConfig
from hardbatch.errors import UsageError
from hardbatch.run.experiment import train_run
from hardbatch.run.plan import execute, parse_shard, plan_sweep, shard
from hardbatch.errors import TrainingDiverged

# Settings that exercise every source of randomness and state a checkpoint must carry; on 640 digits in batches of
# 32, δ = 0.3 makes epochs end inside rounds (N = 20, k = 6), and no validation split leaves val_* cells empty.
RESUME_FLAGS = ["--dataset", "digits", "--train-subset", "640", "--epochs", "6", "--delta", "0.3", "--augment",
                "crop_flip", "--shuffle-partition", "--schedule", "cosine", "--seed", "3", "--no-progress"]


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


@pytest.mark.parametrize("kill_after_steps, extra_seconds", [(1, 0.0), (20, 0.05), (40, 0.2), (60, 0.0)])
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_history_and_trace(tmp_path, uninterrupted, fork, invoke, read_rows,
                                                          kill_after_steps, extra_seconds):
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
    assert not (out / "checkpoint.pt").exists()


def test_checkpoint_loads_with_weights_only(tmp_path, interrupt):
    cfg = RunConfig(epochs=3, delta=0.5, augment="crop_flip", schedule="cosine", train_subset=320)
    interrupt(cfg, tmp_path / "run", 1)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert set(state) == {"epoch", "model", "optimizer", "scheduler", "sampler", "rng", "rng_ranks", "cost", "test_per_class", "holdout_cost", "irreducible_model"}
    n = state["sampler"]["visits"].numel()
    assert state["sampler"]["steps"] == n and state["sampler"]["policy"]["recorded"].all()
    summary = train_run(cfg, tmp_path / "run", resume=True, progress=False)
    assert summary["optimizer_steps"] == 3 * n


@pytest.mark.parametrize("model, val_fraction", [("mobilenet_v3_small", 0.0), ("mobilenet_v3_small", 0.1),
                                                 ("small_cnn", 0.0)])
def test_resume_is_exact_with_dropout_mid_round_epochs_and_no_validation(tmp_path, interrupt, read_rows, model,
                                                                         val_fraction):
    """δ = 0.3 makes epochs end inside a round (160 samples in batches of 8: N = 20, k = 6; epoch 2 ends 2 steps into round 4);
    MobileNetV3 has dropout."""
    cfg = RunConfig(model=model, stem="small", epochs=3, delta=0.3, val_fraction=val_fraction, seed=5,
                    train_subset=160, batch_size=8)
    straight = tmp_path / "straight"
    train_run(cfg, straight, progress=False)
    interrupt(cfg, tmp_path / "resumed", 2)
    train_run(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert (tmp_path / "resumed" / "trace.csv").read_text() == (straight / "trace.csv").read_text()
    resumed = read_rows(tmp_path / "resumed" / "history.csv", timing=False)
    assert resumed == read_rows(straight / "history.csv", timing=False)
    if val_fraction == 0:
        assert "nan" not in (tmp_path / "resumed" / "history.csv").read_text()


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_protocol_presets_resolve_and_flags_override(name, tmp_path):
    cfg = make_config(name)
    assert cfg.protocol == name
    for key, value in PROTOCOLS[name].items():
        assert getattr(cfg, key) == value
    assert make_config(name, lr=0.123, batch_size=7).lr == 0.123
    assert make_config(name, lr=0.123, batch_size=7).batch_size == 7


def test_paper_protocol_matches_the_released_code():
    from hardbatch.config import resolve_partition

    cfg = make_config("paper", dataset="cifar10")
    assert (cfg.image_size, cfg.normalize, cfg.augment) == (128, "imagenet", "none")
    assert resolve_partition(cfg).shuffle_partition is False  # the released code's batch order, for CIFAR
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.schedule) == (0.005, 0.9, 0.0, False, "constant")
    assert (cfg.batch_size, cfg.epochs) == (512, 100)


def test_modern_protocol_is_the_strong_recipe():
    cfg = make_config("modern")
    assert (cfg.augment, cfg.shuffle_partition, cfg.nesterov, cfg.weight_decay, cfg.schedule) == (
        "crop_flip", True, True, 5e-4, "cosine")
    assert (cfg.batch_size, cfg.eval_mode) == (128, "eval")


def test_unknown_protocol_is_a_usage_error():
    with pytest.raises(UsageError, match="valid: paper, modern"):
        make_config("fast")


def test_cli_saves_the_resolved_protocol_config(tmp_path, capsys):
    out = tmp_path / "run"
    # The paper preset with the flags a CPU test can afford; the rest comes from the preset.
    assert main(["train", "--protocol", "paper", "--image-size", "16", "--batch-size", "64", "--epochs", "1",
                 "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["protocol"] == "paper" and saved["image_size"] == 16 and saved["batch_size"] == 64
    assert saved["lr"] == 0.005 and saved["normalize"] == "imagenet" and saved["precision"] == "fp32"
    assert saved["channels_last"] is False


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_split_the_grid_exactly_once(count, tmp_path):
    bases = [make_config(p) for p in PROTOCOLS]
    plan = plan_sweep(bases, ["cifar10", "stl10"], ["resnet18", "mobilenet_v3_small"], [0.2, 0.5, 1.0], [0, 1], tmp_path)
    assert len(plan) == 2 * 2 * 2 * 3 * 2
    parts = [shard(plan, i, count) for i in range(count)]
    paths = [r.path for part in parts for r in part]
    assert sorted(paths) == sorted(r.path for r in plan) and len(set(paths)) == len(plan)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert {r.path.relative_to(tmp_path).parts[:3] for r in plan} >= {("stl10", "resnet18", "paper")}


@pytest.mark.parametrize("text", ["1/1", "2/2", "-1/3", "a/b", "3", "0/0"])
def test_bad_shards_are_usage_errors(text):
    with pytest.raises(UsageError, match="I/N"):
        parse_shard(text)


def test_sharded_sweep_folders_merge_into_one_report(tmp_path, capsys):
    common = ["sweep", "--datasets", "digits", "--models", "small_cnn", "--deltas", "0.5", "1.0", "--seeds", "0", "1",
              "--epochs", "2", "--train-subset", "320", "--out", str(tmp_path), "--no-progress"]
    assert main(common + ["--shard", "0/2"]) == 0
    assert main(common + ["--shard", "1/2"]) == 0
    runs = sorted(p.parent.name for p in tmp_path.rglob("summary.json"))
    assert runs == ["delta-0.5_seed-0", "delta-0.5_seed-1", "delta-1_seed-0", "delta-1_seed-1"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")}
    assert main(common) == 0  # all finished: nothing retrained, the report is written
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")} == mtimes
    assert "digits / small_cnn" in (tmp_path / "report.md").read_text()


def test_sweep_rejects_bad_input_before_training(tmp_path, capsys):
    code = main(["sweep", "--datasets", "digits", "nope", "--models", "small_cnn", "--out", str(tmp_path / "s"),
                 "--no-progress"])
    assert code == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_diverging_training_stops_with_a_clear_error(tmp_path):
    """A non-finite training loss raises TrainingDiverged instead of ranking NaNs."""
    from hardbatch.data import load_dataset
    from hardbatch.selection import HardBatchSampler
    from hardbatch.training import fit

    data = load_dataset(RunConfig())
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    nn.init.constant_(model[1].weight, float("nan"))
    sampler = HardBatchSampler(len(data.train), 32, delta=0.5, epochs=2)
    with pytest.raises(TrainingDiverged, match="step 1;"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data.loader(data.train, sampler), sampler,
            {"test": data.eval_loader(data.test)}, torch.device("cpu"), train_transform=data.train_transform)


def test_crashed_run_in_a_sweep_is_reported_and_the_rest_go_on(tmp_path, monkeypatch):
    import hardbatch.run.plan as plans

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


def test_gpu_speed_options_run_on_cpu_and_are_recorded(tmp_path, capsys):
    """bf16 autocast, channels-last and the device-resident data path take the same code path on CPU."""
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--delta", "0.5", "--precision", "bf16", "--channels-last",
                 "--data-on-device", "--augment", "crop_flip", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["precision"], saved["channels_last"], saved["data_on_device"]) == ("bf16", True, True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_test_acc"] > 0.5  # bf16 still learns the digits


def test_auto_precision_resolves_to_fp32_on_cpu():
    from hardbatch.run.experiment import resolve

    cfg = resolve(RunConfig(), torch.device("cpu"))
    assert (cfg.precision, cfg.channels_last) == ("fp32", False)
    cfg = resolve(RunConfig(), torch.device("cuda"))
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)


# ---------------------------------------------------------------- issue 17: damaged checkpoints, resume


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


RESUMABLE = RunConfig(epochs=3, delta=0.5, batch_size=64, seed=3, train_subset=640)
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
def test_a_damaged_checkpoint_is_one_line_and_touches_nothing(tmp_path, interrupt, capsys, how):
    out = tmp_path / "run"
    interrupt(RESUMABLE, out, 1)
    _damage(out / "checkpoint.pt", how)
    before = _files(out)
    capsys.readouterr()
    assert main(["train", *RESUMABLE_FLAGS, "--resume", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert str(out / "checkpoint.pt") in err[0] and "delete" in err[0] and "--overwrite" in err[0]
    assert "weights_only" not in err[0]  # torch's advice to load it unsafely
    assert _files(out) == before
    if how == "truncated":  # the advice works: without the checkpoint, --resume trains the run from its start
        (out / "checkpoint.pt").unlink()
        assert main(["train", *RESUMABLE_FLAGS, "--resume", "--out", str(out), "--no-progress"]) == 0
        assert json.loads((out / "summary.json").read_text())["epochs"] == 3


def test_resume_with_only_out_continues_with_the_saved_settings(tmp_path, interrupt, capsys, read_rows):
    straight, out = tmp_path / "straight", tmp_path / "run"
    train_run(RESUMABLE, straight, progress=False)
    interrupt(RESUMABLE, out, 1)
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert (out / "trace.csv").read_text() == (straight / "trace.csv").read_text()
    assert read_rows(out / "history.csv", timing=False) == read_rows(straight / "history.csv", timing=False)


def test_resume_with_a_conflicting_flag_names_both_values_and_never_suggests_overwrite(tmp_path, interrupt, capsys):
    out = tmp_path / "run"
    interrupt(RESUMABLE, out, 1)
    before = _files(out)
    capsys.readouterr()
    assert main(["train", "--resume", "--delta", "1.0", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "delta saved 0.5 but given 1.0" in err[0] and "--overwrite" not in err[0], err
    assert "drop" in err[0] and "other settings" in err[0] and "epochs" not in err[0]  # only what was given differs
    assert _files(out) == before
    # the saved value, given again, is no conflict
    assert main(["train", "--resume", "--delta", "0.5", "--epochs", "3", "--out", str(out), "--no-progress"]) == 0


def test_sigterm_ends_with_one_line_and_resume_matches_the_uninterrupted_run(tmp_path, uninterrupted, console, invoke,
                                                                            read_rows):
    out = tmp_path / "run"
    proc = console("train", *RESUME_FLAGS, "--out", out)
    deadline = time.time() + 240
    # Epoch 1 ends with its trace, history and then its checkpoint written: wait for all three.
    while (_trace_lines(out) < 20 or not (out / "checkpoint.pt").exists()) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # inside the second epoch
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = proc.stderr.read().strip().splitlines()
    assert len(err) == 1 and "terminated" in err[0] and "--resume" in err[0] and "Traceback" not in err[0], err
    assert not (out / "summary.json").exists() and (out / "checkpoint.pt").exists()
    rc, _, err = invoke("train", "--resume", "--out", out, "--no-progress")  # the saved settings: no other flag
    assert rc == 0, err
    assert read_rows(out / "history.csv", timing=False) == read_rows(uninterrupted / "history.csv", timing=False)
    assert (out / "trace.csv").read_text() == (uninterrupted / "trace.csv").read_text()
