"""The evidence machinery: CPU seconds counted, the power of a comparison, arms with their own learning rate, the
forest and cost plots drawn from the report's numbers, and scripts/evidence.py --quick end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.run.experiment import train_run
from hardbatch.report.build import arm_stats, build_report, forest_points, group_runs, markdown_table, Run
from hardbatch.metrics import detectable_difference, mean_interval, paired_difference, seeds_for_half_width
from hardbatch.records import find_runs, RunDir
from test_report import HALF, REF, write_run

ROOT = Path(__file__).resolve().parents[1]
# Student-t quantiles written out, so the power figures are checked against a hand computation.
T975 = {2: 4.302652729911275, 4: 2.7764451051977987, 5: 2.5705818356363146, 6: 2.4469118511449692, 7: 2.3646242510102993, 23: 2.0686576104190406,
        24: 2.0638985616280205}
T80 = {2: 1.0606601717798212, 4: 0.9409645131325547}


def test_cpu_seconds_are_counted_per_epoch_and_in_total(tmp_path):
    cfg = RunConfig(dataset="digits", model="mlp", epochs=2, batch_size=64, device="cpu")
    summary = train_run(cfg, tmp_path / "run", progress=False)
    history = RunDir(tmp_path / "run").history()
    cpu = [row["cpu_seconds"] for row in history]
    assert all(0 < c for c in cpu)
    assert summary["cost"]["cpu_seconds"] == pytest.approx(sum(cpu))
    # process CPU time of one thread cannot run far ahead of the wall-clock of the same span
    assert sum(cpu) <= 1.5 * summary["train_seconds"] + 0.05


def test_detectable_difference_is_the_minimum_detectable_effect_at_80_percent_power():
    diffs = [1.0, 2.0, 3.0, 4.0, 6.0]  # mean 3.2, sd sqrt(3.7)
    d = mean_interval(diffs)
    se = math.sqrt(3.7) / math.sqrt(5)
    assert d.half_width == pytest.approx(T975[4] * se)
    assert d.detectable == pytest.approx((T975[4] + T80[4]) * se)
    assert detectable_difference(d.half_width, 5, power=0.8) == pytest.approx(3.1978, abs=1e-4)
    assert math.isnan(detectable_difference(math.nan, 5))
    assert math.isnan(paired_difference([1.0, 2.0], [0.0, 0.0]).detectable)  # 2 pairs: no interval


def test_seeds_for_half_width_keeps_the_spread_and_solves_for_n():
    # half-width 1 over 8 seeds: sd = sqrt(8) / t(7); 25 seeds give t(24) sd / 5 <= 0.5, 24 do not.
    sd = math.sqrt(8) / T975[7]
    assert T975[24] * sd / 5 <= 0.5 < T975[23] * sd / math.sqrt(24)
    assert seeds_for_half_width(1.0, 8, 0.5) == 25
    # already narrower: fewer would do, but not as few as the spread alone says (t grows as n shrinks)
    sd = 0.4 * math.sqrt(8) / T975[7]
    assert T975[6] * sd / math.sqrt(7) <= 0.5 < T975[5] * sd / math.sqrt(6)
    assert seeds_for_half_width(0.4, 8, 0.5) == 7
    assert seeds_for_half_width(math.nan, 8, 0.5) is None


@pytest.fixture
def scripted(tmp_path) -> Path:
    """δ = 1 and δ = 0.5 over 3 seeds (final +1, +2, +3 points), as test_report scripts them."""
    for seed, accs in REF.items():
        write_run(tmp_path, f"ref_s{seed}", delta=1.0, seed=seed, accs=accs)
    for seed, accs in HALF.items():
        write_run(tmp_path, f"half_s{seed}", delta=0.5, seed=seed, accs=accs)
    return tmp_path


def test_report_states_each_differences_detectable_size(scripted):
    (group,) = group_runs([Run.load(r) for r in find_runs(scripted)])
    half = next(s for s in arm_stats(group) if s.delta == 0.5)
    se = 1.0 / math.sqrt(3)  # differences 1, 2, 3 points: sd 1
    assert half.diff_detectable == pytest.approx((T975[2] + T80[2]) * se)
    row = next(line for line in markdown_table(arm_stats(group)).splitlines() if line.startswith("| δ = 0.5"))
    assert f"| {(T975[2] + T80[2]) * se:.2f} |" in row


def _with_lr(root: Path, lr: float) -> None:
    """Rewrite the runs under ``root`` as if trained at ``lr`` (config.json and history.csv)."""
    for run in find_runs(root):
        config = json.loads(run.file("config.json").read_text())
        config["config"]["lr"] = lr
        run.file("config.json").write_text(json.dumps(config))


def test_per_arm_learning_rates_keep_arms_in_one_group(scripted, capsys):
    ref_dirs = sorted(scripted.glob("ref_s*"))
    for path in ref_dirs:
        _with_lr(path, 0.3)
    assert len(group_runs([Run.load(r) for r in find_runs(scripted)])) == 2  # by default lr splits groups
    (group,) = group_runs([Run.load(r) for r in find_runs(scripted)], per_arm=("lr",))
    assert {a.label: a.tuned for a in group.arms} == {"δ = 0.5": {"lr": 0.05}, "δ = 1": {"lr": 0.3}}
    half = next(s for s in arm_stats(group) if s.delta == 0.5)
    assert half.diff_points == pytest.approx(2.0) and half.diff_pairs == 3
    report, _ = build_report(scripted, per_arm=("lr",), plots=False)
    assert "Chosen per arm: δ = 0.5 lr 0.05, δ = 1 lr 0.3." in report.read_text()
    _with_lr(ref_dirs[0], 0.1)  # one arm, two rates: refused
    with pytest.raises(UsageError, match=r"δ = 1 holds runs with other per-arm settings"):
        group_runs([Run.load(r) for r in find_runs(scripted)], per_arm=("lr",))
    with pytest.raises(UsageError, match="cannot choose 'seed' per arm"):
        group_runs([], per_arm=("seed",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """uniform, δ = 1 and infobatch (which back-propagates less) on 320 digits, 3 seeds, 3 epochs."""
    from hardbatch.run.plan import execute, plan_compare

    out = tmp_path_factory.mktemp("trained")
    base = RunConfig(dataset="digits", model="mlp", train_subset=320, batch_size=32, epochs=3, device="cpu")
    plan = (plan_compare(base, [1.0], [0, 1, 2], out, policies=["hardbatch", "uniform", "infobatch"]))
    execute(plan, progress=False)
    return out


def test_forest_plot_draws_each_arms_paired_difference_to_uniform(trained, tmp_path):
    from hardbatch.report.plots import plot_forest

    (group,) = group_runs([Run.load(r) for r in find_runs(trained)])
    stats = arm_stats(group)
    points = forest_points(stats)
    assert set(points) == {"δ = 1", "infobatch"}  # uniform itself is the reference
    for label, (mean, low, high) in points.items():
        arm, uniform = group.arm(*{"δ = 1": ("hardbatch",), "infobatch": ("infobatch",)}[label]), group.arm("uniform")
        d = paired_difference([arm.runs[s].summary["final_test_acc"] for s in (0, 1, 2)],
                              [uniform.runs[s].summary["final_test_acc"] for s in (0, 1, 2)])
        assert (mean, low, high) == pytest.approx((100 * d.mean, 100 * d.low, 100 * d.high))
    ax = plot_forest(points, "uniform")
    (dots,) = ax.lines[:1]
    assert list(dots.get_xdata()) == pytest.approx([m for m, _, _ in points.values()])
    (bars,) = ax.collections
    ends = [end for seg in bars.get_segments() for end in (seg[0][0], seg[1][0])]
    assert ends == pytest.approx([end for _, lo, hi in points.values() for end in (lo, hi)])
    assert [t.get_text() for t in ax.get_yticklabels()] == list(points)


def test_report_draws_forest_and_accuracy_against_samples_from_the_runs(trained, tmp_path, monkeypatch):
    import hardbatch.report.plots as plots

    drawn = {}
    for name in ("plot_forest", "plot_cost_curves"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, _real=real, _name=name, **k: drawn.setdefault(_name, []).append(a) or _real(*a, **k))
    build_report(trained, tmp_path)
    (group,) = group_runs([Run.load(r) for r in find_runs(trained)])
    assert (tmp_path / f"{group.slug}_forest.png").stat().st_size > 0
    assert (tmp_path / f"{group.slug}_accuracy_vs_samples.png").stat().st_size > 0
    assert drawn["plot_forest"][0][0] == forest_points(arm_stats(group))
    samples_curves = drawn["plot_cost_curves"][0][0]  # the first cost plot: against back-propagated samples
    for arm in group.arms:
        xs, mean, low, high = samples_curves[arm.label]
        runs = list(arm.runs.values())
        assert xs[-1] == pytest.approx(sum(r.summary["cost"]["samples_backprop"] for r in runs) / 3)
        assert mean[-1] == pytest.approx(100 * sum(r.summary["final_test_acc"] for r in runs) / 3)
        assert all(lo <= m <= hi for lo, m, hi in zip(low, mean, high))


def test_accuracy_at_equal_cpu_seconds(trained):
    (group,) = group_runs([Run.load(r) for r in find_runs(trained)])
    stats = arm_stats(group)
    budget = min(r.cost("cpu_seconds")[-1] for a in group.arms for r in a.runs.values())
    for s, arm in zip(stats, group.arms):
        assert s.budget_cpu_seconds == pytest.approx(budget)
        assert s.cpu_seconds_mean == pytest.approx(sum(r.summary["cost"]["cpu_seconds"] for r in arm.runs.values()) / 3)
        # each run's test top-1 at its last evaluation within the budget, averaged over the runs that had one
        reached = [[a for c, a in zip(r.cost("cpu_seconds"), r.accs) if c <= budget * (1 + 1e-9)] for r in arm.runs.values()]
        reached = [accs[-1] for accs in reached if accs]
        assert reached and s.acc_at_equal_cpu_seconds == pytest.approx(sum(reached) / len(reached))


def _evidence_module():
    spec = importlib.util.spec_from_file_location("evidence", ROOT / "scripts" / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evidence"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_evidence_trains_chooses_rates_and_writes_the_page(tmp_path, capsys):
    evidence = _evidence_module()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{evidence.MARKERS[0]}\nold\n{evidence.MARKERS[1]}\n\nrest\n")
    out, doc = tmp_path / "runs", tmp_path / "docs" / "evidence.md"
    args = ["--quick", "--out", str(out), "--doc", str(doc), "--readme", str(readme)]
    assert evidence.main(args) == 0
    printed = capsys.readouterr().out
    assert "plan: " in printed and "CPU minutes" in printed.splitlines()[0]
    text = doc.read_text()
    for bench in evidence.QUICK:
        choice = json.loads((out / bench.name / "lr_choice.json").read_text())
        assert choice["grid"] == list(bench.lrs) and len(bench.lrs) >= 3
        for label, arm in choice["arms"].items():
            # the chosen rate has the highest mean validation accuracy of the grid
            assert arm["val_acc"][f"{arm['lr']:g}"] == max(arm["val_acc"].values())
            runs = [Run.load(r) for r in find_runs(out / bench.name / "main") if Run.load(r).config.policy == arm["policy"]
                    and Run.load(r).config.delta == arm["delta"]]
            assert len(runs) == bench.seeds and {r.config.lr for r in runs} == {arm["lr"]}
            assert f"| {label} | " in text
        assert (doc.parent / "evidence" / bench.name / "report.md").exists()
    (group,) = group_runs([Run.load(r) for r in find_runs(out / "digits" / "main")], per_arm=("lr",))
    assert (doc.parent / "evidence" / "digits" / f"{group.slug}_forest.png").exists()
    rule = next(s for s in arm_stats(group) if s.policy == "hardbatch" and s.delta == 0.5)
    # the page's verdict row for the rule against δ = 1 carries the report's half-width and detectable difference
    row = next(line for line in text.splitlines() if line.startswith("| digits | δ = 0.5 | δ = 1 |"))
    assert f"±{(rule.diff_high - rule.diff_low) / 2:.2f}" in row and f"| {rule.diff_detectable:.2f} |" in row
    assert "(t₀.₉₇₅ + t₀.₈₀) × SE" in text and "CPU minutes" in text
    import numpy
    assert f"numpy {numpy.__version__}" in text.split("Packages: ", 1)[1].splitlines()[0]  # what the runs recorded
    assert "old" not in readme.read_text() and "| digits | δ = 0.5 | δ = 1 |" in readme.read_text()
    assert readme.read_text().endswith("\n\nrest\n")
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
    summaries = [*(out / bench.name / "tune").rglob("summary.json"),
                 *(p for p in (out / bench.name / "main").rglob("summary.json")
                   if json.loads((p.parent / "config.json").read_text())["config"]["seed"] >= bench.tune_seeds)]
    minutes = sum(json.loads(p.read_text())["cost"]["cpu_seconds"] for p in summaries) / 60
    assert len(summaries) == 2 * 3 * 2 + 2 * 1 and f"evaluation excluded: {minutes:.1f} minutes" in partial


def test_collapsed_counts_the_seeds_far_below_their_arms_median():
    from types import SimpleNamespace

    evidence = _evidence_module()

    def runs_of(policy, delta, accs):
        return [SimpleNamespace(config=SimpleNamespace(policy=policy, delta=delta, seed=seed),
                                summary={"final_test_acc": acc}) for seed, acc in enumerate(accs)]

    # median 91: 36.1 and 80 collapsed, 82 not
    runs = (runs_of("hardbatch", 0.5, (0.92, 0.91, 0.93, 0.92, 0.361, 0.80, 0.82)) + runs_of("hardbatch", 1.0, (0.92, 0.93))
            + runs_of("uniform", 1.0, (0.9,)))
    result = evidence.Result(bench=None, choice={}, stats={}, runs=runs)
    assert evidence.collapsed(result, "δ = 0.5") == (2, 7)
    assert evidence.collapsed(result, "δ = 1") == (0, 2)
    assert evidence.collapsed(result, "uniform") == (0, 1)  # non-δ policies are labelled without their delta
    assert evidence.collapsed(result, "infobatch") == (0, 0)


def test_verdict_names_an_arm_identical_to_its_reference_in_every_seed():
    from types import SimpleNamespace

    evidence = _evidence_module()
    same = paired_difference([0.9, 0.8, 0.85], [0.9, 0.8, 0.85])  # zero spread: no interval
    row = SimpleNamespace(diff_low=same.low, diff_high=same.high, diff_points=100 * same.mean, diff_pairs=3,
                          diff_detectable=math.nan)
    assert evidence.verdict(row) == "identical in every seed (the same training)"
    row.diff_pairs = 1  # one pair: no interval, and nothing to call identical
    assert evidence.verdict(row) == "undecided (no interval)"
    lower = paired_difference([0.80, 0.81, 0.79], [0.90, 0.90, 0.91])
    row = SimpleNamespace(diff_low=100 * lower.low, diff_high=100 * lower.high, diff_points=100 * lower.mean,
                          diff_pairs=3, diff_detectable=1.0)
    assert evidence.verdict(row) == "**lower**"


def test_target_text_adds_the_spread_without_collapsed_seeds():
    from types import SimpleNamespace

    evidence = _evidence_module()
    ref = [92.0 + 0.1 * (s % 3) for s in range(12)]
    arm = [r + 0.2 + 0.05 * (s % 2) for s, r in enumerate(ref)]
    arm[5] = 40.0  # one collapsed seed of the arm
    runs = [SimpleNamespace(config=SimpleNamespace(policy=p, delta=d, seed=s), summary={"final_test_acc": a / 100})
            for p, d, accs in (("hardbatch", 0.5, arm), ("hardbatch", 1.0, ref)) for s, a in enumerate(accs)]
    result = evidence.Result(bench=None, choice={}, stats={}, runs=runs)
    clean = evidence.without_collapsed(result, "δ = 0.5", "δ = 1")
    kept = [s for s in range(12) if s != 5]
    expected = paired_difference([arm[s] for s in kept], [ref[s] for s in kept])
    assert clean.n == 11 and (clean.mean, clean.low, clean.high) == pytest.approx((expected.mean, expected.low, expected.high))
    whole = paired_difference(arm, ref)
    stats = SimpleNamespace(diff_low=whole.low, diff_high=whole.high, diff_pairs=12)
    text = evidence.target_text(stats, 0.5, clean)
    assert text.startswith(f"missed by {whole.half_width - 0.5:.2f}")
    assert text.endswith(f"(without the collapsed seeds: ±{expected.half_width:.2f} over 11, met)")
    assert evidence.without_collapsed(result, "δ = 1", "δ = 1") is None  # nothing collapsed: nothing to add


def test_report_command_takes_per_arm_settings(scripted, capsys):
    from hardbatch.cli import main

    for path in scripted.glob("ref_s*"):
        _with_lr(path, 0.3)
    assert main(["report", str(scripted), "--no-plots", "--per-arm", "lr"]) == 0
    assert "Chosen per arm: δ = 0.5 lr 0.05, δ = 1 lr 0.3." in (scripted / "report.md").read_text()
    assert main(["report", str(scripted), "--no-plots", "--per-arm", "seed"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot choose 'seed' per arm" in line


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
    assert evidence.main(["--quick", "--shard", "2/2", "--out", str(tmp_path / "runs"), "--plan-only"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "shard must look like I/N" in line


def test_the_page_states_what_rho_losss_irreducible_loss_model_reached():
    from types import SimpleNamespace

    evidence = _evidence_module()

    def run(policy, acc, quality=None):
        summary = {"final_test_acc": acc, **({"irreducible_model": quality} if quality else {})}
        return SimpleNamespace(config=SimpleNamespace(policy=policy, delta=1.0, seed=0), summary=summary)

    def il(top1):
        return {"holdout_samples": 399, "train_top1": top1, "train_loss": 1.7}

    runs = [run("uniform", 0.92), run("uniform", 0.90), run("rho-loss", 0.6, il(0.30)), run("rho-loss", 0.62, il(0.36)),
            run("rho-loss", 0.61)]  # the last: from before summary.json recorded it
    text = evidence.irreducible_text(evidence.Result(bench=None, choice={}, stats={}, runs=runs))
    assert text.startswith("`rho-loss`'s irreducible-loss model, trained before each run on the 399 validation "
                           "samples: top-1 33.0% (from 30.0 to 36.0) on the training split it never saw, over 2 of 3 "
                           "rho-loss runs; `uniform`'s final test top-1 is 91.0%. Its irreducible losses are only as "
                           "good as that model")
    assert evidence.irreducible_text(evidence.Result(bench=None, choice={}, stats={}, runs=runs[:2])) == ""


def test_a_shard_stopped_by_sigterm_still_records_its_cpu_time(tmp_path):
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "runs"
    script = ROOT / "scripts" / "evidence.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), "--quick", "--out", str(out), "--doc",
                             str(tmp_path / "evidence.md")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.rglob("summary.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # mid-regeneration: its first run is done, the rest is not
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    (ledger,) = out.glob("cpu-seconds-*.json")
    assert json.loads(ledger.read_text())["seconds"] > 0
