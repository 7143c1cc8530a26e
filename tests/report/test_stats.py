"""report.stats on scripted runs (scripted_runs.py spells out the arithmetic): targets, % fewer epochs, censoring,
paired intervals, means, cost at equal budget, and summary.csv's row."""

from __future__ import annotations

import math

import pytest

from hardbatch.metrics import Interval, mean_interval
from hardbatch.report import arm_stats, group_runs
from hardbatch.report.stats import ArmStats, chosen_arm, target_accuracy

from .scripted_runs import T975, T_A, B, N, load, write_run


def _group(groups, lr):
    (group,) = [g for g in groups if g.settings["lr"] == lr]
    return group


def _rows_by_delta(group) -> dict[float, ArmStats]:
    rows = arm_stats(group)
    assert all(r.policy == "hardbatch" for r in rows)
    return {r.delta: r for r in rows}


def test_target_is_099_times_mean_best_accuracy_of_delta_1(groups):
    target, how = target_accuracy(_group(groups, 0.05))
    assert target == pytest.approx(T_A)
    assert "δ = 1" in how
    target_b, _ = target_accuracy(_group(groups, 0.1))
    assert target_b == pytest.approx(0.99 * 0.60)


def test_configured_target_accuracy_overrides_the_reference(tmp_path):
    write_run(tmp_path, "ref", delta=1.0, seed=0, accs=[0.5, 0.7, 0.9], target_acc=0.6)
    write_run(tmp_path, "half", delta=0.5, seed=0, accs=[0.65, 0.7, 0.8], target_acc=0.6)
    (group,) = group_runs(load(tmp_path))
    target, how = target_accuracy(group)
    assert target == pytest.approx(0.6) and "given" in how
    rows = _rows_by_delta(group)
    assert rows[1.0].target.epochs == 2 and rows[0.5].target.epochs == 1
    assert rows[0.5].target.fewer_epochs_pct == pytest.approx(50.0)
    assert target_accuracy(group, 0.5) == (0.5, "given to report --target-acc")


def test_epochs_to_target_and_fewer_epochs(groups):
    rows = _rows_by_delta(_group(groups, 0.05))
    for r in rows.values():
        assert r.target.acc == pytest.approx(T_A)
    ref, half = rows[1.0], rows[0.5]
    assert ref.target.epochs == pytest.approx(4.0)
    assert ref.target.reached == 3
    assert ref.target.fewer_epochs_pct == pytest.approx(0.0)
    assert half.target.epochs == pytest.approx((2 + 3 + 2) / 3)
    assert half.target.reached == 3
    assert half.target.fewer_epochs_pct == pytest.approx(100 * (1 - (7 / 3) / 4))  # 41.67 % fewer epochs


def test_runs_that_never_reach_the_target_count_as_censored_at_budget_plus_one(groups):
    fifth = _rows_by_delta(_group(groups, 0.05))[0.2]
    assert fifth.n == 2
    assert fifth.target.reached == 1
    # Seed 1 reaches T at epoch 5; seed 2 never does in its 5 epochs and counts as 6, not as absent.
    assert fifth.target.epochs == pytest.approx((5 + 6) / 2)
    assert fifth.target.fewer_epochs_pct == pytest.approx(100 * (1 - 5.5 / 4))  # -37.5 %: more epochs
    # One seed that never reaches T (counts as 6) against a reference reaching it at epoch 5.
    half_b = _rows_by_delta(_group(groups, 0.1))[0.5]
    assert half_b.target.reached == 0
    assert half_b.target.epochs == pytest.approx(6.0)
    assert half_b.target.fewer_epochs_pct == pytest.approx(100 * (1 - 6 / 5))


def test_paired_difference_in_points_with_95_percent_t_interval(groups):
    half = _rows_by_delta(_group(groups, 0.05))[0.5]
    # Seed-paired differences 1, 2, 3 points: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 2.484.
    half_width = T975[2] * 1.0 / math.sqrt(3)
    assert half_width == pytest.approx(2.484, abs=1e-3)
    d = half.vs_reference
    assert d.n == 3 and d.mean == pytest.approx(2.0)
    assert (d.low, d.high) == (pytest.approx(2.0 - half_width), pytest.approx(2.0 + half_width))
    # Relative: 100 * 2 points / mean reference final (.90 + .86 + .88) / 3 = 88 %.
    assert half.relative_pct == pytest.approx(100 * 0.02 / 0.88)


def test_seeds_pair_by_seed_when_an_arm_misses_one(groups):
    fifth = _rows_by_delta(_group(groups, 0.05))[0.2]
    # Seeds 1 and 2 pair with the reference's seeds 1 and 2 (finals .86, .88), not its first two runs.
    mean = (0.90 - 0.86 + 0.80 - 0.88) / 2  # +4, -8 points
    assert fifth.vs_reference.n == 2
    assert fifth.vs_reference.mean == pytest.approx(100 * mean)  # -2 points
    # Two pairs give no interval (a t-interval over 2 pairs is 12.7 standard errors wide, or empty when equal).
    assert not fifth.vs_reference.has_interval
    # Relative to the reference's mean over the same seeds (.87), not over all seeds.
    assert fifth.relative_pct == pytest.approx(100 * mean / 0.87)


def test_a_single_pair_has_a_difference_but_no_interval(groups):
    half_b = _rows_by_delta(_group(groups, 0.1))[0.5]
    assert half_b.vs_reference.n == 1 and half_b.vs_reference.mean == pytest.approx(-2.0)
    assert math.isnan(half_b.vs_reference.low) and math.isnan(half_b.vs_reference.high)


def test_epochs_to_plateau_and_accuracy_means(groups):
    rows = _rows_by_delta(_group(groups, 0.05))
    assert rows[1.0].epochs_to_plateau == pytest.approx(4.0)
    assert rows[0.5].epochs_to_plateau == pytest.approx((3 + 4 + 2) / 3)
    assert rows[0.2].epochs_to_plateau == pytest.approx((4 + 5) / 2)
    assert rows[0.5].final.mean == pytest.approx((0.91 + 0.88 + 0.91) / 3)
    assert rows[0.5].final.std == pytest.approx(math.sqrt(((0.01) ** 2 + (0.02) ** 2 + (0.01) ** 2) / 2))
    assert rows[0.5].best_acc == pytest.approx((0.91 + 0.92 + 0.93) / 3)
    assert rows[1.0].cost.train_seconds == pytest.approx(5 * (2 + 3 + 4) / 3)  # 5 epochs x (2 + seed) s
    assert rows[0.2].cost.samples_backpropagated == 5 * N * B
    # The last-3 mean: seeds' last three epochs, then over seeds; its difference pairs by seed too.
    last = [sum(a[-3:]) / 3 for a in ([0.905, 0.91, 0.91], [0.90, 0.92, 0.88], [0.93, 0.93, 0.91])]
    assert rows[0.5].last.mean == pytest.approx(sum(last) / 3)
    assert rows[0.5].last_vs_reference.n == 3


def test_final_interval_of_the_mean_is_clipped_to_accuracies(tmp_path):
    for seed, final in enumerate([1.0, 0.99, 0.97]):
        write_run(tmp_path, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, final])
    (group,) = group_runs(load(tmp_path))
    (ref,) = arm_stats(group)
    unclipped = mean_interval([1.0, 0.99, 0.97])  # mean 98.67 + half-width 3.8 points > 100
    assert unclipped.high > 1.0 and ref.final_ci.high == 1.0 and ref.final_ci.low == pytest.approx(unclipped.low)


def test_training_seconds_to_target(groups):
    rows = _rows_by_delta(_group(groups, 0.05))
    # Scripted runs spend 2 + seed seconds per epoch; delta 0.5 reaches T at epochs 2, 3, 2 for seeds 0, 1, 2.
    assert rows[0.5].target.seconds == pytest.approx((2 * 2 + 3 * 3 + 2 * 4) / 3)
    assert rows[1.0].target.seconds == pytest.approx((4 * 2 + 4 * 3 + 4 * 4) / 3)
    # Seed 1 reached T after 5 epochs of 3 s; seed 2 never did and counts with its whole 5 x 4 s.
    assert rows[0.2].target.seconds == pytest.approx((5 * 3 + 5 * 4) / 2)


def test_the_arm_chosen_on_validation_and_on_test(tmp_path):
    """δ = 0.5 is best on validation, δ = 0.2 best on test: the choice for the claims is the validation one."""
    for seed in (0, 1):
        write_run(tmp_path, f"d1_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.70], val_accs=[0.5, 0.70])
        write_run(tmp_path, f"d05_s{seed}", delta=0.5, seed=seed, accs=[0.6, 0.72], val_accs=[0.6, 0.80])
        write_run(tmp_path, f"d02_s{seed}", delta=0.2, seed=seed, accs=[0.6, 0.75], val_accs=[0.6, 0.71])
    (group,) = group_runs(load(tmp_path))
    chosen, on = chosen_arm(arm_stats(group))
    assert (chosen.arm, on) == ("δ = 0.5", "validation")
    plain = tmp_path / "no_val"
    for seed in (0, 1):
        write_run(plain, f"d1_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.70])
        write_run(plain, f"d05_s{seed}", delta=0.5, seed=seed, accs=[0.6, 0.72])
    (group,) = group_runs(load(plain))
    chosen, on = chosen_arm(arm_stats(group))
    assert (chosen.arm, on) == ("δ = 0.5", "test")


def test_accuracy_at_equal_cpu_seconds(trained):
    (group,) = group_runs(load(trained))
    stats = arm_stats(group)
    budget = min(r.cost("cpu_seconds")[-1] for a in group.arms for r in a.runs.values())
    for s, arm in zip(stats, group.arms, strict=True):
        assert s.at_budget["cpu_seconds"].budget == pytest.approx(budget)
        assert s.cost.cpu_seconds == pytest.approx(sum(r.summary["cost"]["cpu_seconds"] for r in arm.runs.values()) / 3)
        # each run's test top-1 at its last evaluation within the budget, averaged over the runs that had one
        reached = [
            [a for c, a in zip(r.cost("cpu_seconds"), r.accs, strict=True) if c <= budget * (1 + 1e-9)]
            for r in arm.runs.values()
        ]
        reached = [accs[-1] for accs in reached if accs]
        assert reached and s.at_budget["cpu_seconds"].acc == pytest.approx(sum(reached) / len(reached))


def test_summary_csv_row_keeps_its_columns(groups):
    """summary.csv's columns stay those of the flat record it was written from before (users read them)."""
    row = arm_stats(_group(groups, 0.05))[1].row()
    assert list(row)[:9] == ["group", "arm", "policy", "axis", "value", "delta", "n", "is_reference", "is_method"]
    assert len(row) == 71 and "last_diff_pairs" not in row
    # then, at the end, what the metric, the budget and uniform's frontier add (no frontier here: no verdicts)
    assert list(row)[56:60] == ["metric", "budget", "epochs", "frontier_samples_backprop_inside"]
    assert (row["metric"], row["budget"], row["epochs"], row["frontier_cpu_seconds_pairs"]) == ("acc", 1.0, 5, 0)
    assert row["diff_points"] == pytest.approx(2.0) and row["diff_pairs"] == 3
    assert row["fewer_epochs_pct"] == pytest.approx(100 * (1 - 7 / 12)) and row["target_reached"] == 3
    assert row["budget_samples_backprop"] == 5 * N * B and math.isnan(row["mislabelled_in_data_mean"])
    assert ArmStats("g", "a", "uniform", None, None, 1.0, 0).vs_uniform == Interval()
