"""Balanced (mean per-class) accuracy and per-class accuracy: in evaluate, history.csv, summary.json and reports."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from conftest import rows_of
from hardbatch.config import RunConfig
from hardbatch.run.experiment import train_run
from hardbatch.records import summarize
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


def test_run_writes_balanced_accuracy_every_epoch_and_per_class_in_summary(tmp_path):
    cfg = RunConfig(dataset="digits", epochs=2, batch_size=64, val_fraction=0.2, imbalance=5.0, device="cpu")
    summary = train_run(cfg, tmp_path / "run", progress=False)
    rows = rows_of(tmp_path / "run" / "history.csv")
    assert len(rows) == 2 and all(row["test_bacc"] and row["val_bacc"] for row in rows)
    per_class = summary["final_test_per_class_acc"]
    assert len(per_class) == 10 and all(0 <= a <= 1 for a in per_class)
    assert summary["final_test_bacc"] == pytest.approx(sum(per_class) / 10) == pytest.approx(float(rows[-1]["test_bacc"]))
    assert summary["final_val_bacc"] == pytest.approx(float(rows[-1]["val_bacc"]))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final_test_per_class_acc"] == per_class
    no_val = train_run(cfg.replace(val_fraction=0.0, epochs=1), tmp_path / "plain", progress=False)
    assert rows_of(tmp_path / "plain" / "history.csv")[0]["val_bacc"] == "" and "final_val_bacc" not in no_val


def test_per_class_accuracy_survives_a_resume_after_the_last_epoch(tmp_path, interrupt):
    cfg = RunConfig(dataset="digits", epochs=2, batch_size=64, device="cpu")
    straight = train_run(cfg, tmp_path / "straight", progress=False)
    interrupt(cfg, tmp_path / "resumed", 2)  # killed after the last checkpoint, before summary.json
    resumed = train_run(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed["final_test_per_class_acc"] == straight["final_test_per_class_acc"]
    assert resumed["final_test_bacc"] == straight["final_test_bacc"]


def test_summary_of_an_old_history_without_balanced_accuracy():
    history = [{"epoch": 1, "step": 10, "test_acc": 0.5, "test_top5": 0.9, "train_seconds": 1.0, "eval_seconds": 0.1}]
    s = summarize(history, RunConfig(), [1] * 10, 10)
    assert s["final_test_bacc"] is None and "final_test_per_class_acc" not in s
