"""File-based data sets (CIFAR-10/100, STL-10, image folders) read from tiny fakes in their official on-disk formats."""

from __future__ import annotations

import csv
import json
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import BatchSampler, SequentialSampler

from hardbatch import data as hb_data
from hardbatch.cli import main
from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.data import DATASETS, InMemoryDataset, dataset_labels, load_dataset

# ---------------------------------------------------------------- fake files in the official formats


def _unique_images(rng: np.random.Generator, n: int, shape: tuple[int, ...], first: int = 0) -> np.ndarray:
    """Random uint8 images whose pixel [0, 0, 0] is the image's index (+ first), so split membership can be traced."""
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(first, first + n)
    return x


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def write_cifar10(root: Path, n_train: int = 40, n_test: int = 10) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/ with data_batch_1..5 (n_train / 5 images each), test_batch and batches.meta."""
    rng = np.random.default_rng(0)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    x_train, y_train = _unique_images(rng, n_train, (3, 32, 32)), np.arange(n_train) % 10
    x_test, y_test = _unique_images(rng, n_test, (3, 32, 32), first=100), np.arange(n_test) % 10
    x_test[3] = 0
    x_test[3, 1, 5, 7] = 200  # green plane, row 5, column 7: flat index 1024 + 5 * 32 + 7
    per = n_train // 5
    for i in range(5):
        part = slice(i * per, (i + 1) * per)
        _pickle(base / f"data_batch_{i + 1}", {b"batch_label": b"training batch", b"labels": y_train[part].tolist(),
                                               b"data": x_train[part].reshape(per, 3072), b"filenames": [b"x.png"] * per})
    _pickle(base / "test_batch", {b"batch_label": b"testing batch", b"labels": y_test.tolist(),
                                  b"data": x_test.reshape(n_test, 3072), b"filenames": [b"x.png"] * n_test})
    _pickle(base / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072})
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_cifar100(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = {}
    for split, n in (("train", 30), ("test", 12)):
        x, fine = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 100, n)
        _pickle(base / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(), b"fine_labels": fine.tolist(),
                               b"coarse_labels": (fine // 5).tolist(), b"data": x.reshape(n, 3072)})
        out[f"x_{split}"], out[f"y_{split}"] = x, fine
    _pickle(base / "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)],
                            b"coarse_label_names": [b"c%d" % i for i in range(20)]})
    return out


STL_PLANE, STL_IMAGE = 96 * 96, 3 * 96 * 96


def write_stl10(root: Path, n_train: int = 10, n_test: int = 6) -> dict[str, np.ndarray]:
    """stl10_binary/ *_X.bin (raw bytes, each plane column-major) and *_y.bin (labels 1..10)."""
    rng = np.random.default_rng(2)
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        raw = rng.integers(0, 256, n * STL_IMAGE, dtype=np.uint8)
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        raw.tofile(base / f"{split}_X.bin")
        labels.tofile(base / f"{split}_y.bin")
        out[f"raw_{split}"], out[f"y_{split}"] = raw, labels
    # train image 1: all zero but channel 2, row 10, column 70; column-major: byte c*96*96 + column*96 + row
    raw = out["raw_train"]
    raw[STL_IMAGE: 2 * STL_IMAGE] = 0
    raw[STL_IMAGE + 2 * STL_PLANE + 70 * 96 + 10] = 77
    raw.tofile(base / "train_X.bin")
    return out


COLOURS = {"cat": [(255, 0, 0), (200, 10, 20), (250, 128, 0), (190, 60, 60)],
           "dog": [(0, 255, 0), (10, 200, 30), (0, 128, 64), (40, 220, 90)],
           "emu": [(0, 0, 255), (30, 20, 200), (64, 0, 128), (90, 90, 250)]}


def write_image_folder(root: Path, test_name: str = "test") -> None:
    """train/<class>/ with 4 solid-colour PNGs of assorted sizes and modes per class, <test_name>/<class>/ with 2."""
    for split, count in (("train", 4), (test_name, 2)):
        for cls, colours in COLOURS.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, colour in enumerate(colours[:count]):
                image = Image.new("RGB", (10 + 3 * i, 12 + i), colour)
                if i == 1:
                    image = image.convert("RGBA")  # must come out as RGB all the same
                image.save(folder / f"{i}.png")
    Image.new("L", (9, 9), 100).save(root / "train" / "emu" / "9_grey.png")  # a greyscale image: 3 equal channels


# ---------------------------------------------------------------- CIFAR


def test_cifar10_reads_official_pickles(tmp_path):
    fake = write_cifar10(tmp_path)
    raw = DATASETS["cifar10"].read(str(tmp_path))
    assert (raw.num_classes, raw.in_channels, raw.image_size) == (10, 3, 32)
    assert isinstance(raw.train, InMemoryDataset) and isinstance(raw.test, InMemoryDataset)
    assert raw.train.images.shape == (40, 3, 32, 32) and raw.train.images.dtype == torch.uint8
    assert raw.test.images.shape == (10, 3, 32, 32) and raw.test.labels.dtype == torch.long
    assert torch.equal(raw.train.images, torch.from_numpy(fake["x_train"]))  # batches 1..5 in order
    assert raw.train.labels.tolist() == fake["y_train"].tolist()
    assert raw.test.labels.tolist() == fake["y_test"].tolist()
    assert raw.test.images[3].nonzero().tolist() == [[1, 5, 7]] and raw.test.images[3, 1, 5, 7] == 200
    x = fake["x_train"].astype(np.float64) / 255
    np.testing.assert_allclose(raw.mean, x.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(raw.std, x.std(axis=(0, 2, 3)), atol=1e-9)


def test_cifar100_uses_fine_labels(tmp_path):
    fake = write_cifar100(tmp_path)
    raw = DATASETS["cifar100"].read(str(tmp_path))
    assert raw.num_classes == 100 and raw.in_channels == 3 and raw.image_size == 32
    assert raw.train.images.shape == (30, 3, 32, 32) and raw.test.images.shape == (12, 3, 32, 32)
    assert torch.equal(raw.test.images, torch.from_numpy(fake["x_test"]))
    assert raw.train.labels.tolist() == fake["y_train"].tolist()
    assert raw.test.labels.tolist() == fake["y_test"].tolist()
    x = fake["x_train"].astype(np.float64) / 255
    np.testing.assert_allclose(raw.mean, x.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(raw.std, x.std(axis=(0, 2, 3)), atol=1e-9)


def test_cifar_files_missing_name_the_expected_path(tmp_path):
    for name, folder in (("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("stl10", "stl10_binary")):
        with pytest.raises(UsageError) as err:
            DATASETS[name].read(str(tmp_path))
        message = str(err.value)
        assert "\n" not in message and str(tmp_path / folder) in message and "--download" in message
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()  # one file short is not enough
    with pytest.raises(UsageError, match="data_batch_1..5"):
        DATASETS["cifar10"].read(str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "imagefolder"])
def test_file_data_sets_need_a_data_dir(name):
    with pytest.raises(UsageError, match="--data-dir"):
        DATASETS[name].read(None)


def test_truncated_pickle_is_a_usage_error(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UsageError, match="cannot read .*test_batch"):
        DATASETS["cifar10"].read(str(tmp_path))


def test_download_fetches_through_torchvision_only_when_files_are_missing(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:  # stands in for torchvision's class: "downloads" by writing the files
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            write_cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    raw = DATASETS["cifar10"].read(str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True)] and len(raw.train) == 40
    DATASETS["cifar10"].read(str(tmp_path), download=True)  # files now present: no second download
    assert len(calls) == 1


def test_failed_download_is_a_one_line_usage_error(tmp_path, monkeypatch):
    def offline(root, download=False, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(UsageError) as err:
        DATASETS["cifar100"].read(str(tmp_path), download=True)
    assert "download" in str(err.value) and "no network" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- STL-10


def test_stl10_transposes_column_major_images_and_shifts_labels(tmp_path):
    fake = write_stl10(tmp_path)
    raw = DATASETS["stl10"].read(str(tmp_path))
    assert (raw.num_classes, raw.in_channels, raw.image_size) == (10, 3, 96)
    assert raw.train.images.shape == (10, 3, 96, 96) and raw.train.images.dtype == torch.uint8
    assert raw.test.images.shape == (6, 3, 96, 96)
    assert raw.train.images[1].nonzero().tolist() == [[2, 10, 70]] and raw.train.images[1, 2, 10, 70] == 77
    n, c, h, w = 7, 1, 3, 91  # any pixel: byte n*3*96*96 + c*96*96 + w*96 + h
    assert raw.train.images[n, c, h, w] == fake["raw_train"][n * STL_IMAGE + c * STL_PLANE + w * 96 + h]
    assert raw.train.labels.tolist() == list(range(10))  # 1..10 on disk
    assert raw.test.labels.tolist() == (fake["y_test"].astype(int) - 1).tolist()
    x = raw.train.images.double() / 255
    np.testing.assert_allclose(raw.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-9)
    np.testing.assert_allclose(raw.std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-9)


def test_stl10_wrong_file_size_is_a_usage_error(tmp_path):
    write_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UsageError, match="cannot read .*test_X.bin"):
        DATASETS["stl10"].read(str(tmp_path))


# ---------------------------------------------------------------- image folders


def test_imagefolder_decodes_resizes_and_labels(tmp_path):
    write_image_folder(tmp_path)
    raw = DATASETS["imagefolder"].read(str(tmp_path))
    assert (raw.num_classes, raw.in_channels, raw.image_size) == (3, 3, 64)
    assert not isinstance(raw.train, InMemoryDataset)  # decoded per sample
    assert len(raw.train) == 13 and len(raw.test) == 6
    assert dataset_labels(raw.train).tolist() == [0] * 4 + [1] * 4 + [2] * 5
    colours = []
    for i in range(len(raw.train)):
        x, y = raw.train[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.uint8 and isinstance(y, int)
        colour = x[:, 0, 0].tolist()
        assert (x == x[:, :1, :1]).all()  # solid colours stay solid after the resize
        colours.append(colour)
    assert colours[:4] == [list(c) for c in COLOURS["cat"]]  # RGBA image 1 included
    assert colours[12] == [100, 100, 100]  # the greyscale image, sorted last in emu/
    c = np.array(colours, dtype=np.float64) / 255  # every image has the same pixel count
    np.testing.assert_allclose(raw.mean, c.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(raw.std, c.std(axis=0), atol=1e-6)
    x, y = raw.test[5]
    assert x.shape == (3, 64, 64) and y == 2 and x[:, 0, 0].tolist() == list(COLOURS["emu"][1])


def test_imagefolder_image_size_val_fallback_and_stats_sample(tmp_path, monkeypatch):
    write_image_folder(tmp_path, test_name="val")
    monkeypatch.setattr(hb_data, "STATS_IMAGES", 2)  # first and last train image
    raw = DATASETS["imagefolder"].read(str(tmp_path), image_size=16)
    assert raw.image_size == 16 and raw.train[0][0].shape == (3, 16, 16) and len(raw.test) == 6
    c = np.array([COLOURS["cat"][0], (100, 100, 100)], dtype=np.float64) / 255
    np.testing.assert_allclose(raw.mean, c.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(raw.std, c.std(axis=0), atol=1e-6)


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(UsageError) as err:
        DATASETS["imagefolder"].read(str(tmp_path))
    assert str(tmp_path / "train") in str(err.value) and "<class>" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(UsageError, match="imagefolder"):  # no class folders
        DATASETS["imagefolder"].read(str(tmp_path))
    write_image_folder(tmp_path / "other")
    (tmp_path / "other" / "test" / "dog").rename(tmp_path / "other" / "test" / "wolf")
    with pytest.raises(UsageError, match="only in train/: dog; only in test/: wolf"):
        DATASETS["imagefolder"].read(str(tmp_path / "other"))


@pytest.mark.parametrize("split", ["train", "test", "val"])
def test_imagefolder_empty_class_folder_names_its_split(tmp_path, split):
    write_image_folder(tmp_path, test_name="val" if split == "val" else "test")
    for image in (tmp_path / split / "dog").iterdir():
        image.unlink()
    with pytest.raises(UsageError) as err:
        DATASETS["imagefolder"].read(str(tmp_path))
    message = str(err.value)
    assert f"{split}/ split ({tmp_path / split})" in message and "dog" in message and "\n" not in message


# ---------------------------------------------------------------- load_dataset and the validation split


def test_load_dataset_cifar10_stratified_validation_split(tmp_path):
    write_cifar10(tmp_path)
    cfg = RunConfig(dataset="cifar10", data_dir=str(tmp_path), val_fraction=0.25)
    data = load_dataset(cfg)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 32)
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.test) == 10
    assert torch.bincount(data.val.labels, minlength=10).tolist() == [1] * 10  # 4 per class, a quarter held out
    assert torch.bincount(data.train.labels, minlength=10).tolist() == [3] * 10
    train_ids, val_ids = data.train.images[:, 0, 0, 0].tolist(), data.val.images[:, 0, 0, 0].tolist()
    assert sorted(train_ids + val_ids) == list(range(40))  # disjoint and complete
    assert all(i % 10 == y for i, y in zip(val_ids, data.val.labels.tolist()))  # labels follow their images
    again = load_dataset(cfg.replace(seed=5))
    assert again.val.images[:, 0, 0, 0].tolist() == val_ids
    x, _ = data.eval_loader(data.test, batch_size=4).__iter__().__next__()
    out = data.eval_transform(x)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32


def test_load_dataset_imagefolder_validation_split_batches_collate(tmp_path):
    write_image_folder(tmp_path)
    data = load_dataset(RunConfig(dataset="imagefolder", data_dir=str(tmp_path), val_fraction=0.25, image_size=16))
    assert data.image_size == 16
    train_labels, val_labels = dataset_labels(data.train), dataset_labels(data.val)
    assert sorted(data.train.indices + data.val.indices) == list(range(13))
    assert torch.bincount(val_labels).tolist() == [1, 1, 1] and torch.bincount(train_labels).tolist() == [3, 3, 4]
    sampler = BatchSampler(SequentialSampler(range(len(data.train))), 4, drop_last=False)
    x, y = next(iter(data.loader(data.train, sampler)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and y.tolist() == train_labels[:4].tolist()
    x, y = next(iter(data.eval_loader(data.val)))
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [0, 1, 2]


# ---------------------------------------------------------------- the command line


def test_cli_trains_on_fake_cifar10(tmp_path, capsys):
    write_cifar10(tmp_path / "data")
    status = main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model", "small_cnn",
                   "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run"), "--no-progress"])
    assert status == 0
    assert (tmp_path / "run" / "summary.json").is_file() and "final test top-1" in capsys.readouterr().out


def test_cli_trains_on_image_folder_with_validation(tmp_path):
    write_image_folder(tmp_path / "data")
    status = main(["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
                   "--val-fraction", "0.25", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run"),
                   "--no-progress"])
    assert status == 0 and (tmp_path / "run" / "summary.json").is_file()


def test_cli_missing_files_exit_2_with_one_line(tmp_path, capsys):
    status = main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"), "--epochs", "1",
                   "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and str(tmp_path / "nothing" / "cifar-10-batches-py") in err
    status = main(["train", "--dataset", "stl10", "--epochs", "1", "--out", str(tmp_path / "run2"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "--data-dir" in err


# ---------------------------------------------------------------- issue 9: checked before training, mixed batches


def _train_folder(tmp_path: Path, *extra: str) -> int:
    return main(["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--image-size", "8",
                 "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run"), "--no-progress", *extra])


@pytest.mark.parametrize("split", ["train", "test"])
def test_damaged_image_is_refused_before_training_naming_the_file(tmp_path, capsys, split):
    write_image_folder(tmp_path / "data")
    bad = tmp_path / "data" / split / "dog" / "zz_damaged.png"
    good = (tmp_path / "data" / split / "dog" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated PNG: the header reads, the data does not
    capsys.readouterr()
    assert _train_folder(tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "run").exists()
    bad.write_bytes(b"not an image at all")
    assert _train_folder(tmp_path) == 2 and str(bad) in capsys.readouterr().err


def test_image_folder_with_one_class_is_refused(tmp_path, capsys):
    write_image_folder(tmp_path / "data")
    for split in ("train", "test"):
        for cls in ("dog", "emu"):
            for f in (tmp_path / "data" / split / cls).iterdir():
                f.unlink()
            (tmp_path / "data" / split / cls).rmdir()
    assert _train_folder(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 2" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("fraction, words", [("0.001", "holds out no samples"), ("0.999", "training samples")])
def test_a_validation_fraction_that_empties_a_split_is_named(tmp_path, capsys, fraction, words):
    out = tmp_path / "run"
    assert main(["train", "--val-fraction", fraction, "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--val-fraction {fraction}" in err and words in err and "batch size" not in err
    assert not out.exists()


def test_image_folder_batches_are_a_seeded_random_cut_by_default(tmp_path, capsys):
    """ImageFolder lists samples class by class: cut in that order, every batch would hold one class."""
    write_image_folder(tmp_path / "data")
    capsys.readouterr()
    assert _train_folder(tmp_path) == 0
    assert "warning" not in capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["shuffle_partition"] is True
    labels = [0] * 4 + [1] * 4 + [2] * 5
    with open(tmp_path / "run" / "trace.csv") as f:
        assert [int(row["batch"]) for row in csv.DictReader(f)] == [0, 1, 2]  # 13 // 4 = 3 batches, one epoch
    from hardbatch.functional import batch_purity
    from hardbatch.selection import HardBatchSampler

    partition = HardBatchSampler(13, 4, shuffle_partition=True, seed=0).partition
    assert batch_purity(torch.tensor(labels), partition) < 0.9
    assert batch_purity(torch.tensor(labels), HardBatchSampler(13, 4).partition) == 1.0
    # Asked for explicitly, the file order is kept, with a one-line warning naming the flag.
    assert _train_folder(tmp_path, "--overwrite", "--no-shuffle-partition") == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "one class" in warning[0] and "--shuffle-partition" in warning[0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["shuffle_partition"] is False


@pytest.mark.parametrize("protocol, dataset, flag, expected", [
    ("paper", "cifar10", None, False), ("paper", "cifar100", None, False), ("paper", "stl10", None, False),
    ("paper", "imagefolder", None, True), ("paper", "digits", None, True), (None, "cifar10", None, True),
    (None, "imagefolder", None, True), ("modern", "cifar10", None, True), ("paper", "cifar10", True, True),
    (None, "imagefolder", False, False),
])
def test_partition_order_resolves_per_protocol_and_data_set(protocol, dataset, flag, expected):
    from hardbatch.config import make_config
    from hardbatch.run.experiment import resolve

    given = {} if flag is None else {"shuffle_partition": flag}
    cfg = resolve(make_config(protocol, dataset=dataset, **given), torch.device("cpu"))
    assert cfg.shuffle_partition is expected


class _RunsCode:
    """A pickle that, when loaded by plain ``pickle.load``, creates a marker directory."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def test_hostile_cifar_pickle_is_refused_and_runs_no_code(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f)
    with pytest.raises(UsageError) as err:
        DATASETS["cifar10"].read(str(tmp_path))
    message = str(err.value)
    assert not marker.exists()
    assert "\n" not in message and "data_batch_2" in message and "posix.mkdir" in message and "refused" in message


@pytest.mark.parametrize("entry", [[1, 2, 3], {b"labels": [0]}, {b"data": "text", b"labels": [0]},
                                   {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
                                   {b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}],
                         ids=["a-list", "no-data", "data-not-array", "labels-too-few", "labels-not-int"])
def test_malformed_cifar_pickle_is_one_line_naming_the_file(tmp_path, entry):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(UsageError) as err:
        DATASETS["cifar10"].read(str(tmp_path))
    assert "\n" not in str(err.value) and "data_batch_3" in str(err.value)


def test_cifar_pickles_as_python2_wrote_them_still_load(tmp_path):
    """The real files are protocol-2 pickles whose arrays name numpy.core.multiarray._reconstruct."""
    write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    for name in ("data_batch_1", "test_batch"):
        with open(base / name, "rb") as f:
            entry = pickle.load(f)
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    raw = DATASETS["cifar10"].read(str(tmp_path))
    assert len(raw.test) > 0
