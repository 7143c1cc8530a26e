"""hardbatch.data.readers.digits: scikit-learn's bundled digits, split once for every run."""

from __future__ import annotations

import sys

import pytest
import torch

from hardbatch.data import DATASETS
from hardbatch.errors import MissingExtra


def test_digits_are_split_80_20_by_class_the_same_way_every_time():
    from sklearn.datasets import load_digits

    raw, again = DATASETS["digits"].read(), DATASETS["digits"].read(root="ignored", download=True)
    assert (len(raw.train), len(raw.test), raw.num_classes, raw.in_channels, raw.image_size) == (1437, 360, 10, 1, 8)
    assert raw.train.images.shape == (1437, 1, 8, 8) and raw.train.images.dtype == torch.float32
    assert raw.train.images.min() >= 0 and raw.train.images.max() <= 1  # pixel values 0..16, divided by 16
    assert torch.equal(raw.train.images, again.train.images) and torch.equal(raw.test.labels, again.test.labels)
    held = torch.bincount(raw.test.labels, minlength=10) / torch.bincount(torch.as_tensor(load_digits().target))
    assert torch.allclose(held, torch.full((10,), 0.2), atol=0.01)  # stratified: a fifth of every class
    assert raw.mean == pytest.approx((raw.train.images.mean().item(),))  # the train split's own statistics
    assert raw.std == pytest.approx((raw.train.images.std().item(),))


@pytest.mark.parametrize("module", ["sklearn.datasets", "sklearn.model_selection"])
def test_without_scikit_learn_one_line_names_the_install(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # importing it fails, as where it is not installed
    with pytest.raises(MissingExtra, match=r"^the digits data set needs scikit-learn: pip install 'hardbatch\[cli\]'$"):
        DATASETS["digits"].read()
