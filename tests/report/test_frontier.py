"""report.frontier and what reads it: uniform's budgets as a frontier in each cost, every other arm placed against it
at the cost it spent (straight line between neighbouring budgets, seed-paired, no extrapolation), the verdicts, the
tables, the plot, "does the rule generalize in fewer epochs?" and its claim, on the scripted runs of
scripted_runs.FRONTIER_RUNS (the arithmetic is spelled out there)."""

from __future__ import annotations

import math
import shutil

import pytest

import hardbatch.report.plots as plots
from hardbatch.cli import main
from hardbatch.errors import UsageError
from hardbatch.metrics import detectable_difference
from hardbatch.report import arm_stats, build_report, group_runs
from hardbatch.report.claims import HELD, NOT_HELD, GroupResult, fewer_epochs_claim
from hardbatch.report.frontier import frontiers
from hardbatch.report.tables import (
    fewer_epochs_answers,
    fewer_epochs_table,
    frontier_table,
    placement_table,
)
from hardbatch.report.wording import ABOVE, OUTSIDE

from .scripted_runs import T975, load, write_frontier, write_run


@pytest.fixture
def group(tmp_path):
    (group,) = group_runs(load(write_frontier(tmp_path)))
    return group


def _stats(group, metric="acc"):
    return {s.arm: s for s in arm_stats(group, metric=metric)}


def test_the_frontier_is_uniforms_budgets_at_their_mean_cost(group):
    fronts = frontiers(group)
    assert list(fronts) == ["samples_backprop", "cpu_seconds"]
    samples, cpu = fronts["samples_backprop"], fronts["cpu_seconds"]
    assert [(p.budget, p.epochs, p.cost) for p in samples.points] == [(0.5, 2, 640), (1.0, 4, 1280)]
    assert [p.cost for p in cpu.points] == pytest.approx([3.0, 6.0])  # 2 (or 4) epochs x (1 + 1.5 + 2) / 3
    half = samples.points[0]
    assert half.acc.mean == pytest.approx(0.82) and half.finals == {0: 0.80, 1: 0.82, 2: 0.84}
    # The band: the 95% t interval of the mean over seeds (sd 0.02), clipped to [0, 1].
    assert half.acc.high - half.acc.mean == pytest.approx(T975[2] * 0.02 / math.sqrt(3))
    (without,) = group_runs([r for r in load_runs_of(group) if r.config.budget == 1.0 or r.config.policy != "uniform"])
    assert frontiers(without) == {}  # one budget of uniform: no frontier


def load_runs_of(group):
    return [run for arm in group.arms for run in arm.runs.values()]


def test_an_arm_between_two_budgets_is_judged_against_the_straight_line_per_seed(group):
    rule = _stats(group)["δ = 0.5, budget 0.75"]
    for column in ("samples_backprop", "cpu_seconds"):  # 960 of 640..1280 samples, 4.5 of 3..6 s: halfway in both
        place = rule.vs_frontier[column]
        assert place.inside and place.between == (0.5, 1.0)
        assert place.line == pytest.approx((0.82 + 0.91) / 2)
        # d = +2, +1.5, +2 points: mean 11/6, sd 0.2887; half-width t(0.975, 2) sd / sqrt(3)
        sd = math.sqrt(((2 - 11 / 6) ** 2 * 2 + (1.5 - 11 / 6) ** 2) / 2)
        assert place.d.n == 3 and place.d.mean == pytest.approx(11 / 6)
        assert place.d.half_width == pytest.approx(T975[2] * sd / math.sqrt(3))
        assert place.d.low > 0
    assert rule.vs_frontier["cpu_seconds"].cost == pytest.approx(4.5)


def test_no_extrapolation_and_the_largest_budget_reads_uniform_itself(group):
    stats = _stats(group)
    short = stats["δ = 0.5, budget 0.25"].vs_frontier["samples_backprop"]
    assert (short.inside, short.cost, short.d.n) == (False, 320, 0) and math.isnan(short.line)
    full = stats["δ = 0.5"].vs_frontier["samples_backprop"]  # 1280 samples: uniform's full budget, seed by seed
    assert full.between == (1.0,) and full.d.mean == pytest.approx(1.0) and full.d.n == 3
    assert full.d.mean == pytest.approx(stats["δ = 0.5"].vs_uniform.mean)
    assert stats["uniform"].vs_frontier == {} == stats["uniform, budget 0.5"].vs_frontier  # they are the frontier


def test_the_frontier_section_tables_and_the_answer(group, tmp_path):
    stats = arm_stats(group)
    table = frontier_table(frontiers(group))
    assert table.splitlines()[0] == (
        "| uniform at budget | epochs | n | final top-1 % [95% CI] | samples back-propagated | CPU seconds |"
    )
    assert table.splitlines()[2].startswith("| 0.5 | 2 | 3 | 82.00 [") and table.splitlines()[2].endswith(
        "| 640 | 3.00 |"
    )
    lines = {line.split(" | ")[0][2:]: line for line in placement_table(stats).splitlines()[2:]}
    assert set(lines) == {"δ = 0.5", "δ = 0.5, budget 0.75", "δ = 0.5, budget 0.25", "δ = 1", "δ = 1, budget 0.75"}
    half_width = T975[2] * math.sqrt(1 / 12) / math.sqrt(3)  # d = +2, +1.5, +2: sd sqrt(1/12)
    assert (
        f"| 960 | +1.83 ±0.72 [+1.12, +2.55] | {detectable_difference(half_width, 3):.2f} | {ABOVE} |"
        in lines["δ = 0.5, budget 0.75"]
    )
    assert f"| 320 | — | — | {OUTSIDE} |" in lines["δ = 0.5, budget 0.25"]
    fewer = fewer_epochs_table(stats).splitlines()
    assert [line.split(" | ")[:3] for line in fewer[2:]] == [
        ["| 0.25", "1", "δ = 0.5"],
        ["| 0.75", "3", "δ = 0.5"],
        ["| 0.75", "3", "δ = 1"],
        ["| 1", "4", "δ = 0.5"],
        ["| 1", "4", "δ = 1"],
    ]
    assert fewer_epochs_answers(stats) == [
        "The rule (δ = 0.5) is above uniform's frontier at budget 0.75 in samples "
        "back-propagated, and at budget 0.75 in CPU seconds."
    ]
    claim = fewer_epochs_claim([GroupResult("digits", "small_cnn", stats, None, "test")])
    assert claim.verdict == HELD and "judged at budgets short of the full one" in claim.evidence
    # report.md: the frontier, the placements, the plot and the answer, and the claim beside the paper's 26.47%
    path, _ = build_report(group_root(group), tmp_path / "out")
    report = path.read_text()
    assert "### Against uniform's compute frontier: digits / small_cnn" in report
    assert "### Does the rule generalize in fewer epochs? digits / small_cnn" in report
    assert "**The rule (δ = 0.5) is above uniform's frontier at budget 0.75" in report
    assert (tmp_path / "out" / f"{group.slug}_frontier.png").stat().st_size > 0
    claims = report.split("## Claims of the paper, checked")[1]
    stl, ours = claims.index("26.47% fewer epochs"), claims.index("Generalizes in fewer epochs, at equal compute")
    assert ours == claims.index("\n", stl) + 3  # the next row


def group_root(group):
    return next(iter(group.arms[0].runs.values())).path.parent


def test_a_rule_below_the_frontier_does_not_hold_the_claim(tmp_path):
    root = write_frontier(tmp_path / "runs")
    for path in root.glob("hardbatch_0.5_0.75_s*"):  # the rule's budget above the frontier, gone
        shutil.rmtree(path)
    for seed, final in enumerate([0.78, 0.79, 0.81]):  # at 640 samples: d = -2, -3, -3 to uniform's half budget
        write_run(root, f"rule_half_s{seed}", accs=[final - 0.1, final], epochs=4, budget=0.5, delta=0.5, seed=seed)
    (group,) = group_runs(load(root))
    stats = arm_stats(group)
    place = next(s for s in stats if s.arm == "δ = 0.5, budget 0.5").vs_frontier["samples_backprop"]
    assert place.between == (0.5,) and place.d.mean == pytest.approx(-8 / 3) and place.d.high < 0
    assert fewer_epochs_claim([GroupResult("digits", "small_cnn", stats, None, "test")]).verdict == NOT_HELD
    assert fewer_epochs_answers(stats) == [
        "At no budget is the rule (δ = 0.5) above uniform's frontier, in samples back-propagated or in CPU seconds."
    ]


def test_the_balanced_metric_judges_the_frontier_and_the_verdicts(tmp_path, capsys):
    root = write_frontier(tmp_path / "runs", metric_gap=0.05)
    (group,) = group_runs(load(root))
    top1, balanced = _stats(group), _stats(group, "bacc")
    assert balanced["δ = 0.5"].final.mean == pytest.approx(top1["δ = 0.5"].final.mean - 0.05)
    assert balanced["δ = 0.5"].vs_reference.mean == pytest.approx(top1["δ = 0.5"].vs_reference.mean)  # both shift
    assert frontiers(group, "bacc")["samples_backprop"].points[0].acc.mean == pytest.approx(0.77)
    assert balanced["δ = 0.5"].metric_name == "balanced top-1"
    assert main(["report", str(root), "--no-plots", "--metric", "bacc", "--out", str(tmp_path / "b")]) == 0
    report = (tmp_path / "b" / "report.md").read_text()
    assert "judged on balanced top-1 accuracy" in report and "| final balanced top-1 % (mean ± std) |" in report
    assert "| 0.5 | 2 | 3 | 77.00 [" in report  # uniform's half budget on the frontier, balanced
    with pytest.raises(SystemExit):
        main(["report", str(root), "--no-plots", "--metric", "top5"])
    assert "invalid choice: 'top5' (choose from 'acc', 'bacc')" in capsys.readouterr().err
    with pytest.raises(UsageError, match=r"unknown metric 'top5'; valid: acc \(top-1\), bacc \(balanced top-1\)"):
        build_report(root, tmp_path / "c", metric="top5")


def test_the_frontier_plot_draws_the_line_its_band_and_each_arm(group, monkeypatch, tmp_path):
    drawn = {}
    real = plots.plot_frontier
    monkeypatch.setattr(
        plots,
        "plot_frontier",
        lambda lines, points, **k: drawn.update(lines=lines, points=points) or real(lines, points, **k),
    )
    stats = arm_stats(group)
    assert plots.draw_frontier(group, stats, tmp_path).name == f"{group.slug}_frontier.png"
    budgets, xs, mean, low, high = drawn["lines"]["samples_backprop"]
    assert (budgets, xs) == ([0.5, 1.0], [640, 1280]) and mean == pytest.approx([82.0, 91.0])
    assert all(lo < m < hi for lo, m, hi in zip(low, mean, high, strict=True))
    rule = next(s for s in stats if s.arm == "δ = 0.5, budget 0.75")
    assert drawn["points"]["δ = 0.5, budget 0.75"]["samples_backprop"] == pytest.approx(
        (960, 100 * rule.final_ci.mean, 100 * rule.final_ci.low, 100 * rule.final_ci.high)
    )
    assert "uniform" not in drawn["points"]
    ax = real(drawn["lines"], drawn["points"])
    (line, *_) = ax.lines
    assert list(line.get_xdata()) == [640, 1280] and len(ax.figure.axes) == 2
    from matplotlib.figure import Figure

    given = Figure().subplots(1, 2)  # drawn on the caller's axes, one per cost
    assert real(drawn["lines"], drawn["points"], axes=given) is given[0] and given[1].get_xlabel().startswith("CPU")
