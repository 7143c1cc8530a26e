"""report.benchmarks and report.evidence: the evidence page's parts on scripted runs (collapsed seeds, the half-width
target, rho-loss's model, the verdict table against every reference and uniform's frontier, the README block);
scripts/evidence.py --quick renders a whole page (tests/test_evidence.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hardbatch.errors import UsageError
from hardbatch.metrics import paired_difference
from hardbatch.records import SUMMARY
from hardbatch.report import benchmarks, evidence
from hardbatch.report.benchmarks import (
    Result,
    collapsed,
    irreducible_text,
    target_text,
    without_collapsed,
)
from hardbatch.report.compact import archive_folders

from .scripted_runs import load, write_frontier, write_run


@dataclass(frozen=True)
class Bench:
    """What the page reads of a benchmark (scripts/evidence.py declares the real ones)."""

    name: str = "bench"
    title: str = "A benchmark"
    settings: dict = field(default_factory=lambda: {"dataset": "digits", "device": "cpu"})
    arms: tuple = ("δ = 0.5", "δ = 1", "uniform")
    lrs: tuple = (0.05,)
    seeds: int = 3
    tune_seeds: int = 1
    target: float | None = 0.5
    metric: str = "acc"


def _runs(root: Path, arms: dict[tuple, list[float]]) -> list:
    """One run per seed and final accuracy of each (policy, δ) arm (with a validation split, as rho-loss needs)."""
    for (policy, delta), finals in arms.items():
        for seed, final in enumerate(finals):
            write_run(
                root,
                f"{policy}_{delta}_s{seed}",
                policy=policy,
                delta=delta,
                seed=seed,
                accs=[0.5, final],
                val_accs=[0.5, final],
                val_fraction=0.1,
            )
    return load(root)


def test_collapsed_counts_the_seeds_far_below_their_arms_median(tmp_path):
    # median 91: 36.1 and 80 collapsed, 82 not
    runs = _runs(
        tmp_path,
        {
            ("hardbatch", 0.5): [0.92, 0.91, 0.93, 0.92, 0.361, 0.80, 0.82],
            ("hardbatch", 1.0): [0.92, 0.93],
            ("uniform", 1.0): [0.9],
        },
    )
    result = Result(bench=Bench(), choice={}, stats={}, runs=runs)
    assert collapsed(result, "δ = 0.5") == (2, 7)
    assert collapsed(result, "δ = 1") == (0, 2)
    assert collapsed(result, "uniform") == (0, 1)  # non-δ policies are labelled without their delta
    assert collapsed(result, "infobatch") == (0, 0)


def test_target_text_adds_the_spread_without_collapsed_seeds(tmp_path):
    ref = [0.92 + 0.001 * (s % 3) for s in range(12)]
    arm = [r + 0.002 + 0.0005 * (s % 2) for s, r in enumerate(ref)]
    arm[5] = 0.40  # one collapsed seed of the arm
    result = Result(
        bench=Bench(), choice={}, stats={}, runs=_runs(tmp_path, {("hardbatch", 0.5): arm, ("hardbatch", 1.0): ref})
    )
    clean = without_collapsed(result, "δ = 0.5", "δ = 1")
    kept = [s for s in range(12) if s != 5]
    expected = paired_difference([100 * arm[s] for s in kept], [100 * ref[s] for s in kept])
    assert clean.n == 11 and (clean.mean, clean.low, clean.high) == pytest.approx(
        (expected.mean, expected.low, expected.high)
    )
    whole = paired_difference([100 * a for a in arm], [100 * r for r in ref])
    text = target_text(whole, 0.5, clean)
    assert text.startswith(f"missed by {whole.half_width - 0.5:.2f}; about ")
    assert text.endswith(f"(without the collapsed seeds: ±{expected.half_width:.2f} over 11, met)")
    assert without_collapsed(result, "δ = 1", "δ = 1") is None  # nothing collapsed: nothing to add
    assert target_text(expected, 0.5) == "met (≤ 0.5)" and target_text(whole, None) == "—"


def test_the_page_states_what_rho_losss_irreducible_loss_model_reached(tmp_path):
    runs = _runs(tmp_path, {("uniform", 1.0): [0.92, 0.90], ("rho-loss", 1.0): [0.6, 0.62, 0.61]})
    rho_loss = [r for r in runs if r.config.policy == "rho-loss"]
    for run, top1 in zip(rho_loss, (0.30, 0.36), strict=False):  # the third run gets none
        run.summary["irreducible_model"] = {"holdout_samples": 399, "train_top1": top1, "train_loss": 1.7}
    text = irreducible_text(Result(bench=Bench(), choice={}, stats={}, runs=runs))
    assert text.startswith(
        "`rho-loss`'s irreducible-loss model, trained before each run on the 399 validation "
        "samples: top-1 33.0% (from 30.0 to 36.0) on the training split it never saw, over 2 of 3 "
        "rho-loss runs; `uniform`'s final test top-1 is 91.0%. Its irreducible losses are only as "
        "good as that model"
    )
    uniform = [r for r in runs if r.config.policy == "uniform"]
    assert irreducible_text(Result(bench=Bench(), choice={}, stats={}, runs=uniform)) == ""


def _benchmark(root: Path, bench: Bench) -> None:
    """``root/BENCH/main`` as scripts/evidence.py leaves it: the rule at δ 0.5 and 1 and uniform, lr_choice.json."""
    finals = {
        ("hardbatch", 0.5): [0.91, 0.88, 0.91],
        ("hardbatch", 1.0): [0.90, 0.86, 0.88],
        ("uniform", 1.0): [0.90, 0.86, 0.88],
    }
    for (policy, delta), accs in finals.items():
        for seed, final in enumerate(accs):
            write_run(
                root / bench.name / "main",
                f"{policy}_{delta}_s{seed}",
                policy=policy,
                delta=delta,
                seed=seed,
                accs=[0.5, final],
            )
    choice = {
        "seeds": [0],
        "grid": [0.05],
        "metric": "acc",
        "rule": "the highest median",
        "arms": {label: {"lr": 0.05, "val_median": {"0.05": 90.0}, "collapsed": {"0.05": 1}} for label in bench.arms},
    }
    (root / bench.name / "lr_choice.json").write_text(json.dumps(choice))


def test_a_benchmarks_verdicts_and_sections_from_its_runs(tmp_path):
    bench = Bench()
    _benchmark(tmp_path / "runs", bench)
    result = benchmarks.summarise(archive_folders(bench, tmp_path / "runs"), tmp_path / "docs" / "evidence", 0.5)
    assert set(result.stats) == {"hardbatch@1", "uniform"}  # no random or rs2 arm: no comparison with them
    assert (tmp_path / "docs" / "evidence" / "bench" / "report.md").exists()
    rows = benchmarks.verdict_table([result]).splitlines()[2:]
    # Every arm against every reference but itself (finals of δ = 0.5: +1, +2, +3 points: sd 1); no frontier here.
    # ±0.5 at sd 1 takes 18 seeds: t(0.975, 17) / sqrt(18) = 0.497, where 17 give 2.120 / sqrt(17) = 0.514.
    assert rows[0] == (
        "| bench | δ = 0.5 | δ = 1 | 3 | +2.00 ±2.48 [-0.48, +4.48] | 3.10 | missed by 1.98; about "
        "18 seeds would reach it | 0, 0 | no measurable difference (detectable: ±3.10) |"
    )
    assert rows[1].startswith("| bench | δ = 0.5 | uniform | 3 | +2.00 ±2.48")
    assert rows[2] == (
        "| bench | δ = 1 | uniform | 3 | +0.00 (no CI: zero spread) | — | — | 0, 0 | identical in "
        "every seed (the same training) |"
    )
    assert rows[3].startswith("| bench | uniform | δ = 1 | 3 | +0.00 (no CI: zero spread) |") and len(rows) == 4
    section = benchmarks.section(result)
    assert section.startswith(
        "## A benchmark\n\n9 runs (3 seeds per arm; dataset digits). Full report: "
        "[`evidence/bench/report.md`](evidence/bench/report.md)."
    )
    assert "| δ = 0.5 | 90.00 (1) | **0.05** |" in section and "| uniform | 0.05 | 88.00 | 20 | 640 |" in section
    assert "median val top-1 % at lr 0.05 (collapsed seeds)" in section and "_frontier.png" not in section
    page = evidence.page([result], minutes=1.5, quick=True, missing=["other"], training=0.25, date="2026-12-02")
    assert page.startswith(
        "# Evidence (quick check: not the page)\n\nRegenerated by `python scripts/evidence.py "
        "--benchmarks bench` (2026-12-02)"
    )
    assert "9 runs on the page, 3 tuning runs" in page and "**1.5 CPU minutes**" in page
    assert "**Partial**: this page covers bench only; still to run: other" in page
    assert "Machine: CPU Scripted CPU, capability AVX2, 1 thread (9 runs)." in page
    # the main runs beyond the tuning seed (seeds 1 and 2: 2 epochs of (2 + seed) / 2 CPU s), no tuning runs here
    assert benchmarks.training_cpu_minutes(result) == pytest.approx((2 * 1.5 + 2 * 2) * 3 / 60)


def test_a_damaged_main_run_stops_the_page(tmp_path):
    bench = Bench()
    _benchmark(tmp_path / "runs", bench)
    (tmp_path / "runs" / "bench" / "main" / "uniform_1.0_s1" / SUMMARY).write_text("{")
    with pytest.raises(UsageError, match=r"damaged run .*uniform_1\.0_s1: cannot read"):
        archive_folders(bench, tmp_path / "runs")


def test_the_readme_block_is_replaced_between_its_markers(tmp_path):
    bench = Bench()
    _benchmark(tmp_path / "runs", bench)
    result = benchmarks.summarise(archive_folders(bench, tmp_path / "runs"), tmp_path / "docs" / "evidence", 0.5)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{evidence.MARKERS[0]}\nold\n{evidence.MARKERS[1]}\n\nrest\n")
    evidence.write_readme(readme, [result], tmp_path / "docs" / "evidence.md")  # linked relative to the README
    text = readme.read_text()
    assert "old" not in text and "| bench | δ = 0.5 | δ = 1 |" in text and text.endswith("\n\nrest\n")
    assert "| bench | δ = 1 | uniform |" not in text  # the README holds the rule's verdicts; the page every arm's
    assert "Every arm, method, power and plots: [`docs/evidence.md`](docs/evidence.md)." in text
    readme.write_text("no markers\n")
    with pytest.raises(UsageError, match=re.escape("no <!-- evidence:begin --> ... <!-- evidence:end --> markers")):
        evidence.check_readme(readme)
    with pytest.raises(UsageError, match=r"cannot read .*missing\.md"):
        evidence.check_readme(tmp_path / "missing.md")


def test_every_arm_is_judged_against_uniforms_frontier_on_the_benchmarks_metric(tmp_path):
    """A benchmark judged on balanced top-1 with uniform, the rule and δ = 1 at shorter budgets
    (scripted_runs.FRONTIER_RUNS, balanced accuracies 5 points below top-1): the verdict table places every arm at
    the full budget against the frontier in both costs, and the section answers "fewer epochs?"."""
    bench = Bench(arms=("δ = 0.5", "δ = 1", "uniform"), metric="bacc")
    write_frontier(tmp_path / "runs" / bench.name / "main", metric_gap=0.05)
    _choice(tmp_path / "runs", bench)
    result = benchmarks.summarise(archive_folders(bench, tmp_path / "runs"), tmp_path / "docs" / "evidence", 0.5)
    rows = [line for line in benchmarks.verdict_table([result]).splitlines()[2:] if "δ = 0.5 | uniform's" in line]
    # at the full budget, 1280 samples: uniform's full budget seed by seed (d = +1, +2, 0); in CPU seconds the same
    assert rows == [
        f"| bench | δ = 0.5 | uniform's frontier ({cost}) | 3 | +1.00 ±2.48 [-1.48, +3.48] | 3.10 | "
        "missed by 1.98; about 18 seeds would reach it | 0, 0 | level with the frontier (detectable: "
        "±3.10) |"
        for cost in ("samples back-propagated", "CPU seconds")
    ]
    assert all("budget" not in line.split(" | ")[1] for line in benchmarks.verdict_table([result]).splitlines()[2:])
    assert {line.split(" | ")[1] for line in benchmarks.verdict_table([result], rule_only=True).splitlines()[2:]} == {
        "δ = 0.5"
    }
    assert collapsed(result, "δ = 0.5, budget 0.25") == (0, 3)  # finals 65-67 balanced: none 10 below the median
    section = benchmarks.section(result)
    assert "Judged on balanced top-1 accuracy." in section and f"{result.slug}_frontier.png" in section
    assert "**The rule (δ = 0.5) is above uniform's frontier at budget 0.75 in samples back-propagated" in section
    assert "| 0.75 | 3 | δ = 0.5 | 83.33 [" in section  # the rule at 3 of 4 epochs, balanced: 88.33 - 5


def _choice(root: Path, bench: Bench) -> None:
    choice = {
        "seeds": [0],
        "grid": [0.05],
        "metric": bench.metric,
        "rule": "the highest median",
        "arms": {label: {"lr": 0.05, "val_median": {"0.05": 90.0}, "collapsed": {"0.05": 0}} for label in bench.arms},
    }
    (root / bench.name / "lr_choice.json").write_text(json.dumps(choice))
