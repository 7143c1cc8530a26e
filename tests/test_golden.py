"""Behaviour unchanged, proven: every policy and variant replays its golden run (tests/golden/golden_runs.py), through
the command line and through the public one-call API (the quickstart loop with ``hardbatch.training_loss``).

The records were made on the code before the core was reshaped. A replay must train the same batches, with
bit-identical inputs, in the same order, and reach the same per-step losses to 1e-6.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from golden_runs import GOLDEN, VARIANTS, run_all

LOSS_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict:
    return run_all(tmp_path_factory.mktemp("golden") / "replayed.json")


@pytest.fixture(scope="module")
def replayed_api(tmp_path_factory) -> dict:
    return run_all(tmp_path_factory.mktemp("golden") / "replayed_api.json", api=True)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_golden_records_cover_every_variant(golden):
    assert set(golden) == set(VARIANTS)
    for name, record in golden.items():
        assert record["trace"] and len(record["inputs"]) == len(record["trace"]), name


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_run_replays_its_golden_record(name, golden, replayed):
    want, got = golden[name], replayed[name]
    assert got["args"] == want["args"]
    # Same batches and rounds in the same order, with the same number of samples trained...
    assert [row[:3] + row[4:] for row in got["trace"]] == [row[:3] + row[4:] for row in want["trace"]]
    # ...the same input tensors, bit for bit (which samples, in which order, with which augmentation)...
    assert got["inputs"] == want["inputs"]
    # ...and the same losses.
    for (step, *_, loss, _), (_, *_, expected, _) in zip(got["trace"], want["trace"], strict=True):
        assert loss == pytest.approx(expected, abs=LOSS_TOLERANCE), f"{name} step {step}"
    for row, expected in zip(got["history"], want["history"], strict=True):
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=LOSS_TOLERANCE), f"{name} epoch {expected['epoch']} {key}"
    assert got["batch_visits"] == want["batch_visits"]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_quickstart_loop_replays_the_golden_training(name, golden, replayed_api):
    want, got = golden[name], replayed_api[name]
    assert [row[:3] + row[4:] for row in got["trace"]] == [row[:3] + row[4:] for row in want["trace"]]
    assert got["inputs"] == want["inputs"]
    for (step, *_, loss, _), (_, *_, expected, _) in zip(got["trace"], want["trace"], strict=True):
        assert loss == pytest.approx(expected, abs=LOSS_TOLERANCE), f"{name} step {step}"
    assert got["batch_visits"] == want["batch_visits"]
