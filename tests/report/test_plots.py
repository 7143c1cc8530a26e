"""report.plots: what each figure is given (spied on) and draws, from scripted and from real runs."""

from __future__ import annotations

import pytest

import hardbatch.report.plots as plots
from hardbatch.metrics import mean_interval, paired_difference
from hardbatch.report import arm_stats, build_report, group_runs
from hardbatch.report.glossary import epoch_axis_label
from hardbatch.report.stats import forest_points

from .scripted_runs import load, write_run


def test_final_vs_delta_bars_are_clipped_t_intervals(tmp_path, monkeypatch):
    """Near 100%, ±std bars went past 100: the plot shows the 95% t-interval of the mean, clipped to [0, 100]."""
    root = tmp_path / "runs"
    for seed, final in enumerate([1.0, 0.99, 0.97]):
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, final])
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, final])
    (group,) = group_runs(load(root))
    drawn = {}
    original = plots.plot_final_vs_delta

    def spy(deltas, means, lows, highs, **kwargs):
        drawn.update(means=means, lows=lows, highs=highs)
        return original(deltas, means, lows, highs, **kwargs)

    monkeypatch.setattr(plots, "plot_final_vs_delta", spy)
    plots.draw_group_plots(group, arm_stats(group), tmp_path)
    assert drawn["highs"] == [100.0, 100.0]  # mean 98.67 + t-interval half-width 3.8 > 100: clipped
    expected = mean_interval([100.0, 99.0, 97.0])
    assert drawn["lows"] == [pytest.approx(expected.low)] * 2 and drawn["means"] == [pytest.approx(expected.mean)] * 2
    ax = original([0.5, 1.0], [98.0, 98.0], [95.0, 96.0], [100.0, 100.0])
    tops = [seg[:, 1].max() for coll in ax.collections for seg in coll.get_segments()]
    assert max(tops) == pytest.approx(100.0)


def test_accuracy_curves_say_what_an_epoch_is_per_policy(tmp_path):
    write_run(tmp_path, "a", accs=[0.5, 0.6])
    (group,) = group_runs(load(tmp_path))
    (path, *_) = plots.draw_group_plots(group, arm_stats(group), tmp_path)
    assert path.name == f"{group.slug}_accuracy.png" and path.stat().st_size > 0
    label = epoch_axis_label()
    assert label.startswith("epoch (N optimizer steps; one pass for ") and "infobatch" in label and "ies" in label
    assert plots.plot_curves({"a": ([1.0], [0.5], [1.5])}, xlabel=label).get_xlabel() == label


def test_forest_plot_draws_each_arms_paired_difference_to_uniform(trained):
    (group,) = group_runs(load(trained))
    points = forest_points(arm_stats(group))
    assert set(points) == {"δ = 1", "infobatch"}  # uniform itself is the reference
    for label, (mean, low, high) in points.items():
        arm, uniform = group.arm(*{"δ = 1": ("hardbatch",), "infobatch": ("infobatch",)}[label]), group.arm("uniform")
        d = paired_difference(
            [arm.runs[s].summary["final_test_acc"] for s in (0, 1, 2)],
            [uniform.runs[s].summary["final_test_acc"] for s in (0, 1, 2)],
        )
        assert (mean, low, high) == pytest.approx((100 * d.mean, 100 * d.low, 100 * d.high), nan_ok=True)
    ax = plots.plot_forest(points, "uniform")
    (dots,) = ax.lines[:1]
    assert list(dots.get_xdata()) == pytest.approx([m for m, _, _ in points.values()])
    (bars,) = ax.collections
    ends = [end for seg in bars.get_segments() for end in (seg[0][0], seg[1][0])]
    assert ends == pytest.approx([end for _, lo, hi in points.values() for end in (lo, hi)])
    assert [t.get_text() for t in ax.get_yticklabels()] == list(points)


def test_report_draws_forest_and_accuracy_against_samples_from_the_runs(trained, tmp_path, monkeypatch):
    drawn = {}
    for name in ("plot_forest", "plot_cost_curves"):
        real = getattr(plots, name)
        monkeypatch.setattr(
            plots, name, lambda *a, _real=real, _name=name, **k: drawn.setdefault(_name, []).append(a) or _real(*a, **k)
        )
    build_report(trained, tmp_path)
    (group,) = group_runs(load(trained))
    assert (tmp_path / f"{group.slug}_forest.png").stat().st_size > 0
    assert (tmp_path / f"{group.slug}_accuracy_vs_samples.png").stat().st_size > 0
    assert drawn["plot_forest"][0][0] == forest_points(arm_stats(group))
    samples_curves = drawn["plot_cost_curves"][0][0]  # the first cost plot: against back-propagated samples
    for arm in group.arms:
        xs, mean, low, high = samples_curves[arm.label]
        runs = list(arm.runs.values())
        assert xs[-1] == pytest.approx(sum(r.summary["cost"]["samples_backprop"] for r in runs) / 3)
        assert mean[-1] == pytest.approx(100 * sum(r.summary["final_test_acc"] for r in runs) / 3)
        assert all(lo <= m <= hi for lo, m, hi in zip(low, mean, high, strict=True))
