"""hardbatch.data.transforms: a raw batch scaled, augmented, resized and normalised into model input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hardbatch.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, normalisation, random_crop_flip


def test_signal_batches_are_normalised_per_channel():
    x = torch.full((2, 1, 40), 3.0)
    out = BatchTransform((1.0,), (4.0,))(x)
    assert out.shape == (2, 1, 40) and torch.equal(out, torch.full((2, 1, 40), 0.5))


def test_images_are_scaled_resized_and_normalised_per_channel():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4).contiguous()
    out = BatchTransform((0.0, 0.2, 0.5), (1.0, 0.1, 0.5))(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    assert out[:, :, 0, 0].tolist() == [[0.0, pytest.approx(0.0), 1.0]] * 2
    resized = BatchTransform((0.0,) * 3, (1.0,) * 3, size=8)(x)
    assert resized.shape == (2, 3, 8, 8)
    assert torch.allclose(resized, x.float().div(255)[:, :, :1, :1].expand(2, 3, 8, 8))
    # Without a generator nothing is drawn: evaluation and scoring passes see the images as they are.
    assert torch.equal(BatchTransform((0.0,) * 3, (1.0,) * 3, crop_flip=True)(x), x.float().div(255))


def test_each_sample_is_a_window_of_the_padded_image_flipped_or_not():
    x = torch.randn(6, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows), i


def test_a_share_of_a_global_batch_gets_the_global_batchs_crops():
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    whole = random_crop_flip(x, torch.Generator().manual_seed(3), padding=1)
    rows = slice(4, 8)  # the second of two processes
    share = random_crop_flip(x[rows], torch.Generator().manual_seed(3), padding=1, part=(rows, 8))
    assert torch.equal(share, whole[rows])


def test_normalisation_the_data_sets_own_or_imagenets_averaged_on_grey():
    assert normalisation("dataset", (0.3,), (0.2,), 1) == ((0.3,), (0.2,))
    assert normalisation("imagenet", (0.3,) * 3, (0.2,) * 3, 3) == (IMAGENET_MEAN, IMAGENET_STD)
    mean, std = normalisation("imagenet", (0.3,), (0.2,), 1)
    assert mean == pytest.approx((sum(IMAGENET_MEAN) / 3,)) and std == pytest.approx((sum(IMAGENET_STD) / 3,))
