"""The ``hardbatch`` command line: flags generated from the declarations, --help, one-line errors (exit 2) naming the
flag, resume and overwrite, and the train, compare, sweep and report commands end to end on the bundled digits."""

from __future__ import annotations

import json
import re
import shutil
import struct
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import one_line, snapshot

import hardbatch.run.experiment as experiment
from hardbatch.cli import build_parser, config_from_args
from hardbatch.config import RunConfig
from hardbatch.data import DATASETS
from hardbatch.models import MODELS
from hardbatch.params import flag
from hardbatch.policies import POLICIES
from hardbatch.policies.registry import shared_fields
from hardbatch.run.experiment import train_run

N_TRAIN = 1437  # digits training split (80 % of 1,797)
FAST = ["--device", "cpu", "--no-progress"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("summary.json"))


def copy_of(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)  # copy2: modification times are kept
    return dst


@pytest.fixture(scope="module")
def trained(finished_train):
    """conftest.py's finished ``hardbatch train`` (never modified: tests copy it) and its output."""
    return finished_train.out, finished_train.stdout


@pytest.fixture(scope="module")
def compared(finished_compare):
    """conftest.py's finished ``hardbatch compare`` (never modified: tests copy it) and its output."""
    return finished_compare.out, finished_compare.stdout


TRAIN_ARGS = ["--delta", "0.5", "--epochs", "2", "--batch-size", "64", "--seed", "0", *FAST]


def test_the_shared_runs_are_the_ones_these_tests_read(finished_train, finished_compare):
    assert list(finished_train.args) == TRAIN_ARGS
    assert list(finished_compare.args) == COMPARE_ARGS


# ---------------------------------------------------------------- the parser, from the declarations


def help_of(invoke, command: str) -> str:
    rc, out, err = invoke(command, "--help")
    assert rc == 0 and err == ""
    return out


def sections(text: str) -> dict[str, str]:
    """--help's sections (``options``, ``data and model``, ...) by title, each as its text."""
    found, title = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            title = line[:-1]
            found[title] = ""
        elif title is not None:
            found[title] += line + "\n"
    return found


def entry(section: str, option: str) -> str:
    """The help entry of ``option`` in a section, on one line (argparse wraps it)."""
    start = re.search(rf"^  {re.escape(option)}\b", section, re.MULTILINE)
    assert start, f"no {option} here"
    rest = section[start.start() :]
    following = re.search(r"^  -", rest[2:], re.MULTILINE)
    return " ".join(rest[: following.start() + 2 if following else None].split())


def test_every_run_setting_and_policy_hyper_parameter_has_its_flag_in_its_group(invoke):
    text = sections(help_of(invoke, "train"))
    for f in fields(RunConfig):
        if f.metadata["cli"]:
            assert f.metadata["help"].split()[0] in entry(text[f.metadata["group"]], flag(f.name)) or f.name in (
                "dataset",
                "model",
                "policy",
            ), f.name  # those three list their registry's names
    for name, (_, users) in shared_fields().items():
        assert f"[{', '.join(users)}]" in entry(text["selection"], flag(name)), name
    # on/off flags both ways; the choices and placeholders declared, never argparse's DEST
    assert entry(text["optimisation"], "--nesterov").startswith("--nesterov, --no-nesterov Nesterov momentum")
    assert entry(text["evaluation and hardware"], "--eval-mode").startswith("--eval-mode {eval,train}")
    for option, placeholder in (("--lr", "LR"), ("--smoothing", "S"), ("--patience", "P"), ("--select-fraction", "F")):
        assert entry(text["selection" if option != "--lr" else "optimisation"], option).startswith(
            f"{option} {placeholder} "
        ), option
    assert "POLICY_PARAM" not in help_of(invoke, "train")


def test_compare_and_sweep_take_lists_where_train_takes_one_value(invoke):
    compare, sweep = help_of(invoke, "compare"), help_of(invoke, "sweep")
    for text in (compare, sweep):
        assert "--deltas" in text and "--seeds" in text and "--budgets" in text
        assert "--delta " not in text and "--seed " not in text  # set by --deltas and --seeds instead
        assert "--prune-ratio R" in text  # the policies' own flags
    assert "--datasets" in sweep and "--models" in sweep and "--protocols" in sweep and "--shard" in sweep
    assert "--policies" in compare and "(default 1: runs of a comparison are timed alike" in compare


def test_flags_given_become_the_config_and_the_rest_keep_the_defaults():
    args = build_parser().parse_args(
        [
            "train",
            "--out",
            "x",
            "--policy",
            "infobatch",
            "--prune-ratio",
            "0.3",
            "--lr",
            "0.1",
            "--no-nesterov",
            "--protocol",
            "modern",
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.policy, cfg.params, cfg.lr, cfg.nesterov, cfg.protocol) == (
        "infobatch",
        {"prune_ratio": 0.3},
        0.1,
        False,
        "modern",
    )
    assert (cfg.epochs, cfg.schedule, cfg.augment) == (100, "cosine", "crop_flip")  # the preset's
    bare = config_from_args(build_parser().parse_args(["train", "--out", "x"]))
    assert bare == RunConfig()


def test_version_and_help_exit_0(invoke):
    rc, out, _ = invoke("--version")
    assert rc == 0 and out.startswith("hardbatch ")
    for command in ("train", "compare", "sweep", "report"):
        assert help_of(invoke, command).startswith(f"usage: hardbatch {command}")


# ---------------------------------------------------------------- train


def test_train_prints_a_summary_line(trained):
    out, stdout = trained
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['optimizer_steps']} steps" in stdout
    assert str(out) in stdout
    assert f"{100 * summary['final_test_acc']:.2f}%" in stdout


def test_train_in_eval_mode_train_saves_it_and_prints_the_result(tmp_path, invoke, read_rows):
    """--eval-mode train saved in config.json (the console entry itself: test_console_entry_exits_2_with_one_line)."""
    out = tmp_path / "run"
    rc, stdout, err = invoke(
        "train", "--epochs", "1", "--batch-size", "128", "--eval-mode", "train", *FAST, "--out", out
    )
    assert rc == 0, err
    assert "final test top-1" in stdout
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["eval_mode"] == "train"
    s = json.loads((out / "summary.json").read_text())
    assert s["optimizer_steps"] == N_TRAIN // 128 and len(read_rows(out / "history.csv")) == 1


def test_train_saves_the_resolved_protocol_config(tmp_path, invoke):
    out = tmp_path / "run"
    # The paper preset with the flags a CPU test can afford; the rest comes from the preset.
    rc, _, err = invoke(
        "train",
        "--protocol",
        "paper",
        "--image-size",
        "16",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--out",
        out,
        "--no-progress",
    )
    assert rc == 0, err
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["protocol"] == "paper" and saved["image_size"] == 16 and saved["batch_size"] == 64
    assert saved["lr"] == 0.005 and saved["normalize"] == "imagenet" and saved["precision"] == "fp32"
    assert saved["channels_last"] is False


def test_console_entry_exits_2_with_one_line(tmp_path, console):
    """The real console entry (``python -m hardbatch``): a usage error is one line on stderr and exit status 2."""
    proc = console("train", "--delta", "0.001", *FAST, "--out", tmp_path / "run")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2
    one_line(stderr, "error", "delta")
    assert stdout == ""
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_ends_with_one_line_and_status_1(tmp_path, invoke, monkeypatch):
    """A non-finite training loss stops the run (TrainingDiverged) at its first step instead of ranking NaNs."""
    build = experiment.build_seeded

    def nan_weights(*args, **kwargs):
        model = build(*args, **kwargs)
        torch.nn.init.constant_(next(model.parameters()), float("nan"))
        return model

    monkeypatch.setattr(experiment, "build_seeded", nan_weights)
    rc, _, err = invoke("train", "--epochs", "2", "--train-subset", "320", *FAST, "--out", tmp_path / "run")
    assert rc == 1
    one_line(err, "hardbatch train: training diverged:", "step 1;", "lower learning rate")
    assert not (tmp_path / "run" / "summary.json").exists()


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


BAD_TRAIN = [  # a bad value names its flag (BadValue.as_flag); other errors name what is wrong and the valid values
    (["--delta", "0"], ["--delta must be in (0, 1]"]),
    (["--delta", "-0.5"], ["--delta must be in (0, 1]"]),
    (["--delta", "1.5"], ["--delta must be in (0, 1]", "1.5"]),
    (["--delta", "0.001"], ["floor(delta * N)", "0.001"]),  # floor(0.001 * 11) = 0 batches per round
    (["--epochs", "0"], ["--epochs must be an integer >= 1"]),
    (["--epochs", "-1"], ["--epochs must be an integer >= 1", "-1"]),
    (["--batch-size", "0"], ["--batch-size must be an integer >= 1"]),
    (["--batch-size", "100000"], ["batch size 100000", "larger than the training set"]),
    (["--lr", "nan"], ["--lr must be a finite number > 0, got nan"]),
    (["--weight-decay", "nan"], ["--weight-decay must be a finite number >= 0, got nan"]),
    (["--seed", "100000000000000000000000"], ["--seed must be an integer in [0, 2147483647]"]),
    (["--seed", "-1"], ["--seed must be an integer in [0, 2147483647], got -1"]),
    (["--prune-ratio", "2"], ["--prune-ratio applies to policy infobatch", "not to hardbatch"]),
    (["--policy", "infobatch", "--prune-ratio", "2"], ["--prune-ratio must be in [0, 1), got 2.0"]),
    (["--policy", "uniform", "--beta", "2"], ["--beta applies to policy selective-backprop, not to uniform"]),
    (
        ["--policy", "uniform", "--delta", "1"],
        ["--delta applies to", "not to uniform (uniform takes no hyper-parameter)"],
    ),
    (["--policy", "rho-loss"], ["policy 'rho-loss'", "validation split", "set --val-fraction (e.g. 0.1)"]),
    (["--val-fraction", "0.001"], ["--val-fraction 0.001 holds out no samples"]),
    (["--dataset", "nope"], ["nope", *DATASETS]),
    (["--model", "nope"], ["nope", *MODELS]),
    (["--model", "lenet"], ["'lenet'", "1x8x8", "--image-size 16 or larger"]),
    (["--policy", "nope"], ["nope", *POLICIES]),
    (["--eval-mode", "nope"], ["nope", "eval", "train"]),
    (["--device", "meta"], ["unsupported device 'meta'"]),
    (["--device", "cuda:7"], ["cuda"]),
    (["--device", "tpu"], ["unknown device 'tpu'"]),
    (["--mnist1d-samples", "100"], ["--mnist1d-samples applies to dataset mnist1d only"]),
]


@pytest.mark.parametrize("args,words", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_train_bad_input_exits_2_with_one_line_and_writes_nothing(invoke, tmp_path, args, words):
    (tmp_path / "afile").write_text("keep")
    before = snapshot(tmp_path)
    rc, out, err = invoke("train", "--epochs", "1", "--batch-size", "128", *FAST, "--out", tmp_path / "run", *args)
    assert rc == 2
    one_line(err, "hardbatch train: error:", *words)
    assert out == ""
    assert snapshot(tmp_path) == before  # in particular no run directory was created


def test_train_unwritable_output_directory(invoke, tmp_path):
    (tmp_path / "afile").write_text("keep")  # a regular file: nothing can be created below it, even as root
    before = snapshot(tmp_path)
    rc, _, err = invoke("train", "--epochs", "1", "--batch-size", "128", *FAST, "--out", tmp_path / "afile" / "run")
    assert rc == 2
    one_line(err, "error", "afile")
    assert snapshot(tmp_path) == before


BAD_COMPARE = [
    (["--deltas", "0.5", "1.5"], ["--delta must be in (0, 1]", "1.5"]),
    (["--deltas", "0", "1.0"], ["--delta must be in (0, 1]"]),
    (["--deltas", "1.0", "0.001"], ["floor(delta * N)", "0.001"]),  # k = 0 for the second delta only
    (["--deltas", "0.5", "1.0", "--model", "nope"], ["nope", *MODELS]),
    (["--deltas", "0.5", "1.0", "--dataset", "nope"], ["nope", *DATASETS]),
    (["--deltas", "0.5", "1.0", "--policy", "nope"], ["nope", *POLICIES]),
    (["--policies", "hardbatch", "infobatch", "--prune-ratio", "1.5"], ["--prune-ratio must be in [0, 1), got 1.5"]),
    (["--policies", "hardbatch", "--prune-ratio", "0.5"], ["--prune-ratio applies to policy infobatch"]),
    (
        ["--policies", "uniform", "random", "--prune-ratio", "0.5"],
        ["not to uniform, random", "uniform takes no hyper-parameter; random takes --delta"],
    ),
    (["--policies", "uniform,random"], ["unknown policy 'uniform,random' (names are separated by spaces)", *POLICIES]),
    (["--policies", "uniform,random", "--prune-ratio", "0.5"], ["unknown policy 'uniform,random'"]),
]


@pytest.mark.parametrize("args,words", BAD_COMPARE, ids=[" ".join(a) for a, _ in BAD_COMPARE])
def test_compare_bad_input_fails_before_any_run_directory(invoke, tmp_path, args, words):
    rc, out, err = invoke(
        "compare", "--seeds", "0", "1", "--epochs", "1", "--batch-size", "128", *FAST, "--out", tmp_path / "cmp", *args
    )
    assert rc == 2
    one_line(err, "hardbatch compare: error:", *words)
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # neither the output directory nor any run directory


# ---------------------------------------------------------------- resume and overwrite


def test_train_refuses_an_existing_run_without_resume_or_overwrite(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, _, err = invoke("train", *TRAIN_ARGS, "--out", run)
    assert rc == 2
    one_line(err, "error", "--resume", "--overwrite")
    assert snapshot(run) == before  # byte for byte, and not even rewritten


def test_train_resume_and_overwrite_together_are_refused(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, _, err = invoke("train", *TRAIN_ARGS, "--resume", "--overwrite", "--out", run)
    assert rc == 2
    one_line(err, "error", "--resume", "--overwrite")
    assert snapshot(run) == before


def test_resume_of_a_finished_run_changes_nothing(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, out, err = invoke("train", *TRAIN_ARGS, "--resume", "--out", run)
    assert rc == 0, err
    assert snapshot(run) == before
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['optimizer_steps']} steps" in out


def test_resume_with_other_settings_is_refused(invoke, trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, _, err = invoke("train", *TRAIN_ARGS, "--epochs", "3", "--resume", "--out", run)
    assert rc == 2
    one_line(err, "error", "epochs saved 2 but given 3")
    assert snapshot(run) == before


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path, invoke):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "history.csv").write_text("precious\n")
    rc, _, err = invoke("train", "--resume", "--out", out, "--epochs", "2", "--train-subset", "320", "--no-progress")
    assert rc == 2
    one_line(err, "not a hardbatch run directory")
    assert (out / "history.csv").read_text() == "precious\n"


RESUMABLE = RunConfig(epochs=3, params={"delta": 0.5}, batch_size=64, seed=3, train_subset=640)


def test_resume_with_only_out_continues_with_the_saved_settings(tmp_path, interrupt, invoke, read_rows):
    straight, out = tmp_path / "straight", tmp_path / "run"
    train_run(RESUMABLE, straight, progress=False)
    interrupt(RESUMABLE, out, 1)
    rc, _, err = invoke("train", "--resume", "--out", out, "--no-progress")
    assert rc == 0, err
    assert (out / "trace.csv").read_text() == (straight / "trace.csv").read_text()
    assert read_rows(out / "history.csv", timing=False) == read_rows(straight / "history.csv", timing=False)


def test_resume_with_a_conflicting_flag_names_both_values_and_never_suggests_overwrite(tmp_path, interrupt, invoke):
    out = tmp_path / "run"
    interrupt(RESUMABLE, out, 1)
    before = snapshot(out)
    rc, _, err = invoke("train", "--resume", "--delta", "1.0", "--out", out, "--no-progress")
    assert rc == 2
    line = one_line(err, "delta saved 0.5 but given 1.0", "drop", "other settings")
    assert "--overwrite" not in line and "epochs" not in line  # only what was given differs
    assert snapshot(out) == before
    # the saved value, given again, is no conflict
    rc, _, err = invoke("train", "--resume", "--delta", "0.5", "--epochs", "3", "--out", out, "--no-progress")
    assert rc == 0, err


def test_overwrite_replaces_the_run(invoke, trained, tmp_path, read_rows):
    run = copy_of(trained[0], tmp_path)
    rc, _, err = invoke(
        "train",
        "--delta",
        "1.0",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--seed",
        "3",
        *FAST,
        "--overwrite",
        "--out",
        run,
    )
    assert rc == 0, err
    n = N_TRAIN // 128
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert (cfg["params"]["delta"], cfg["epochs"], cfg["batch_size"], cfg["seed"]) == (1.0, 1, 128, 3)
    assert len(read_rows(run / "history.csv")) == 1
    trace = read_rows(run / "trace.csv")
    assert [int(r["step"]) for r in trace] == list(range(1, n + 1))  # nothing left of the old trace
    s = json.loads((run / "summary.json").read_text())
    assert s["optimizer_steps"] == n and s["batch_visits"] == [1] * n and s["samples_backpropagated"] == n * 128
    # The records, and the lock file of the run directory (not a record: it stays, empty).
    assert sorted(p.name for p in run.iterdir()) == [
        ".hardbatch.lock",
        "config.json",
        "history.csv",
        "summary.json",
        "trace.csv",
    ]
    assert (run / ".hardbatch.lock").stat().st_size == 0


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--val-fraction", "0.001"], "--val-fraction 0.001"),
        (["--batch-size", "5000"], "batch size 5000"),
        (["--delta", "0.001"], "floor(delta * N)"),
    ],
)
def test_overwrite_keeps_the_finished_run_when_the_new_one_is_refused(trained, tmp_path, invoke, flags, words):
    run = copy_of(trained[0], tmp_path)
    before = snapshot(run)
    rc, _, err = invoke("train", "--overwrite", *flags, "--epochs", "1", "--out", run, "--no-progress")
    assert rc == 2
    one_line(err, words)
    assert snapshot(run) == before


# ---------------------------------------------------------------- compare


COMPARE_ARGS = ["--deltas", "0.5", "1.0", "--seeds", "0", "1", "--epochs", "2", "--batch-size", "128", *FAST]


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width >= 100 and height >= 100 and len(data) > 2000


def test_compare_writes_one_run_per_delta_and_seed(compared, read_rows):
    out, _ = compared
    runs = run_dirs(out)
    assert all(p.parent == out for p in runs)  # one sub-directory each
    configs = [json.loads((p / "config.json").read_text())["config"] for p in runs]
    assert sorted((c["params"]["delta"], c["seed"]) for c in configs) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    n = N_TRAIN // 128
    for p, c in zip(runs, configs, strict=True):
        assert c["epochs"] == 2 and c["batch_size"] == 128
        s = json.loads((p / "summary.json").read_text())
        assert s["optimizer_steps"] == 2 * n and s["batches_per_round"] == int(c["params"]["delta"] * n)
        assert len(read_rows(p / "history.csv")) == 2


def test_compare_writes_report_tables_and_plots(compared, read_rows):
    out, _ = compared
    summary = read_rows(out / "summary.csv")
    assert sorted(float(r["delta"]) for r in summary) == [0.5, 1.0]  # one row per arm
    assert all(int(r["n"]) == 2 for r in summary)
    ref = next(r for r in summary if float(r["delta"]) == 1.0)
    assert float(ref["diff_points"]) == 0.0 and int(ref["diff_pairs"]) == 2
    runs = read_rows(out / "runs.csv")
    assert sorted((float(r["delta"]), int(r["seed"])) for r in runs) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    report = (out / "report.md").read_text()
    assert "| δ = 0.5 |" in report and "| δ = 1 |" in report
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 3  # accuracy curves, final accuracy vs delta, batch visits
    for png in pngs:
        assert _is_png(png), png
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):  # every image the report links exists
        assert (out / name).is_file(), name
        assert _is_png(out / name)


def test_compare_prints_one_table_line_per_delta_then_what_the_numbers_mean(compared):
    out, stdout = compared
    rows = [line for line in stdout.splitlines() if line.startswith("| δ")]
    assert [row.split("|")[1].strip() for row in rows] == ["δ = 0.5", "δ = 1"]
    assert str(out / "report.md") in stdout
    # after the table: how to read it, and what to try next (issue 27 item 12)
    after = stdout.rsplit("| δ = 1", 1)[1].split("\n\n", 1)[1]
    assert after.startswith("Each row is an arm") and "interval that contains 0" in after
    assert "Next:" in after and "quickstart" in after


def test_compare_and_sweep_run_one_thread_per_process_unless_told():
    """Runs of a comparison are timed alike and two jobs on a small machine do not slow each other (issue 27 item 12);
    train keeps torch's default."""
    parse = build_parser().parse_args
    assert parse(["compare", "--out", "x"]).threads == 1
    assert parse(["sweep", "--out", "x", "--datasets", "digits", "--models", "mlp"]).threads == 1
    assert parse(["train", "--out", "x"]).threads is None
    assert parse(["compare", "--out", "x", "--threads", "3"]).threads == 3


def test_compare_repeated_skips_finished_runs(invoke, compared, tmp_path):
    out = copy_of(compared[0], tmp_path)
    runs_before = {p.name: snapshot(p) for p in run_dirs(out)}
    summary_before = (out / "summary.csv").read_text()
    rc, stdout, err = invoke("compare", *COMPARE_ARGS, "--out", out)
    assert rc == 0, err
    assert {p.name: snapshot(p) for p in run_dirs(out)} == runs_before  # no run was retrained or rewritten
    assert (out / "summary.csv").read_text() == summary_before
    assert len([line for line in stdout.splitlines() if line.startswith("| δ")]) == 2


def test_compare_repeated_with_other_epochs_fails_naming_the_setting(invoke, compared, tmp_path):
    out = copy_of(compared[0], tmp_path)
    before = snapshot(out)
    rc, _, err = invoke("compare", *COMPARE_ARGS, "--epochs", "3", "--out", out)
    assert rc == 2
    one_line(err, "error", "epochs saved 2 but given 3")
    assert snapshot(out) == before
    # Any flag the message suggests must be one that compare accepts.
    help_text = help_of(invoke, "compare")
    for suggested in re.findall(r"--[a-z][a-z-]*", err):
        assert suggested in help_text, f"the error suggests {suggested}, which compare does not have: {err!r}"


def test_target_can_be_set_when_reporting_and_on_finished_runs(tmp_path, compared, invoke):
    out = copy_of(compared[0], tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    rc, _, err = invoke("report", out, "--out", tmp_path / "r", "--target-acc", "0.5", "--no-plots")
    assert rc == 0, err
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Target T = 50.00% test top-1 (given to report --target-acc)" in report
    # compare with a target on finished runs reuses them: the target only changes the report.
    rc, _, err = invoke("compare", *COMPARE_ARGS, "--out", out, "--target-acc", "0.5")
    assert rc == 0, err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == mtimes
    rc, _, err = invoke("report", out, "--target-acc", "1.5", "--no-plots")
    assert rc == 2
    one_line(err, "target")


SMALL = ["--epochs", "2", "--train-subset", "320", "--no-progress"]  # 10 steps an epoch


def test_random_control_compares_against_its_own_delta_one(tmp_path, invoke):
    rc, table, err = invoke(
        "compare",
        "--policy",
        "random",
        "--deltas",
        "0.5",
        "1.0",
        "--seeds",
        "0",
        "1",
        "--out",
        tmp_path / "random",
        *SMALL,
    )
    assert rc == 0, err
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| random")}
    assert "reference" in lines["random δ = 1"]
    # a paired difference (after top-1 and balanced); two seeds give no interval, and the cell says so
    assert "(no CI: 2 pairs, needs 3)" in lines["random δ = 0.5"].split("|")[5]


def test_composer_sb_with_a_tiny_keep_trains_one_sample_per_selecting_step(tmp_path, invoke):
    """--keep 0.00001 is inside the declared range: ⌊keep·b⌋ is 0, and at least one sample trains (issue 27 item
    15: it crashed mid-run and left a folder that blocked the rerun)."""
    rc, _, err = invoke("train", "--policy", "composer-sb", "--keep", "0.00001", "--out", tmp_path / "run", *SMALL)
    assert rc == 0, err
    history = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert history["epochs"] == 2 and history["samples_backpropagated"] < 20 * 32


def test_off_a_terminal_compare_prints_one_line_per_finished_run(invoke, tmp_path):
    rc, _, err = invoke(
        "compare",
        "--deltas",
        "0.5",
        "1.0",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--device",
        "cpu",
        "--out",
        tmp_path / "cmp",
    )  # progress on, into no terminal
    assert rc == 0, err
    done = [line for line in err.splitlines() if ": done, test top-1 " in line]
    assert len(done) == 2 and done[0].startswith("[1/2] digits/small_cnn hardbatch δ=0.5 seed=0: done"), err
    assert "\r" not in err  # no progress bar drawn into a file


# ---------------------------------------------------------------- sweep


def test_sweep_rejects_bad_input_before_training(tmp_path, invoke):
    rc, _, err = invoke(
        "sweep", "--datasets", "digits", "nope", "--models", "small_cnn", "--out", tmp_path / "s", "--no-progress"
    )
    assert rc == 2
    one_line(err, "unknown dataset 'nope'")
    assert not (tmp_path / "s").exists()


def test_sweep_with_a_bad_name_prints_exactly_one_line(tmp_path, invoke):
    rc, _, err = invoke("sweep", "--datasets", "digits", "--models", "resnet19", "--out", tmp_path / "s", *SMALL)
    assert rc == 2
    one_line(err, "unknown model 'resnet19'")


@pytest.mark.parametrize("text", ["-1/2", "--x"])
def test_a_negative_shard_gets_the_house_error(tmp_path, invoke, text):
    rc, _, err = invoke(
        "sweep",
        "--datasets",
        "digits",
        "--models",
        "small_cnn",
        "--shard",
        text,
        "--epochs",
        "1",
        "--out",
        tmp_path / "s",
        "--no-progress",
    )
    assert rc == 2
    one_line(err, "I/N", "0 <= I < N", repr(text))
    assert not (tmp_path / "s").exists()


def test_sweep_dry_run_lists_this_shards_run_folders_and_trains_nothing(tmp_path, invoke):
    rc, out, err = invoke(
        "sweep",
        "--datasets",
        "digits",
        "--models",
        "small_cnn",
        "mlp",
        "--deltas",
        "0.5",
        "1.0",
        "--seeds",
        "0",
        "--shard",
        "1/3",
        "--dry-run",
        "--out",
        tmp_path / "s",
        *SMALL,
    )
    assert rc == 0, err
    assert err == "sweep: 4 runs in the grid, 1 in shard 1/3\n"
    assert out.splitlines() == [str(tmp_path / "s" / "digits" / "small_cnn" / "custom" / "delta-1_seed-0")]
    assert not any((tmp_path / "s").rglob("config.json"))


# ---------------------------------------------------------------- report


def test_report_rebuilds_from_saved_runs_without_training(invoke, compared, tmp_path):
    out = copy_of(compared[0], tmp_path)
    summary_before = (out / "summary.csv").read_text()
    runs_csv_before = (out / "runs.csv").read_text()
    (out / "report.md").unlink()
    (out / "summary.csv").unlink()
    for png in out.glob("*.png"):
        png.unlink()
    runs_before = {p.name: snapshot(p) for p in run_dirs(out)}
    rc, stdout, err = invoke("report", out)
    assert rc == 0, err
    assert (out / "summary.csv").read_text() == summary_before
    assert (out / "runs.csv").read_text() == runs_csv_before
    assert {p.name: snapshot(p) for p in run_dirs(out)} == runs_before  # nothing trained, nothing rewritten
    report = (out / "report.md").read_text()
    assert "| δ = 0.5 |" in report and "| δ = 1 |" in report
    assert len(list(out.glob("*.png"))) >= 3
    rows = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| δ")]
    assert rows == ["δ = 0.5", "δ = 1"]


def test_report_out_writes_elsewhere(invoke, compared, tmp_path):
    src = compared[0]
    before = snapshot(src)
    rc, _, err = invoke("report", src, "--out", tmp_path / "elsewhere", "--no-plots")
    assert rc == 0, err
    assert snapshot(src) == before
    assert (tmp_path / "elsewhere" / "summary.csv").read_text() == (src / "summary.csv").read_text()
    assert (tmp_path / "elsewhere" / "report.md").is_file()
    assert not list((tmp_path / "elsewhere").glob("*.png"))


@pytest.mark.parametrize("which", ["empty", "missing"])
def test_report_without_runs_exits_2_with_one_line(invoke, tmp_path, which):
    target = tmp_path / which
    if which == "empty":
        target.mkdir()
    before = snapshot(tmp_path)
    rc, out, err = invoke("report", target)
    assert rc == 2
    one_line(err, "error", which)
    assert out == ""
    assert snapshot(tmp_path) == before


def test_report_to_an_unwritable_place_is_one_line(tmp_path, compared, invoke):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rc, _, err = invoke("report", compared[0], "--out", blocker / "sub")
    assert rc == 2
    one_line(err, "cannot write")


def test_full_disk_while_reporting_is_one_line_and_keeps_the_old_report(tmp_path, compared, invoke, monkeypatch):
    import errno

    from matplotlib.figure import Figure

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    root = copy_of(compared[0], tmp_path)
    before = {name: (root / name).read_bytes() for name in ("report.md", "summary.csv", "runs.csv")}
    monkeypatch.setattr(Figure, "savefig", enospc)
    rc, _, err = invoke("report", root)
    assert rc == 1
    line = one_line(err, "no space left", ".png")
    assert ".tmp" not in line
    assert {name: (root / name).read_bytes() for name in before} == before
    assert [p.name for p in root.rglob("*") if "tmp" in p.name or "probe" in p.name] == []


def test_overview_rows_of_the_same_network_are_told_apart(tmp_path, invoke):
    root = tmp_path / "two_lrs"
    for lr in ("0.01", "0.02"):
        rc, _, err = invoke("compare", "--deltas", "0.5", "1.0", "--seeds", "0", "--lr", lr, "--out", root / lr, *SMALL)
        assert rc == 0, err
    rc, _, err = invoke("report", root, "--no-plots")
    assert rc == 0, err
    report = (root / "report.md").read_text()
    overview = report.split("## Overview", 1)[1].split("\n## ", 1)[0]
    assert "| digits / small_cnn, lr=0.01 |" in overview and "| digits / small_cnn, lr=0.02 |" in overview
