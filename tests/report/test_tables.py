"""report.tables: what each Markdown table shows for scripted arms (no interval said as such, the power column, cost,
per-class and label-noise tables, the overview)."""

from __future__ import annotations

import json
import math

import pytest

from hardbatch.report import arm_stats, build_report, group_runs
from hardbatch.report.tables import cost_table, markdown_table, noise_table, overview_table, per_class_table

from .scripted_runs import HALF, REF, T80, T975, load, write_run


def _lines(table: str) -> dict[str, str]:
    return {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}


def test_markdown_table_shows_the_claims(groups):
    (group,) = [g for g in groups if g.settings["lr"] == 0.05]
    lines = _lines(markdown_table(arm_stats(group)))
    assert set(lines) == {"δ = 0.2", "δ = 0.5", "δ = 1"}
    assert "reference" in lines["δ = 1"]
    half = lines["δ = 0.5"]
    assert "+2.00 ±2.48 [-0.48, +4.48]" in half  # the half-width says how sure the difference is
    assert f"{100 * 0.02 / 0.88:+.2f}" in half
    assert "2.3 (3/3)" in half and "+41.7" in half
    fifth = lines["δ = 0.2"]
    assert "5.5 (1/2)" in fifth and "-37.5" in fifth


def test_report_states_each_differences_detectable_size(tmp_path):
    for seed, accs in REF.items():
        write_run(tmp_path, f"ref_s{seed}", delta=1.0, seed=seed, accs=accs)
    for seed, accs in HALF.items():
        write_run(tmp_path, f"half_s{seed}", delta=0.5, seed=seed, accs=accs)
    (group,) = group_runs(load(tmp_path))
    half = next(s for s in arm_stats(group) if s.delta == 0.5)
    se = 1.0 / math.sqrt(3)  # differences 1, 2, 3 points: sd 1
    assert half.vs_reference.detectable == pytest.approx((T975[2] + T80[2]) * se)
    assert f"| {(T975[2] + T80[2]) * se:.2f} |" in _lines(markdown_table(arm_stats(group)))["δ = 0.5"]


def test_no_interval_is_shown_as_such_and_decides_no_claim(tmp_path):
    """2 seeds, or differences that are all equal, print "no CI" rather than a zero-width interval."""
    root = tmp_path / "runs"
    for seed in range(2):  # equal paired differences: -2.50 points each
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.80 + 0.1 * seed])
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.775 + 0.1 * seed])
    (group,) = group_runs(load(root))
    table = markdown_table(arm_stats(group))
    assert "-2.50 (no CI: 2 pairs, needs 3)" in table and "[-2.50, -2.50]" not in table
    assert "(no CI: 2 seeds, needs 3)" in cost_table(arm_stats(group))  # a level over 2 seeds
    path, _ = build_report(root, tmp_path / "two", plots=False)
    claims = path.read_text().split("## Claims of the paper, checked")[1].split("## Definitions")[0]
    assert "significantly improves test accuracy over ordinary training | **undecided**" in claims
    write_run(root, "ref_s2", delta=1.0, seed=2, accs=[0.5, 0.95])
    write_run(root, "half_s2", delta=0.5, seed=2, accs=[0.5, 0.925])
    (group,) = group_runs(load(root))
    assert "-2.50 (no CI: zero spread)" in markdown_table(arm_stats(group))


def test_cost_table_takes_differences_to_uniform_and_the_reference(trained):
    (group,) = group_runs(load(trained))
    stats = arm_stats(group)
    table = cost_table(stats)
    lines = _lines(table)
    assert set(lines) == {"δ = 1", "uniform", "infobatch"}
    assert lines["uniform"].split(" | ")[3] == "reference" and lines["δ = 1"].split(" | ")[4] == "reference"
    infobatch = next(s for s in stats if s.policy == "infobatch")
    assert f"top-1 % at {stats[0].at_budget['samples_backprop'].budget:.0f} backprop samples" in table
    assert f"| {infobatch.cost.samples_backpropagated:.0f} |" in lines["infobatch"]
    uniform = next(s for s in stats if s.policy == "uniform")
    assert infobatch.cost.samples_backpropagated < uniform.cost.samples_backpropagated


def test_per_class_and_noise_tables(tmp_path):
    write_run(tmp_path, "a", accs=[0.5, 0.6])
    (group,) = group_runs(load(tmp_path))
    assert per_class_table(group) is None  # the runs did not record per-class accuracy
    summary = tmp_path / "a" / "summary.json"
    saved = json.loads(summary.read_text())
    summary.write_text(
        json.dumps(
            {
                **saved,
                "final_test_per_class_acc": [0.5, None, 1.0],
                "mislabelled": {"trained": 0.3, "trained_after_warmup": 0.4, "in_data": 0.2, "in_partition": 0.2},
            }
        )
    )
    (group,) = group_runs(load(tmp_path))
    assert per_class_table(group).splitlines()[2] == "| δ = 1 | 50.0 | — | 100.0 |"
    assert noise_table(arm_stats(group)).splitlines()[2] == "| δ = 1 | 30.0 | 40.0 | 20.0 | 2.00 |"


def test_overview_table_has_a_column_per_delta(groups):
    stats = {g.title: arm_stats(g) for g in groups}
    table = overview_table(groups, stats)
    assert table.splitlines()[0] == "| network | δ = 0.2 | δ = 0.5 | δ = 1 |"
    assert "| — |" in table  # the lr = 0.1 group ran no δ = 0.2
