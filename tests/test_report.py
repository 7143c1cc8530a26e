"""Report arithmetic (targets, % fewer epochs, paired intervals, grouping) on scripted run folders, and results helpers."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

from hardbatch.cli import main
from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.report.build import arm_stats, build_report, group_runs, markdown_table, Run, target_accuracy
from hardbatch.fileio import atomic_write_json, atomic_write_text, read_csv
from hardbatch.metrics import epochs_to_plateau, epochs_to_target, mean_std, paired_difference
from hardbatch.records import CONFIG, HISTORY, SUMMARY, find_runs, RunDir, summarize

N = 10  # scripted number of mini-batches per epoch
B = 32
# Student-t quantiles t(0.975, df), written out so the intervals are checked against a hand computation.
T975 = {1: 12.706204736174707, 2: 4.302652729911275}

# ---------------------------------------------------------------- scripted result folders


def write_run(root: Path, name: str, *, delta: float, seed: int, accs: list[float], lr: float = 0.05,
              policy: str = "hardbatch", target_acc: float | None = None, **params) -> Path:
    """A finished run directory in the format ``hardbatch train`` writes, with hand-chosen test accuracies;
    ``params``: the policy's own hyper-parameters (``prune_ratio=0.3``)."""
    cfg = RunConfig(delta=delta, seed=seed, lr=lr, epochs=len(accs), batch_size=B, policy=policy,
                    precision="fp32", channels_last=False, target_acc=target_acc, **params)
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    atomic_write_json(run.file(CONFIG), {"config": cfg.to_dict(), "versions": {}, "git_commit": None})
    history = [
        {"epoch": e, "step": e * N, "train_loss": 1.0 / e, "test_loss": 1.0 - acc, "test_acc": acc, "test_top5": 1.0,
         "lr": lr, "train_seconds": 2.0 + seed, "eval_seconds": 0.5}
        for e, acc in enumerate(accs, start=1)
    ]
    run.write_history(history)
    k = max(1, math.floor(delta * N + 1e-9))
    visits = [len(accs)] * N  # sums to epochs * N steps
    atomic_write_json(run.file(SUMMARY), summarize(run.history(), cfg, visits, k))
    return run.path


# Group lr = 0.05. Reference (delta = 1) best accuracies .90, .905, .91 -> mean .905 -> T = 0.99 * .905 = .89595.
# A T from the min best (.891) or the max best (.9009) would change epochs-to-target below.
REF = {
    0: [0.50, 0.70, 0.85, 0.90, 0.90],   # reaches T at epoch 4, final .90, plateau (>= .89) epoch 4
    1: [0.40, 0.60, 0.893, 0.905, 0.86],  # .893 < T: epoch 4, final .86, plateau (>= .895) epoch 4
    2: [0.50, 0.60, 0.70, 0.91, 0.88],   # epoch 4, final .88, plateau (>= .90) epoch 4
}
# delta = 0.5: finals are the reference's + 1, 2, 3 points.
HALF = {
    0: [0.60, 0.898, 0.905, 0.91, 0.91],  # T at 2; plateau (>= .90) 3; final .91 (+1)
    1: [0.70, 0.85, 0.90, 0.92, 0.88],   # T at 3; plateau (>= .91) 4; final .88 (+2)
    2: [0.80, 0.925, 0.93, 0.93, 0.91],  # T at 2; plateau (>= .92) 2; final .91 (+3)
}
# delta = 0.2 has seeds 1 and 2 only (seed 0 missing); seed 2 never reaches T.
FIFTH = {
    1: [0.30, 0.50, 0.70, 0.892, 0.90],  # T at 5; plateau (>= .89) 4; final .90, vs ref .86: +4
    2: [0.30, 0.50, 0.60, 0.70, 0.80],   # never; plateau (>= .79) 5; final .80, vs ref .88: -8
}
# Group lr = 0.1, one seed: T = 0.99 * .6 = .594.
LR01 = {1.0: [0.30, 0.40, 0.50, 0.55, 0.60], 0.5: [0.30, 0.40, 0.50, 0.55, 0.58]}

T_A = 0.99 * 0.905


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scripted")
    for seed, accs in REF.items():
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=accs)
    for seed, accs in HALF.items():
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=accs)
    for seed, accs in FIFTH.items():
        write_run(root, f"fifth_s{seed}", delta=0.2, seed=seed, accs=accs)
    for delta, accs in LR01.items():
        write_run(root / "other_lr", f"d{delta:g}", delta=delta, seed=0, accs=accs, lr=0.1)
    return root


@pytest.fixture(scope="module")
def groups(scripted):
    return group_runs([Run.load(r) for r in find_runs(scripted)])


def _group(groups, lr):
    (group,) = [g for g in groups if g.settings["lr"] == lr]
    return group


def _rows_by_delta(group) -> dict[float, dict]:
    rows = arm_stats(group)
    assert all(r.policy == "hardbatch" for r in rows)
    return {r.delta: r for r in rows}


# ---------------------------------------------------------------- grouping and the target


def test_runs_with_different_lr_form_separate_groups(groups):
    assert len(groups) == 2
    a, b = _group(groups, 0.05), _group(groups, 0.1)
    assert [arm.delta for arm in a.arms] == [0.2, 0.5, 1.0]
    assert [arm.delta for arm in b.arms] == [0.5, 1.0]
    assert {d: sorted(arm.runs) for d, arm in ((arm.delta, arm) for arm in a.arms)} == {0.2: [1, 2], 0.5: [0, 1, 2], 1.0: [0, 1, 2]}
    # Titles tell the two groups apart by the setting that differs.
    assert "lr=0.05" in a.title and "lr=0.1" in b.title
    assert a.reference is not None and a.reference.delta == 1.0


def test_target_is_099_times_mean_best_accuracy_of_delta_1(groups):
    target, how = target_accuracy(_group(groups, 0.05))
    assert target == pytest.approx(T_A)
    assert "δ = 1" in how
    target_b, _ = target_accuracy(_group(groups, 0.1))
    assert target_b == pytest.approx(0.99 * 0.60)


def test_epochs_to_target_and_fewer_epochs(groups):
    rows = _rows_by_delta(_group(groups, 0.05))
    for r in rows.values():
        assert r.target_acc == pytest.approx(T_A)
    ref, half = rows[1.0], rows[0.5]
    assert ref.epochs_to_target_mean == pytest.approx(4.0)
    assert ref.target_reached == 3
    assert ref.fewer_epochs_pct == pytest.approx(0.0)
    assert half.epochs_to_target_mean == pytest.approx((2 + 3 + 2) / 3)
    assert half.target_reached == 3
    assert half.fewer_epochs_pct == pytest.approx(100 * (1 - (7 / 3) / 4))  # 41.67 % fewer epochs


def test_runs_that_never_reach_the_target_count_as_censored_at_budget_plus_one(groups):
    fifth = _rows_by_delta(_group(groups, 0.05))[0.2]
    assert fifth.n == 2
    assert fifth.target_reached == 1
    # Seed 1 reaches T at epoch 5; seed 2 never does in its 5 epochs and counts as 6, not as absent.
    assert fifth.epochs_to_target_mean == pytest.approx((5 + 6) / 2)
    assert fifth.fewer_epochs_pct == pytest.approx(100 * (1 - 5.5 / 4))  # -37.5 %: more epochs
    # One seed that never reaches T (counts as 6) against a reference reaching it at epoch 5.
    half_b = _rows_by_delta(_group(groups, 0.1))[0.5]
    assert half_b.target_reached == 0
    assert half_b.epochs_to_target_mean == pytest.approx(6.0)
    assert half_b.fewer_epochs_pct == pytest.approx(100 * (1 - 6 / 5))


def test_paired_difference_in_points_with_95_percent_t_interval(groups):
    half = _rows_by_delta(_group(groups, 0.05))[0.5]
    # Seed-paired differences 1, 2, 3 points: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 2.484.
    half_width = T975[2] * 1.0 / math.sqrt(3)
    assert half_width == pytest.approx(2.484, abs=1e-3)
    assert half.diff_pairs == 3
    assert half.diff_points == pytest.approx(2.0)
    assert half.diff_low == pytest.approx(2.0 - half_width)
    assert half.diff_high == pytest.approx(2.0 + half_width)
    # Relative: 100 * 2 points / mean reference final (.90 + .86 + .88) / 3 = 88 %.
    assert half.diff_relative_pct == pytest.approx(100 * 0.02 / 0.88)


def test_seeds_pair_by_seed_when_an_arm_misses_one(groups):
    fifth = _rows_by_delta(_group(groups, 0.05))[0.2]
    # Seeds 1 and 2 pair with the reference's seeds 1 and 2 (finals .86, .88), not its first two runs.
    diffs = [0.90 - 0.86, 0.80 - 0.88]  # +4, -8 points
    mean = sum(diffs) / 2
    assert fifth.diff_pairs == 2
    assert fifth.diff_points == pytest.approx(100 * mean)  # -2 points
    # Two pairs give no interval (a t-interval over 2 pairs is 12.7 standard errors wide, or empty when equal).
    assert math.isnan(fifth.diff_low) and math.isnan(fifth.diff_high)
    # Relative to the reference's mean over the same seeds (.87), not over all seeds.
    assert fifth.diff_relative_pct == pytest.approx(100 * mean / 0.87)


def test_a_single_pair_has_a_difference_but_no_interval(groups):
    half_b = _rows_by_delta(_group(groups, 0.1))[0.5]
    assert half_b.diff_pairs == 1
    assert half_b.diff_points == pytest.approx(-2.0)
    assert math.isnan(half_b.diff_low) and math.isnan(half_b.diff_high)


def test_epochs_to_plateau_and_accuracy_means(groups):
    rows = _rows_by_delta(_group(groups, 0.05))
    assert rows[1.0].epochs_to_plateau_mean == pytest.approx(4.0)
    assert rows[0.5].epochs_to_plateau_mean == pytest.approx((3 + 4 + 2) / 3)
    assert rows[0.2].epochs_to_plateau_mean == pytest.approx((4 + 5) / 2)
    assert rows[0.5].final_acc_mean == pytest.approx((0.91 + 0.88 + 0.91) / 3)
    assert rows[0.5].final_acc_std == pytest.approx(math.sqrt(((0.01) ** 2 + (0.02) ** 2 + (0.01) ** 2) / 2))
    assert rows[0.5].best_acc_mean == pytest.approx((0.91 + 0.92 + 0.93) / 3)
    assert rows[1.0].train_seconds_mean == pytest.approx(5 * (2 + 3 + 4) / 3)  # 5 epochs x (2 + seed) s
    assert rows[0.2].samples_backpropagated_mean == 5 * N * B


def test_training_seconds_to_target(groups):
    rows = _rows_by_delta(_group(groups, 0.05))
    # Scripted runs spend 2 + seed seconds per epoch; delta 0.5 reaches T at epochs 2, 3, 2 for seeds 0, 1, 2.
    assert rows[0.5].seconds_to_target_mean == pytest.approx((2 * 2 + 3 * 3 + 2 * 4) / 3)
    assert rows[1.0].seconds_to_target_mean == pytest.approx((4 * 2 + 4 * 3 + 4 * 4) / 3)
    # Seed 1 reached T after 5 epochs of 3 s; seed 2 never did and counts with its whole 5 x 4 s.
    assert rows[0.2].seconds_to_target_mean == pytest.approx((5 * 3 + 5 * 4) / 2)


def test_markdown_table_shows_the_claims(groups):
    table = markdown_table(arm_stats(_group(groups, 0.05)))
    lines = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(lines) == {"δ = 0.2", "δ = 0.5", "δ = 1"}
    assert "reference" in lines["δ = 1"]
    half = lines["δ = 0.5"]
    assert "+2.00 ±2.48 [-0.48, +4.48]" in half  # the half-width says how sure the difference is
    assert f"{100 * 0.02 / 0.88:+.2f}" in half
    assert "2.3 (3/3)" in half and "+41.7" in half
    fifth = lines["δ = 0.2"]
    assert "5.5 (1/2)" in fifth and "-37.5" in fifth


def test_build_report_writes_summary_and_runs_csv(scripted, tmp_path):
    path, tables = build_report(scripted, tmp_path / "out", plots=False)
    assert path == tmp_path / "out" / "report.md"
    report = path.read_text()
    targets = [float(t) for t in re.findall(r"Target T = ([0-9.]+)%", report)]
    assert sorted(targets) == [pytest.approx(100 * 0.99 * 0.60, abs=0.006), pytest.approx(100 * T_A, abs=0.006)]
    assert "lr=0.05" in report and "lr=0.1" in report
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5  # one per arm: 3 in the lr=0.05 group, 2 in the lr=0.1 group
    half = next(r for r in rows if float(r["delta"]) == 0.5 and "lr=0.05" in r["group"])
    assert float(half["diff_points"]) == pytest.approx(2.0)
    assert float(half["fewer_epochs_pct"]) == pytest.approx(100 * (1 - 7 / 12))
    assert int(half["target_reached"]) == 3
    runs = read_csv_text(tmp_path / "out" / "runs.csv")
    assert len(runs) == 10
    assert {r["path"] for r in runs} >= {"ref_s0", os.path.join("other_lr", "d1")}
    # Nothing was written into the scanned directory itself.
    assert not (scripted / "report.md").exists() and not (scripted / "summary.csv").exists()
    assert "δ = 0.5" in tables


def read_csv_text(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_configured_target_accuracy_overrides_the_reference(tmp_path):
    write_run(tmp_path, "ref", delta=1.0, seed=0, accs=[0.5, 0.7, 0.9], target_acc=0.6)
    write_run(tmp_path, "half", delta=0.5, seed=0, accs=[0.65, 0.7, 0.8], target_acc=0.6)
    (group,) = group_runs([Run.load(r) for r in find_runs(tmp_path)])
    target, how = target_accuracy(group)
    assert target == pytest.approx(0.6) and "given" in how
    rows = _rows_by_delta(group)
    assert rows[1.0].epochs_to_target_mean == 2 and rows[0.5].epochs_to_target_mean == 1
    assert rows[0.5].fewer_epochs_pct == pytest.approx(50.0)


def test_duplicate_seed_in_one_arm_is_a_usage_error(tmp_path, capsys):
    write_run(tmp_path, "a", delta=1.0, seed=0, accs=[0.5, 0.6])
    write_run(tmp_path, "b", delta=1.0, seed=0, accs=[0.5, 0.7])
    with pytest.raises(UsageError, match="seed 0"):
        build_report(tmp_path, plots=False)
    assert main(["report", str(tmp_path), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "report.md").exists()


def test_summarize_matches_history():
    cfg = RunConfig(delta=0.5, epochs=3, batch_size=B)
    history = [{"epoch": e, "step": e * N, "test_acc": a, "test_top5": 1.0, "train_seconds": 1.5, "eval_seconds": 0.25}
               for e, a in enumerate([0.5, 0.8, 0.79], start=1)]
    s = summarize(history, cfg, [6, 1, 3, 3, 3, 3, 3, 3, 3, 2], 5)
    assert s["final_test_acc"] == 0.79 and s["best_test_acc"] == 0.8 and s["best_epoch"] == 2
    assert s["epochs_to_plateau"] == 2 and s["epochs"] == 3
    assert s["optimizer_steps"] == 3 * N and s["samples_backpropagated"] == 3 * N * B
    assert s["train_seconds"] == pytest.approx(4.5) and s["eval_seconds"] == pytest.approx(0.75)
    assert s["batches_never_selected_after_warmup"] == 1
    assert s["target_acc"] == pytest.approx(0.99 * 0.8) and s["epochs_to_target"] == 2


# ---------------------------------------------------------------- results helpers


def test_epochs_to_target_edge_cases():
    assert epochs_to_target([0.1, 0.5, 0.5, 0.9], 0.5) == 2  # >= is enough
    assert epochs_to_target([0.9, 0.1], 0.5) == 1  # 1-based
    assert epochs_to_target([0.1, 0.4], 0.5) is None  # never reached
    assert epochs_to_target([], 0.5) is None
    assert epochs_to_target([0.3, 0.1 + 0.2], 0.3) == 1  # float noise at the boundary does not count as missing it


def test_epochs_to_plateau_edge_cases():
    assert epochs_to_plateau([]) is None
    assert epochs_to_plateau([0.7]) == 1
    assert epochs_to_plateau([0.5, 0.895, 0.9, 0.7]) == 2  # within 1 point of the best, later drop irrelevant
    assert epochs_to_plateau([0.5, 0.88, 0.9]) == 3
    assert epochs_to_plateau([0.5, 0.89, 0.9]) == 2  # exactly 1 point below counts as within
    assert epochs_to_plateau([0.5, 0.86, 0.9], points=0.05) == 2


def test_paired_difference_hand_computation():
    d = paired_difference([0.11, 0.22, 0.33], [0.10, 0.20, 0.30])
    half = T975[2] * 0.01 / math.sqrt(3)
    assert d.n == 3
    assert d.mean == pytest.approx(0.02)
    assert (d.low, d.high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    # Method minus reference: the sign flips with the order.
    assert paired_difference([0.10, 0.20, 0.30], [0.11, 0.22, 0.33]).mean == pytest.approx(-0.02)
    # Equal differences have zero spread: no interval, whatever the count (a zero-width "CI" is no evidence).
    same = paired_difference([0.5, 0.6], [0.4, 0.5])
    assert same.mean == pytest.approx(0.1) and math.isnan(same.low) and math.isnan(same.high)
    flat = paired_difference([0.5, 0.6, 0.7, 0.8], [0.4, 0.5, 0.6, 0.7])
    assert flat.n == 4 and not flat.has_interval and flat.no_interval == "no CI: zero spread"
    assert paired_difference([0.5, 0.6], [0.4, 0.4]).no_interval == "no CI: 2 pairs, needs 3"


def test_paired_difference_edge_cases():
    empty = paired_difference([], [])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.low) and math.isnan(empty.high)
    one = paired_difference([0.7], [0.5])
    assert one.n == 1 and one.mean == pytest.approx(0.2) and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])


def test_mean_std_edge_cases():
    m, s = mean_std([])
    assert math.isnan(m) and math.isnan(s)
    assert mean_std([0.4]) == (0.4, 0.0)
    assert mean_std([1.0, 2.0, 3.0]) == (pytest.approx(2.0), pytest.approx(1.0))  # sample (n - 1) std
    assert mean_std([1.0, None, math.nan, 3.0]) == (pytest.approx(2.0), pytest.approx(math.sqrt(2)))
    m, s = mean_std([None, math.nan])
    assert math.isnan(m) and math.isnan(s)


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old\n")
    assert path.read_text() == "old\n"
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_text_failure_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old content\n")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_text(path, "x" * 100_000)
    monkeypatch.undo()
    assert path.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temporary file left behind
    # A failure while writing the text itself (unencodable) behaves the same.
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "partial \udc80 text")
    assert path.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    # No new file appears when the first write fails.
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(tmp_path / "g.txt", "\udc80")
    assert not (tmp_path / "g.txt").exists()


def test_atomic_write_text_gives_files_the_usual_permissions(tmp_path):
    """Records written atomically get the same mode as any file written with open() (umask applied), not 0600."""
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic = tmp_path / "atomic.txt"
        atomic_write_text(atomic, "x")
    finally:
        os.umask(old)
    assert oct(atomic.stat().st_mode & 0o777) == oct(plain.stat().st_mode & 0o777) == oct(0o644)


def test_scripted_run_reads_back_like_a_trained_one(tmp_path):
    path = write_run(tmp_path, "r", delta=0.5, seed=3, accs=[0.2, 0.4])
    run = RunDir(path)
    assert run.finished and run.config().seed == 3 and run.config().delta == 0.5
    assert [row["test_acc"] for row in run.history()] == [0.2, 0.4]
    assert math.isnan(read_csv(path / HISTORY)[0]["val_acc"])  # empty cells read as NaN


def test_final_vs_delta_bars_are_clipped_t_intervals(tmp_path, monkeypatch):
    """Near 100%, ±std bars went past 100: the plot shows the 95% t-interval of the mean, clipped to [0, 100]."""
    import hardbatch.report.plots as plots
    from hardbatch.report.build import draw_group_plots
    from hardbatch.metrics import mean_interval

    ci = mean_interval([0.90, 0.905, 0.91])
    half = T975[2] * 0.005 / math.sqrt(3)
    assert (ci.mean, ci.n) == (pytest.approx(0.905), 3)
    assert (ci.low, ci.high) == (pytest.approx(0.905 - half), pytest.approx(0.905 + half))
    root = tmp_path / "runs"
    for seed, final in enumerate([1.0, 0.99, 0.97]):
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, final])
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, final])
    (group,) = group_runs([Run.load(r) for r in find_runs(root)])
    drawn = {}
    original = plots.plot_final_vs_delta

    def spy(deltas, means, lows, highs, **kwargs):
        drawn.update(means=means, lows=lows, highs=highs)
        return original(deltas, means, lows, highs, **kwargs)

    monkeypatch.setattr(plots, "plot_final_vs_delta", spy)
    draw_group_plots(group, arm_stats(group), tmp_path)
    assert drawn["highs"] == [100.0, 100.0]  # mean 98.67 + t-interval half-width 3.8 > 100: clipped
    expected = mean_interval([100.0, 99.0, 97.0])
    assert drawn["lows"] == [pytest.approx(expected.low)] * 2 and drawn["means"] == [pytest.approx(expected.mean)] * 2
    ax = original([0.5, 1.0], [98.0, 98.0], [95.0, 96.0], [100.0, 100.0])
    tops = [seg[:, 1].max() for coll in ax.collections for seg in coll.get_segments()]
    assert max(tops) == pytest.approx(100.0)


def test_a_peer_that_records_delta_1_is_never_the_baseline(tmp_path):
    """Only the paper's rule at δ = 1 is its baseline: infobatch, selective-backprop and uniform record δ = 1 too."""
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.80 + 0.01 * seed])
        for policy in ("infobatch", "selective-backprop", "uniform"):
            write_run(root, f"{policy}_s{seed}", delta=1.0, seed=seed, accs=[0.3, 0.70 + 0.02 * seed], policy=policy)
    (group,) = group_runs([Run.load(r) for r in find_runs(root)])
    assert group.reference is None
    rows = arm_stats(group)
    assert not any(r.is_reference for r in rows) and all(r.diff_pairs == 0 for r in rows)
    table = markdown_table(rows)
    assert "| reference |" not in table and table.count("no baseline") == 2 * len(rows)
    path, _ = build_report(root, tmp_path / "out", plots=False)
    report = path.read_text()
    assert "baseline (the paper's rule, `hardbatch`, at δ = 1) is missing" in report
    claims = report.split("## Claims of the paper, checked")[1].split("## Definitions")[0]
    assert "**held**" not in claims and "**not held**" not in claims and "**no baseline**" in claims
    # With the rule at δ = 1 beside them, it is the reference, and the peers are compared with it.
    for seed in range(3):
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.78 + 0.02 * seed])
    (group,) = group_runs([Run.load(r) for r in find_runs(root)])
    assert (group.reference.policy, group.reference.delta) == ("hardbatch", 1.0)
    assert [r.policy for r in arm_stats(group) if r.is_reference] == ["hardbatch"]


def test_no_interval_is_shown_as_such_and_decides_no_claim(tmp_path):
    """2 seeds, or differences that are all equal, print "no CI" rather than a zero-width interval."""
    root = tmp_path / "runs"
    for seed in range(2):  # equal paired differences: -2.50 points each
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.80 + 0.1 * seed])
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.775 + 0.1 * seed])
    (group,) = group_runs([Run.load(r) for r in find_runs(root)])
    table = markdown_table(arm_stats(group))
    assert "-2.50 (no CI: 2 pairs, needs 3)" in table and "[-2.50, -2.50]" not in table
    path, _ = build_report(root, tmp_path / "two", plots=False)
    claims = path.read_text().split("## Claims of the paper, checked")[1].split("## Definitions")[0]
    assert "significantly improves test accuracy over ordinary training | **undecided**" in claims
    write_run(root, "ref_s2", delta=1.0, seed=2, accs=[0.5, 0.95])
    write_run(root, "half_s2", delta=0.5, seed=2, accs=[0.5, 0.925])
    (group,) = group_runs([Run.load(r) for r in find_runs(root)])
    assert "-2.50 (no CI: zero spread)" in markdown_table(arm_stats(group))


def _peer_runs(root: Path) -> Path:
    """Three seeds of: the rule at δ 0.5 and 1, uniform, and infobatch at prune ratios 0.3 and 0.5 (its default)."""
    for seed in range(3):
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.80 + 0.01 * seed])
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.81 + 0.012 * seed])
        write_run(root, f"uniform_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.82 + 0.02 * seed], policy="uniform")
        write_run(root, f"ib03_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.84 + 0.011 * seed], policy="infobatch",
                  prune_ratio=0.3)
        write_run(root, f"ib05_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.83 + 0.013 * seed], policy="infobatch")
    return root


def test_report_judges_any_method_against_any_reference(tmp_path):
    """--method infobatch --reference uniform: infobatch's arms differ by prune ratio (its axis) in one group, its
    best one is chosen, and every difference is taken to uniform."""
    from hardbatch.report.build import Comparison

    root = _peer_runs(tmp_path / "runs")
    comparison = Comparison("infobatch", "uniform")
    (group,) = group_runs([Run.load(r) for r in find_runs(root)], comparison.method)
    assert [a.label for a in group.arms][:2] == ["infobatch r = 0.3", "infobatch"]  # the method's arms first
    stats = {s.arm: s for s in arm_stats(group, comparison=comparison)}
    assert [a for a, s in stats.items() if s.is_reference] == ["uniform"]
    assert sorted(a for a, s in stats.items() if s.is_method) == ["infobatch", "infobatch r = 0.3"]
    # infobatch r = 0.3 minus uniform: +2, +1.1, +0.2 points.
    assert stats["infobatch r = 0.3"].diff_points == pytest.approx((2 + 1.1 + 0.2) / 3)
    assert stats["δ = 0.5"].diff_pairs == 3 and not stats["δ = 0.5"].is_method
    assert "Δ vs uniform, points [95% CI]" in markdown_table(list(stats.values()), comparison)
    assert main(["report", str(root), "--no-plots", "--method", "infobatch", "--reference", "uniform",
                 "--out", str(tmp_path / "ib")]) == 0
    report = (tmp_path / "ib" / "report.md").read_text()
    assert "method `infobatch` against uniform" in report
    assert "Best `infobatch` setting chosen on test (optimistic, as the released code did): infobatch r = 0.3" in report
    assert "digits/small_cnn infobatch r = 0.3 (chosen on test)" in report  # the claims judge it against uniform
    # --reference POLICY@VALUE picks one arm of a policy with an axis.
    at = Comparison("hardbatch", "infobatch@0.3")
    assert group.reference_for(at).label == "infobatch r = 0.3"


def test_report_defaults_are_the_papers_comparison(tmp_path):
    root = _peer_runs(tmp_path / "runs")
    assert main(["report", str(root), "--no-plots", "--out", str(tmp_path / "a")]) == 0
    assert main(["report", str(root), "--no-plots", "--out", str(tmp_path / "b"), "--method", "hardbatch",
                 "--reference", "hardbatch@1"]) == 0
    strip = lambda text: re.sub(r"built \S+ by", "", text)  # noqa: E731
    a, b = (strip((tmp_path / d / "report.md").read_text()) for d in "ab")
    assert a == b and "| δ = 1 | 3 |" in a and "Δ vs δ=1, points [95% CI]" in a
    assert "Best δ < 1 chosen on test (optimistic, as the released code did): δ = 0.5" in a


@pytest.mark.parametrize("flags, message", [
    (["--method", "nope"], "unknown method policy 'nope'; valid: hardbatch, random"),
    (["--reference", "uniform@2"], "reference 'uniform@2': policy 'uniform' has no hyper-parameter"),
    (["--reference", "hardbatch@x"], "reference 'hardbatch@x': 'x' is not a number"),
])
def test_report_method_and_reference_errors_are_one_line(tmp_path, capsys, flags, message):
    root = _peer_runs(tmp_path / "runs")
    assert main(["report", str(root), "--no-plots", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (root / "report.md").exists()


def test_runs_from_different_machines_are_named_with_their_counts(tmp_path, capsys):
    amd = {"type": "cpu", "name": "AMD EPYC 7763", "threads": 2, "cpu": "AMD EPYC 7763", "cpu_capability": "AVX2"}
    intel = {**amd, "name": "Intel Xeon", "cpu": "Intel Xeon", "cpu_capability": "AVX512", "threads": 16}
    older = {"type": "cpu", "name": "x86_64", "threads": 2}  # config.json from before the CPU was recorded
    machines = {(1.0, 0): amd, (1.0, 1): amd, (1.0, 2): amd, (0.5, 0): intel, (0.5, 1): older, (0.5, 2): None}
    for (delta, seed), device in machines.items():
        path = write_run(tmp_path / "runs", f"d{delta}_s{seed}", delta=delta, seed=seed, accs=REF[seed])
        if device is not None:  # None: no device entry at all
            atomic_write_json(path / CONFIG, {**json.loads((path / CONFIG).read_text()), "device": device})
    assert main(["report", str(tmp_path / "runs"), "--no-plots"]) == 0
    note = ("**Runs from 4 machines** (CPU model, kernel capability, threads): CPU AMD EPYC 7763, capability AVX2, "
            "2 threads (3 runs); CPU Intel Xeon, capability AVX512, 16 threads (1 run); CPU unknown, capability "
            "unknown, 2 threads (1 run); CPU unknown, capability unknown, unknown threads (1 run).")
    assert note in capsys.readouterr().out  # the terminal says so too
    section = (tmp_path / "runs" / "report.md").read_text().split("## digits / small_cnn", 1)[1].split("\n## ", 1)[0]
    assert note in section
    for delta, seed in machines:  # one machine left: no note
        if delta == 0.5:
            shutil.rmtree(tmp_path / "runs" / f"d{delta}_s{seed}")
    assert main(["report", str(tmp_path / "runs"), "--no-plots"]) == 0
    assert "machines" not in capsys.readouterr().out
    assert "Runs from" not in (tmp_path / "runs" / "report.md").read_text()
