"""report.groups: runs into groups and arms, per-arm settings, duplicates, and the comparison a report judges."""

from __future__ import annotations

import json

import pytest

from hardbatch.cli import main
from hardbatch.errors import UsageError
from hardbatch.report import Comparison, arm_stats, build_report, group_runs
from hardbatch.report.groups import arm_label, drop_duplicates, extra_params, run_label
from hardbatch.report.tables import markdown_table

from .scripted_runs import load, write_peers, write_run


def _group(groups, lr):
    (group,) = [g for g in groups if g.settings["lr"] == lr]
    return group


def test_runs_with_different_lr_form_separate_groups(groups):
    assert len(groups) == 2
    a, b = _group(groups, 0.05), _group(groups, 0.1)
    assert [arm.delta for arm in a.arms] == [0.2, 0.5, 1.0]
    assert [arm.delta for arm in b.arms] == [0.5, 1.0]
    assert {arm.delta: sorted(arm.runs) for arm in a.arms} == {0.2: [1, 2], 0.5: [0, 1, 2], 1.0: [0, 1, 2]}
    # Titles tell the two groups apart by the setting that differs.
    assert "lr=0.05" in a.title and "lr=0.1" in b.title
    assert a.reference is not None and a.reference.delta == 1.0


def test_a_policys_hyper_parameters_and_budget_identify_its_arm_and_never_split_groups(tmp_path):
    """Arms differ by the policy's axis (infobatch's prune ratio), its other hyper-parameters (read through the
    policy's declaration: a value at its default is no difference) and the budget; none of them splits the group, and
    a non-default one shows in the arm's label."""
    write_run(tmp_path, "ib", accs=[0.5, 0.6], policy="infobatch", prune_ratio=0.3)
    write_run(tmp_path, "ib_anneal", accs=[0.5, 0.6], policy="infobatch", prune_ratio=0.3, anneal=0.5)
    write_run(tmp_path, "ib_default_anneal", seed=1, accs=[0.5, 0.6], policy="infobatch", prune_ratio=0.3, anneal=0.125)
    write_run(tmp_path, "uniform", accs=[0.5, 0.6], policy="uniform")
    write_run(tmp_path, "uniform_half", accs=[0.5], epochs=2, policy="uniform", budget=0.5)
    runs = {r.path.name: r for r in load(tmp_path)}
    assert extra_params("infobatch", runs["ib_anneal"].config.policy_params()) == (("anneal", 0.5),)
    assert extra_params("infobatch", runs["ib_default_anneal"].config.policy_params()) == ()
    assert run_label(runs["ib"].config) == "infobatch r = 0.3" and run_label(runs["uniform"].config) == "uniform"
    assert run_label(runs["ib_anneal"].config) == "infobatch r = 0.3, anneal = 0.5"
    assert run_label(runs["uniform_half"].config) == "uniform, budget 0.5"
    (group,) = group_runs(list(runs.values()))
    assert group.title == "digits / small_cnn" and "anneal" not in group.settings and "budget" not in group.settings
    arms = {a.label: a for a in group.arms}
    assert sorted(arms) == ["infobatch r = 0.3", "infobatch r = 0.3, anneal = 0.5", "uniform", "uniform, budget 0.5"]
    assert sorted(arms["infobatch r = 0.3"].runs) == [0, 1]  # anneal 0.125 is infobatch's default: the same arm
    assert group.full_budget == 1.0 and arms["uniform, budget 0.5"] not in group.main_arms
    assert group.arm("uniform") is arms["uniform"] and group.arm("uniform", budget=0.5) is arms["uniform, budget 0.5"]
    assert group.arm("infobatch", 0.3) is arms["infobatch r = 0.3"]  # its defaults first
    assert arm_label("infobatch", 0.5) == "infobatch" and arm_label("random", 0.5) == "random δ = 0.5"
    assert arm_label("hardbatch", 0.5, budget=0.25) == "δ = 0.5, budget 0.25"


def test_per_arm_learning_rates_keep_arms_in_one_group(tmp_path):
    for seed in range(3):
        write_run(tmp_path, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.80 + 0.01 * seed], lr=0.3)
        write_run(tmp_path, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.82 + 0.01 * seed])
    assert len(group_runs(load(tmp_path))) == 2  # by default lr splits groups
    (group,) = group_runs(load(tmp_path), per_arm=("lr",))
    assert {a.label: a.tuned for a in group.arms} == {"δ = 0.5": {"lr": 0.05}, "δ = 1": {"lr": 0.3}}
    half = next(s for s in arm_stats(group) if s.delta == 0.5)
    assert half.vs_reference.mean == pytest.approx(2.0) and half.vs_reference.n == 3
    report, _ = build_report(tmp_path, per_arm=("lr",), plots=False)
    assert "Chosen per arm: δ = 0.5 lr 0.05, δ = 1 lr 0.3." in report.read_text()
    config = json.loads((tmp_path / "ref_s0" / "config.json").read_text())
    config["config"]["lr"] = 0.1
    (tmp_path / "ref_s0" / "config.json").write_text(json.dumps(config))  # one arm, two rates: refused
    with pytest.raises(UsageError, match=r"δ = 1 holds runs with other per-arm settings"):
        group_runs(load(tmp_path), per_arm=("lr",))
    with pytest.raises(UsageError, match="cannot choose 'seed' per arm"):
        group_runs([], per_arm=("seed",))


def test_a_second_run_of_an_arms_seed_is_left_out_naming_both(tmp_path):
    """group_runs refuses two runs of one arm and seed; drop_duplicates keeps the first in path order and names the
    other with the path of the one kept. Other settings (lr) make other groups, never duplicates."""
    first = write_run(tmp_path / "main", "a", delta=1.0, seed=0, accs=[0.5, 0.6])
    second = write_run(tmp_path / "tune", "b", delta=1.0, seed=0, accs=[0.5, 0.7])
    write_run(tmp_path / "tune", "c", delta=1.0, seed=0, accs=[0.5, 0.7], lr=0.3)
    with pytest.raises(UsageError, match=f"two runs of δ = 1 seed 0: {first} and {second}"):
        group_runs(load(tmp_path))
    runs, left_out = drop_duplicates(load(tmp_path))
    assert sorted(r.path.name for r in runs) == ["a", "c"]
    (dup,) = left_out
    assert (dup.path, dup.kind) == (second, "duplicate") and str(first) in dup.why and "seed 0" in dup.why
    assert len(group_runs(runs)) == 2


def test_a_peer_that_records_delta_1_is_never_the_baseline(tmp_path):
    """Only the paper's rule at δ = 1 is its baseline: infobatch, selective-backprop and uniform record δ = 1 too."""
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.80 + 0.01 * seed])
        for policy in ("infobatch", "selective-backprop", "uniform"):
            write_run(root, f"{policy}_s{seed}", seed=seed, accs=[0.3, 0.70 + 0.02 * seed], policy=policy)
    (group,) = group_runs(load(root))
    assert group.reference is None
    rows = arm_stats(group)
    assert not any(r.is_reference for r in rows) and all(r.vs_reference.n == 0 for r in rows)
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
    (group,) = group_runs(load(root))
    assert (group.reference.policy, group.reference.delta) == ("hardbatch", 1.0)
    assert [r.policy for r in arm_stats(group) if r.is_reference] == ["hardbatch"]


def test_a_control_at_delta_1_stands_in_for_the_papers_baseline(tmp_path):
    """At δ = 1 `random` trains exactly the rule's batches in the rule's order: without the rule at δ = 1, it is
    the paper's baseline; a peer never is."""
    for seed in range(3):
        write_run(tmp_path, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.80 + 0.01 * seed])
        write_run(tmp_path, f"random1_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.79 + 0.01 * seed], policy="random")
    (group,) = group_runs(load(tmp_path))
    assert group.reference.policy == "random" and group.reference.value == 1.0


def test_report_judges_any_method_against_any_reference(tmp_path):
    """--method infobatch --reference uniform: infobatch's arms differ by prune ratio (its axis) in one group, its
    best one is chosen, and every difference is taken to uniform."""
    root = write_peers(tmp_path / "runs")
    comparison = Comparison("infobatch", "uniform")
    (group,) = group_runs(load(root), comparison.method)
    assert [a.label for a in group.arms][:2] == ["infobatch r = 0.3", "infobatch"]  # the method's arms first
    stats = {s.arm: s for s in arm_stats(group, comparison=comparison)}
    assert [a for a, s in stats.items() if s.is_reference] == ["uniform"]
    assert sorted(a for a, s in stats.items() if s.is_method) == ["infobatch", "infobatch r = 0.3"]
    # infobatch r = 0.3 minus uniform: +2, +1.1, +0.2 points.
    assert stats["infobatch r = 0.3"].vs_reference.mean == pytest.approx((2 + 1.1 + 0.2) / 3)
    assert stats["δ = 0.5"].vs_reference.n == 3 and not stats["δ = 0.5"].is_method
    assert "Δ vs uniform, points [95% CI]" in markdown_table(list(stats.values()), comparison)
    assert (
        main(
            [
                "report",
                str(root),
                "--no-plots",
                "--method",
                "infobatch",
                "--reference",
                "uniform",
                "--out",
                str(tmp_path / "ib"),
            ]
        )
        == 0
    )
    report = (tmp_path / "ib" / "report.md").read_text()
    assert "method `infobatch` against uniform" in report
    assert "Best `infobatch` setting chosen on test (optimistic, as the released code did): infobatch r = 0.3" in report
    assert "digits/small_cnn infobatch r = 0.3 (chosen on test)" in report  # the claims judge it against uniform
    # --reference POLICY@VALUE picks one arm of a policy with an axis; a peer's default value names its default arm.
    assert group.reference_for(Comparison("hardbatch", "infobatch@0.3")).label == "infobatch r = 0.3"
    assert Comparison("hardbatch", "infobatch").reference_value == 0.5
    assert Comparison("hardbatch", "hardbatch").reference_text == "δ=1" and Comparison().is_paper


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method", "nope"], "unknown method policy 'nope'; valid: hardbatch, random"),
        (["--reference", "uniform@2"], "reference 'uniform@2': policy 'uniform' has no hyper-parameter"),
        (["--reference", "hardbatch@x"], "reference 'hardbatch@x': 'x' is not a number"),
    ],
)
def test_report_method_and_reference_errors_are_one_line(tmp_path, capsys, flags, message):
    root = write_peers(tmp_path / "runs")
    assert main(["report", str(root), "--no-plots", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (root / "report.md").exists()
