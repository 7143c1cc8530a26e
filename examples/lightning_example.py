"""A hardbatch policy inside a Lightning Trainer, on scikit-learn's bundled digits (no download).

    python examples/lightning_example.py                                    # the paper's rule, δ = 0.5, one process
    python examples/lightning_example.py --devices 2 --policy infobatch     # Lightning's DDP, 2 CPU processes

Every rank prints the same selection summary (one plan for all ranks), then the time it trained: the callback's cost
meter pauses while the Trainer validates.
"""

import argparse
import hashlib

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.integrations.lightning import HardBatchCallback

parser = argparse.ArgumentParser()
parser.add_argument("--policy", default="hardbatch")
parser.add_argument("--devices", type=int, default=1)
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
y = torch.tensor(digits.target)
train, test = TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])

params = {"delta": 0.5} if hardbatch.policies.policy_class(args.policy).takes("delta") else {}
sampler = hardbatch.HardBatchSampler(
    len(train), batch_size=64, epochs=args.epochs, policy=args.policy, **params, shuffle_partition=True, seed=0
)
hb = HardBatchCallback(sampler)


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return hb.training_loss(self, batch)  # any batch: (x, y), (x, y, ...) or a dict; None: nothing to train

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


L.seed_everything(0, verbose=False)
trainer = L.Trainer(
    accelerator="cpu",
    devices=args.devices,
    strategy="ddp" if args.devices > 1 else "auto",
    max_epochs=-1,  # the callback stops the Trainer when the sampler's budget is spent
    use_distributed_sampler=False,  # hb.loader already gives each rank its share of the shared plan
    callbacks=[hb],
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)
trainer.fit(Net(), hb.loader(train), DataLoader(test, batch_size=256))
plan = hashlib.sha256(str(sampler.visits.tolist()).encode()).hexdigest()[:12]
print(
    f"rank {trainer.global_rank}/{trainer.world_size}: policy {args.policy}, {sampler.steps} steps of "
    f"budget {sampler.total_steps}, {sampler.epoch} epochs, visits {plan}, "
    f"val_acc {trainer.callback_metrics['val_acc'].item():.3f}; trained {sampler.meter.train_seconds:.2f} s "
    f"(CPU {sampler.meter.cpu_seconds:.2f} s)"
)
