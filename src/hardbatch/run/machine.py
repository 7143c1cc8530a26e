"""The machine a run runs on: the device it names, what it must allow (processes, CUDA, packages), and the versions
and hardware recorded beside each run."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import torch

from hardbatch import distributed
from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.version import __version__


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; other names are checked to exist on this machine.

    Under torchrun a bare ``cuda`` (or ``auto`` on a GPU machine) is the process's own GPU, cuda:LOCAL_RANK.
    """
    return distributed.local_device(_device(name))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = "auto, cpu, cuda, cuda:N, mps"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; valid: {valid}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"device {name!r} requested but CUDA is not available; valid here: auto, cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"device {name!r} does not exist; this machine has cuda:0..cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"device {name!r} requested but MPS is not available; valid here: auto, cpu")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; valid: {valid}")
    return device


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name: ``cpuinfo``'s "model name" on Linux, else ``platform.processor()`` (or the
    architecture)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# What data sets are made or read with besides torch: their versions move a run's digits too (MNIST-1D's generator).
DATA_PACKAGES = ("numpy", "scipy", "mnist1d")


def _installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torchvision_version() -> str | None:
    """torchvision's own version string (with its build, as torch's), or None where it is not installed."""
    try:
        import torchvision
    except ImportError:
        return None
    return torchvision.__version__


def environment(device: torch.device) -> dict:
    """Versions and hardware saved beside each run's configuration.

    The CPU model, the CPU kernels torch chose (``cpu_capability``: AVX2, AVX512, ... or ATEN_CPU_CAPABILITY's
    choice) and the thread count decide float rounding on a CPU, which training amplifies: runs that differ in
    them differ in their digits (``report`` names such groups).
    """
    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {
        "versions": {
            "hardbatch": __version__,
            "torch": torch.__version__,
            "torchvision": _torchvision_version(),
            "python": platform.python_version(),
            **{name: _installed(name) for name in DATA_PACKAGES},
        },
        "device": {
            "type": device.type,
            "name": name,
            "threads": torch.get_num_threads(),
            "cpu": cpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": None
        if (status := _git("status", "--porcelain", "--untracked-files=no")) is None
        else bool(status),
        "command": " ".join(sys.argv),
        "world_size": distributed.world_size(),
    }


def check_runtime(cfg: RunConfig) -> None:
    """What the processes, device and installed packages must allow: a batch that splits over them, CUDA for
    --sync-bn, TensorBoard if asked."""
    distributed.check_divisible(cfg.batch_size)
    if cfg.compile and cfg.compile not in (backends := torch.compiler.list_backends(exclude_tags=())):
        raise UsageError(f"unknown --compile backend {cfg.compile!r}; valid: {', '.join(backends)}")
    if cfg.tensorboard:
        summary_writer_class()
    check_sync_bn(cfg)


def check_sync_bn(cfg: RunConfig) -> None:
    """UsageError for ``--sync-bn`` off CUDA (torch: "SyncBatchNorm layers only work with GPU modules") or with
    train-mode evaluation, whose forwards would synchronise BatchNorm over the ranks' unequal shares of a set."""
    if not cfg.sync_bn:
        return
    if cfg.eval_mode == "train":
        raise UsageError(
            "--sync-bn does not combine with --eval-mode train (evaluation would synchronise BatchNorm "
            "over each process's share of the set); use --eval-mode eval or leave --sync-bn out"
        )
    device = resolve_device(cfg.device)
    if device.type != "cuda":
        raise UsageError(
            f"--sync-bn needs CUDA devices (SyncBatchNorm works on GPU modules only), not "
            f"{device.type}; train on --device cuda or leave --sync-bn out"
        )


def summary_writer_class() -> type:
    """TensorBoard's ``SummaryWriter``; UsageError naming the extra to install when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard package: pip install 'hardbatch[tensorboard]'") from None
    return SummaryWriter
