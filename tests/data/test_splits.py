"""hardbatch.data.splits: the stratified validation split, and the training split reshaped into a class-balanced
subset, a long tail and label noise, each drawn from its own seeded generator."""

from __future__ import annotations

import math

import pytest
import torch

from hardbatch.config import RunConfig
from hardbatch.data import DATASETS, load_dataset
from hardbatch.data.splits import balanced_subset, hold_out, long_tail_counts, noisy_labels, stratified_split
from hardbatch.errors import UsageError
from hardbatch.functional import generator_for

# floor(100 * 10^(-c/9)) for c = 0..9, by hand: 10^(-1/9) = 0.7743, 10^(-2/9) = 0.5995, ... 10^(-8/9) = 0.1292.
LONG_TAIL_100_RHO_10 = [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory, fake):
    """Fake Fashion-MNIST: 1,000 train images (100 per class, labels index % 10), 50 test."""
    root = tmp_path_factory.mktemp("fashion")
    fake.fashion_mnist(root, n_train=1000, n_test=50)
    return RunConfig(dataset="fashion-mnist", data_dir=str(root))


def ids(dataset) -> list[int]:
    """Which raw image each sample is: the fake writes its index into pixels (0, 0) and (0, 1), base 256."""
    return (dataset.images[:, 0, 0, 0].long() + 256 * dataset.images[:, 0, 0, 1].long()).tolist()


def per_class(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


# ---------------------------------------------------------------- the validation split


def test_the_validation_split_is_stratified_disjoint_and_the_same_for_every_seed(tmp_path, fake):
    fake.cifar10(tmp_path)
    cfg = RunConfig(dataset="cifar10", data_dir=str(tmp_path), val_fraction=0.25)
    data = load_dataset(cfg)
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.test) == 10
    assert torch.bincount(data.val.labels, minlength=10).tolist() == [1] * 10  # 4 per class, a quarter held out
    assert torch.bincount(data.train.labels, minlength=10).tolist() == [3] * 10
    train_ids, val_ids = data.train.images[:, 0, 0, 0].tolist(), data.val.images[:, 0, 0, 0].tolist()
    assert sorted(train_ids + val_ids) == list(range(40))  # disjoint and complete
    # labels follow their images
    assert all(i % 10 == y for i, y in zip(val_ids, data.val.labels.tolist(), strict=True))
    again = load_dataset(cfg.replace(seed=5))
    assert again.val.images[:, 0, 0, 0].tolist() == val_ids


def test_stratified_split_rounds_per_class_and_sorts():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 10)
    keep, held = stratified_split(labels, 0.3)
    assert torch.bincount(labels[held]).tolist() == [2, 1, 3]  # round(2.1), round(0.9), round(3.0)
    assert held.tolist() == sorted(held.tolist()) and keep.tolist() == sorted(set(range(20)) - set(held.tolist()))
    assert torch.equal(stratified_split(labels, 0.3)[1], held)  # a fixed seed: the same split every time
    train, val = hold_out(DATASETS["digits"].read().train, 0.0)
    assert val is None and len(train) == 1437


def test_a_fraction_that_holds_out_nothing_is_a_usage_error():
    with pytest.raises(UsageError, match=r"--val-fraction 0.001 holds out no samples .*the largest has 146\)"):
        load_dataset(RunConfig(dataset="digits", val_fraction=0.001))


@pytest.mark.parametrize(
    "fraction, words",
    [("0.001", "--val-fraction 0.001 holds out no samples"), ("0.999", "val_fraction 0.999 leaves 0 training samples")],
)
def test_a_validation_fraction_that_empties_a_split_is_named(tmp_path, train, fraction, words):
    out = tmp_path / "run"
    status, _, err = train("--val-fraction", fraction, "--epochs", "1", "--out", out)
    assert status == 2 and err.count("\n") == 1 and words in err and "batch size" not in err
    assert not out.exists()


# ---------------------------------------------------------------- the long tail


def test_imbalance_keeps_exact_long_tail_counts(fashion):
    assert long_tail_counts(torch.full((10,), 100), 10.0).tolist() == LONG_TAIL_100_RHO_10
    # 600.0000001 or 599.9999 both -> 600
    assert long_tail_counts(torch.tensor([6000, 6000]), 10.0).tolist() == [6000, 600]
    data = load_dataset(fashion.replace(imbalance=10.0))
    assert per_class(data.train.labels) == LONG_TAIL_100_RHO_10
    assert max(per_class(data.train.labels)) == 10 * min(per_class(data.train.labels))
    assert len(data.test) == 50 and data.relabelled is None


def test_imbalance_after_validation_split_and_seeded(fashion):
    cfg = fashion.replace(imbalance=10.0, val_fraction=0.2)  # 80 per class remain for training
    a, b, other = load_dataset(cfg), load_dataset(cfg), load_dataset(cfg.replace(seed=1))
    assert per_class(a.val.labels) == [20] * 10  # the validation split keeps its balance
    assert per_class(a.train.labels) == [math.floor(80 * 10 ** (-c / 9) + 1e-9) for c in range(10)]
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images[:200], other.train.images[:200])
    assert torch.equal(a.val.images, other.val.images)  # the seed never moves the validation split


def test_imbalance_that_empties_a_class_is_a_usage_error(fashion):
    with pytest.raises(UsageError, match=r"imbalance 1000 leaves class 7 with none of its 100 .* between 1 and 100$"):
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
        assert torch.equal(r.true_labels, raw.train.labels[changed])
        assert torch.equal(r.given_labels, data.train.labels[changed])
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
    assert all(
        (y == i % 10) == (k not in relabelled)
        for k, (i, y) in enumerate(zip(ids(data.train), data.train.labels.tolist(), strict=True))
    )


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
    with pytest.raises(
        UsageError, match=f"between the number of classes \\(10\\) and the training split's 1000 samples, got {size}"
    ):
        load_dataset(fashion.replace(train_subset=size))


def test_the_reshaped_split_draws_from_the_packages_one_seed_derivation():
    cfg = RunConfig(dataset="digits", seed=5)
    full = load_dataset(cfg).train
    keep = balanced_subset(full.labels, 100, 10, generator_for(5, "train-subset"))
    assert torch.equal(load_dataset(cfg.replace(train_subset=100)).train.images, full.images[keep])
    noisy, _ = noisy_labels(full.labels, 0.1, 10, generator_for(5, "label-noise"))
    assert torch.equal(load_dataset(cfg.replace(label_noise=0.1)).train.labels, noisy)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--imbalance", "0.5"], ["imbalance", ">= 1", "0.5"]),
        (["--imbalance", "nan"], ["imbalance", ">= 1"]),
        (["--label-noise", "1"], ["label-noise", "[0, 1)", "1.0"]),
        (["--label-noise", "-0.1"], ["label-noise", "[0, 1)"]),
        (["--train-subset", "0"], ["train-subset", ">= 1"]),
        (["--train-subset", "5"], ["train subset", "number of classes (10)", "1437"]),
    ],
)
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, train, flags, words):
    status, _, err = train(*flags, "--epochs", "1", "--out", tmp_path / "run")
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()
