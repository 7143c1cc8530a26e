"""Regression with the paper's rule in your own training loop, through hardbatch's step core, on generated data.

    python examples/regression.py

Two continuous targets per sample; the per-sample loss is the squared error averaged over them
(``hardbatch.losses.mse``). The loop is the one every integration runs (``hardbatch.step``): ``select`` what to
train of each loaded batch (a policy's scoring pass, keep-masks, weights, cost), train it, ``record`` its losses.
Runs in seconds on a CPU; prints the test error of each epoch.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset

from hardbatch import HardBatchSampler, losses, step
from hardbatch.batches import forward
from hardbatch.training import CostMeter

generator = torch.Generator().manual_seed(0)
x = torch.rand(640, 8, generator=generator) * 4 - 2
y = torch.stack([torch.sin(x[:, 0] * x[:, 1]), x[:, 2:5].sum(1) / 3], dim=1)  # (n, 2)
y += 0.05 * torch.randn(y.shape, generator=generator)
train_set, test_x, test_y = TensorDataset(x[:512], y[:512]), x[512:], y[512:]

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
sampler = HardBatchSampler(len(train_set), batch_size=32, delta=0.5, epochs=8, shuffle_partition=True, seed=0)
loss_fn, meter, device = losses.mse, CostMeter(), torch.device("cpu")

trace = []  # (round, batch, loss) of every optimizer step
while not sampler.done:
    for batch in DataLoader(train_set, batch_sampler=sampler):
        chosen = step.select(sampler, model, batch, meter, device, loss_fn=loss_fn)
        if chosen is None:  # a scoring-only step, or a batch of which the policy kept nothing: already recorded
            continue
        sample_losses = loss_fn(forward(model, chosen.batch), chosen.batch)  # shape (b,)
        loss = step.weighted_loss(chosen, sample_losses)
        optimizer.zero_grad()
        (loss * chosen.scale).backward()
        optimizer.step()
        batch_id, _ = step.record(sampler, chosen, loss.detach(), sample_losses.detach(), meter)
        trace.append((sampler.round, batch_id, loss.item()))
        if sampler.epoch_ended:
            with torch.no_grad():
                error = losses.mse(model(test_x), (test_x, test_y)).mean().item()
            print(f"epoch {sampler.epoch}: test mse {error:.4f}, {meter.samples_backprop} samples back-propagated")
