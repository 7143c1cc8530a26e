"""report.machines: the machines and package versions runs came from, counted, from their config.json."""

from __future__ import annotations

import json
import shutil

from hardbatch.cli import main
from hardbatch.records import CONFIG
from hardbatch.report.machines import packages

from .scripted_runs import REF, load, write_run


def test_runs_from_different_machines_are_named_with_their_counts(tmp_path, capsys):
    amd = {"type": "cpu", "name": "AMD EPYC 7763", "threads": 2, "cpu": "AMD EPYC 7763", "cpu_capability": "AVX2"}
    intel = {**amd, "name": "Intel Xeon", "cpu": "Intel Xeon", "cpu_capability": "AVX512", "threads": 16}
    partial = {"type": "cpu", "name": "x86_64", "threads": 2}  # a device whose CPU model could not be read
    machines = {(1.0, 0): amd, (1.0, 1): amd, (1.0, 2): amd, (0.5, 0): intel, (0.5, 1): partial, (0.5, 2): None}
    for (delta, seed), device in machines.items():
        write_run(tmp_path / "runs", f"d{delta}_s{seed}", delta=delta, seed=seed, accs=REF[seed], device=device)
    assert main(["report", str(tmp_path / "runs"), "--no-plots"]) == 0
    note = (
        "**Runs from 4 machines** (CPU model, kernel capability, threads): CPU AMD EPYC 7763, capability AVX2, "
        "2 threads (3 runs); CPU Intel Xeon, capability AVX512, 16 threads (1 run); CPU unknown, capability "
        "unknown, 2 threads (1 run); CPU unknown, capability unknown, unknown threads (1 run)."
    )
    assert note in capsys.readouterr().out  # the terminal says so too
    section = (tmp_path / "runs" / "report.md").read_text().split("## digits / small_cnn", 1)[1].split("\n## ", 1)[0]
    assert note in section
    for delta, seed in machines:  # one machine left: no note
        if delta == 0.5:
            shutil.rmtree(tmp_path / "runs" / f"d{delta}_s{seed}")
    assert main(["report", str(tmp_path / "runs"), "--no-plots"]) == 0
    assert "machines" not in capsys.readouterr().out
    assert "Runs from" not in (tmp_path / "runs" / "report.md").read_text()


def test_package_versions_are_counted(tmp_path):
    write_run(tmp_path, "a", accs=[0.5, 0.6])
    write_run(tmp_path, "b", seed=1, accs=[0.5, 0.6])
    saved = json.loads((tmp_path / "b" / CONFIG).read_text())
    (tmp_path / "b" / CONFIG).write_text(json.dumps({**saved, "versions": {**saved["versions"], "scipy": "1.17"}}))
    assert packages(load(tmp_path)) == [
        "torch 2.0, torchvision not recorded, numpy 1.0, scipy 1.17, mnist1d not recorded (1 run)",
        "torch 2.0, torchvision not recorded, numpy 1.0, scipy not recorded, mnist1d not recorded (1 run)",
    ]
