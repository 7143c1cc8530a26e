"""A Lightning job on 2 CPU devices for tests/integrations/test_lightning.py: HardBatchCallback under the DDP
strategy, with the Trainer's use_distributed_sampler left at its default (True) or set to False (argv[1])."""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch.utils.data import TensorDataset

import hardbatch
from hardbatch.integrations.lightning import HardBatchCallback


class Model(L.LightningModule):
    def __init__(self, hb: HardBatchCallback):
        super().__init__()
        self.net, self.hb = torch.nn.Linear(8, 3), hb

    def training_step(self, batch, batch_idx):
        return self.hb.training_loss(self.net, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(128, 8), torch.randint(0, 3, (128,)))
    hb = HardBatchCallback(hardbatch.HardBatchSampler(128, 16, epochs=2, policy="hardbatch", delta=0.5))
    kwargs = {} if sys.argv[1] == "default" else {"use_distributed_sampler": False}
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=-1,
        callbacks=[hb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(Model(hb), hb.loader(data))
    if trainer.global_rank == 0:
        print(f"steps {hb.sampler.steps}")
