"""RHO-LOSS's irreducible-loss (IL) model: trained first on the validation split, its epoch with the lowest loss on
the training split kept, its loss of every training sample computed once and handed to the policy. Its cost is
counted in full and added to the run's first epoch."""

from __future__ import annotations

import time

import torch

from hardbatch import distributed
from hardbatch.config import RunConfig
from hardbatch.data import DataSplits
from hardbatch.errors import UsageError
from hardbatch.losses import cross_entropy, logits_of, target_of
from hardbatch.selection import HardBatchSampler, derive_seed
from hardbatch.selection.rho_loss import irreducible_losses
from hardbatch.training import CostMeter, fit

IL_COST = ("samples_loaded", "samples_forward", "samples_forward_nograd", "samples_backprop", "train_seconds")


def train_irreducible(cfg: RunConfig, data: DataSplits, device: torch.device) -> tuple[torch.Tensor, dict, dict]:
    """Train the IL model on ``data.val`` as the run trains (same optimizer settings, `uniform` order), keep the epoch
    whose mean loss on the training split is lowest, then score every training sample with it in eval mode; returns
    (losses (n,), its cost by history column, its quality).

    The authors' code keeps the IL checkpoint with the lowest loss on data it did not train on (their test split);
    here the test split decides nothing, and the training split, which the IL model never trains on, is that data.
    Without that choice an IL model trained long on a small holdout overfits it, and its irreducible losses grow
    with its own errors. The quality is measured on the training split too: ``{"holdout_samples", "best_epoch",
    "train_loss_by_epoch", "train_top1", "train_loss"}`` (the last two: the kept epoch's top-1 and mean
    cross-entropy). An IL model near chance there gives irreducible losses that say more about its errors than about
    the samples, and RHO-LOSS then skips whole classes: the number to read first when rho-loss trails `uniform`.

    Under several processes the IL model trains through DDP like the main model, and every rank scores the whole
    training split with the same weights, so every rank holds the same losses.
    """
    from hardbatch.experiment import make_optimizer
    from hardbatch.models import build_seeded

    if data.val is None or len(data.val) < cfg.batch_size:
        size = 0 if data.val is None else len(data.val)
        raise UsageError(f"policy 'rho-loss' trains its irreducible-loss model on the validation split, which holds "
                         f"{size} samples, fewer than one batch of {cfg.batch_size}; pass --val-fraction (e.g. 0.1)")
    started = time.perf_counter()
    seed = derive_seed(cfg.seed, "irreducible") % (2**31)
    model = build_seeded(cfg.il_model or cfg.model, data.num_classes, data.in_channels, seed, cfg.stem).to(device)
    optimizer = make_optimizer(cfg, model)
    sampler = HardBatchSampler(len(data.val), cfg.batch_size, epochs=cfg.il_epochs or cfg.epochs, policy="uniform",
                               seed=seed)
    meter = CostMeter()
    train_split = {"train": data.eval_loader(data.train, shard=distributed.shard_range(len(data.train)))}
    by_epoch, best = [], {}

    def keep_best(result) -> None:  # the epoch with the lowest mean loss on the training split, the first of ties
        by_epoch.append(result.evals["train"].loss)
        if not best or by_epoch[-1] < best["loss"]:
            best.update(loss=by_epoch[-1], epoch=result.epoch,
                        weights={k: v.detach().clone() for k, v in model.state_dict().items()})

    fit(distributed.wrap(model, device), optimizer, data.loader(data.val, distributed.LocalSlices(sampler)), sampler,
        train_split, device, train_transform=data.train_transform, eval_transform=data.eval_transform, meter=meter,
        augment_seed=seed if cfg.augment != "none" else None, on_epoch=keep_best)
    model.load_state_dict(best["weights"])
    hits = []

    def scored(outputs, batch):  # cross-entropy, counting the IL model's correct predictions on the way
        hits.append((logits_of(outputs).argmax(1) == target_of(batch)).sum())
        return cross_entropy(outputs, batch)

    losses = irreducible_losses(model, data.eval_loader(data.train), device, data.eval_transform, loss_fn=scored)
    cost = {**{k: getattr(meter, k) for k in IL_COST}, "train_seconds": time.perf_counter() - started}
    passes = len(by_epoch) + 1  # an evaluation of the training split per epoch, then the scoring pass
    cost["samples_loaded"] += passes * len(data.train)
    cost["samples_forward_nograd"] += passes * len(data.train)
    quality = {"holdout_samples": len(data.val), "best_epoch": best["epoch"], "train_loss_by_epoch": by_epoch,
               "train_top1": torch.stack(hits).sum().item() / len(losses), "train_loss": losses.mean().item()}
    return losses, cost, quality


def check_config(cfg: RunConfig) -> None:
    """What rho-loss needs before anything is written: a validation split to train its IL model on, a known network."""
    from hardbatch.models import check_model_name

    if cfg.val_fraction <= 0:
        raise UsageError("policy 'rho-loss' trains its irreducible-loss model on the validation split: pass "
                         "--val-fraction (e.g. 0.1)")
    if cfg.il_model:
        check_model_name(cfg.il_model)
