"""The quickstart: the whole integration in your own loop, every registered policy unchanged (README, docs).

A batch sampler for the DataLoader, and one call per batch that returns the loss to back-propagate. Runs in seconds
on a CPU; ``python examples/quickstart.py [POLICY]`` (default: the paper's rule at δ = 0.5).
"""

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import hardbatch

train_set = TensorDataset(torch.randn(2560, 1, 8, 8), torch.randint(0, 10, (2560,)))  # 20 batches of 128
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
policy = hardbatch.create_policy(sys.argv[1]) if len(sys.argv) > 1 else hardbatch.policies.HardBatch(delta=0.5)

sampler = hardbatch.HardBatchSampler(len(train_set), batch_size=128, epochs=10, policy=policy)
loader = DataLoader(train_set, batch_sampler=sampler)
while not sampler.done:
    for batch in loader:
        loss = hardbatch.training_loss(sampler, model, batch)
        if loss is not None:
            optimizer.zero_grad(); loss.backward(); optimizer.step()  # noqa: E702 - as in the README  # fmt: skip

print(f"{sampler.policy.name}: {sampler.steps} steps, {sampler.meter.samples_backprop} samples back-propagated")
