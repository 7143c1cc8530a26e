"""One training run into a run folder, in a few stages: check and resolve the configuration, check the folder before
writing, build the parts, fit, finish."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import cast

import torch
from torch import nn

from hardbatch import distributed
from hardbatch.config import RunConfig
from hardbatch.data import DataSplits, dataset_labels, load_dataset
from hardbatch.errors import UsageError
from hardbatch.fileio import RunInUse, atomic_write_json, ensure_writable_dir, locked_elsewhere, run_lock
from hardbatch.functional import single_class_purity
from hardbatch.models import build_seeded
from hardbatch.records import (
    CHECKPOINT,
    CONFIG,
    HISTORY,
    RELABELLED,
    RUN_FORMAT,
    SUMMARY,
    TRACE,
    RunDir,
    summarize,
)
from hardbatch.run.checks import check_fits, check_same_settings, prepare
from hardbatch.run.machine import environment
from hardbatch.run.parts import loader_workers, make_optimizer, make_sampler, make_scheduler
from hardbatch.run.sinks import (
    CaptureRng,
    Checkpoint,
    EpochLines,
    History,
    LossWatch,
    ProgressBar,
    TensorBoard,
    Trace,
    describe,
    note,
    terminal,
    warn,
)
from hardbatch.run.state import RunState
from hardbatch.sampler import HardBatchSampler
from hardbatch.training import fit


def _warn_if_single_class_batches(cfg: RunConfig, data: DataSplits, sampler: HardBatchSampler) -> None:
    purity = single_class_purity(dataset_labels(data.train), sampler.partition)
    if purity is not None:
        how = "pass --shuffle-partition" if not cfg.shuffle_partition else "check the data set's labels"
        warn(
            f"each mini-batch is {100 * purity:.0f}% one class on average (the data set is ordered by class); "
            f"training on such batches rarely learns; {how}"
        )


def train_run(
    cfg: RunConfig,
    out: Path | str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: DataSplits | None = None,
    label: str | None = None,
) -> dict:
    """Train one run into ``out`` and return its summary; see docs/guides/run-folders.md "Run directory" for the files.

    ``resume`` continues an unfinished run from its last checkpoint (or returns a finished run's
    summary); ``overwrite`` replaces whatever ``out`` holds. Bad input raises UsageError before
    anything on disk changes.
    """
    cfg, device = prepare(cfg)  # checked and resolved once: what config.json will hold
    run = RunDir(out)
    # Only the writer (rank 0) looks at the folder; its decision, or its error, reaches every process.
    if distributed.on_writer(_reusable, run, cfg, resume, overwrite):
        return distributed.on_writer(run.summary)
    data = data or distributed.together(load_dataset, cfg, device)
    sampler = distributed.together(make_sampler, cfg, data)
    check_fits(cfg, data)
    with contextlib.ExitStack() as held:

        def lock() -> bool | None:
            ensure_writable_dir(run.path)  # --overwrite replaces only the run's own files below, nothing else
            held.enter_context(run_lock(run.path))
            # Another process may have finished or started this run since the checks above: check again, locked.
            if _reusable(run, cfg, resume, overwrite, locked=True):
                return None
            return resume and not overwrite and run.file(CHECKPOINT).exists()

        resuming = distributed.on_writer(lock)
        if resuming is None:
            return distributed.on_writer(run.summary)
        return _train(cfg, run, data, sampler, device, resuming, progress, label)


def _reusable(run: RunDir, cfg: RunConfig, resume: bool, overwrite: bool, locked: bool = False) -> bool:
    """Check what ``run`` holds against the flags (UsageError if they do not fit); True: a finished run to reuse.

    ``locked``: this process holds the run's lock. Without it, a folder another process is starting (its first
    files written, config.json not yet) raises RunInUse, as the lock would, rather than look like a stranger's folder.
    """
    if run.started and not (resume or overwrite):
        raise UsageError(
            f"run directory {str(run.path)!r} already exists; pass --resume to continue it or --overwrite to replace it"
        )
    if resume and run.started and not run.file(CONFIG).exists():
        if not locked and locked_elsewhere(run.path):
            raise RunInUse(
                f"run directory {str(run.path)!r} is in use by another hardbatch process; wait for it to "
                f"finish, or use another --out"
            )
        raise UsageError(f"{str(run.path)!r} is not a hardbatch run directory (no config.json); nothing to resume")
    if resume and not overwrite and (run.finished or run.file(CHECKPOINT).exists()):
        check_same_settings(run, cfg)
    return resume and not overwrite and run.finished


def _train(
    cfg: RunConfig,
    run: RunDir,
    data: DataSplits,
    sampler: HardBatchSampler,
    device: torch.device,
    resuming: bool,
    progress: bool,
    label: str | None,
) -> dict:
    """The training part of ``train_run``, in a checked and locked run directory. Only the writer touches files."""
    writer = distributed.is_writer()
    checkpoint = run.file(CHECKPOINT)
    assert cfg.model is not None  # resolved (run.checks.resolve)
    model = build_seeded(cfg.model, data.num_classes, data.in_channels, cfg.seed, cfg.stem).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    state = RunState(model, optimizer, make_scheduler(cfg, optimizer, sampler), sampler)
    history: list[dict] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), contextlib.ExitStack() as held:
        torch.manual_seed(cfg.seed + distributed.rank())  # dropout and other in-model randomness: its own per rank
        if resuming:
            state.load(checkpoint)  # nothing is written before it has loaded
            if writer:
                history = run.history()[: state.epoch]
                run.write_history(history)
                run.truncate_trace(sampler.steps)
        elif writer:
            _start(cfg, run, data, sampler, device)
        if sampler.policy.holdout and sampler.policy.irreducible is None:
            from hardbatch.run.holdout import train_irreducible

            sampler.policy.irreducible, cost, quality = train_irreducible(cfg, data, device)
            state.holdout_cost.update(cost)
            state.irreducible_model.update(quality)
            if progress:
                note(
                    f"{describe(cfg, label)}: irreducible-loss model trained on {quality['holdout_samples']} "
                    f"validation samples, top-1 {100 * quality['train_top1']:.1f}% on the training split it never saw"
                )
        _warn_if_single_class_batches(cfg, data, sampler)
        sinks = [CaptureRng(state)]  # on every rank
        if writer:
            sinks += _sinks(cfg, run, state, history, data.num_classes, progress, label)
        for sink in sinks:
            if hasattr(sink, "close"):
                held.callback(sink.close)
        pin = device.type == "cuda" and not cfg.data_on_device
        workers = loader_workers(cfg, data)
        # Train-mode evaluation uses batch statistics, so it evaluates in training-sized batches as the released code.
        eval_batch = cfg.batch_size if cfg.eval_mode == "train" else 1024
        eval_sets = {
            name: data.eval_loader(
                split, eval_batch, num_workers=workers, pin_memory=pin, shard=distributed.shard_range(len(split))
            )
            for name, split in (("val", data.val), ("test", data.test))
            if split is not None
        }
        trained = distributed.wrap(model, device, cfg.sync_bn)
        if cfg.compile:
            trained = cast(nn.Module, torch.compile(trained, backend=cfg.compile))
        fit(
            trained,
            optimizer,
            data.loader(data.train, distributed.LocalSlices(sampler), workers, pin),
            sampler,
            eval_sets,
            device,
            train_transform=data.train_transform,
            eval_transform=data.eval_transform,
            augment_seed=cfg.seed if cfg.augment != "none" else None,
            scheduler=state.scheduler,
            eval_train_mode=cfg.eval_mode == "train",
            autocast_dtype=torch.bfloat16 if cfg.precision == "bf16" else None,
            channels_last=bool(cfg.channels_last),  # resolved (run.checks.resolve)
            sinks=sinks,
        )
    return distributed.on_writer(_finish, cfg, run, data, state, history)


def _start(cfg: RunConfig, run: RunDir, data: DataSplits, sampler: HardBatchSampler, device: torch.device) -> None:
    """A fresh run's folder: the files of an earlier one removed (a run resumed with no checkpoint, killed before its
    first, starts history.csv and trace.csv afresh), config.json written, and relabelled.csv when label noise
    relabelled samples (with the batches trace.csv numbers)."""
    for name in (HISTORY, TRACE, SUMMARY, CHECKPOINT, RELABELLED):
        run.file(name).unlink(missing_ok=True)
    atomic_write_json(run.file(CONFIG), {"format": RUN_FORMAT, "config": cfg.to_dict(), **environment(device)})
    if data.relabelled is not None:
        r = data.relabelled
        run.write_relabelled(
            len(data.train),
            r.indices.tolist(),
            r.true_labels.tolist(),
            r.given_labels.tolist(),
            sampler.partition.tolist(),
        )


def _sinks(
    cfg: RunConfig,
    run: RunDir,
    state: RunState,
    history: list[dict],
    num_classes: int,
    progress: bool,
    label: str | None,
) -> list:
    """The writer's per-epoch outputs, in the order they run: the loss watch, trace.csv, history.csv (extending
    ``history``), the checkpoint every ``cfg.checkpoint_every`` seconds (after them: a run killed between two files
    resumes from an epoch every file has), then TensorBoard and progress when asked."""
    sinks = [
        LossWatch(cfg.lr, num_classes, history[0]["train_loss"] if history else None),
        Trace(run),
        History(run, history, state.holdout_cost),
        Checkpoint(state, run.file(CHECKPOINT), run=run, every=cfg.checkpoint_every),
    ]
    if cfg.tensorboard:
        sinks.append(TensorBoard(cfg.tensorboard, state.holdout_cost))
    if progress:
        desc = describe(cfg, label)
        epochs = cfg.trained_epochs
        sinks.append(EpochLines(desc, epochs) if not terminal() else ProgressBar(desc, epochs, len(history)))
    return sinks


def _finish(cfg: RunConfig, run: RunDir, data: DataSplits, state: RunState, history: list[dict]) -> dict:
    """Write summary.json (last: its presence marks the run finished), remove the checkpoint; returns the summary."""
    sampler = state.sampler
    summary = summarize(history, cfg, sampler.visits.tolist(), sampler.policy.k, state.test_per_class)
    if state.holdout_cost:
        summary["holdout_cost"] = state.holdout_cost
    if state.irreducible_model:
        summary["irreducible_model"] = state.irreducible_model
    if data.relabelled is not None:  # counted from what was back-propagated, for every policy
        summary["mislabelled"] = {k: None if math.isnan(v) else v for k, v in sampler.exposure().items()}
    run.sync()  # the records on disk before summary.json marks them finished
    atomic_write_json(run.file(SUMMARY), summary)
    run.file(CHECKPOINT).unlink(missing_ok=True)
    return summary
