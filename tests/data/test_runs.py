"""The data layer as runs use it: training on each data set through the command line, each data set's default
model, the run folder's record of a reshaped training split, the report's per-class and mislabelled tables, the
plan's data cache, and the batch order per data set. (Their subjects live above data/: the CLI, run/, records and
report; they test what those make of the data.)"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from hardbatch.config import RunConfig, make_config
from hardbatch.data import DATASETS, default_models_text, load_dataset
from hardbatch.functional import batch_purity
from hardbatch.records import RELABELLED, RunDir, mislabelled_exposure
from hardbatch.run.checks import check_fits, prepare, resolve
from hardbatch.run.plan import DataCache
from hardbatch.sampler import HardBatchSampler

# ---------------------------------------------------------------- each data set trains, on its own model by default


def test_cli_trains_on_fake_cifar10(tmp_path, fake, train):
    fake.cifar10(tmp_path / "data")
    status, out, err = train(
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path / "data",
        "--model",
        "small_cnn",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "run",
    )
    assert status == 0, err
    assert (tmp_path / "run" / "summary.json").is_file() and "final test top-1" in out


def test_cli_trains_on_image_folder_with_validation(tmp_path, fake, train):
    fake.image_folder(tmp_path / "data")
    status, _, err = train(
        "--dataset",
        "imagefolder",
        "--data-dir",
        tmp_path / "data",
        "--image-size",
        "16",
        "--val-fraction",
        "0.25",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "run",
    )
    assert status == 0 and (tmp_path / "run" / "summary.json").is_file(), err


def test_cli_trains_fashion_mnist_with_validation_split_and_resnet(tmp_path, fake, train):
    fake.fashion_mnist(tmp_path / "data", n_train=40, n_test=20)
    status, _, err = train(
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        tmp_path / "data",
        "--model",
        "resnet18",
        "--protocol",
        "modern",
        "--val-fraction",
        "0.25",
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--out",
        tmp_path / "run",
    )
    assert status == 0 and (tmp_path / "run" / "summary.json").is_file(), err


@pytest.mark.parametrize("model", [None, "cnn1d", "mlp1d"], ids=["default", "cnn1d", "mlp1d"])
def test_each_1d_model_trains_end_to_end_and_mnist1d_needs_no_model_flag(train, generated, tmp_path, model):
    # --channels-last (the default on CUDA) is a layout of image batches; signal batches keep theirs.
    status, _, err = train(
        "--dataset",
        "mnist1d",
        *(["--model", model] if model else []),
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--lr",
        "0.1",
        "--channels-last",
        "--data-dir",
        generated.folder,
        "--out",
        tmp_path / "run",
    )
    assert status == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["optimizer_steps"] == 4000 // 128
    assert 0.1 < summary["final_test_acc"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (config["dataset"], config["model"], config["mnist1d_samples"]) == ("mnist1d", model or "cnn1d", None)


@pytest.mark.parametrize("protocol", [None, "modern"])
def test_every_data_sets_default_model_takes_its_data(tmp_path, fake, generated, protocol):
    files = {
        "digits": None,
        "cifar10": fake.cifar10,
        "cifar100": fake.cifar100,
        "stl10": fake.stl10,
        "fashion-mnist": fake.fashion_mnist,
        "imagefolder": fake.image_folder,
        "mnist1d": None,
    }
    assert set(files) == set(DATASETS), "a new data set needs its fake files here"
    for name, write in files.items():
        if name == "mnist1d" and protocol:
            continue  # the protocols set image options, which 1-D signals refuse (test_registry.py)
        folder = generated.folder if name == "mnist1d" else tmp_path / name
        if write is not None:
            write(folder)
        cfg, _ = prepare(make_config(protocol, dataset=name, data_dir=str(folder), device="cpu"))
        assert cfg.model == DATASETS[name].default_model
        check_fits(cfg, load_dataset(cfg))  # raises a UsageError naming the model if it does not take the input


def test_the_help_lists_each_data_sets_default_model(invoke):
    status, out, _ = invoke("train", "--help")
    assert status == 0 and default_models_text() in " ".join(out.split())


MISMATCHED = [
    (["--model", "small_cnn"], ["'small_cnn'", "images", "(1, 40)", "cnn1d, mlp1d"]),
    (["--model", "mlp"], ["'mlp'", "(1, 40)", "cnn1d, mlp1d"]),  # would otherwise pool the batch as an image
    (["--dataset", "digits", "--model", "cnn1d"], ["'cnn1d'", "1-D signals", "(1, 8, 8)", "small_cnn"]),
]


@pytest.mark.parametrize("args,words", MISMATCHED, ids=[" ".join(a) for a, _ in MISMATCHED])
def test_a_model_given_the_other_kind_of_data_names_the_models_that_take_it(
    train, generated, tmp_path, args, words, one_line_error
):
    status, _, err = train(
        "--dataset",
        "mnist1d",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--data-dir",
        generated.folder,
        "--out",
        tmp_path / "run",
        *args,
    )
    assert status == 2
    one_line_error(err, *words)


# ---------------------------------------------------------------- the batch order per data set


def _train_folder(train, tmp_path, *extra):
    return train(
        "--dataset",
        "imagefolder",
        "--data-dir",
        tmp_path / "data",
        "--image-size",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "run",
        *extra,
    )


def test_image_folder_batches_are_a_seeded_random_cut_by_default(tmp_path, fake, train):
    """ImageFolder lists samples class by class: cut in that order, every batch would hold one class."""
    fake.image_folder(tmp_path / "data")
    status, _, err = _train_folder(train, tmp_path)
    assert status == 0 and "warning" not in err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["shuffle_partition"] is True
    labels = [0] * 4 + [1] * 4 + [2] * 5
    with open(tmp_path / "run" / "trace.csv") as f:
        assert [int(row["batch"]) for row in csv.DictReader(f)] == [0, 1, 2]  # 13 // 4 = 3 batches, one epoch
    partition = HardBatchSampler(13, 4, shuffle_partition=True, seed=0).partition
    assert batch_purity(torch.tensor(labels), partition) < 0.9
    assert batch_purity(torch.tensor(labels), HardBatchSampler(13, 4).partition) == 1.0
    # Asked for explicitly, the file order is kept, with a one-line warning naming the flag.
    status, _, err = _train_folder(train, tmp_path, "--overwrite", "--no-shuffle-partition")
    assert status == 0
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "one class" in warning[0] and "--shuffle-partition" in warning[0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["shuffle_partition"] is False


@pytest.mark.parametrize(
    "protocol, dataset, flag, expected",
    [
        ("paper", "cifar10", None, False),
        ("paper", "cifar100", None, False),
        ("paper", "stl10", None, False),
        ("paper", "imagefolder", None, True),
        ("paper", "digits", None, True),
        (None, "cifar10", None, True),
        (None, "imagefolder", None, True),
        ("modern", "cifar10", None, True),
        ("paper", "cifar10", True, True),
        (None, "imagefolder", False, False),
    ],
)
def test_partition_order_resolves_per_protocol_and_data_set(protocol, dataset, flag, expected):
    given = {} if flag is None else {"shuffle_partition": flag}
    cfg = resolve(make_config(protocol, dataset=dataset, **given), torch.device("cpu"))
    assert cfg.shuffle_partition is expected


# ---------------------------------------------------------------- a reshaped training split in run folders and reports


def test_run_records_settings_and_relabelled_samples(tmp_path, train):
    out = tmp_path / "run"
    args = [
        "--dataset",
        "digits",
        "--train-subset",
        "500",
        "--imbalance",
        "2",
        "--label-noise",
        "0.25",
        "--val-fraction",
        "0.1",
        "--shuffle-partition",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--delta",
        "0.5",
        "--seed",
        "3",
        "--out",
        out,
    ]
    assert train(*args)[0] == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["train_subset"], config["imbalance"], config["label_noise"]) == (500, 2.0, 0.25)
    record = RunDir(out).relabelled()
    data = load_dataset(
        RunConfig(dataset="digits", train_subset=500, imbalance=2.0, label_noise=0.25, val_fraction=0.1, seed=3)
    )
    assert record["train_samples"] == len(data.train) and record["relabelled"] == data.relabelled.indices.tolist()
    assert len(record["relabelled"]) == round(0.25 * len(data.train))
    assert record["given_labels"] == data.train.labels[data.relabelled.indices].tolist()
    assert all(a != b for a, b in zip(record["true_labels"], record["given_labels"], strict=True))
    n = len(data.train) // 32
    assert len(record["partition"]) == n and all(len(b) == 32 for b in record["partition"])
    assert sorted(i for b in record["partition"] for i in b) != list(range(n * 32))  # shuffled partition, as trained
    e = mislabelled_exposure(RunDir(out))
    assert e.in_data == pytest.approx(0.25, abs=0.5 / len(data.train))
    assert 0 < e.trained < 1 and 0 < e.trained_after_warmup < 1
    # --overwrite without noise removes the stale record
    assert train(*[a for a in args if a not in ("--label-noise", "0.25")], "--overwrite")[0] == 0
    assert not (out / RELABELLED).exists() and mislabelled_exposure(RunDir(out)) is None


def test_compare_caches_reshaped_data_per_seed():
    cache = DataCache(torch.device("cpu"))
    cfg = RunConfig(dataset="digits", label_noise=0.2)
    assert cache(cfg) is cache(cfg.replace(params={"delta": 0.5})) and cache(cfg) is not cache(cfg.replace(seed=1))
    assert not torch.equal(cache(cfg).relabelled.indices, cache(cfg.replace(seed=1)).relabelled.indices)
    plain = RunConfig(dataset="digits")
    assert cache(plain) is cache(plain.replace(seed=1))  # nothing seed-dependent: loaded once


def test_report_shows_balanced_accuracy_per_class_and_mislabelled_exposure(tmp_path, invoke):
    out = tmp_path / "cmp"
    status, _, err = invoke(
        "compare",
        "--dataset",
        "digits",
        "--train-subset",
        "320",
        "--label-noise",
        "0.25",
        "--deltas",
        "0.3",
        "1.0",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
    )
    assert status == 0, err
    report = (out / "report.md").read_text()
    assert "balanced top-1 %" in report and "label_noise 0.25" in report
    assert "Final test top-1 % per class" in report and "| arm | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |" in report
    assert "Label noise 0.25" in report and "mislabelled % of back-propagated samples" in report
    noise_lines = {
        line.split("|")[1].strip(): line
        for line in report.splitlines()
        if line.startswith("| δ = ") and line.count("|") == 6
    }
    assert set(noise_lines) == {"δ = 0.3", "δ = 1"} and "| 25.0 |" in noise_lines["δ = 1"]  # 80 of 320 in the data
    for seed in (0, 1):
        # δ = 1 trains every fixed batch equally often: its share is the partition's, 80 of 320 (no remainder)
        e = mislabelled_exposure(RunDir(out / f"delta-1_seed-{seed}"))
        assert e.trained == pytest.approx(e.in_partition) == pytest.approx(0.25) and e.in_data == 0.25
        record = RunDir(out / f"delta-0.3_seed-{seed}").relabelled()
        trace = RunDir(out / f"delta-0.3_seed-{seed}").trace()
        noisy = set(record["relabelled"])
        in_trained = sum(sum(i in noisy for i in record["partition"][int(row["batch"])]) for row in trace)
        by_hand = in_trained / (32 * len(trace))
        assert mislabelled_exposure(RunDir(out / f"delta-0.3_seed-{seed}")).trained == pytest.approx(by_hand)
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(0 < float(r["final_bacc_mean"]) <= 1 and float(r["mislabelled_in_data_mean"]) == 0.25 for r in rows)
