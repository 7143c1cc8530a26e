"""Multi-label classification with the paper's rule: the quickstart loop with a per-sample multi-label loss.

    python examples/multilabel.py

Each sample has 6 independent yes/no labels; the per-sample loss is the binary cross-entropy averaged over its
labels (``hardbatch.losses.multilabel_bce``), so the rule ranks the fixed mini-batches by that loss. Runs in seconds
on a CPU, on generated data; prints the test loss and the label accuracy of each epoch.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset

import hardbatch

generator = torch.Generator().manual_seed(0)
features = torch.randn(640, 20, generator=generator)
labels = (features @ torch.randn(20, 6, generator=generator) > 0.5).float()  # (n, 6) multi-hot targets
train_set, test_set = TensorDataset(features[:512], labels[:512]), TensorDataset(features[512:], labels[512:])

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 6))
optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
sampler = hardbatch.HardBatchSampler(
    len(train_set),
    batch_size=32,
    epochs=6,
    policy=hardbatch.policies.HardBatch(delta=0.5),
    shuffle_partition=True,
    seed=0,
)
loader, test_loader = DataLoader(train_set, batch_sampler=sampler), DataLoader(test_set, batch_size=128)
loss_fn = hardbatch.losses.multilabel_bce

trace = []  # (step, round, batch, loss, samples) of every optimizer step
while not sampler.done:
    for batch in loader:
        loss = hardbatch.training_loss(sampler, model, batch, loss_fn=loss_fn)
        if loss is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            last = sampler.last
            trace.append((last.step, last.round, last.batch, float(last.loss), last.samples))
        if sampler.epoch_ended:
            # evaluate's accuracy is top-1 of class logits, which only cross-entropy has (NaN here): count labels.
            test_loss = hardbatch.evaluate(model, test_loader, torch.device("cpu"), loss_fn=loss_fn).loss
            with torch.no_grad():
                x, y = test_set.tensors
                accuracy = ((model(x) > 0) == y.bool()).float().mean().item()
            print(f"epoch {sampler.epoch}: test loss {test_loss:.3f}, label accuracy {accuracy:.3f}")
