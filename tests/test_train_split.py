"""Reshaping the training split (class-balanced subset, long tail, label noise), its record in the run folder, and
the share of relabelled samples a run trained."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from test_fashion_mnist import write_fashion_mnist

from hardbatch.cli import main
from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.data import DATASETS, balanced_subset, load_dataset, long_tail_counts, noisy_labels
from hardbatch.records import RELABELLED, exposure, mislabelled_exposure, RunDir
from hardbatch.functional import generator_for

# floor(100 * 10^(-c/9)) for c = 0..9, by hand: 10^(-1/9) = 0.7743, 10^(-2/9) = 0.5995, ... 10^(-8/9) = 0.1292.
LONG_TAIL_100_RHO_10 = [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Fake Fashion-MNIST: 1,000 train images (100 per class, labels index % 10), 50 test."""
    root = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(root, n_train=1000, n_test=50)
    return RunConfig(dataset="fashion-mnist", data_dir=str(root))


def ids(dataset) -> list[int]:
    """Which raw image each sample is: the fake writes its index into pixels (0, 0) and (0, 1), base 256."""
    return (dataset.images[:, 0, 0, 0].long() + 256 * dataset.images[:, 0, 0, 1].long()).tolist()


def per_class(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


# ---------------------------------------------------------------- the long tail


def test_imbalance_keeps_exact_long_tail_counts(fashion):
    assert long_tail_counts(torch.full((10,), 100), 10.0).tolist() == LONG_TAIL_100_RHO_10
    assert long_tail_counts(torch.tensor([6000, 6000]), 10.0).tolist() == [6000, 600]  # 600.0000001 or 599.9999 both -> 600
    data = load_dataset(fashion.replace(imbalance=10.0))
    assert per_class(data.train.labels) == LONG_TAIL_100_RHO_10
    assert max(per_class(data.train.labels)) == 10 * min(per_class(data.train.labels))
    assert len(data.test) == 50 and data.relabelled is None


def test_imbalance_after_validation_split_and_seeded(fashion):
    cfg = fashion.replace(imbalance=10.0, val_fraction=0.2)  # 80 per class remain for training
    a, b, other = load_dataset(cfg), load_dataset(cfg), load_dataset(cfg.replace(seed=1))
    assert per_class(a.val.labels) == [20] * 10  # the validation split keeps its balance
    assert per_class(a.train.labels) == [math.floor(80 * 10 ** (-c / 9) + 1e-9) for c in range(10)]
    assert torch.equal(a.train.images, b.train.images) and not torch.equal(a.train.images[:200], other.train.images[:200])
    assert torch.equal(a.val.images, other.val.images)  # the seed never moves the validation split


def test_imbalance_that_empties_a_class_is_a_usage_error(fashion):
    with pytest.raises(UsageError, match="imbalance 1000 leaves class 7 with none of its 100 .* between 1 and 100$"):
        load_dataset(fashion.replace(imbalance=1000.0))  # 100 * 1000^(-7/9) = 0.46; 100 * 100^(-9/9) = 1 is the limit
    assert per_class(load_dataset(fashion.replace(imbalance=100.0)).train.labels)[9] == 1


# ---------------------------------------------------------------- label noise


def test_label_noise_rate_is_exact_and_never_the_own_class(fashion):
    raw = DATASETS["fashion-mnist"].read(fashion.data_dir)
    for p, expected in ((0.2, 200), (0.0005, 0), (0.0015, 2), (0.37, 370)):  # round(1.5) = 2
        data = load_dataset(fashion.replace(label_noise=p))
        changed = (data.train.labels != raw.train.labels).nonzero().flatten()
        assert len(changed) == expected
        if expected == 0:
            assert data.relabelled is None or len(data.relabelled.indices) == 0
            continue
        r = data.relabelled
        assert r.indices.tolist() == changed.tolist()  # the record names exactly the changed samples
        assert torch.equal(r.true_labels, raw.train.labels[changed]) and torch.equal(r.given_labels, data.train.labels[changed])
        assert torch.equal(data.train.images, raw.train.images)  # images untouched, same order
        assert torch.equal(data.test.labels, raw.test.labels) and torch.equal(data.test.images, raw.test.images)


def test_noisy_labels_draw_every_other_class_uniformly():
    labels = torch.arange(20000) % 10
    new, indices = noisy_labels(labels, 0.5, 10, generator_for(0, "label-noise"))
    assert len(indices) == 10000 and bool((new[indices] != labels[indices]).all())
    offsets = (new[indices] - labels[indices]) % 10
    counts = torch.bincount(offsets, minlength=10).tolist()
    assert counts[0] == 0 and all(abs(c - 10000 / 9) < 150 for c in counts[1:])  # 4.5 standard deviations


def test_same_seed_same_corruption_other_seed_other(fashion):
    cfg = fashion.replace(label_noise=0.3, imbalance=2.0, train_subset=600)
    a, b, c = load_dataset(cfg), load_dataset(cfg), load_dataset(cfg.replace(seed=7))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    assert torch.equal(a.relabelled.indices, b.relabelled.indices)
    assert not torch.equal(a.relabelled.indices[:50], c.relabelled.indices[:50])
    assert torch.equal(a.test.labels, c.test.labels) and torch.equal(a.test.images, c.test.images)


def test_noise_comes_after_validation_split_and_leaves_it_clean(fashion):
    raw = DATASETS["fashion-mnist"].read(fashion.data_dir)
    data = load_dataset(fashion.replace(label_noise=0.5, val_fraction=0.2))
    assert len(data.val) == 200 and len(data.train) == 800 and len(data.relabelled.indices) == 400
    # The fake's labels are index % 10: validation labels still are, and the images are the raw ones.
    assert data.val.labels.tolist() == [i % 10 for i in ids(data.val)]
    assert sorted(ids(data.val) + ids(data.train)) == list(range(1000))
    assert torch.equal(data.val.images, raw.train.images[ids(data.val)])
    relabelled = set(data.relabelled.indices.tolist())
    assert all((y == i % 10) == (k not in relabelled) for k, (i, y) in enumerate(zip(ids(data.train), data.train.labels.tolist())))


# ---------------------------------------------------------------- the class-balanced subset


def test_train_subset_is_class_balanced_and_comes_first(fashion):
    assert per_class(load_dataset(fashion.replace(train_subset=250)).train.labels) == [25] * 10
    counts = per_class(load_dataset(fashion.replace(train_subset=255)).train.labels)
    assert sorted(counts) == [25] * 5 + [26] * 5 and sum(counts) == 255
    data = load_dataset(fashion.replace(train_subset=500, imbalance=10.0, label_noise=0.1))
    true = data.train.labels.clone()
    true[data.relabelled.indices] = data.relabelled.true_labels
    assert per_class(true) == [50, 38, 29, 23, 17, 13, 10, 8, 6, 5]  # floor(50 * 10^(-c/9)): the tail of the subset
    assert len(data.relabelled.indices) == round(0.1 * len(data.train)) == 20


def test_train_subset_of_unequal_classes_fills_from_the_larger():
    labels = torch.tensor([0] * 3 + [1] * 10 + [2] * 10)
    keep = balanced_subset(labels, 15, 3, generator_for(0, "train-subset"))
    assert torch.bincount(labels[keep]).tolist() == [3, 6, 6] and keep.tolist() == sorted(set(keep.tolist()))


@pytest.mark.parametrize("size", [9, 1001])
def test_train_subset_out_of_range_is_a_usage_error(fashion, size):
    with pytest.raises(UsageError, match=f"between the number of classes \\(10\\) and the training split's 1000 samples, got {size}"):
        load_dataset(fashion.replace(train_subset=size))


# ---------------------------------------------------------------- the command line and the run folder


@pytest.mark.parametrize("flags, words", [
    (["--imbalance", "0.5"], ["imbalance", ">= 1", "0.5"]),
    (["--imbalance", "nan"], ["imbalance", ">= 1"]),
    (["--label-noise", "1"], ["label noise", "[0, 1)", "1.0"]),
    (["--label-noise", "-0.1"], ["label noise", "[0, 1)"]),
    (["--train-subset", "0"], ["train subset", "positive"]),
    (["--train-subset", "5"], ["train subset", "number of classes (10)", "1437"]),
])
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, flags, words):
    status = main(["train", *flags, "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


def test_run_records_settings_and_relabelled_samples(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--train-subset", "500", "--imbalance", "2", "--label-noise", "0.25",
            "--val-fraction", "0.1", "--shuffle-partition", "--batch-size", "32", "--epochs", "2", "--delta", "0.5",
            "--seed", "3", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["train_subset"], config["imbalance"], config["label_noise"]) == (500, 2.0, 0.25)
    record = RunDir(out).relabelled()
    data = load_dataset(RunConfig(dataset="digits", train_subset=500, imbalance=2.0, label_noise=0.25, val_fraction=0.1, seed=3))
    assert record["train_samples"] == len(data.train) and record["relabelled"] == data.relabelled.indices.tolist()
    assert len(record["relabelled"]) == round(0.25 * len(data.train))
    assert record["given_labels"] == data.train.labels[data.relabelled.indices].tolist()
    assert all(a != b for a, b in zip(record["true_labels"], record["given_labels"]))
    n = len(data.train) // 32
    assert len(record["partition"]) == n and all(len(b) == 32 for b in record["partition"])
    assert sorted(i for b in record["partition"] for i in b) != list(range(n * 32))  # shuffled partition, as trained
    e = mislabelled_exposure(RunDir(out))
    assert e.in_data == pytest.approx(0.25, abs=0.5 / len(data.train))
    assert 0 < e.trained < 1 and 0 < e.trained_after_warmup < 1
    # --overwrite without noise removes the stale record
    assert main([a for a in args if a not in ("--label-noise", "0.25")] + ["--overwrite"]) == 0
    assert not (out / RELABELLED).exists() and mislabelled_exposure(RunDir(out)) is None


def test_exposure_counts_trained_samples_by_hand():
    partition = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # sample 12 is the dropped remainder
    relabelled = [0, 1, 5, 12]  # batch 0 holds 2, batch 1 holds 1, batch 2 none
    # warm-up trains 0, 1, 2; then rounds train batch 0 twice and batch 1 once
    e = exposure(partition, relabelled, 13, batches=[0, 1, 2, 0, 1, 0], rounds=[0, 0, 0, 1, 1, 2])
    assert e.trained == pytest.approx((2 + 1 + 0 + 2 + 1 + 2) / 24)
    assert e.trained_after_warmup == pytest.approx((2 + 1 + 2) / 12)
    assert e.in_data == pytest.approx(4 / 13) and e.in_partition == pytest.approx(3 / 12)
    assert math.isnan(exposure(partition, relabelled, 13, [0, 1, 2], [0, 0, 0]).trained_after_warmup)


def test_compare_caches_reshaped_data_per_seed(tmp_path):
    from hardbatch.run.plan import DataCache

    cache = DataCache(torch.device("cpu"))
    cfg = RunConfig(dataset="digits", label_noise=0.2)
    assert cache(cfg) is cache(cfg.replace(delta=0.5)) and cache(cfg) is not cache(cfg.replace(seed=1))
    assert not torch.equal(cache(cfg).relabelled.indices, cache(cfg.replace(seed=1)).relabelled.indices)
    plain = RunConfig(dataset="digits")
    assert cache(plain) is cache(plain.replace(seed=1))  # nothing seed-dependent: loaded once


def test_report_shows_balanced_accuracy_per_class_and_mislabelled_exposure(tmp_path, capsys):
    out = tmp_path / "cmp"
    status = main(["compare", "--dataset", "digits", "--train-subset", "320", "--label-noise", "0.25", "--deltas", "0.3",
                   "1.0", "--seeds", "0", "1", "--epochs", "3", "--batch-size", "32", "--device", "cpu", "--no-progress",
                   "--out", str(out)])
    assert status == 0
    report = (out / "report.md").read_text()
    assert "balanced top-1 %" in report and "label_noise 0.25" in report
    assert "Final test top-1 % per class" in report and "| arm | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |" in report
    assert "Label noise 0.25" in report and "mislabelled % of back-propagated samples" in report
    noise_lines = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| δ = ") and line.count("|") == 6}
    assert set(noise_lines) == {"δ = 0.3", "δ = 1"} and "| 25.0 |" in noise_lines["δ = 1"]  # 80 of 320 in the data
    for seed in (0, 1):
        # δ = 1 trains every fixed batch equally often: its share is the partition's, 80 of 320 (no remainder)
        e = mislabelled_exposure(RunDir(out / f"delta-1_seed-{seed}"))
        assert e.trained == pytest.approx(e.in_partition) == pytest.approx(0.25) and e.in_data == 0.25
        record = RunDir(out / f"delta-0.3_seed-{seed}").relabelled()
        trace = RunDir(out / f"delta-0.3_seed-{seed}").trace()
        noisy = set(record["relabelled"])
        by_hand = sum(sum(i in noisy for i in record["partition"][int(row["batch"])]) for row in trace) / (32 * len(trace))
        assert mislabelled_exposure(RunDir(out / f"delta-0.3_seed-{seed}")).trained == pytest.approx(by_hand)
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(0 < float(r["final_bacc_mean"]) <= 1 and float(r["mislabelled_in_data_mean"]) == 0.25 for r in rows)


def test_the_reshaped_split_draws_from_the_packages_one_seed_derivation():
    cfg = RunConfig(dataset="digits", seed=5)
    full = load_dataset(cfg).train
    keep = balanced_subset(full.labels, 100, 10, generator_for(5, "train-subset"))
    assert torch.equal(load_dataset(cfg.replace(train_subset=100)).train.images, full.images[keep])
    noisy, _ = noisy_labels(full.labels, 0.1, 10, generator_for(5, "label-noise"))
    assert torch.equal(load_dataset(cfg.replace(label_noise=0.1)).train.labels, noisy)
