"""hardbatch.data.readers.imagefolder: your own images in class folders, decoded per sample, checked before a run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hardbatch.data import DATASETS, InMemoryDataset, dataset_labels
from hardbatch.data.readers import imagefolder
from hardbatch.errors import MissingExtra, UsageError


def test_imagefolder_decodes_resizes_and_labels(tmp_path, fake):
    fake.image_folder(tmp_path)
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
    assert colours[:4] == [list(c) for c in fake.COLOURS["cat"]]  # RGBA image 1 included
    assert colours[12] == [100, 100, 100]  # the greyscale image, sorted last in emu/
    c = np.array(colours, dtype=np.float64) / 255  # every image has the same pixel count
    np.testing.assert_allclose(raw.mean, c.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(raw.std, c.std(axis=0), atol=1e-6)
    x, y = raw.test[5]
    assert x.shape == (3, 64, 64) and y == 2 and x[:, 0, 0].tolist() == list(fake.COLOURS["emu"][1])


def test_imagefolder_image_size_val_fallback_and_stats_sample(tmp_path, fake, monkeypatch):
    fake.image_folder(tmp_path, test_name="val")
    monkeypatch.setattr(imagefolder, "STATS_IMAGES", 2)  # first and last train image
    raw = DATASETS["imagefolder"].read(str(tmp_path), image_size=16)
    assert raw.image_size == 16 and raw.train[0][0].shape == (3, 16, 16) and len(raw.test) == 6
    c = np.array([fake.COLOURS["cat"][0], (100, 100, 100)], dtype=np.float64) / 255
    np.testing.assert_allclose(raw.mean, c.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(raw.std, c.std(axis=0), atol=1e-6)


def test_imagefolder_layout_errors(tmp_path, fake):
    with pytest.raises(UsageError) as err:
        DATASETS["imagefolder"].read(str(tmp_path))
    assert str(tmp_path / "train") in str(err.value) and "<class>" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(UsageError, match="imagefolder"):  # no class folders
        DATASETS["imagefolder"].read(str(tmp_path))
    fake.image_folder(tmp_path / "other")
    (tmp_path / "other" / "test" / "dog").rename(tmp_path / "other" / "test" / "wolf")
    with pytest.raises(UsageError, match="only in train/: dog; only in test/: wolf"):
        DATASETS["imagefolder"].read(str(tmp_path / "other"))


@pytest.mark.parametrize("split", ["train", "test", "val"])
def test_imagefolder_empty_class_folder_names_its_split(tmp_path, fake, split):
    fake.image_folder(tmp_path, test_name="val" if split == "val" else "test")
    for image in (tmp_path / split / "dog").iterdir():
        image.unlink()
    with pytest.raises(UsageError) as err:
        DATASETS["imagefolder"].read(str(tmp_path))
    message = str(err.value)
    assert f"{split}/ split ({tmp_path / split})" in message and "dog" in message and "\n" not in message


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


@pytest.mark.parametrize("split", ["train", "test"])
def test_damaged_image_is_refused_before_training_naming_the_file(tmp_path, fake, train, split):
    fake.image_folder(tmp_path / "data")
    bad = tmp_path / "data" / split / "dog" / "zz_damaged.png"
    good = (tmp_path / "data" / split / "dog" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated PNG: the header reads, the data does not
    status, _, err = _train_folder(train, tmp_path)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in lines[0]
    assert not (tmp_path / "run").exists()
    bad.write_bytes(b"not an image at all")
    status, _, err = _train_folder(train, tmp_path)
    assert status == 2 and str(bad) in err


def test_image_folder_with_one_class_is_refused(tmp_path, fake, train):
    fake.image_folder(tmp_path / "data")
    for split in ("train", "test"):
        for cls in ("dog", "emu"):
            for f in (tmp_path / "data" / split / cls).iterdir():
                f.unlink()
            (tmp_path / "data" / split / cls).rmdir()
    status, _, err = _train_folder(train, tmp_path)
    assert status == 2 and err.count("\n") == 1 and "at least 2" in err and not (tmp_path / "run").exists()


def test_without_torchvision_one_line_names_the_install(tmp_path, fake, monkeypatch):
    fake.image_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # importing it fails, as where it is not installed
    with pytest.raises(
        MissingExtra,
        match=r"^the imagefolder data set needs torchvision: pip install "
        r"'hardbatch\[cli\]'$",
    ):
        DATASETS["imagefolder"].read(str(tmp_path))
