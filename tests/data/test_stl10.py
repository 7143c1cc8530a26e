"""hardbatch.data.readers.stl10: STL-10's labelled splits from tiny fakes in the official binary files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hardbatch.data import DATASETS
from hardbatch.errors import UsageError


def test_stl10_transposes_column_major_images_and_shifts_labels(tmp_path, fake):
    written = fake.stl10(tmp_path)
    raw = DATASETS["stl10"].read(str(tmp_path))
    assert (raw.num_classes, raw.in_channels, raw.image_size) == (10, 3, 96)
    assert raw.train.images.shape == (10, 3, 96, 96) and raw.train.images.dtype == torch.uint8
    assert raw.test.images.shape == (6, 3, 96, 96)
    assert raw.train.images[1].nonzero().tolist() == [[2, 10, 70]] and raw.train.images[1, 2, 10, 70] == 77
    n, c, h, w = 7, 1, 3, 91  # any pixel: byte n*3*96*96 + c*96*96 + w*96 + h
    assert raw.train.images[n, c, h, w] == written["raw_train"][n * fake.STL_IMAGE + c * fake.STL_PLANE + w * 96 + h]
    assert raw.train.labels.tolist() == list(range(10))  # 1..10 on disk
    assert raw.test.labels.tolist() == (written["y_test"].astype(int) - 1).tolist()
    x = raw.train.images.double() / 255
    np.testing.assert_allclose(raw.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-9)
    np.testing.assert_allclose(raw.std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-9)


def test_stl10_wrong_file_size_is_a_usage_error(tmp_path, fake):
    fake.stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UsageError, match=r"cannot read .*test_X\.bin"):
        DATASETS["stl10"].read(str(tmp_path))


def test_without_data_dir_the_command_line_exits_2_with_one_line(tmp_path, train):
    status, _, err = train("--dataset", "stl10", "--epochs", "1", "--out", tmp_path / "run")
    assert status == 2 and err.count("\n") == 1 and "--data-dir" in err
