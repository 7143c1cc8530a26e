"""hardbatch.run.machine: the device a run names, what the processes, device and packages must allow (--compile,
--tensorboard, --sync-bn: one line, before anything is written), and the machine recorded beside each run."""

from __future__ import annotations

import platform
import re
import sys

import pytest
import torch
from conftest import one_line

import hardbatch
from hardbatch.errors import UsageError
from hardbatch.run.machine import cpu_model, environment, resolve_device

BASE = [
    "--dataset",
    "digits",
    "--train-subset",
    "64",
    "--model",
    "mlp",
    "--batch-size",
    "32",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


def test_cpu_model_reads_proc_cpuinfo_and_falls_back_to_platform(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7763 64-Core "
        "Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n"
    )
    assert cpu_model(info) == "AMD EPYC 7763 64-Core Processor"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())


def test_the_environment_records_versions_hardware_and_whether_the_source_tree_was_modified():
    saved = environment(torch.device("cpu"))
    assert saved["versions"]["hardbatch"] == hardbatch.__version__ and saved["versions"]["torch"] == torch.__version__
    assert saved["device"] == {
        "type": "cpu",
        "name": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    assert saved["world_size"] == 1 and saved["command"] == " ".join(sys.argv)
    assert (saved["git_commit"] is None) == (saved["git_dirty"] is None)
    if saved["git_commit"] is not None:  # an editable install inside a git checkout, as `make setup` makes
        assert re.fullmatch("[0-9a-f]{40}", saved["git_commit"]) and isinstance(saved["git_dirty"], bool)


def test_devices_are_resolved_or_refused_naming_the_valid_ones():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="unsupported device 'meta'; valid: auto, cpu, cuda, cuda:N, mps"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(
            UsageError, match="device 'cuda:7' requested but CUDA is not available; valid here: auto, cpu"
        ):
            resolve_device("cuda:7")


def test_bad_compile_backend_and_missing_tensorboard_are_one_line_errors(tmp_path, invoke, monkeypatch):
    rc, _, err = invoke("train", *BASE, "--compile", "nope", "--out", tmp_path / "a")
    assert rc == 2
    one_line(err, "unknown --compile backend 'nope'; valid: ", "aot_eager")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    rc, _, err = invoke("train", *BASE, "--tensorboard", tmp_path / "tb", "--out", tmp_path / "b")
    assert rc == 2
    one_line(err, "pip install 'hardbatch[tensorboard]'")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "tb").exists()


@pytest.mark.parametrize(
    "command, flags, words",
    [
        ("train", [], "--sync-bn needs CUDA devices"),
        ("compare", ["--deltas", "0.5", "1.0", "--seeds", "0"], "--sync-bn needs CUDA devices"),
        ("train", ["--eval-mode", "train"], "--sync-bn does not combine with --eval-mode train"),
    ],
)
def test_sync_bn_is_refused_on_the_cpu_in_one_line_before_anything_is_written(tmp_path, invoke, command, flags, words):
    out = tmp_path / "run"
    rc, _, err = invoke(command, *BASE, *flags, "--model", "small_cnn", "--sync-bn", "--out", out)
    assert rc == 2
    one_line(err, words, "leave --sync-bn out")
    assert not out.exists()
