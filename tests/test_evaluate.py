"""hardbatch.training.evaluate: hits counted per class, and balanced (mean per-class) accuracy over present classes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hardbatch.training import EvalResult, evaluate

CPU = torch.device("cpu")


class Scripted(nn.Module):
    """A 'model' whose logits are given per input: x holds the index of the row of ``logits`` to answer."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x.long().flatten()]


def test_evaluate_counts_hits_per_class():
    # 3 classes; class 0 has 6 samples (5 right), class 1 has 2 (1 right), class 2 has 2 (0 right).
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 0, 0, 1, 1, 0, 0, 1])
    logits = nn.functional.one_hot(predicted, 3).float()
    x = torch.arange(10)
    batches = [(x[:4], y[:4]), (x[4:7], y[4:7]), (x[7:], y[7:])]
    result = evaluate(Scripted(logits), batches, CPU)
    assert result.class_hits == [5, 1, 0] and result.class_counts == [6, 2, 2]
    assert result.acc == pytest.approx(0.6)
    assert result.per_class == pytest.approx([5 / 6, 0.5, 0.0])
    assert result.balanced_acc == pytest.approx((5 / 6 + 0.5 + 0.0) / 3)


def test_absent_classes_do_not_count_in_balanced_accuracy():
    r = EvalResult(0.0, 0.5, 1.0, class_hits=[1, 0, 0], class_counts=[1, 0, 1])
    assert r.per_class == [1.0, None, 0.0] and r.balanced_acc == 0.5
    assert math.isnan(EvalResult(0.0, 0.5, 1.0).balanced_acc)  # no per-class counts at all
