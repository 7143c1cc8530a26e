"""torchdata's StatefulDataLoader with two workers, saved mid-round and restored, trains the same subsequent batches
as an uninterrupted run (hardbatch.integrations.torchdata)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import hardbatch
from hardbatch.integrations.torchdata import StatefulDataLoader

SAMPLES, BATCH = 160, 8  # N = 20 batches


def _setup(policy: str, **params):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(SAMPLES, 6, generator=generator), torch.randint(0, 3, (SAMPLES,), generator=generator)
    )
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    sampler = hardbatch.HardBatchSampler(SAMPLES, BATCH, epochs=3, policy=policy, seed=1, **params)
    return data, model, torch.optim.SGD(model.parameters(), lr=0.1), sampler


def _steps(sampler, loader, model, optimizer, stop: int | None = None) -> list[tuple[int, float]]:
    """Train until the budget is spent (or ``stop`` steps); each step's (batch id, loss)."""
    trace = []
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                trace.append((sampler.last.batch, round(float(sampler.last.loss), 6)))
            if stop is not None and len(trace) == stop:
                return trace
    return trace


@pytest.mark.parametrize("policy, params", [("hardbatch", {"delta": 0.5}), ("infobatch", {})])
def test_a_resume_mid_round_with_two_workers_trains_the_batches_an_uninterrupted_run_trains(policy, params):
    data, model, optimizer, sampler = _setup(policy, **params)
    whole = _steps(sampler, StatefulDataLoader(data, sampler, num_workers=2), model, optimizer)

    data, model, optimizer, sampler = _setup(policy, **params)
    loader = StatefulDataLoader(data, sampler, num_workers=2)
    first = _steps(sampler, loader, model, optimizer, stop=27)  # mid-round: the warm-up is 20 steps
    saved = {"loader": loader.state_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    del loader, sampler  # the process ends here; a new one rebuilds everything alike and restores

    data, model, optimizer, sampler = _setup(policy, **params)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    loader = StatefulDataLoader(data, sampler, num_workers=2)
    loader.load_state_dict(saved["loader"])
    rest = _steps(sampler, loader, model, optimizer)
    assert first + rest == whole  # the same batches, in order, none twice, and the same losses
    assert sampler.meter.optimizer_steps == len(whole)


def test_torchdatas_own_loader_over_the_sampler_gets_a_warning_naming_ours():
    from torchdata.stateful_dataloader import StatefulDataLoader as TorchdataLoader

    data, model, optimizer, sampler = _setup("hardbatch", delta=0.5)
    loader = TorchdataLoader(data, batch_sampler=sampler, num_workers=0)
    _steps(sampler, loader, model, optimizer, stop=3)
    with pytest.warns(UserWarning, match="hardbatch.integrations.torchdata.StatefulDataLoader"):
        loader.state_dict()
