"""The paper's rule (or any hardbatch policy) in an ``accelerate`` training loop, on one process or several.

    python examples/accelerate_loop.py --delta 0.5
    torchrun --nproc-per-node 2 examples/accelerate_loop.py --delta 0.5
    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_loop.py   # two processes, on CPUs too
    python examples/accelerate_loop.py --policy selective-backprop

A regression task (a small MLP, generated data, ``hardbatch.losses.mse``) in the quickstart loop:
``hardbatch.training_loss`` runs the policy's step (its scoring pass, keep-masks and weights, the combination of
losses across ranks, the cost), ``prepare_loader`` gives each rank its share of every planned batch and frees the
process group at exit; the script calls nothing else of hardbatch. ``--out DIR`` writes DIR/trace-rank<R>.json: per
optimizer step, its number, batch and loss, and the cost (tests/integrations/test_accelerate.py compares them).
Needs ``pip install 'hardbatch[accelerate]'``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import TensorDataset

import hardbatch
from hardbatch.integrations.accelerate import prepare_loader


def regression_data(n: int = 256, seed: int = 0) -> TensorDataset:
    """``n`` samples (x, y, index): y is a fixed random linear map of x (8 -> 2) plus noise; the index names each
    sample (tests read it)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.randn(8, 2, generator=generator) + 0.1 * torch.randn(n, 2, generator=generator)
    return TensorDataset(x, y, torch.arange(n))


def train(
    accelerator: Accelerator,
    sampler: hardbatch.HardBatchSampler,
    train_set,
    loss_fn=hardbatch.losses.mse,
    lr: float = 0.05,
) -> tuple[list[dict], hardbatch.CostMeter]:
    """Train a small MLP on what ``sampler`` chooses; returns the trace (one row per optimizer step) and the cost."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    loader = prepare_loader(accelerator, train_set, sampler)  # not accelerator.prepare: it would re-shard the plan
    trace = []
    while not sampler.done:
        for batch in loader:  # one pass of the policy; batch = this rank's share of the global batch, on the device
            loss = hardbatch.training_loss(sampler, model, batch, loss_fn=loss_fn)
            if loss is None:  # a scoring-only step, or a batch the policy keeps none of: recorded, no step
                continue
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            last = sampler.last  # the global batch's step: the same on every rank
            trace.append({"step": last.step, "batch": last.batch, "loss": float(last.loss)})
    return trace, sampler.meter


def main(argv: list[str] | None = None) -> tuple[list[dict], hardbatch.CostMeter]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="hardbatch")
    parser.add_argument("--delta", type=float, default=None, help="fraction of batches per round (δ policies)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch (all processes together)")
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    train_set = regression_data()
    sampler = hardbatch.HardBatchSampler(
        len(train_set),
        a.batch_size,
        epochs=a.epochs,
        policy=a.policy,
        shuffle_partition=True,
        seed=0,
        **({"delta": a.delta} if a.delta is not None else {}),
    )
    trace, meter = train(accelerator, sampler, train_set)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / f"trace-rank{accelerator.process_index}.json").write_text(
            json.dumps({"trace": trace, "cost": meter.state_dict(), "partition": sampler.partition.tolist()})
        )
    if accelerator.is_main_process:
        print(
            f"{len(trace)} optimizer steps; last loss {trace[-1]['loss']:.4f}; {meter.samples_backprop} of "
            f"{meter.samples_loaded} samples back-propagated; trained {meter.train_seconds:.2f} s "
            f"(CPU {meter.cpu_seconds:.2f} s)"
        )
    return trace, meter


if __name__ == "__main__":
    main()
