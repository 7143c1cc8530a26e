"""hardbatch.losses: the per-sample reducers (one loss per sample, float32), the shape check every loop applies to a
``loss_fn``'s answer, and where a batch keeps its targets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hardbatch import UsageError, losses


def test_cross_entropy_takes_tensors_model_outputs_and_dict_batches():
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    want = F.cross_entropy(logits, y, reduction="none")
    assert torch.equal(losses.cross_entropy(logits, (logits, y)), want)
    assert torch.equal(losses.cross_entropy(SimpleNamespace(logits=logits), {"labels": y}), want)  # a ModelOutput
    assert torch.equal(losses.cross_entropy({"logits": logits}, [None, y]), want)


def test_reducers_return_float32_one_loss_per_sample_under_low_precision_outputs():
    out = torch.randn(4, 3).bfloat16()
    assert losses.cross_entropy(out, (None, torch.tensor([0, 1, 2, 0]))).dtype == torch.float32
    assert losses.mse(out, (None, torch.randn(4, 3))).dtype == torch.float32


def test_multilabel_bce_is_the_mean_over_labels():
    logits, y = torch.randn(5, 4), torch.randint(0, 2, (5, 4))
    got = losses.multilabel_bce(logits, (None, y))
    want = torch.stack([F.binary_cross_entropy_with_logits(logits[i], y[i].float()) for i in range(5)])
    assert got.shape == (5,) and torch.allclose(got, want)


@pytest.mark.parametrize("name, fn", [("mse", F.mse_loss), ("l1", F.l1_loss)])
def test_regression_losses_are_the_mean_over_output_dims(name, fn):
    prediction, y = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    got = getattr(losses, name)(prediction, (None, y))
    assert got.shape == (3,) and torch.allclose(got, torch.stack([fn(prediction[i], y[i]) for i in range(3)]))
    # A (b, 1) prediction against (b,) targets: one value each, not every sample against every target.
    column, targets = torch.randn(4, 1), torch.randn(4)
    assert torch.allclose(getattr(losses, name)(column, (None, targets)), fn(column[:, 0], targets, reduction="none"))
    with pytest.raises(UsageError, match=r"output has shape \(4, 1\) and the targets \(4, 2\)"):
        getattr(losses, name)(column, (None, torch.randn(4, 2)))


def test_dense_is_the_mean_over_the_pixels_not_ignored():
    logits, target = torch.randn(3, 4, 2, 3), torch.randint(0, 4, (3, 2, 3))
    target[0, 0] = 255  # half of sample 0 ignored
    target[2] = 255  # all of sample 2
    got = losses.dense()(logits, (None, target))
    first = F.cross_entropy(logits[0:1, :, 1], target[0:1, 1])  # the pixels of sample 0 that count
    second = F.cross_entropy(logits[1:2], target[1:2])
    assert got.shape == (3,) and torch.allclose(got, torch.stack([first, second, torch.tensor(0.0)]))
    assert torch.allclose(losses.dense(ignore_index=-1)(logits[1:2], (None, target[1:2])), second[None])


def test_token_lm_shifts_like_a_causal_lm_and_averages_each_sequences_tokens():
    logits, labels = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    labels[0, 3:] = -100  # padding: sequence 0 has 2 predicted tokens (labels 1 and 2)
    labels[2, 1:] = -100  # sequence 2 predicts nothing: counts 0
    got = losses.token_lm()(SimpleNamespace(logits=logits), {"input_ids": labels.clamp(min=0), "labels": labels})
    seq0 = F.cross_entropy(logits[0, :2], labels[0, 1:3])
    seq1 = F.cross_entropy(logits[1, :-1], labels[1, 1:])
    assert got.shape == (3,) and torch.allclose(got, torch.stack([seq0, seq1, torch.tensor(0.0)]))
    # Without the shift: per-token classification.
    unshifted = losses.token_lm(shift=False)(logits, (None, labels))
    assert torch.allclose(unshifted[1], F.cross_entropy(logits[1], labels[1]))


def test_check_per_sample_names_the_shape_expected_and_received():
    losses.check_per_sample(torch.zeros(4), 4)
    for bad, shown in [
        (torch.tensor(1.0), r"shape \(\) \(a batch mean"),
        (torch.zeros(4, 1), r"shape \(4, 1\)"),
        (torch.zeros(3), r"shape \(3,\)"),
        (1.0, "a float"),
    ]:
        with pytest.raises(UsageError, match=rf"^loss_fn must return one loss per sample, shape \(4,\), got {shown}"):
            losses.check_per_sample(bad, 4)


def test_target_of_a_batch_without_targets_is_one_line():
    with pytest.raises(UsageError, match="under 'labels', got the keys 'input_ids'"):
        losses.target_of({"input_ids": torch.zeros(2)})
    with pytest.raises(UsageError, match="got a tuple of 1"):
        losses.target_of((torch.zeros(2),))
