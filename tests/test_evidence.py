"""scripts/evidence.py: it declares the benchmarks, plans, trains (sharded, resumable), keeps every run's compact record
and renders the page from them through hardbatch.report.evidence; --from-records rebuilds it from the records alone;
--quick runs the whole protocol on digits in seconds. Bad arguments are one line, exit 2, before any training."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

from hardbatch.config import RunConfig
from hardbatch.records import find_runs
from hardbatch.report import Run, arm_stats, group_runs
from hardbatch.report.evidence import MARKERS
from hardbatch.report.groups import run_label

ROOT = Path(__file__).resolve().parents[1]


def _evidence_module():
    spec = importlib.util.spec_from_file_location("evidence", ROOT / "scripts" / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evidence"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_evidence_trains_chooses_rates_and_writes_the_page(tmp_path, capsys):
    evidence = _evidence_module()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{MARKERS[0]}\nold\n{MARKERS[1]}\n\nrest\n")
    out, doc = tmp_path / "runs", tmp_path / "docs" / "evidence.md"
    args = ["--quick", "--out", str(out), "--doc", str(doc), "--readme", str(readme)]
    assert evidence.main(args) == 0
    printed = capsys.readouterr().out
    assert "plan: " in printed and "CPU minutes" in printed.splitlines()[0]
    text = doc.read_text()
    for bench in evidence.QUICK:
        choice = json.loads((out / bench.name / "lr_choice.json").read_text())
        assert choice["grid"] == list(bench.lrs) and len(bench.lrs) >= 3 and choice["metric"] == bench.metric
        assert set(choice["arms"]) == {arm.label for arm in bench.arms}
        for label, arm in choice["arms"].items():
            # the rule stated before any run: among the rates where no tuning seed collapsed, the highest median
            clean = [lr for lr in bench.lrs if arm["collapsed"][f"{lr:g}"] == 0]
            assert clean and arm["lr"] == max(clean, key=lambda lr: (arm["val_median"][f"{lr:g}"], -lr))
            runs = [
                run
                for run in map(Run.load, find_runs(out / bench.name / "main"))
                if run.config.policy == arm["policy"] and run.config.delta == arm["delta"]
            ]
            budgets = next(a.budgets for a in bench.arms if a.label == label)
            assert len(runs) == bench.seeds * (1 + len(budgets)) and {r.config.lr for r in runs} == {arm["lr"]}
            assert {run_label(r.config) for r in runs if r.config.budget == 1.0} == {label}
            assert f"| {label} | " in text
        assert (doc.parent / "evidence" / bench.name / "report.md").exists()
    (group,) = group_runs([Run.load(r) for r in find_runs(out / "digits" / "main")], per_arm=("lr",))
    for plot in ("forest", "frontier"):
        assert (doc.parent / "evidence" / "digits" / f"{group.slug}_{plot}.png").exists()
    assert "| digits | δ = 0.5 | uniform's frontier (samples back-propagated) | 3 |" in text
    assert "| digits | rs2 fraction = 0.5 | δ = 1 | 3 |" in text  # every arm against every reference
    assert "Does the rule generalize in fewer epochs?" in text and "uniform's frontier at " in text
    rule = next(s for s in arm_stats(group) if s.policy == "hardbatch" and s.delta == 0.5)
    # the page's verdict row for the rule against δ = 1 carries the report's half-width and detectable difference
    row = next(line for line in text.splitlines() if line.startswith("| digits | δ = 0.5 | δ = 1 |"))
    assert f"±{rule.vs_reference.half_width:.2f}" in row and f"| {rule.vs_reference.detectable:.2f} |" in row
    assert "(t₀.₉₇₅ + t₀.₈₀) × SE" in text and "CPU minutes" in text
    import numpy

    assert f"numpy {numpy.__version__}" in text.split("Packages: ", 1)[1].splitlines()[0]  # what the runs recorded
    assert "old" not in readme.read_text() and "| digits | δ = 0.5 | δ = 1 |" in readme.read_text()
    assert readme.read_text().endswith("\n\nrest\n")
    # The page, its reports and plots and the README block are the records' rebuild, byte for byte.
    records = doc.parent / "evidence" / "records"
    assert sorted(p.name for p in records.iterdir()) == ["digits-constant.jsonl.gz", "digits.jsonl.gz", "page.json"]
    assert_rebuilds(records, doc, readme, tmp_path / "rebuilt", every_file=True)
    # a rerun trains nothing: every run is finished
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert evidence.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == mtimes
    # --benchmarks: a page of the named benchmarks only, which says what is still to run
    assert evidence.main(["--quick", "--out", str(out), "--doc", str(doc), "--benchmarks", "digits-constant"]) == 0
    partial = doc.read_text()
    assert "**Partial**: this page covers digits-constant only; still to run: digits" in partial
    assert "| digits-constant | δ = 0.5 | δ = 1 |" in partial and "| digits | " not in partial
    assert "Regenerated by `python scripts/evidence.py --benchmarks digits-constant`" in partial
    # the training CPU time of the page's runs: every tuning run, and the main runs beyond the tuning seeds
    bench = next(b for b in evidence.QUICK if b.name == "digits-constant")
    summaries = [
        *(out / bench.name / "tune").rglob("summary.json"),
        *(
            p
            for p in (out / bench.name / "main").rglob("summary.json")
            if json.loads((p.parent / "config.json").read_text())["config"]["seed"] >= bench.tune_seeds
        ),
    ]
    minutes = sum(json.loads(p.read_text())["cost"]["cpu_seconds"] for p in summaries) / 60
    assert len(summaries) == 2 * 3 * 2 + 2 * 1 and f"evaluation excluded: {minutes:.1f} minutes" in partial


def assert_rebuilds(records: Path, doc: Path, readme: Path | None, tmp: Path, every_file: bool = False) -> None:
    """``python scripts/evidence.py --from-records`` from ``records`` alone (no run folders) gives ``doc``, the
    reports beside it (report.md, summary.csv, runs.csv; ``every_file``: their plots too, byte for byte) and
    ``readme``'s block."""
    evidence = _evidence_module()
    tmp.mkdir(parents=True)
    rebuilt = tmp / "docs" / doc.name
    args = ["--from-records", "--records", str(records), "--doc", str(rebuilt)]
    if readme is not None:
        shutil.copy(readme, tmp / "README.md")
        args += ["--readme", str(tmp / "README.md")]
    assert evidence.main(args) == 0
    assert rebuilt.read_text() == doc.read_text(), f"{doc} is not the rebuild of {records}"
    if readme is not None:
        assert (tmp / "README.md").read_text() == readme.read_text(), f"{readme}'s block is not the rebuild's"
    ours, theirs = doc.parent / "evidence", rebuilt.parent / "evidence"
    names = sorted(
        name
        for name in (p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
        if name.parts[0] != "records" and (every_file or name.suffix in (".md", ".csv"))
    )
    assert any(name.name == "report.md" for name in names), f"no report rebuilt under {theirs}"
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), f"{ours / name} differs from the rebuild"


def test_from_records_without_records_is_one_line_and_exit_status_2(tmp_path, capsys):
    evidence = _evidence_module()
    assert (
        evidence.main(["--from-records", "--records", str(tmp_path / "none"), "--doc", str(tmp_path / "evidence.md")])
        == 2
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("evidence: error: no records in ") and "no page.json" in line
    assert not (tmp_path / "evidence.md").exists()


def test_a_shard_trains_its_share_then_the_rest_and_never_retries_a_failed_run(tmp_path, monkeypatch):
    evidence = _evidence_module()
    from hardbatch.run.plan import PlannedRun

    plan = [PlannedRun(RunConfig(seed=s), tmp_path / f"run{s}") for s in range(5)]
    calls = []

    def fake_execute(runs, **kwargs):  # "trains" each run: a summary.json; run 3 fails
        calls.append([r.cfg.seed for r in runs])
        for r in runs:
            r.path.mkdir(exist_ok=True)
            if r.cfg.seed != 3:
                (r.path / "summary.json").write_text("{}")
        return [(r, "failed: TrainingDiverged: loss is not finite") for r in runs if r.cfg.seed == 3]

    monkeypatch.setattr(evidence, "execute", fake_execute)
    evidence.train(plan, 1, 2, data=None)
    assert calls == [[1, 3], [4, 2, 0]]  # its share (every 2nd from 1), then the others' last first
    assert "TrainingDiverged" in (tmp_path / "run3" / evidence.FAILED).read_text()
    calls.clear()
    evidence.train(plan, 0, 2, data=None)  # a rerun: everything finished or failed, nothing trained again
    assert calls == [[], []]
    # A shard that starts after the other has finished some runs keeps its share of the whole plan: the other
    # shard's share is left to it, not taken over from a shifted list.
    for s in (0, 1, 3):
        (tmp_path / f"run{s}" / "summary.json").unlink(missing_ok=True)
        (tmp_path / f"run{s}" / evidence.FAILED).unlink(missing_ok=True)
    (tmp_path / "run0" / "summary.json").write_text("{}")  # the other shard (index 0) has trained run 0 already
    calls.clear()
    evidence.train(plan, 1, 2, data=None)
    assert calls[0] == [1, 3]


def test_an_unknown_benchmark_is_one_line_and_exit_status_2(tmp_path, capsys):
    evidence = _evidence_module()
    assert evidence.main(["--quick", "--benchmarks", "digits", "cifar", "--out", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown benchmark 'cifar'; choose from digits, digits-constant" in line
    assert not (tmp_path / "runs").exists()


def test_a_bad_shard_is_one_line_and_exit_status_2(tmp_path, capsys):
    evidence = _evidence_module()
    for shard in (["--shard", "2/2"], ["--shard", "-1/2"]):  # "-1/2" reaches the check, not argparse's flag parsing
        assert evidence.main(["--quick", *shard, "--out", str(tmp_path / "runs"), "--plan-only"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "shard must look like I/N" in line


def test_outputs_are_checked_before_any_training(tmp_path, capsys, monkeypatch):
    """A README without the markers, an --out that is a file or a --doc that is a folder: one line, exit 2, nothing
    trained (issue 27 item 13)."""
    evidence = _evidence_module()
    monkeypatch.setattr(evidence, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    (tmp_path / "adir").mkdir()
    doc = str(tmp_path / "docs" / "evidence.md")
    for flags, words in (
        (["--readme", str(readme), "--out", str(tmp_path / "runs"), "--doc", doc], "markers"),
        (["--readme", str(tmp_path / "missing.md"), "--out", str(tmp_path / "runs"), "--doc", doc], "cannot read"),
        (["--out", str(blocker), "--doc", doc], "cannot write to output directory"),
        (["--out", str(tmp_path / "runs"), "--doc", str(tmp_path / "adir")], "is a directory"),
    ):
        assert evidence.main(["--quick", *flags]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("evidence: error: ") and words in line
    assert not list(tmp_path.rglob("summary.json"))


def test_the_script_renders_through_the_report_package():
    """No second report engine: the records come from hardbatch.report.compact, the page, its tables and the README
    block from hardbatch.report.evidence."""
    import ast

    tree = ast.parse((ROOT / "scripts" / "evidence.py").read_text())
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & {
        "page",
        "section",
        "verdict_table",
        "lr_table",
        "cost_table",
        "verdict",
        "interval_text",
        "write_readme",
        "summarise",
        "Result",
        "packages",
        "irreducible_text",
        "render",
        "write_records",
        "read_records",
    }
    imported = {
        (node.module, alias.name) for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert imported >= {("hardbatch.report.evidence", "render"), ("hardbatch.report.compact", "write_records")}


def test_a_shard_stopped_by_sigterm_still_records_its_cpu_time(tmp_path):
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "runs"
    script = ROOT / "scripts" / "evidence.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), "--quick", "--out", str(out), "--doc", str(tmp_path / "evidence.md")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list(out.rglob("summary.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # mid-regeneration: its first run is done, the rest is not
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    (ledger,) = out.glob("cpu-seconds-*.json")
    assert json.loads(ledger.read_text())["seconds"] > 0
