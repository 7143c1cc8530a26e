"""RHO-LOSS's irreducible-loss (IL) model: trained first on the validation split, its loss of every training sample
computed once and handed to the policy. Its cost is counted in full and added to the run's first epoch."""

from __future__ import annotations

import time
from typing import Any

import torch

from hardbatch import distributed
from hardbatch.config import RunConfig
from hardbatch.data import DataSplits
from hardbatch.errors import SettingsError
from hardbatch.functional import derive_seed
from hardbatch.losses import cross_entropy, logits_of, target_of
from hardbatch.models import build_seeded
from hardbatch.policies import irreducible_losses
from hardbatch.run.parts import make_optimizer
from hardbatch.sampler import HardBatchSampler
from hardbatch.training import fit

IL_COST = ("samples_loaded", "samples_forward", "samples_forward_nograd", "samples_backprop", "train_seconds")


def train_irreducible(cfg: RunConfig, data: DataSplits, device: torch.device) -> tuple[torch.Tensor, dict, dict]:
    """Train the IL model on ``data.val`` as the run trains (same optimizer settings, `uniform` order), then score
    every training sample with it in eval mode; returns (losses (n,), its cost by history column, its quality).

    The quality is measured in that same scoring pass, on the training split the IL model never saw:
    ``{"holdout_samples", "train_top1", "train_loss"}`` (its top-1 and mean cross-entropy there). A sample the IL
    model gets wrong has a high irreducible loss, so rho-loss puts it last: an IL model near chance says more about
    its own errors than about the samples, the number to read first when rho-loss trails `uniform`.

    Under several processes the IL model trains through DDP like the main model, and every rank scores the whole
    training split with the same weights, so every rank holds the same losses.
    """
    if data.val is None or len(data.val) < cfg.batch_size:
        size = 0 if data.val is None else len(data.val)
        raise SettingsError(
            f"policy 'rho-loss' trains its irreducible-loss model on the validation split, which holds "
            f"{size} samples, fewer than one batch of {cfg.batch_size}; raise {{}} (e.g. 0.1)",
            "val_fraction",
        )
    started = time.perf_counter()
    seed = derive_seed(cfg.seed, "irreducible") % (2**31)
    own = cfg.policy_params()  # il_model, il_epochs
    assert cfg.model is not None  # resolved (run.checks.resolve)
    model = build_seeded(own["il_model"] or cfg.model, data.num_classes, data.in_channels, seed, cfg.stem).to(device)
    optimizer = make_optimizer(cfg, model)
    sampler = HardBatchSampler(
        len(data.val), cfg.batch_size, epochs=own["il_epochs"] or cfg.trained_epochs, policy="uniform", seed=seed
    )
    fit(
        distributed.wrap(model, device),
        optimizer,
        data.loader(data.val, distributed.LocalSlices(sampler)),
        sampler,
        {},
        device,
        train_transform=data.train_transform,
        eval_transform=data.eval_transform,
        augment_seed=seed if cfg.augment != "none" else None,
    )
    meter = sampler.meter
    hits = []

    # Cross-entropy, counting the IL model's correct predictions on the way.
    def scored(outputs: Any, batch: Any) -> torch.Tensor:
        hits.append((logits_of(outputs).argmax(1) == target_of(batch)).sum())
        return cross_entropy(outputs, batch)

    losses = irreducible_losses(model, data.eval_loader(data.train), device, data.eval_transform, loss_fn=scored)
    cost = {**{k: getattr(meter, k) for k in IL_COST}, "train_seconds": time.perf_counter() - started}
    cost["samples_loaded"] += len(data.train)
    cost["samples_forward_nograd"] += len(data.train)
    quality = {
        "holdout_samples": len(data.val),
        "train_top1": torch.stack(hits).sum().item() / len(losses),
        "train_loss": losses.mean().item(),
    }
    return losses, cost, quality
