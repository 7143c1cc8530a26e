"""A run's state as one object: saved mid-run and loaded into new objects, training continues bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardbatch.errors import UsageError
from hardbatch.data import InMemoryDataset, keep_batch
from hardbatch.selection import HardBatchSampler
from hardbatch.run.sinks import Checkpoint
from hardbatch.run.state import RunState
from hardbatch.training import EpochResult, fit

CPU = torch.device("cpu")



class Stop(Exception):
    pass


class StopAfter:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch(self, result: EpochResult) -> None:
        if result.epoch == self.epoch:
            raise Stop


def problem() -> InMemoryDataset:
    generator = torch.Generator().manual_seed(0)
    return InMemoryDataset(torch.randn(60, 6, generator=generator), torch.randint(0, 3, (60,), generator=generator))


def new_state(dataset, hidden: int = 16) -> RunState:
    """Model with dropout (the RNG matters), momentum, a schedule, a δ < 1 sampler: state in every part."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sampler = HardBatchSampler(len(dataset), 5, delta=0.3, epochs=3)  # N = 12, k = 3: epoch 2 ends mid-round
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0 - 0.5 * sampler.progress)
    return RunState(model, optimizer, scheduler, sampler)


def train(state: RunState, dataset, sinks=(), on_epoch=None) -> None:
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=state.sampler, collate_fn=keep_batch)
    fit(state.model, state.optimizer, loader, state.sampler, {}, CPU, scheduler=state.scheduler, sinks=sinks,
        on_epoch=on_epoch, meter=state.meter)


def test_a_state_saved_mid_run_and_loaded_into_new_objects_continues_bit_for_bit(tmp_path):
    dataset, path = problem(), tmp_path / "checkpoint.pt"
    full, results = new_state(dataset), []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        train(full, dataset, on_epoch=results.append)

    interrupted = new_state(dataset)
    with torch.random.fork_rng(devices=[]), pytest.raises(Stop):
        torch.manual_seed(1)
        train(interrupted, dataset, [Checkpoint(interrupted, path), StopAfter(2)])

    resumed, rest = new_state(dataset), []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)  # the checkpoint's RNG state replaces this: dropout continues the interrupted stream
        resumed.load(path)
        assert resumed.epoch == 2 and resumed.sampler.steps == 24
        assert resumed.meter.state_dict() == interrupted.meter.state_dict()
        assert resumed.test_per_class == []  # no test split here
        train(resumed, dataset, on_epoch=rest.append)
    assert [r.trace for r in rest] == [results[2].trace]
    assert resumed.meter.optimizer_steps == full.meter.optimizer_steps == 36
    for p, q in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.equal(p, q)
    assert resumed.scheduler.get_last_lr() == full.scheduler.get_last_lr()


def test_a_checkpoint_of_another_run_is_refused_in_one_line(tmp_path):
    dataset, path = problem(), tmp_path / "checkpoint.pt"
    state = new_state(dataset)
    with pytest.raises(Stop):
        train(state, dataset, [Checkpoint(state, path), StopAfter(1)])
    other = new_state(dataset, hidden=8)  # another network: its weights do not take the saved ones
    with pytest.raises(UsageError, match=r"cannot resume from .*checkpoint.pt: it does not hold this run's state "
                                         r"\(RuntimeError: .*; delete that file"):
        other.load(path)
    assert set(torch.load(path, weights_only=True)) == {"epoch", "model", "optimizer", "scheduler", "sampler", "cost",
                                                        "rng", "rng_ranks", "test_per_class", "holdout_cost",
                                                        "irreducible_model"}
