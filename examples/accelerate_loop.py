"""The paper's rule (or any hardbatch policy) in an ``accelerate`` training loop, on one process or several.

    python examples/accelerate_loop.py --delta 0.5
    torchrun --nproc-per-node 2 examples/accelerate_loop.py --delta 0.5      # or: accelerate launch --num_processes 2
    python examples/accelerate_loop.py --policy selective-backprop

A regression task (a small MLP, generated data, ``losses.mse``): every step goes through hardbatch's step core,
so the policy's scoring pass, keep-masks and weights, the combination of losses across ranks and the cost counting
are those of ``hardbatch train``. ``--out DIR`` writes DIR/trace-rank<R>.json: per step, the batch and the samples
this rank trained (tests/test_accelerate.py compares them). Needs ``pip install 'hardbatch[accelerate]'``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import TensorDataset

from hardbatch import HardBatchSampler, distributed, losses
from hardbatch import step as step_core
from hardbatch.batches import forward
from hardbatch.integrations.accelerate import prepare_loader
from hardbatch.training import CostMeter


def regression_data(n: int = 256, seed: int = 0) -> TensorDataset:
    """``n`` samples (x, y, index): y is a fixed random linear map of x (8 -> 2) plus noise; the index names each
    sample in the trace."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.randn(8, 2, generator=generator) + 0.1 * torch.randn(n, 2, generator=generator)
    return TensorDataset(x, y, torch.arange(n))


def train(accelerator: Accelerator, sampler: HardBatchSampler, train_set, loss_fn=losses.mse, lr: float = 0.05):
    """Train a small MLP on what ``sampler`` chooses; returns the trace (one row per optimizer step) and the cost."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    loader = prepare_loader(accelerator, train_set, sampler)  # not accelerator.prepare: it would re-shard the plan
    meter, trace = CostMeter(), []
    while not sampler.done:
        for batch in loader:  # one pass of the policy; batch = this rank's share of the global batch, on the device
            chosen = step_core.select(sampler, accelerator.unwrap_model(model), batch, meter, accelerator.device,
                                      loss_fn=loss_fn)
            if chosen is None:  # a scoring-only step, or a batch the policy keeps none of: recorded, no step
                continue
            sample_losses = loss_fn(forward(model, chosen.batch), chosen.batch)  # shape (b,)
            loss = step_core.weighted_loss(chosen, sample_losses)
            optimizer.zero_grad()
            accelerator.backward(loss * chosen.scale)  # scale: ranks holding unequal shares of a kept set
            optimizer.step()
            batch_id, global_loss = step_core.record(sampler, chosen, loss.detach(), sample_losses.detach(), meter)
            trace.append({"step": sampler.steps, "batch": batch_id, "loss": float(global_loss),
                          "samples": chosen.batch[2].tolist()})
    return trace, meter


def main(argv: list[str] | None = None) -> tuple[list[dict], CostMeter]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="hardbatch")
    parser.add_argument("--delta", type=float, default=None, help="fraction of batches per round (δ policies)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch (all processes together)")
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    train_set = regression_data()
    sampler = HardBatchSampler(len(train_set), a.batch_size, epochs=a.epochs, policy=a.policy, shuffle_partition=True,
                               seed=0, **({"delta": a.delta} if a.delta is not None else {}))
    trace, meter = train(accelerator, sampler, train_set)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / f"trace-rank{accelerator.process_index}.json").write_text(json.dumps(
            {"trace": trace, "cost": meter.state_dict(), "partition": sampler.partition.tolist()}))
    if accelerator.is_main_process:
        print(f"{len(trace)} optimizer steps; last loss {trace[-1]['loss']:.4f}; cost {meter.state_dict()}")
    return trace, meter


if __name__ == "__main__":
    main()
    distributed.shutdown()  # under torchrun / accelerate launch: free the process group before exit
