"""hardbatch.integrations.lightning: HardBatchCallback runs the one selection step inside ``Trainer.fit`` for any loss
and any batch, logs the cost with training time measured and validation left out, and checkpoints the selection.

Under Lightning's DDP (two processes): tests/test_distributed.py runs examples/lightning_example.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import DictModel, DictSet, dict_data
from torch.utils.data import DataLoader, TensorDataset

from hardbatch import HardBatchSampler, UsageError, losses

L = pytest.importorskip("lightning")  # the test extra installs it: a missing package is skipped here only
from hardbatch.integrations.lightning import HardBatchCallback  # noqa: E402 - after the skip: it imports lightning


def lightning_fit(hb, data, model, training_step=None, val_data=None, validation_step=None, **trainer_kwargs):
    """``Trainer.fit`` of ``model`` (wrapped in a LightningModule whose training_step returns ``hb``'s loss)."""

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            return self.model(*args, **kwargs)

        def training_step(self, batch, batch_idx):
            return hb.training_loss(self, batch) if training_step is None else training_step(self, batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    if validation_step is not None:

        class Module(Module):  # the same module, validating
            def validation_step(self, batch, batch_idx):
                validation_step(self, batch)

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        use_distributed_sampler=False,
        callbacks=[hb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(Module(), hb.loader(data), None if val_data is None else DataLoader(val_data, batch_size=16))
    return trainer


def test_lightning_takes_dict_batches_and_any_loss_and_logs_the_cost():
    torch.manual_seed(0)
    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=2, seed=0)
    hb = HardBatchCallback(sampler, loss_fn=losses.mse)
    trainer = lightning_fit(hb, DictSet(), DictModel())
    assert sampler.done and sampler.steps == 16  # 8 warm-up batches, then rounds of k = 4
    logged = trainer.callback_metrics
    assert logged["hardbatch/optimizer_steps"].item() == 16
    assert logged["hardbatch/samples_backprop"].item() == logged["hardbatch/samples_loaded"].item() == 16 * 8
    assert logged["hardbatch/samples_forward_nograd"].item() == 0
    assert logged["hardbatch/train_seconds"].item() > 0 and logged["hardbatch/cpu_seconds"].item() > 0
    assert hb.meter is sampler.meter


def test_lightning_refuses_a_loss_fn_that_returns_a_batch_mean_at_the_first_step():
    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=2, seed=0)
    hb = HardBatchCallback(sampler, loss_fn=lambda outputs, batch: F.mse_loss(outputs, batch["labels"]))
    with pytest.raises(UsageError, match=r"^loss_fn must return one loss per sample, shape \(8,\), got shape \(\)"):
        lightning_fit(hb, DictSet(), DictModel())
    assert sampler.steps == 0


def test_lightning_takes_tuple_batches_and_an_own_per_sample_loss():
    x, _, y = dict_data()
    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=1, seed=0)
    hb = HardBatchCallback(sampler, loss_fn=lambda outputs, batch: ((outputs - batch[1]) ** 2).mean(1))
    lightning_fit(hb, TensorDataset(x, y), torch.nn.Linear(6, 2))
    assert sampler.done and hb.meter.optimizer_steps == sampler.steps == 8
    assert hb.meter.samples_backprop == 64


@pytest.mark.parametrize("val_check_interval", [1.0, 0.5])  # at each epoch's end; and in its middle as well
def test_the_callbacks_clocks_count_every_training_step_and_leave_validation_out(clock, val_check_interval):
    """Each training step "takes" 10 s and each validation batch 10,000 s (a fake clock); the clocks must count the
    steps after a validation in the middle of an epoch too."""
    x, _, y = dict_data()
    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=2, seed=0)  # 16 steps: 8 warm-up, then rounds of 4
    hb = HardBatchCallback(sampler, loss_fn=losses.mse)
    validations = []

    def training_step(module, batch):
        clock.advance(10)
        return hb.training_loss(module, batch)

    def validation_step(module, batch):
        clock.advance(10_000)
        validations.append(module.trainer.sanity_checking)

    lightning_fit(
        hb,
        TensorDataset(x, y),
        torch.nn.Linear(6, 2),
        training_step,
        TensorDataset(x, y),
        validation_step,
        val_check_interval=val_check_interval,
        num_sanity_val_steps=1,
    )
    meter = sampler.meter
    assert sampler.done and sampler.steps == 16 and validations.count(False) >= 3 and validations[0]
    assert 10 * 16 <= meter.train_seconds < 10 * 16 + 5  # the real time of 16 tiny steps: under 5 s
    assert 10 * 16 <= meter.cpu_seconds < 10 * 16 + 5
    assert not meter.running


def test_the_callback_checkpoints_the_selection_and_its_cost():
    x, _, y = dict_data()
    sampler = HardBatchSampler(64, 8, delta=0.5, epochs=1, seed=0)
    hb = HardBatchCallback(sampler, loss_fn=losses.mse)
    lightning_fit(hb, TensorDataset(x, y), torch.nn.Linear(6, 2))
    restored = HardBatchCallback(HardBatchSampler(64, 8, delta=0.5, epochs=1, seed=0), loss_fn=losses.mse)
    restored.load_state_dict(hb.state_dict())
    assert restored.sampler.steps == 8 and restored.sampler.done
    assert restored.meter.state_dict() == sampler.meter.state_dict() and sampler.meter.train_seconds > 0
    assert torch.equal(restored.sampler.visits, sampler.visits)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["default", "off"])
def test_ddp_on_two_devices_trains_with_the_sampler_off_and_refuses_the_default_in_one_line(sampler):
    job = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("lightning_job.py")), sampler],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if sampler == "off":
        assert job.returncode == 0, job.stderr[-3000:]
        assert "steps 16" in job.stdout  # 2 epochs of the 8 fixed batches, each split over the two devices
    else:
        assert job.returncode != 0
        lines = [line for line in job.stderr.splitlines() if "use_distributed_sampler=False" in line]
        assert lines and "HardBatchCallback: pass use_distributed_sampler=False to the Trainer" in lines[0]
