"""One typed run configuration, its validation, and the error type for bad user input."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from hardbatch.errors import UsageError
from hardbatch.models import STEMS, check_model_name
from hardbatch.params import check_value, flag
from hardbatch.selection.registry import POLICIES, load_policies, policy_fields

EVAL_MODES = ("eval", "train")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("none", "crop_flip")
NORMALIZATIONS = ("dataset", "imagenet")
PRECISIONS = ("auto", "fp32", "bf16")
# Settings that do not change what a run computes: a finished run is reused, and reports group it, whatever
# their values (target_acc only changes how reports read the saved curves).
RUNTIME_KEYS = ("device", "num_workers", "data_dir", "download", "target_acc", "compile", "tensorboard")
# The data sets whose file order the `paper` protocol keeps for its fixed batches, as the released code did
# (their files list classes in random order). Every other data set, and every other protocol, gets a seeded
# random partition by default: an image folder lists its samples class by class.
KEEP_ORDER = {"paper": ("cifar10", "cifar100", "stl10")}
MAX_SEED = 2**31  # seeds are mixed with step counts into 64-bit generator seeds

# Derived from the policy registry (each policy's own file declares these; see selection/policy.py): the policy
# names, the ones δ applies to, and the hyper-parameter each policy sweeps (its axis: what tells its arms apart in a
# report, and what a report chooses on validation when the policy is the method judged; None: one arm).
POLICY_NAMES = tuple(load_policies())
DELTA_POLICIES = tuple(name for name, cls in POLICIES.items() if cls.uses_delta)
POLICY_AXES = {name: cls.axis for name, cls in POLICIES.items() if cls.axis is not None}
AXIS_SYMBOLS = {"delta": "δ", "beta": "β", "prune_ratio": "r", "threshold": "τ"}  # how reports name an axis; others by field name


@dataclass
class _Settings:
    """The settings of a run that do not belong to one policy; RunConfig adds every policy's hyper-parameters."""

    dataset: str = "digits"
    model: str = "small_cnn"
    stem: str = "imagenet"  # "small": stride-1 first convolution and no max-pool, for 32-px images
    policy: str = "hardbatch"
    delta: float = 1.0
    epochs: int = 15
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"  # or "cosine": cosine decay to 0 over the whole step budget
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 elsewhere
    channels_last: bool | None = None  # None: on for CUDA
    eval_mode: str = "eval"  # "train" reproduces the released code's train-mode (batch-statistics) evaluation
    # Under DDP on CUDA, BatchNorm normalises over the global batch (SyncBatchNorm) instead of each rank's share;
    # with one process there is nothing to synchronise and it changes nothing.
    sync_bn: bool = False
    # False: batch i = samples [i*B, (i+1)*B) in data-set order; True: a seeded random cut; None ("auto"): the
    # data-set order only where it is the point (KEEP_ORDER), a random cut elsewhere. Saved resolved.
    shuffle_partition: bool | None = None
    target_acc: float | None = None  # accuracy for epochs_to_target; None: 0.99 x the run's own best
    image_size: int | None = None  # square resize of every image; None keeps the native size
    augment: str = "none"  # or "crop_flip": random crop (4 px padding) + horizontal flip, on the device
    normalize: str = "dataset"  # mean/std of the data set's training split, or "imagenet"
    val_fraction: float = 0.0  # stratified hold-out of the training set, evaluated every epoch
    # The training split after the validation split is taken (seeded by ``seed``; validation and test untouched):
    train_subset: int | None = None  # a class-balanced subset of this many samples, taken first
    imbalance: float = 1.0  # long tail: class c keeps floor(n_c * imbalance^(-c / (C - 1))); 1 = off
    label_noise: float = 0.0  # this fraction of labels replaced by another class, uniformly
    # mnist1d only: samples the MNIST-1D generator makes (train 80% + test 20%); None: its canonical 5,000
    mnist1d_samples: int | None = None
    data_dir: str | None = None
    download: bool = False
    data_on_device: bool = False  # keep the whole data set on the device (uint8 when possible)
    num_workers: int | None = None  # DataLoader workers; None: 0 for in-memory data, up to 8 otherwise
    compile: str | None = None  # torch.compile backend for training ("inductor"); None: eager. A runtime choice
    tensorboard: str | None = None  # also log every per-epoch metric to this TensorBoard log directory
    protocol: str | None = None  # preset the defaults came from ("paper", "modern"), for the record

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a saved dict, ignoring keys this version does not know; checked as ``validate`` checks
        (UsageError for a value of the wrong type or out of range)."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in values.items() if k in known}
        policy = given.get("policy", _Settings.policy)
        # A setting its policy gained later: a saved run without it ran the policy's earlier rule.
        given.update({f.name: f.metadata["legacy"] for f in fields(cls) if f.name not in values
                      and "legacy" in f.metadata and policy in f.metadata.get("policies", ())})
        cfg = cls(**given)
        validate(cfg)
        return cfg

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def policy_params(self) -> dict[str, Any]:
        """The chosen policy's own hyper-parameters, by field name (what ``create_policy`` takes)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if self.policy in f.metadata.get("policies", ())}


# Everything that decides a training run: the settings above, then one field per hyper-parameter of every registered
# policy (declared in the policy's own file; the field's metadata names the policies that use it). Stored as given;
# ``validate`` checks it where used.
RunConfig = dataclasses.make_dataclass("RunConfig", policy_fields(), bases=(_Settings,))
RunConfig.__module__ = __name__
RunConfig.__doc__ = "Everything that decides a training run. Stored as given; ``validate`` checks it where used."


# Presets set defaults only; flags given by the user override them. See docs/method.md "The released code's setup".
PROTOCOLS: dict[str, dict[str, Any]] = {
    # The released code: timm-style networks at 128 px, ImageNet statistics, no augmentation, fixed batch
    # order (for the data sets in KEEP_ORDER), constant-rate SGD. Its train-mode evaluation is one flag away.
    "paper": dict(image_size=128, normalize="imagenet", augment="none", shuffle_partition=None, stem="imagenet",
                  lr=0.005, momentum=0.9, nesterov=False, weight_decay=0.0, schedule="constant",
                  batch_size=512, epochs=100, eval_mode="eval"),
    # A standard strong recipe at native resolution: crop + flip, a seeded random batch partition,
    # Nesterov SGD with weight decay and a cosine schedule over the step budget.
    "modern": dict(image_size=None, normalize="dataset", augment="crop_flip", shuffle_partition=True, stem="small",
                   lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine",
                   batch_size=128, epochs=100, eval_mode="eval"),
}


def make_config(protocol: str | None = None, **values: Any) -> RunConfig:
    """RunConfig defaults, overridden by the protocol's presets, overridden by ``values``."""
    if protocol is None:
        return RunConfig(**values)
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    return RunConfig(**{**PROTOCOLS[protocol], "protocol": protocol, **values})


POLICY_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(f.name for f in fields(RunConfig) if name in f.metadata.get("policies", ())) for name in POLICY_NAMES
}


def unused_settings(cfg: RunConfig) -> list[str]:
    """Fields set away from their default that cfg.policy does not use (δ included)."""
    defaults = RunConfig()
    unused = [f.name for f in fields(RunConfig)
              if f.metadata.get("policies") and cfg.policy not in f.metadata["policies"]
              and getattr(cfg, f.name) != getattr(defaults, f.name)]
    if cfg.policy not in DELTA_POLICIES and cfg.delta != 1.0:
        unused.insert(0, "delta")
    return unused


def resolve_partition(cfg: RunConfig) -> RunConfig:
    """``shuffle_partition=None`` ("auto") -> False for the protocol's KEEP_ORDER data sets, True otherwise."""
    if cfg.shuffle_partition is not None:
        return cfg
    return cfg.replace(shuffle_partition=cfg.dataset not in KEEP_ORDER.get(cfg.protocol or "", ()))


# What each type named in a RunConfig annotation accepts: an int is a number too, a bool is never one.
_KINDS = {"str": ((str,), "a string"), "int": ((int,), "an integer"), "float": ((int, float), "a number"),
          "bool": ((bool,), "true or false"), "None": ((type(None),), "null")}


def check_types(cfg: RunConfig) -> None:
    """UsageError naming the first field whose value is not of its declared type (``epochs="four"``)."""
    for f in fields(cfg):
        value, names = getattr(cfg, f.name), f.type.split(" | ")
        if not any(isinstance(value, _KINDS[n][0]) and (n == "bool" or not isinstance(value, bool)) for n in names):
            raise UsageError(f"{f.name} must be {' or '.join(_KINDS[n][1] for n in names)}, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Check types and ranges that need no data; registries check names, the data set checks sizes."""
    check_types(cfg)
    if cfg.policy not in POLICY_NAMES:
        raise UsageError(f"unknown policy {cfg.policy!r}; valid: {', '.join(POLICY_NAMES)}")
    if not (0.0 < cfg.delta <= 1.0):
        raise UsageError(f"delta must be in (0, 1], got {cfg.delta}")
    unused = unused_settings(cfg)
    if unused:
        users = {name: (DELTA_POLICIES if name == "delta" else RunConfig.__dataclass_fields__[name].metadata["policies"])
                 for name in unused}
        detail = "; ".join(f"{flag(n)} applies to {', '.join(p)}" for n, p in users.items())
        raise UsageError(f"policy {cfg.policy!r} does not use {', '.join(flag(n) for n in unused)} ({detail})")
    for f in fields(RunConfig):  # every policy's hyper-parameters, against the range its file declares
        if f.metadata.get("policies"):
            check_value(f, getattr(cfg, f.name))
    for setting, (accepts, what) in POLICIES[cfg.policy].requires.items():  # what the policy needs of a run
        if not accepts(getattr(cfg, setting)):
            raise UsageError(f"policy {cfg.policy!r} {what}")
    if cfg.il_model:
        check_model_name(cfg.il_model)
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{name.replace('_', ' ')} must be a positive integer, got {value}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UsageError(f"learning rate must be a positive finite number, got {cfg.lr}")
    if not (0.0 <= cfg.momentum < 1.0):
        raise UsageError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise UsageError(f"weight decay must be a finite number >= 0, got {cfg.weight_decay}")
    if not (isinstance(cfg.seed, int) and 0 <= cfg.seed < MAX_SEED):
        raise UsageError(f"seed must be an integer in [0, {MAX_SEED}), got {cfg.seed}")
    if cfg.eval_mode not in EVAL_MODES:
        raise UsageError(f"eval mode must be one of {', '.join(EVAL_MODES)}, got {cfg.eval_mode!r}")
    if cfg.target_acc is not None and not (0.0 < cfg.target_acc <= 1.0):
        raise UsageError(f"target accuracy must be a fraction in (0, 1], got {cfg.target_acc}")
    for name, allowed in (("schedule", SCHEDULES), ("augment", AUGMENTS), ("normalize", NORMALIZATIONS),
                          ("precision", PRECISIONS), ("stem", STEMS)):
        if getattr(cfg, name) not in allowed:
            raise UsageError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.image_size is not None and cfg.image_size < 8:
        raise UsageError(f"image size must be an integer >= 8, got {cfg.image_size}")
    if not (0.0 <= cfg.val_fraction < 1.0):
        raise UsageError(f"validation fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.train_subset is not None and not (isinstance(cfg.train_subset, int) and cfg.train_subset >= 1):
        raise UsageError(f"train subset must be a positive integer number of samples, got {cfg.train_subset}")
    if not (math.isfinite(cfg.imbalance) and cfg.imbalance >= 1.0):
        raise UsageError(f"imbalance must be a ratio >= 1 (largest / smallest class; 1 = balanced), got {cfg.imbalance}")
    if not (0.0 <= cfg.label_noise < 1.0):
        raise UsageError(f"label noise must be a fraction in [0, 1), got {cfg.label_noise}")
    if cfg.mnist1d_samples is not None:
        if cfg.dataset != "mnist1d":
            raise UsageError(f"--mnist1d-samples applies to --dataset mnist1d only, not {cfg.dataset!r}")
        if not (isinstance(cfg.mnist1d_samples, int) and cfg.mnist1d_samples >= 10 and cfg.mnist1d_samples % 10 == 0):
            raise UsageError(f"--mnist1d-samples must be a multiple of 10 (the generator makes as many of each of the "
                             f"10 classes), at least 10, got {cfg.mnist1d_samples}")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise UsageError(f"num workers must be >= 0, got {cfg.num_workers}")
