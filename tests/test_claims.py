"""The claims check on scripted results: each verdict flips where its definition says it should."""

import json
import math

import pytest

from hardbatch.report.claims import HELD, NO_BASELINE, NOT_HELD, NOT_RUN, PARTLY, UNDECIDED, check_claims, GroupResult
from hardbatch.config import RunConfig
from hardbatch.report.build import ArmStats, build_report


def row(delta, diff, low=None, high=None, pairs=3, fewer=10.0, reached=3, n=3, policy="hardbatch"):
    """An arm's statistics with the fields the claims read; diff/low/high in points."""
    reference = policy == "hardbatch" and delta == 1.0
    return ArmStats(group="g", arm=f"δ = {delta:g}", policy=policy, axis="delta", value=delta, delta=delta, n=n,
                    is_reference=reference, is_method=policy == "hardbatch" and not reference, diff_points=diff,
                    diff_low=diff - 1 if low is None else low, diff_high=diff + 1 if high is None else high,
                    diff_pairs=pairs, diff_relative_pct=diff * 1.5, fewer_epochs_pct=fewer, target_reached=reached)


def group(dataset, model, *rows, chosen=None, on="validation"):
    rows = list(rows) + [row(1.0, 0.0, 0.0, 0.0, fewer=0.0)]
    chosen = chosen if chosen is not None else rows[0]
    return GroupResult(dataset, model, rows, chosen, on)


def claim(results, start):
    return next(c for c in check_claims(results) if c.claim.startswith(start))


def test_accuracy_claim_needs_a_ci_above_zero_in_every_group():
    gain, flat = row(0.5, 2.0, 0.5, 3.5), row(0.5, 2.0, -0.5, 4.5)
    assert claim([group("cifar10", "resnet18", gain)], "Training").verdict == HELD
    assert claim([group("cifar10", "resnet18", gain), group("stl10", "resnet18", flat)], "Training").verdict == PARTLY
    assert claim([group("cifar10", "resnet18", flat)], "Training").verdict == NOT_HELD
    assert claim([], "Training").verdict == NOT_RUN
    one_seed = row(0.5, 2.0, math.nan, math.nan, pairs=1)
    assert claim([group("cifar10", "resnet18", one_seed)], "Training").verdict == UNDECIDED
    # A group without an interval does not count against (or for) the others.
    assert claim([group("cifar10", "resnet18", gain), group("stl10", "resnet18", one_seed)], "Training").verdict == HELD
    zero_width = row(0.5, 2.5, math.nan, math.nan, pairs=3)  # what mean_interval gives equal differences
    assert claim([group("cifar10", "resnet18", zero_width)], "Training").verdict == UNDECIDED
    assert "no CI: zero spread" in claim([group("cifar10", "resnet18", zero_width)], "Training").evidence


def test_claims_without_a_baseline_say_so():
    claims = check_claims([], missing_baseline=["digits / mlp"])
    assert {c.verdict for c in claims[:3]} == {NO_BASELINE}
    assert all("baseline (the rule at δ = 1) missing in digits / mlp" in c.evidence for c in claims[:3])


def test_convergence_claim_needs_fewer_epochs_with_every_run_reaching_target():
    assert claim([group("cifar10", "resnet18", row(0.5, 0.0, fewer=20.0))], "It speeds").verdict == HELD
    assert claim([group("cifar10", "resnet18", row(0.5, 0.0, fewer=-5.0))], "It speeds").verdict == NOT_HELD
    straggler = row(0.5, 0.0, fewer=20.0, reached=2)
    assert claim([group("cifar10", "resnet18", straggler)], "It speeds").verdict == NOT_HELD


def test_smaller_delta_claim_looks_at_the_smallest_delta():
    similar_fast = row(0.2, -0.5, -1.5, 0.5, fewer=15.0)
    worse = row(0.2, -3.0, -4.0, -2.0, fewer=15.0)
    chosen = row(0.8, 0.1, fewer=5.0)
    assert claim([group("cifar10", "resnet18", similar_fast, chosen, chosen=chosen)], "Smaller").verdict == HELD
    assert claim([group("cifar10", "resnet18", worse, chosen, chosen=chosen)], "Smaller").verdict == NOT_HELD
    assert "δ=0.2" in claim([group("cifar10", "resnet18", worse, chosen, chosen=chosen)], "Smaller").evidence


@pytest.mark.parametrize("fewer, verdict", [(30.0, HELD), (26.47, HELD), (10.0, PARTLY), (-5.0, NOT_HELD)])
def test_stl10_efficientnet_b4_epochs_claim(fewer, verdict):
    result = claim([group("stl10", "efficientnet_b4", row(0.5, 0.0, fewer=fewer))], "EfficientNet-B4")
    assert result.verdict == verdict
    assert "26.47" in result.evidence


def test_stl10_claim_is_not_run_without_those_runs():
    assert claim([group("cifar10", "efficientnet_b4", row(0.5, 0.0))], "EfficientNet-B4").verdict == NOT_RUN


@pytest.mark.parametrize("diff, low, verdict", [(8.0, 6.0, HELD), (2.0, 0.5, PARTLY), (8.0, -1.0, NOT_HELD),
                                                (-3.0, -4.0, NOT_HELD)])
def test_cifar100_resnet18_gain_claim(diff, low, verdict):
    assert claim([group("cifar100", "resnet18", row(0.5, diff, low, diff + 2))], "ResNet-18 on CIFAR-100").verdict == verdict


def test_released_table_compares_signs_at_the_papers_delta():
    # The released table: ResNet-18 69.6 -> 69.2 at δ 0.5 (worse), ResNet-50 63.1 -> 64.6 at δ 0.5 (better).
    r18 = group("cifar10", "resnet18", row(0.5, -1.0, -1.8, -0.2))
    r50 = group("cifar10", "resnet50", row(0.5, 1.2, 0.3, 2.1))
    assert claim([r18, r50], "The released").verdict == HELD
    r50_flat = group("cifar10", "resnet50", row(0.5, 1.2, -0.3, 2.7))
    assert claim([r18, r50_flat], "The released").verdict == PARTLY
    r50_wrong_delta = group("cifar10", "resnet50", row(0.8, 1.2, 0.3, 2.1))
    result = claim([r18, r50_wrong_delta], "The released")
    assert result.verdict == HELD and "resnet50 δ=0.5: not run" in result.evidence
    assert claim([group("cifar10", "resnet18", row(0.5, 1.0, 0.2, 1.8))], "The released").verdict == NOT_HELD


# ---- δ chosen on validation vs on test, through the whole report ----------------------------------


def _write_run(path, delta, seed, test_accs, val_accs):
    path.mkdir(parents=True)
    cfg = RunConfig(delta=delta, seed=seed, epochs=len(test_accs), val_fraction=0.1, protocol="paper")
    (path / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    lines = ["epoch,step,train_loss,test_loss,test_acc,test_top5,lr,train_seconds,eval_seconds,val_loss,val_acc,val_top5"]
    lines += [f"{e},{e * 10},1.0,1.0,{t},1.0,0.1,2.0,0.1,1.0,{v},1.0" for e, (t, v) in enumerate(zip(test_accs, val_accs), 1)]
    (path / "history.csv").write_text("\n".join(lines) + "\n")
    (path / "summary.json").write_text(json.dumps({
        "final_test_acc": test_accs[-1], "best_test_acc": max(test_accs), "final_val_acc": val_accs[-1],
        "train_seconds": 2.0 * len(test_accs), "samples_backpropagated": 100, "batch_visits": [3, 2, 1]}))


def test_report_chooses_delta_on_validation_and_labels_the_test_choice(tmp_path):
    # δ = 0.5 is best on validation, δ = 0.2 best on test: an honest report picks 0.5 for its claims.
    for seed in (0, 1):
        _write_run(tmp_path / f"d1_s{seed}", 1.0, seed, [0.5, 0.70], [0.5, 0.70])
        _write_run(tmp_path / f"d05_s{seed}", 0.5, seed, [0.6, 0.72], [0.6, 0.80])
        _write_run(tmp_path / f"d02_s{seed}", 0.2, seed, [0.6, 0.75], [0.6, 0.71])
    path, _ = build_report(tmp_path, plots=False)
    text = path.read_text()
    assert "chosen on the validation split: **δ = 0.5**" in text
    assert "chosen on test (optimistic, as the released code did): δ = 0.2" in text
    assert "digits/small_cnn δ=0.5:" in text and "(δ chosen on test)" not in text
    # Last-3 mean over a 2-epoch run is both epochs: (60 + 72) / 2 = 66 against (50 + 70) / 2 = 60 at δ = 1.
    # Train s to T: T = 0.99 x 0.70; δ = 0.5 first reaches it at epoch 2, after 2 epochs of 2 s.
    # Two seeds with equal differences: no interval, said so (the old "+2.00 [+2.00, +2.00]" was no evidence).
    # Without an interval there is no detectable difference either (the "—" after the difference).
    assert ("| δ = 0.5 | 2 | 72.00 ± 0.00 | — | +2.00 (no CI: 2 pairs, needs 3) | — | +2.86 | 66.00 "
            "| +6.00 (no CI: 2 pairs, needs 3) "
            "| 2.0 (2/2) | +0.0 | 2.0 | 4.0 | 4.0 |") in text
