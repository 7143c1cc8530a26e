"""hardbatch.run.state: a run's state as one object, saved as one checkpoint (the cost inside the sampler's state) and
loaded into new objects, so that training continues bit for bit; a checkpoint that is not this run's is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardbatch.config import RunConfig
from hardbatch.data import InMemoryDataset, keep_batch
from hardbatch.errors import UsageError
from hardbatch.run.experiment import train_run
from hardbatch.run.sinks import Checkpoint
from hardbatch.run.state import RunState
from hardbatch.sampler import HardBatchSampler
from hardbatch.training import EpochResult, fit

CPU = torch.device("cpu")
CHECKPOINT_KEYS = {
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "sampler",
    "rng_ranks",
    "test_per_class",
    "holdout_cost",
    "irreducible_model",
}


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
    fit(
        state.model,
        state.optimizer,
        loader,
        state.sampler,
        {},
        CPU,
        scheduler=state.scheduler,
        sinks=sinks,
        on_epoch=on_epoch,
    )


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
        # the cost came back with the sampler's state
        assert resumed.sampler.meter.state_dict() == interrupted.sampler.meter.state_dict()
        assert resumed.test_per_class == []  # no test split here
        train(resumed, dataset, on_epoch=rest.append)
    assert [r.trace for r in rest] == [results[2].trace]
    assert resumed.sampler.meter.optimizer_steps == full.sampler.meter.optimizer_steps == 36
    assert resumed.sampler.meter.samples_backprop == full.sampler.meter.samples_backprop
    for p, q in zip(resumed.model.state_dict().values(), full.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert resumed.scheduler.get_last_lr() == full.scheduler.get_last_lr()


def test_a_checkpoint_of_another_run_is_refused_in_one_line(tmp_path):
    dataset, path = problem(), tmp_path / "checkpoint.pt"
    state = new_state(dataset)
    with pytest.raises(Stop):
        train(state, dataset, [Checkpoint(state, path), StopAfter(1)])
    other = new_state(dataset, hidden=8)  # another network: its weights do not take the saved ones
    with pytest.raises(
        UsageError,
        match=r"cannot resume from .*checkpoint.pt: it does not hold this run's state "
        r"\(RuntimeError: .*; delete that file",
    ):
        other.load(path)
    assert set(torch.load(path, weights_only=True)) == CHECKPOINT_KEYS


def test_a_run_s_checkpoint_loads_with_weights_only_and_holds_the_cost_in_the_sampler_s_state(tmp_path, interrupt):
    cfg = RunConfig(epochs=3, params={"delta": 0.5}, augment="crop_flip", schedule="cosine", train_subset=320)
    interrupt(cfg, tmp_path / "run", 1)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert set(state) == CHECKPOINT_KEYS  # no separate "cost" (nor "rng": every rank's is under "rng_ranks")
    n = state["sampler"]["visits"].numel()
    assert state["sampler"]["steps"] == n and state["sampler"]["policy"]["recorded"].all()
    assert state["sampler"]["cost"]["optimizer_steps"] == n and state["sampler"]["cost"]["samples_backprop"] == n * 32
    assert len(state["rng_ranks"]) == 1
    summary = train_run(cfg, tmp_path / "run", resume=True, progress=False)
    assert summary["optimizer_steps"] == 3 * n
    assert summary["cost"]["samples_backprop"] == 3 * n * 32  # counted on from the checkpoint: every epoch N steps


class Recorder:
    """Stands in for a RunState (``save``) and a RunDir (``sync``): the calls, in order, with the clock's time."""

    def __init__(self, clock):
        self.calls, self.clock = [], clock
        self.epoch, self.test_per_class = 0, []

    def save(self, path) -> None:
        self.calls.append(("save", self.clock()))

    def sync(self) -> None:
        self.calls.append(("sync", self.clock()))


def epoch_result(epoch: int) -> EpochResult:
    return EpochResult(
        epoch=epoch,
        step=epoch,
        train_loss=1.0,
        evals={},
        lr=0.1,
        train_seconds=0.0,
        eval_seconds=0.0,
        trace=[],
        cost={},
    )


@pytest.mark.parametrize(
    "every, ends, saved_at",
    [
        (
            10.0,
            [3.0, 9.9, 10.5, 12.0, 20.4, 21.0],
            [10.5, 21.0],
        ),  # the first epoch end S after the start, then after it
        (0.0, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),  # 0: every epoch
        (60.0, [1.0, 2.0, 3.0], []),  # a run shorter than S writes none
    ],
)
def test_the_checkpoint_is_written_by_time_and_the_records_are_flushed_first(tmp_path, every, ends, saved_at):
    now = [0.0]
    recorder = Recorder(lambda: now[0])
    sink = Checkpoint(recorder, tmp_path / "checkpoint.pt", run=recorder, every=every, clock=lambda: now[0])
    for epoch, t in enumerate(ends, 1):
        now[0] = t
        sink.on_epoch(epoch_result(epoch))
        assert recorder.epoch == epoch  # what a checkpoint would say is kept up to date either way
    assert recorder.calls == [call for t in saved_at for call in (("sync", t), ("save", t))]


def test_a_short_run_writes_no_checkpoint_by_default_and_one_per_epoch_with_0(tmp_path, monkeypatch):
    import hardbatch.run.state as run_state

    saved, save = [], run_state.save_checkpoint
    monkeypatch.setattr(
        run_state, "save_checkpoint", lambda path, state: (saved.append(state["epoch"]), save(path, state))
    )
    cfg = RunConfig(epochs=3, params={"delta": 0.5}, train_subset=320)
    assert cfg.checkpoint_every == 60.0
    train_run(cfg, tmp_path / "default", progress=False)
    assert saved == []
    train_run(cfg.replace(checkpoint_every=0), tmp_path / "every", progress=False)
    assert saved == [1, 2, 3]
    assert not (tmp_path / "every" / "checkpoint.pt").exists()  # removed once the run finished
