"""A training job for tests/test_fsdp.py, run by torchrun (or as one process): the quickstart loop with the model
sharded by FSDP2 (``fully_shard``) over the processes, or with each process its own data-parallel group.

Usage: python tests/fsdp_job.py MODE OUT.json   (MODE: fsdp | groups | single)
Writes, from rank 0 (every rank for ``groups``: OUT.json.RANK), each policy's trace: (batch id, samples trained,
loss) per optimizer step, and the samples its scoring forwards counted.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch import distributed

POLICIES = {
    "hardbatch": ("hardbatch", {"delta": 0.5}),
    "selective-backprop": ("selective-backprop", {}),
    "composer-sb": ("composer-sb", {"start": 0.0}),
    "selective-backprop+accumulate": ("selective-backprop", {"accumulate": True}),
}


def train(label: str, group) -> dict:
    name, params = POLICIES[label]
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(256, 16, generator=generator), torch.randint(0, 4, (256,), generator=generator))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    if sys.argv[1] == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in (model[0], model[2]):
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sampler = hardbatch.HardBatchSampler(256, 32, epochs=3, policy=name, seed=0, group=group, **params)
    trace = []
    while not sampler.done:
        for batch in DataLoader(data, batch_sampler=distributed.LocalSlices(sampler)):
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                trace.append([sampler.last.batch, sampler.last.samples, float(sampler.last.loss)])
    return {"trace": trace, "scored": sampler.meter.samples_forward_nograd}


def main() -> None:
    distributed.init()
    group = None
    if sys.argv[1] == "groups":  # every process is its own data-parallel group, as under pure model parallelism
        groups = [dist.new_group([r]) for r in range(distributed.world_size())]
        group = groups[distributed.rank()]
    out = {name: train(name, group) for name in POLICIES}
    if sys.argv[1] == "groups" or distributed.is_writer():
        suffix = f".{distributed.rank()}" if sys.argv[1] == "groups" else ""
        with open(sys.argv[2] + suffix, "w") as f:
            json.dump(out, f)
    distributed.shutdown()


if __name__ == "__main__":
    main()
