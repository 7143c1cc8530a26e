"""Multi-label classification with the paper's rule, through ``hardbatch.training.fit``, on generated data.

    python examples/multilabel.py

Each sample has 6 independent yes/no labels; the per-sample loss is the binary cross-entropy averaged over its
labels (``hardbatch.losses.multilabel_bce``), so the rule ranks the fixed mini-batches by that loss. Runs in seconds
on a CPU; prints the test loss and the label accuracy of each epoch.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset

from hardbatch import HardBatchSampler, losses
from hardbatch.training import fit

generator = torch.Generator().manual_seed(0)
features = torch.randn(640, 20, generator=generator)
labels = (features @ torch.randn(20, 6, generator=generator) > 0.5).float()  # (n, 6) multi-hot targets
train_set, test_set = TensorDataset(features[:512], labels[:512]), TensorDataset(features[512:], labels[512:])

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 6))
optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
sampler = HardBatchSampler(len(train_set), batch_size=32, delta=0.5, epochs=6, shuffle_partition=True, seed=0)

trace = []  # (step, round, batch, loss, samples) of every optimizer step


def on_epoch(result):
    trace.extend(result.trace)
    with torch.no_grad():
        x, y = test_set.tensors
        accuracy = ((model(x) > 0) == y.bool()).float().mean().item()
    # EvalResult.acc is top-1 accuracy, which only cross-entropy on class logits has: NaN here.
    print(f"epoch {result.epoch}: test loss {result.evals['test'].loss:.3f}, label accuracy {accuracy:.3f}")


fit(model, optimizer, DataLoader(train_set, batch_sampler=sampler), sampler, {"test": DataLoader(test_set, 128)},
    torch.device("cpu"), loss_fn=losses.multilabel_bce, on_epoch=on_epoch)
