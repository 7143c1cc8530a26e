"""Regression with the paper's rule: the quickstart loop with a per-sample regression loss, on generated data.

    python examples/regression.py

Two continuous targets per sample; the per-sample loss is the squared error averaged over them
(``hardbatch.losses.mse``), which ``hardbatch.training_loss`` takes as ``loss_fn=``: the one call that runs the
policy's step in any loop (its scoring pass, keep-masks and weights when it has them, recording, cost).
Runs in seconds on a CPU; prints the test error of each epoch.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset

import hardbatch

generator = torch.Generator().manual_seed(0)
x = torch.rand(640, 8, generator=generator) * 4 - 2
y = torch.stack([torch.sin(x[:, 0] * x[:, 1]), x[:, 2:5].sum(1) / 3], dim=1)  # (n, 2)
y += 0.05 * torch.randn(y.shape, generator=generator)
train_set, test_x, test_y = TensorDataset(x[:512], y[:512]), x[512:], y[512:]

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
sampler = hardbatch.HardBatchSampler(
    len(train_set),
    batch_size=32,
    epochs=8,
    policy=hardbatch.policies.HardBatch(delta=0.5),
    shuffle_partition=True,
    seed=0,
)
loader = DataLoader(train_set, batch_sampler=sampler)
loss_fn = hardbatch.losses.mse

trace = []  # (round, batch, loss) of every optimizer step
while not sampler.done:
    for batch in loader:
        loss = hardbatch.training_loss(sampler, model, batch, loss_fn=loss_fn)
        if loss is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trace.append((sampler.last.round, sampler.last.batch, loss.item()))
        if sampler.epoch_ended:
            with torch.no_grad():
                error = loss_fn(model(test_x), (test_x, test_y)).mean().item()
            print(
                f"epoch {sampler.epoch}: test mse {error:.4f}, {sampler.meter.samples_backprop} samples back-propagated"
            )
