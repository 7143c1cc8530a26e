"""Wiring: one training run into a run directory, and a comparison of delta values over seeds."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import torch

from hardbatch import __version__, distributed
from hardbatch.config import DELTA_POLICIES, POLICY_NAMES, RUNTIME_KEYS, RunConfig, UsageError, resolve_partition, validate
from hardbatch.data import DataSplits, dataset_labels, gives_batches, load_dataset
from hardbatch.models import build_seeded, check_model_name
from hardbatch.results import (
    CHECKPOINT, CONFIG, HISTORY, RELABELLED, RUN_FORMAT, SUMMARY, TRACE, TRACE_FIELDS, NoSpaceLeft, RunDir, RunInUse,
    atomic_write_json, ensure_writable_dir, exposure_from_visits, run_lock, summarize,
)
from hardbatch.selection import HardBatchSampler
from hardbatch.selection.functional import single_class_purity
from hardbatch.training import (
    CostMeter, EpochResult, damaged_checkpoint, fit, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; other names are checked to exist on this machine.

    Under torchrun a bare ``cuda`` (or ``auto`` on a GPU machine) is the process's own GPU, cuda:LOCAL_RANK.
    """
    return distributed.local_device(_device(name))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = "auto, cpu, cuda, cuda:N, mps"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; valid: {valid}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"device {name!r} requested but CUDA is not available; valid here: auto, cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"device {name!r} does not exist; this machine has cuda:0..cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"device {name!r} requested but MPS is not available; valid here: auto, cpu")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; valid: {valid}")
    return device


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name: ``cpuinfo``'s "model name" on Linux, else ``platform.processor()`` (or the architecture)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Versions and hardware saved beside each run's configuration.

    The CPU model, the CPU kernels torch chose (``cpu_capability``: AVX2, AVX512, ... or ATEN_CPU_CAPABILITY's
    choice) and the thread count decide float rounding on a CPU, which training amplifies: runs that differ in
    them differ in their digits (``report`` names such groups).
    """
    import torchvision

    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {
        "versions": {
            "hardbatch": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "device": {"type": device.type, "name": name, "threads": torch.get_num_threads(), "cpu": cpu,
                   "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": None if (status := _git("status", "--porcelain", "--untracked-files=no")) is None else bool(status),
        "command": " ".join(sys.argv),
        "world_size": distributed.world_size(),
    }


def differing_settings(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """Names of the settings in which two configurations differ, runtime-only keys aside."""
    a, b = saved.to_dict(), wanted.to_dict()
    return [k for k in a if k not in RUNTIME_KEYS and a[k] != b.get(k)]


RESUME_HINT = "drop those flags or pass the saved values to continue it, or use another --out"


def _check_same(run: RunDir, cfg: RunConfig, hint: str = RESUME_HINT) -> None:
    saved_cfg = run.config()
    differing = differing_settings(saved_cfg, cfg)
    if differing:
        saved = saved_cfg.to_dict()
        detail = ", ".join(f"{k} saved {saved[k]!r} but given {getattr(cfg, k)!r}" for k in differing)
        raise UsageError(f"{run.path} holds a run with other settings: {detail}; {hint}")


def resume_config(out: Path | str, wanted: RunConfig, given: Iterable[str]) -> RunConfig:
    """What ``--resume`` continues: the configuration saved in ``out``, with only the fields named in ``given``
    (the flags on the command line) taken from ``wanted``; ``wanted`` when ``out`` holds no config.json yet.

    A given value that differs from the saved one is then refused by the same-run check, naming both.
    """
    run = RunDir(out)
    if not run.file(CONFIG).exists():
        return wanted
    return run.config().replace(**{name: getattr(wanted, name) for name in given})


def resolve(cfg: RunConfig, device: torch.device) -> RunConfig:
    """Replace "auto" choices by what they mean on ``device`` (and, for the partition, for the data set and
    protocol); the resolved config is what gets saved."""
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    return resolve_partition(cfg).replace(precision=precision, channels_last=channels_last)


def make_sampler(cfg: RunConfig, data: DataSplits) -> HardBatchSampler:
    """The run's sampler over ``data.train``; a training split that a validation split left too small names it.

    Every process builds the same sampler (same seed, same data), so the processes need not exchange plans.
    """
    if cfg.val_fraction > 0 and len(data.train) < cfg.batch_size:
        raise UsageError(f"--val-fraction {cfg.val_fraction:g} leaves {len(data.train)} training samples, fewer than "
                         f"one batch of {cfg.batch_size}; use a smaller --val-fraction")
    return HardBatchSampler(len(data.train), cfg.batch_size, cfg.delta, cfg.epochs, policy=cfg.policy,
                            shuffle_partition=bool(cfg.shuffle_partition), seed=cfg.seed, **cfg.policy_params())


MAX_IMAGE_SIZE = 1024  # the largest --image-size that check_fits tries when looking for one that works


def check_fits(cfg: RunConfig, data: DataSplits) -> None:
    """UsageError unless ``cfg.model`` takes ``data``'s input: a dry forward of one transformed training sample's
    shape (eval mode, no gradient, CPU). The message names the model, the input size and, for images, the
    smallest ``--image-size`` that works."""
    x = torch.as_tensor(data.train[0][0]).cpu()[None]
    shape = tuple(data.eval_transform(x).shape)
    error = _fit_error(cfg.model, cfg.stem, data.num_classes, data.in_channels, shape)
    if error is None:
        return
    size = _smallest_image_size(cfg, data, shape) if len(shape) == 4 and shape[2] == shape[3] else None
    fix = f"pass --image-size {size} or larger, or choose another --model" if size else "choose another --model"
    stem = " with the small stem" if cfg.stem == "small" else ""
    raise UsageError(f"model {cfg.model!r}{stem} does not take the {'x'.join(map(str, shape[1:]))} input of "
                     f"{cfg.dataset} (torch: {error}); {fix}")


@functools.lru_cache(maxsize=None)
def _fit_error(model: str, stem: str, num_classes: int, in_channels: int, shape: tuple[int, ...]) -> str | None:
    """Why the model refuses a zero input of ``shape`` (a batch of one), in torch's first line; None if it takes it."""
    net = build_seeded(model, num_classes, in_channels, 0, stem).eval()  # seeded: the global RNG stays as it is
    try:
        with torch.no_grad():
            net(torch.zeros(shape))
    except UsageError:  # the model's own check of its kind of input (images, 1-D signals) says it best
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def _smallest_image_size(cfg: RunConfig, data: DataSplits, shape: tuple[int, ...]) -> int | None:
    """The smallest square side the model takes, above ``shape``'s (refused); None if none up to MAX_IMAGE_SIZE."""
    def fits(side: int) -> bool:
        return _fit_error(cfg.model, cfg.stem, data.num_classes, data.in_channels, (*shape[:2], side, side)) is None

    low, high = shape[2], shape[2] * 2  # low is refused; double high until it fits, then bisect
    while not fits(high):
        if high >= MAX_IMAGE_SIZE:
            return None
        low, high = high, min(2 * high, MAX_IMAGE_SIZE)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def warn(message: str) -> None:
    """One warning line on stderr (between progress bars, if any), from the writing process only."""
    from tqdm.auto import tqdm

    if not distributed.is_writer():
        return
    tqdm.write(f"hardbatch: warning: {message}", file=sys.stderr)


def _warn_if_single_class_batches(cfg: RunConfig, data: DataSplits, sampler: HardBatchSampler) -> None:
    purity = single_class_purity(dataset_labels(data.train), sampler.partition)
    if purity is not None:
        how = "pass --shuffle-partition" if not cfg.shuffle_partition else "check the data set's labels"
        warn(f"each mini-batch is {100 * purity:.0f}% one class on average (the data set is ordered by class); "
             f"training on such batches rarely learns; {how}")


def loader_workers(cfg: RunConfig, data: DataSplits) -> int:
    """``--num-workers``, or by default none for in-memory data (one gather per batch) and up to 8 otherwise."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    return 0 if gives_batches(data.train) else min(8, os.cpu_count() or 1)


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def make_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, sampler: HardBatchSampler):
    """None for a constant rate; "cosine" decays to 0 over the whole budget, stepped once per optimizer step.

    The rate follows ``sampler.progress`` (steps / budget), so a policy whose epochs are shorter than N
    steps (``infobatch``) still reaches 0 at its last step.
    """
    if cfg.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 0.5 * (1.0 + math.cos(math.pi * sampler.progress)))


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
    """Train one run into ``out`` and return its summary; see README "Run directory" for the files.

    ``resume`` continues an unfinished run from its last checkpoint (or returns a finished run's
    summary); ``overwrite`` replaces whatever ``out`` holds. Bad input raises UsageError before
    anything on disk changes.
    """
    validate(cfg)
    check_model_name(cfg.model)
    check_runtime(cfg)
    run = RunDir(out)
    device = resolve_device(cfg.device)
    cfg = resolve(cfg, device)
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
            if _reusable(run, cfg, resume, overwrite):
                return None
            return resume and not overwrite and run.file(CHECKPOINT).exists()

        resuming = distributed.on_writer(lock)
        if resuming is None:
            return distributed.on_writer(run.summary)
        return _train(cfg, run, data, sampler, device, resuming, progress, label)


def check_runtime(cfg: RunConfig) -> None:
    """What the processes, device and installed packages must allow: a batch that splits over them, CUDA for
    --sync-bn, TensorBoard if asked."""
    distributed.check_divisible(cfg.batch_size)
    if cfg.compile and cfg.compile not in (backends := torch.compiler.list_backends(exclude_tags=())):
        raise UsageError(f"unknown --compile backend {cfg.compile!r}; valid: {', '.join(backends)}")
    if cfg.tensorboard:
        _summary_writer_class()
    check_sync_bn(cfg)


def check_sync_bn(cfg: RunConfig) -> None:
    """UsageError for ``--sync-bn`` off CUDA (torch: "SyncBatchNorm layers only work with GPU modules") or with
    train-mode evaluation, whose forwards would synchronise BatchNorm over the ranks' unequal shares of a set."""
    if not cfg.sync_bn:
        return
    if cfg.eval_mode == "train":
        raise UsageError("--sync-bn does not combine with --eval-mode train (evaluation would synchronise BatchNorm "
                         "over each process's share of the set); use --eval-mode eval or leave --sync-bn out")
    device = resolve_device(cfg.device)
    if device.type != "cuda":
        raise UsageError(f"--sync-bn needs CUDA devices (SyncBatchNorm works on GPU modules only), not "
                         f"{device.type}; train on --device cuda or leave --sync-bn out")


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard package: pip install 'hardbatch[tensorboard]'") from None
    return SummaryWriter


def _reusable(run: RunDir, cfg: RunConfig, resume: bool, overwrite: bool) -> bool:
    """Check what ``run`` holds against the flags (UsageError if they do not fit); True: a finished run to reuse."""
    if run.started and not (resume or overwrite):
        raise UsageError(f"run directory {str(run.path)!r} already exists; pass --resume to continue it or --overwrite to replace it")
    if resume and run.started and not run.file(CONFIG).exists():
        raise UsageError(f"{str(run.path)!r} is not a hardbatch run directory (no config.json); nothing to resume")
    if resume and not overwrite and (run.finished or run.file(CHECKPOINT).exists()):
        _check_same(run, cfg)
    return resume and not overwrite and run.finished


def _train(cfg: RunConfig, run: RunDir, data: DataSplits, sampler: HardBatchSampler, device: torch.device,
           resuming: bool, progress: bool, label: str | None) -> dict:
    """The training part of ``train_run``, in a checked and locked run directory. Only the writer touches files."""
    writer = distributed.is_writer()
    checkpoint = run.file(CHECKPOINT)
    model = build_seeded(cfg.model, data.num_classes, data.in_channels, cfg.seed, cfg.stem).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, sampler)
    meter = CostMeter()
    history: list[dict] = []
    test_per_class: list[float | None] = []  # the last epoch's, for summary.json; checkpointed for a resume
    holdout_cost: dict = {}  # spent before the first step (RHO-LOSS's IL model), by history column; in epoch 1
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + distributed.rank())  # dropout and other in-model randomness: its own per rank
        if resuming:
            # Read once, on the writer, and sent to the others: their nodes need not see the run folder.
            state = distributed.on_writer(load_checkpoint, checkpoint)
            try:  # a checkpoint that loads but does not hold this run's state is damaged too; nothing is written yet
                epoch = state["epoch"]
                if not (isinstance(epoch, int) and 1 <= epoch <= cfg.epochs):
                    raise ValueError(f"epoch {epoch!r}")
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                if scheduler is not None:
                    scheduler.load_state_dict(state["scheduler"])
                sampler.load_state_dict(state["sampler"])
                meter.load_state_dict(state.get("cost", {}))
                ranks = state.get("rng_ranks") or [state["rng"]]
                # The same world size continues each rank's own stream; another one cannot, so it is not bit-identical.
                set_rng_state(ranks[distributed.rank()] if len(ranks) == distributed.world_size() else ranks[0])
                test_per_class[:] = state.get("test_per_class", [])
                holdout_cost.update(state.get("holdout_cost", {}))
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
                raise damaged_checkpoint(checkpoint, f"it does not hold this run's state ({type(e).__name__}: "
                                                     f"{str(e).splitlines()[0] if str(e) else ''})") from None
            if writer:
                history = run.history()[:epoch]
                run.write_history(history)
                run.truncate_trace(sampler.steps)
        elif writer:
            for name in (HISTORY, TRACE, SUMMARY, CHECKPOINT, RELABELLED):
                run.file(name).unlink(missing_ok=True)
            atomic_write_json(run.file(CONFIG), {"format": RUN_FORMAT, "config": cfg.to_dict(), **environment(device)})
            if data.relabelled is not None:  # which samples label noise relabelled, and the batches trace.csv numbers
                r = data.relabelled
                run.write_relabelled(len(data.train), r.indices.tolist(), r.true_labels.tolist(), r.given_labels.tolist(),
                                     sampler.partition.tolist())

        if sampler.policy.needs_irreducible and sampler.policy.irreducible is None:
            from hardbatch.holdout import train_irreducible

            sampler.policy.irreducible, cost = train_irreducible(cfg, data, device)
            holdout_cost.update(cost)
        _warn_if_single_class_batches(cfg, data, sampler)
        bar = _progress_bar(cfg, label, len(history), progress and writer)
        lines = EpochLines(cfg, label, progress and writer and not terminal())
        exploding = LossWatch(cfg, data.num_classes, history)
        board = _summary_writer_class()(cfg.tensorboard) if cfg.tensorboard and writer else None

        def on_epoch(result: EpochResult) -> None:
            rng_ranks = distributed.gather_objects(rng_state())  # a collective: every rank, before the writer's part
            if not writer:
                return
            test_per_class[:] = result.evals["test"].per_class
            row = result.history_row()
            if result.epoch == 1:  # what the run spent before its first step counts in its first epoch
                for name, value in holdout_cost.items():
                    row[name] += value
            history.append(row)
            exploding.check(result.epoch, result.train_loss)
            run.append_trace([dict(zip(TRACE_FIELDS, row)) for row in result.trace])
            run.write_history(history)
            save_checkpoint(checkpoint, {
                "epoch": result.epoch,
                "model": model.state_dict(),  # the plain module, whatever wraps it for training
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "sampler": sampler.state_dict(),
                "cost": meter.state_dict(),
                "rng": rng_ranks[0],
                "rng_ranks": rng_ranks,
                "test_per_class": test_per_class,
                "holdout_cost": holdout_cost,
            })
            if board is not None:
                for name, value in row.items():
                    if name not in ("epoch", "step") and value is not None and math.isfinite(value):
                        board.add_scalar(name, value, result.epoch)
                board.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{result.train_loss:.3f}", acc=f"{result.evals['test'].acc:.3f}")
            lines.epoch(result)

        pin = device.type == "cuda" and not cfg.data_on_device
        workers = loader_workers(cfg, data)
        # Train-mode evaluation uses batch statistics, so it evaluates in training-sized batches as the released code.
        eval_batch = cfg.batch_size if cfg.eval_mode == "train" else 1024
        eval_sets = {name: data.eval_loader(split, eval_batch, num_workers=workers, pin_memory=pin,
                                            shard=distributed.shard_range(len(split)))
                     for name, split in (("val", data.val), ("test", data.test)) if split is not None}
        trained = distributed.wrap(model, device, cfg.sync_bn)
        if cfg.compile:
            trained = torch.compile(trained, backend=cfg.compile)
        fit(
            trained, optimizer,
            data.loader(data.train, distributed.LocalSlices(sampler), workers, pin),
            sampler,
            eval_sets,
            device,
            train_transform=data.train_transform,
            eval_transform=data.eval_transform,
            augment_seed=cfg.seed if cfg.augment != "none" else None,
            scheduler=scheduler,
            eval_train_mode=cfg.eval_mode == "train",
            autocast_dtype=torch.bfloat16 if cfg.precision == "bf16" else None,
            channels_last=cfg.channels_last,
            on_epoch=on_epoch,
            meter=meter,
        )
        bar.close()
        if board is not None:
            board.close()

    def finish() -> dict:
        summary = summarize(history, cfg, sampler.visits.tolist(), sampler.policy.k, test_per_class)
        if holdout_cost:
            summary["holdout_cost"] = holdout_cost
        if data.relabelled is not None:  # counted from what was back-propagated, for every policy
            shares = exposure_from_visits(sampler.sample_visits, sampler.first_epoch_visits,
                                          data.relabelled.indices.tolist(), sampler.partition.tolist())
            summary["mislabelled"] = {k: None if math.isnan(v) else v for k, v in shares.items()}
        atomic_write_json(run.file(SUMMARY), summary)  # last: its presence marks the run finished
        checkpoint.unlink(missing_ok=True)
        return summary

    return distributed.on_writer(finish)


class LossWatch:
    """Warns once when an epoch's mean training loss explodes: above EXPLODING x the first epoch's, or above
    EXPLODING x ln(C), where ln(C) is the loss of a uniform guess over C classes."""

    EXPLODING = 10.0

    def __init__(self, cfg: RunConfig, num_classes: int, history: list[dict]):
        self.lr = cfg.lr
        self.limit = self.EXPLODING * math.log(max(num_classes, 2))
        self.first = history[0]["train_loss"] if history else None
        self.warned = False

    def check(self, epoch: int, loss: float) -> None:
        if self.first is None:
            self.first = loss
        if not self.warned and (loss > self.limit or loss > self.EXPLODING * self.first):
            self.warned = True
            warn(f"training loss exploded to {loss:.3g} at epoch {epoch} (over {self.EXPLODING:g}x the first epoch's "
                 f"or {self.EXPLODING:g}x ln(classes)); the learning rate is probably too high: try a lower --lr than {self.lr:g}")


def _describe(cfg: RunConfig, label: str | None) -> str:
    return label or f"{cfg.dataset}/{cfg.model} {cfg.policy} δ={cfg.delta:g} seed={cfg.seed}"


def terminal() -> bool:
    """Whether stderr is a terminal: progress bars there, progress lines (``EpochLines``, ``execute``) elsewhere."""
    return sys.stderr.isatty()


class EpochLines:
    """Off a terminal, where tqdm draws no bar: one line per finished epoch on stderr, once LINE_SECONDS have passed
    since the run started or since the last line. A short run prints none; a long one shows it is alive."""

    LINE_SECONDS = 30.0

    def __init__(self, cfg: RunConfig, label: str | None, enabled: bool):
        self.desc, self.epochs, self.enabled = _describe(cfg, label), cfg.epochs, enabled
        self.last = time.monotonic()

    def epoch(self, result: EpochResult) -> None:
        if not self.enabled or time.monotonic() - self.last < self.LINE_SECONDS:
            return
        self.last = time.monotonic()
        print(f"{self.desc}: epoch {result.epoch}/{self.epochs}, train loss {result.train_loss:.3f}, "
              f"test top-1 {100 * result.evals['test'].acc:.2f}%", file=sys.stderr, flush=True)


def _progress_bar(cfg: RunConfig, label: str | None, done: int, enabled: bool):
    from tqdm.auto import tqdm

    desc = _describe(cfg, label)
    # disable=None: bars only on a terminal, so CI logs and files get no carriage-return spam.
    return tqdm(total=cfg.epochs, initial=done, desc=desc, unit="epoch", disable=None if enabled else True,
                leave=True, dynamic_ncols=True)


def run_name(delta: float, seed: int, policy: str = "hardbatch") -> str:
    """Sub-directory name of one run of a comparison; distinct settings always get distinct names.

    δ is written short (``0.5``) when that reads back as the same number, else in full (``0.3333333``).
    Policies that do not use δ leave it out.
    """
    prefix = "" if policy == "hardbatch" else f"{policy}_"
    if policy not in DELTA_POLICIES:
        return f"{prefix}seed-{seed}"
    text = f"{delta:g}"
    if float(text) != delta:
        text = repr(float(delta))
    return f"{prefix}delta-{text}_seed-{seed}"


@dataclass(frozen=True)
class PlannedRun:
    cfg: RunConfig
    path: Path


SAME_AS_RULE_AT_ONE = ("random", "cyclic")  # controls whose δ = 1 pass is the rule's (tests/test_policies.py)


def plan_compare(base: RunConfig, deltas: Sequence[float], seeds: Sequence[int], out: Path | str,
                 policies: Sequence[str] | None = None) -> list[PlannedRun]:
    """Every policy x delta x seed of ``base``, each in ``out/[POLICY_]delta-D_seed-S``.

    A policy that does not use δ runs once per seed (δ = 1, ``out/POLICY_seed-S``); each run keeps only its
    own policy's hyper-parameters (the others at their defaults). Two runs can never share a folder. At δ = 1
    the controls (``random``, ``cyclic``) train every batch in index order each round, exactly what
    ``hardbatch`` trains, so they are left out when ``hardbatch`` runs at δ = 1 too. ``policies=["all"]``: every
    registered policy at its defaults.
    """
    if not deltas or not seeds:
        raise UsageError("need at least one delta and one seed")
    policies = list(policies or [base.policy])
    if policies == ["all"]:
        policies = list(POLICY_NAMES)
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        raise UsageError(f"unknown policy {unknown[0]!r}; valid: {', '.join(POLICY_NAMES)}")
    defaults = RunConfig()
    out = Path(out)
    plan = []
    for policy in policies:
        own = {f.name: getattr(base, f.name) if policy in f.metadata["policies"] else getattr(defaults, f.name)
               for f in fields(RunConfig) if f.metadata.get("policies")}
        for d in (deltas if policy in DELTA_POLICIES else [1.0]):
            if policy in SAME_AS_RULE_AT_ONE and float(d) == 1.0 and "hardbatch" in policies:
                continue
            for s in seeds:
                cfg = base.replace(policy=policy, delta=float(d), seed=int(s), **own)
                validate(cfg)  # every run of the plan, before the first one trains
                name = run_name(cfg.delta, cfg.seed, policy)
                if base.tensorboard:  # one log directory per run, named as its run directory
                    cfg = cfg.replace(tensorboard=str(Path(base.tensorboard) / name))
                plan.append(PlannedRun(cfg, out / name))
    paths = [run.path for run in plan]
    repeated = next((p for p in paths if paths.count(p) > 1), None)
    if repeated is not None:
        raise UsageError(f"two planned runs would share {repeated}; give each δ, seed and policy once")
    return plan


def plan_sweep(bases: Sequence[RunConfig], datasets: Sequence[str], models: Sequence[str], deltas: Sequence[float],
               seeds: Sequence[int], out: Path | str, policies: Sequence[str] | None = None) -> list[PlannedRun]:
    """The grid bases (one per protocol) x datasets x models x seeds x deltas, in that order.

    Runs go to ``out/DATASET/MODEL/PROTOCOL/delta-D_seed-S`` so that shards' folders merge into one tree.
    """
    out = Path(out)
    plan = []
    for base in bases:
        for dataset in datasets:
            for model in models:
                where = Path(dataset) / model / (base.protocol or "custom")
                board = str(Path(base.tensorboard) / where) if base.tensorboard else None
                for seed in seeds:
                    plan += plan_compare(base.replace(dataset=dataset, model=model, tensorboard=board), deltas, [seed],
                                         out / where, policies)
    return plan


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"shard must look like I/N with integers 0 <= I < N, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise UsageError(f"shard must look like I/N with integers 0 <= I < N, got {text!r}")
    return index, count


def shard(plan: list[PlannedRun], index: int, count: int) -> list[PlannedRun]:
    """Runs i with i % count == index: shards are disjoint, cover the plan, and need no coordination."""
    return plan[index::count]


DATA_KEYS = ("dataset", "data_dir", "download", "image_size", "augment", "normalize", "val_fraction", "data_on_device",
             "train_subset", "imbalance", "label_noise", "mnist1d_samples")


class DataCache:
    """Data sets loaded once per distinct data configuration, shared by the runs of a plan."""

    def __init__(self, device: torch.device):
        self.device = device
        self._loaded: dict[tuple, DataSplits] = {}

    def __call__(self, cfg: RunConfig) -> DataSplits:
        key = tuple(getattr(cfg, k) for k in DATA_KEYS)
        if cfg.train_subset is not None or cfg.imbalance != 1 or cfg.label_noise:
            key += (cfg.seed,)  # the training split then depends on the seed
        if key not in self._loaded:
            self._loaded[key] = load_dataset(cfg, self.device)
        return self._loaded[key]


def check_plan(plan: list[PlannedRun]) -> DataCache:
    """Check every run before any trains: names, ranges, k = floor(delta * N) >= 1, that the network takes the
    data's input, runs already on disk.

    Returns the data cache the check filled, for ``execute`` to reuse.
    """
    device = resolve_device(plan[0].cfg.device) if plan else torch.device("cpu")
    data = DataCache(device)
    for run in plan:
        validate(run.cfg)
        check_model_name(run.cfg.model)
        check_runtime(run.cfg)
        cfg = resolve(run.cfg, device)
        if distributed.on_writer(_finished_alike, run.path, cfg):
            continue
        distributed.together(lambda: make_sampler(cfg, data(cfg)))
        check_fits(cfg, data(cfg))
    return data


def _finished_alike(path: Path, cfg: RunConfig) -> bool:
    """True for a finished run with ``cfg``'s settings; UsageError for a finished run with others."""
    if not RunDir(path).finished:
        return False
    _check_same(RunDir(path), cfg, hint="use another --out or move that run directory away")
    return True


def execute(plan: list[PlannedRun], *, progress: bool = True, keep_going: bool = False,
            data: DataCache | None = None) -> list[tuple[PlannedRun, str]]:
    """Train every planned run in order: finished runs are skipped, interrupted ones resumed.

    The whole plan is checked first (``check_plan``), so bad input fails before any training. A run
    that another process is training (its directory is locked) is skipped with a note, so two commands
    on one tree, or two shards with the same index, never train a run twice at once. With ``keep_going``,
    a run that crashes (out of memory, say) is reported and the rest go on; a full disk stops everything.
    Returns the runs left unfinished with the reason: skipped as in use, or failed with their errors.
    """
    data = data or check_plan(plan)
    not_done = []
    for i, run in enumerate(plan, start=1):
        cfg = run.cfg
        label = f"[{i}/{len(plan)}] {cfg.dataset}/{cfg.model} {cfg.policy} δ={cfg.delta:g} seed={cfg.seed}"
        if distributed.on_writer(lambda: RunDir(run.path).finished):
            continue
        distributed.on_writer(ensure_writable_dir, run.path.parent)
        try:
            summary = train_run(cfg, run.path, resume=True, progress=progress, data=data(resolve(cfg, data.device)),
                                label=label)
            if progress and distributed.is_writer() and not terminal():  # a terminal has the bar, left in place
                print(f"{label}: done, test top-1 {100 * summary['final_test_acc']:.2f}%, "
                      f"{summary['train_seconds']:.1f} s training", file=sys.stderr, flush=True)
        except RunInUse:
            not_done.append((run, "skipped: another hardbatch process is training it; rerun this command once it is done"))
            warn(f"{label} skipped: {run.path} is in use by another hardbatch process")
        except (UsageError, NoSpaceLeft, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - one crashed run must not stop a long sweep
            # Under several processes a crash may hit one rank only; the others would wait for it in their
            # collectives, so the whole job stops and the same command resumes it.
            if not keep_going or distributed.world_size() > 1:
                raise
            not_done.append((run, f"failed: {type(e).__name__}: {e}"))
            print(f"{label} failed: {type(e).__name__}: {e}", file=sys.stderr)
    return not_done
