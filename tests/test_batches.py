"""hardbatch.batches: batches of any structure, the rows a selection keeps of every per-sample tensor, and the default
forward pass."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from hardbatch import UsageError, batches


def test_take_indexes_every_tensor_whose_first_dim_is_the_batch():
    batch = {
        "input_ids": torch.arange(8).view(4, 2),
        "labels": torch.arange(4),
        "vocab": torch.arange(7),
        "scale": torch.tensor(2.0),
        "name": "x",
        "extra": (torch.arange(4) * 10, [torch.arange(4)]),
    }
    kept = batches.take(batch, torch.tensor([True, False, True, False]))
    assert kept["input_ids"].tolist() == [[0, 1], [4, 5]] and kept["labels"].tolist() == [0, 2]
    assert kept["vocab"] is batch["vocab"] and kept["scale"] is batch["scale"] and kept["name"] == "x"
    assert kept["extra"][0].tolist() == [0, 20] and kept["extra"][1][0].tolist() == [0, 2]
    assert batches.batch_size(batch) == 4
    Pair = namedtuple("Pair", "x y")
    taken = batches.take(Pair(torch.arange(3), torch.arange(3) + 5), torch.tensor([2]))
    assert isinstance(taken, Pair) and taken.y.tolist() == [7]
    assert batches.take([torch.arange(3), torch.arange(3)], torch.tensor([1]))[1].tolist() == [1]


def test_batch_size_of_a_batch_without_tensors_is_one_line():
    with pytest.raises(UsageError, match="got no tensor in a dict"):
        batches.batch_size({"a": 1})
    with pytest.raises(UsageError, match="got a 0-d tensor first in a tuple"):
        batches.batch_size((torch.tensor(1.0), torch.zeros(3)))


def test_to_device_moves_every_tensor_and_keeps_the_structure():
    Pair = namedtuple("Pair", "x meta")
    moved = batches.to_device(Pair(torch.ones(2), {"ids": torch.arange(2), "name": "a"}), "meta")
    assert isinstance(moved, Pair) and moved.x.device.type == "meta" and moved.meta["ids"].device.type == "meta"
    assert moved.meta["name"] == "a" and batches.device_of(moved).type == "meta"


def test_default_forward_drops_the_labels_of_a_dict():
    seen = {}

    def model(**kwargs):
        seen.update(kwargs)
        return kwargs["input_ids"].float()

    batches.forward(
        model,
        {"input_ids": torch.ones(2), "attention_mask": torch.ones(2), "labels": torch.ones(2), "__key__": ["a", "b"]},
    )  # a streaming data set's keys are not model inputs either
    assert set(seen) == {"input_ids", "attention_mask"}
    assert batches.forward(lambda x: x * 2, (torch.ones(2), torch.zeros(2))).tolist() == [2.0, 2.0]
    assert batches.forward(lambda x: x + 1, torch.zeros(2)).tolist() == [1.0, 1.0]
