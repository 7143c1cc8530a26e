"""benchmarks/: every bench_*.py imports and parses its flags (``--help``), and runs at its smallest setting to the
end, printing its table with every row and a ratio. Timings are never asserted (a shared machine decides them).

The scripts run in this process (``main(argv)``: a Python start with torch costs seconds here), except those that
start processes of their own (bench_scale, bench_ddp) and the gpu_check.sh dry run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
RATIO = r"\d+\.\d{3}"


def bench(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS`` from the repository root, importing this checkout's package, one thread."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(script: str):
    """The script as a module (benchmarks/ on sys.path, as when it runs: bench_gpu imports bench_overhead)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(capsys, script: str, *args: str) -> str:
    """``main(args)`` of the script in this process; its stdout, after asserting exit status 0."""
    assert load(script).main(list(args)) == 0
    return capsys.readouterr().out


def test_every_benchmark_is_listed_here():
    assert set(BENCHMARKS) == {
        "bench_ddp.py",
        "bench_gpu.py",
        "bench_overhead.py",
        "bench_policies.py",
        "bench_quickstart.py",
        "bench_runs.py",
        "bench_scale.py",
    }


@pytest.mark.parametrize("script", BENCHMARKS)
def test_help_imports_and_parses_and_a_bad_flag_is_one_line_and_exit_2(script, capsys):
    main = load(script).main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--quick" in out
    with pytest.raises(SystemExit) as exit_:
        main(["--no-such-flag"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err.splitlines()[-1]


def rows(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(pattern, line)]


def test_quickstart_prints_both_pairs_with_the_same_steps_and_a_ratio(capsys):
    out = run(capsys, "bench_quickstart.py", "--quick", "--num-batches", "4", "--repeats", "1", "--hidden", "16")
    assert "hardbatch δ=1: identical loss sequence in both loops (8 and 8 steps): yes" in out
    assert "uniform: identical loss sequence in both loops (8 and 8 steps): yes" in out
    table = rows(out, rf"(hardbatch δ=1|uniform) +{RATIO} +{RATIO} +{RATIO} +{RATIO} +yes +>=0.98  (PASS|FAIL)$")
    assert [line.split()[0] for line in table] == ["hardbatch", "uniform"]


def test_overhead_prints_three_variants_and_both_ratios(capsys):
    out = run(
        capsys,
        "bench_overhead.py",
        "--quick",
        "--model",
        "pool_linear",
        "--num-batches",
        "2",
        "--epochs",
        "2",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--batch-size",
        "16",
        "--no-steady-malloc",
    )
    for variant in ("hand loop (plain PyTorch)", "hardbatch fit, δ=1", "hardbatch fit, δ=0.5"):
        assert rows(out, rf"{re.escape(variant)} +{RATIO[:-5]}"), variant
    assert rows(out, rf"\(a\) time/step δ=0.5 / δ=1 +{RATIO} .*<= 1.03  (PASS|FAIL)$")
    assert rows(out, rf"\(b\) throughput hb δ=1 / hand +{RATIO} .*>= 0.97  (PASS|FAIL)$")


def test_policies_prints_a_row_per_registered_policy_with_its_share(capsys):
    from hardbatch.policies import POLICIES

    out = run(
        capsys,
        "bench_policies.py",
        "--quick",
        "--data",
        "synthetic",
        "--samples",
        "128",
        "--batch-size",
        "32",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--repeats",
        "1",
        "--no-steady-malloc",
    )
    table = rows(out, r"\S.* +\d+ +\d+ +\d+ +\d+ +\d+\.\d\d +\d+\.\d\d +\d+\.\d\d% ")
    labels = [re.split(r" {2,}", line)[0].split(" δ=")[0] for line in table]
    assert labels == ["hardbatch", "hardbatch", "hardbatch", *[n for n in POLICIES if n != "hardbatch"]]


def test_runs_prints_both_variants_the_same_steps_and_the_ratio(capsys):
    out = run(capsys, "bench_runs.py", "--quick", "--epochs", "1", "--repeats", "1")
    assert rows(out, r"  hand +wall \d") and rows(out, r"  hardbatch +wall \d")
    assert "same final test top-1 in both (same steps): yes" in out
    assert re.search(rf"wall-time ratio hand / hardbatch: {RATIO} .*target >= 0.95: (PASS|FAIL)", out)


def test_gpu_prints_every_variant_and_ratio_on_a_cpu(capsys):
    out = run(
        capsys,
        "bench_gpu.py",
        "--quick",
        "--device",
        "cpu",
        "--model",
        "mlp",
        "--workers",
        "0",
        "--steps",
        "2",
        "--warmup",
        "2",
    )
    for variant in ("hand loop, data on device", "hb δ=1, data on device", "hb δ=0.5, data on device"):
        assert rows(out, rf"{re.escape(variant)} +\d"), variant
    assert rows(out, rf"throughput hb δ=1 on device / hand loop \(target >= 0.97\) +{RATIO}$")


def test_scale_prints_a_row_per_policy_at_its_smallest_size():
    done = bench("bench_scale.py", "--quick", "--policies", "hardbatch")
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout, r"hardbatch +\d+\.\d{3} +\d+\.\d{3} +\d+\.\d ")


@pytest.mark.slow
def test_ddp_quick_takes_the_same_steps_in_one_and_two_processes():
    done = bench("bench_ddp.py", "--quick", "--batches", "4", "--batch-size", "16", "--width", "4", timeout=240)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"δ=0.5 / δ=1 per-step time: {RATIO} \(target <= 1.03\): (PASS|FAIL)", done.stdout)
    assert "step sequence (round, batch, samples) identical" in done.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_on_a_cpu_finishes_clean(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "DEVICE": "cpu",
        "QUICK": "1",
        "PYTHON": sys.executable,
        "OUT": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "exit status 1" not in done.stdout and "done, status 0" in done.stdout
