"""Which machines and package versions saved runs came from (their config.json), as the lines a report states."""

from __future__ import annotations

from hardbatch.report.groups import Group
from hardbatch.report.load import Run

PACKAGES = ("torch", "torchvision", "numpy", "scipy", "mnist1d")  # the versions the evidence page states


def _counted(keys: list[str], unit: str) -> list[str]:
    """ "KEY (k runs)" for each distinct key, most common first (then in key order)."""
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [f"{key} ({n} {unit}{'s' if n > 1 else ''})" for key, n in ranked]


def machine(run: Run) -> str:
    """ "CPU <model>, capability <kernels>, <n> threads", with ", GPU <name>" for a CUDA run; "unknown" for what its
    config.json does not say."""
    device = run.environment.get("device")
    device = device if isinstance(device, dict) else {}
    known = {
        k: "unknown" if device.get(k) in (None, "") else device[k] for k in ("cpu", "cpu_capability", "threads", "name")
    }
    threads = f"{known['threads']} thread{'' if known['threads'] == 1 else 's'}"
    text = f"CPU {known['cpu']}, capability {known['cpu_capability']}, {threads}"
    return text + (f", GPU {known['name']}" if device.get("type") == "cuda" else "")


def machines(runs: list[Run]) -> list[str]:
    """The machines ``runs`` ran on with how many runs each, most first: "CPU ..., capability ..., 2 threads (3
    runs)"."""
    return _counted([machine(run) for run in runs], "run")


def packages(runs: list[Run]) -> list[str]:
    """The package versions ``runs`` recorded ("torch 2.14.1, numpy 2.4.6, ... (k runs)"), most common first; "not
    recorded" for a package a run did not have."""
    keys = []
    for run in runs:
        versions = run.environment.get("versions") or {}
        keys.append(", ".join(f"{name} {versions.get(name) or 'not recorded'}" for name in PACKAGES))
    return _counted(keys, "run")


def machine_note(group: Group) -> str | None:
    """One paragraph when ``group``'s runs come from more than one machine (see ``machines``); None otherwise."""
    seen = machines(group.runs)
    if len(seen) < 2:
        return None
    return (
        f"**Runs from {len(seen)} machines** (CPU model, kernel capability, threads): {'; '.join(seen)}. Float "
        "rounding differs between them and training amplifies it: the same settings give other digits on another "
        "machine, so read differences between these runs against the seed spread."
    )
