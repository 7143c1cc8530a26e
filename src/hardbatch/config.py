"""One typed run configuration: every setting declared once (type, default, help, allowed values), its checks, and
the protocol presets.

Each field of :class:`RunConfig` is declared with ``params.param``; the CLI's flags, their help and the value checks
are derived from these declarations, and the chosen policy's hyper-parameters (``params``) are checked against the
policy's own declaration (``hardbatch.policies``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from hardbatch.errors import SettingsError, UsageError
from hardbatch.params import Range, check_fields, param
from hardbatch.policies import POLICIES, create_policy, defaults, load_policies, policy_class

EVAL_MODES = ("eval", "train")
SCHEDULES = ("constant", "cosine")
AUGMENTS = ("none", "crop_flip")
NORMALIZATIONS = ("dataset", "imagenet")
PRECISIONS = ("auto", "fp32", "bf16")
STEMS = ("imagenet", "small")
# Settings that do not change what a run computes: a finished run is reused, and reports group it, whatever
# their values (target_acc only changes how reports read the saved curves).
RUNTIME_KEYS = (
    "device",
    "num_workers",
    "data_dir",
    "download",
    "target_acc",
    "compile",
    "tensorboard",
    "checkpoint_every",
)
# The data sets whose file order the `paper` protocol keeps for its fixed batches, as the released code did
# (their files list classes in random order). Every other data set, and every other protocol, gets a seeded
# random partition by default: an image folder lists its samples class by class.
KEEP_ORDER = {"paper": ("cifar10", "cifar100", "stl10")}
MAX_SEED = 2**31  # seeds are mixed with step counts into 64-bit generator seeds

# Derived from the policy registry (each policy's own file declares these): the policy names, the ones that take
# δ, and the hyper-parameter each policy sweeps (its axis: what tells its arms apart in a report, and what a report
# chooses on validation when the policy is the method judged; policies without one have a single arm).
POLICY_NAMES = tuple(load_policies())
DELTA_POLICIES = tuple(name for name, cls in POLICIES.items() if cls.takes("delta"))
POLICY_AXES = {name: cls.axis for name, cls in POLICIES.items() if cls.axis is not None}
AXIS_SYMBOLS = {"delta": "δ", "beta": "β", "prune_ratio": "r", "threshold": "τ"}  # others by field name

DATA, SPLIT, SELECTION, OPTIMISATION, HARDWARE = (
    "data and model",
    "training split",
    "selection",
    "optimisation",
    "evaluation and hardware",
)
FRACTION = Range(0.0, 1.0, high_open=True)


@dataclass
class RunConfig:
    """Everything that decides a training run. Stored as given; ``check`` checks it, ``run.checks.resolve`` fills
    in what "auto" and unset values mean, once, before anything is written (config.json holds the resolved one)."""

    dataset: str = param("digits", "data set", group=DATA, metavar="NAME")
    model: str | None = param(
        None,
        "network (default: the data set's own, listed under --dataset)",
        group=DATA,
        metavar="NAME",
        default_text="the data set's",
    )
    stem: str = param(
        "imagenet", "'small': stride-1 first convolution, no max-pool, for 32-px images", choices=STEMS, group=DATA
    )
    data_dir: str | None = param(
        None, "where data set files live (data sets that need files)", group=DATA, metavar="DIR"
    )
    download: bool = param(False, "download the data set if missing", group=DATA)
    num_workers: int | None = param(
        None,
        "DataLoader worker processes",
        range=Range(0, integer=True),
        group=DATA,
        metavar="N",
        default_text="0 for in-memory data sets, up to 8 for imagefolder",
    )
    image_size: int | None = param(
        None,
        "resize images to this side length",
        range=Range(8, integer=True),
        group=DATA,
        metavar="PX",
        default_text="native size; 64 for imagefolder",
    )
    augment: str = param("none", "training augmentation, applied on the device", choices=AUGMENTS, group=DATA)
    normalize: str = param(
        "dataset", "per-channel mean/std: the data set's own or ImageNet's", choices=NORMALIZATIONS, group=DATA
    )
    val_fraction: float = param(
        0.0,
        "hold out this stratified fraction of the training set as a validation split, "
        "evaluated every epoch, to choose settings without the test set",
        range=FRACTION,
        group=DATA,
        metavar="F",
    )
    mnist1d_samples: int | None = param(
        None,
        "mnist1d: how many samples its generator makes, a multiple of 10, split "
        "80/20 into train and test as the generator does",
        range=Range(10, integer=True),
        group=DATA,
        metavar="N",
        default_text="the canonical 5,000, i.e. 4,000 / 1,000",
    )
    data_on_device: bool = param(
        False, "keep the whole data set on the device (uint8), so loading is never the bottleneck", group=DATA
    )
    # The training split, reshaped in this order after the validation split is taken (seeded by ``seed``; the
    # validation and test splits are never changed).
    train_subset: int | None = param(
        None,
        "train on a class-balanced random subset of N samples (from the number of "
        "classes up to the split's size), e.g. to fit a CPU budget",
        range=Range(1, integer=True),
        group=SPLIT,
        metavar="N",
    )
    imbalance: float = param(
        1.0,
        "long tail: class c keeps floor(n_c · RHO^(−c/(C−1))) of its samples, so the largest "
        "class is RHO times the smallest (1 = as is)",
        range=Range(1.0),
        group=SPLIT,
        metavar="RHO",
    )
    label_noise: float = param(
        0.0,
        "give exactly round(P·n) training samples another class, drawn uniformly, never "
        "their own; the run folder's relabelled.json records which",
        range=FRACTION,
        group=SPLIT,
        metavar="P",
    )
    policy: str = param("hardbatch", "batch-selection policy", group=SELECTION, metavar="NAME")
    params: dict[str, Any] = param(
        default_factory=dict,
        help="the policy's hyper-parameters by name (the others at their defaults); δ is params['delta']",
        cli=False,
    )
    shuffle_partition: bool | None = param(
        None,
        "cut a seeded random permutation into the fixed mini-batches, or "
        "(--no-shuffle-partition) the data set's own order",
        group=SELECTION,
        default_text="the data-set order under --protocol paper "
        "for cifar10, cifar100 and stl10, as the released code; a seeded random "
        "cut otherwise",
    )
    epochs: int = param(
        15, "budget in epochs of N optimizer steps", range=Range(1, integer=True), group=OPTIMISATION, metavar="E"
    )
    budget: float = param(
        1.0,
        "fraction of the epoch budget the run trains: round(F·epochs) epochs (at least 1), "
        "its learning-rate schedule decayed within them; a point of a compute frontier "
        "(compare --budgets)",
        range=Range(0.0, 1.0, low_open=True),
        group=OPTIMISATION,
        metavar="F",
    )
    batch_size: int = param(
        32,
        "mini-batch size B; under torchrun the global batch, split evenly over the "
        "processes, so it must divide by their number",
        range=Range(1, integer=True),
        group=OPTIMISATION,
        metavar="B",
    )
    lr: float = param(0.01, "SGD learning rate", range=Range(0.0, low_open=True), group=OPTIMISATION, metavar="LR")
    schedule: str = param(
        "constant",
        "learning-rate schedule; cosine decays to 0 over the step budget",
        choices=SCHEDULES,
        group=OPTIMISATION,
    )
    momentum: float = param(0.9, "SGD momentum", range=FRACTION, group=OPTIMISATION, metavar="M")
    nesterov: bool = param(False, "Nesterov momentum", group=OPTIMISATION)
    weight_decay: float = param(0.0, "SGD weight decay", range=Range(0.0), group=OPTIMISATION, metavar="WD")
    seed: int = param(
        0,
        "seed for initialisation and any randomness",
        range=Range(0, MAX_SEED - 1, integer=True),
        group=OPTIMISATION,
        metavar="S",
    )
    eval_mode: str = param(
        "eval",
        "'eval': model.eval(); 'train': BatchNorm batch statistics, as the released code",
        choices=EVAL_MODES,
        group=HARDWARE,
    )
    target_acc: float | None = param(
        None,
        "test accuracy (fraction) for epochs-to-target",
        range=Range(0.0, 1.0, low_open=True),
        group=HARDWARE,
        metavar="T",
        default_text="in reports 0.99 × the reference's mean best; in a single run's summary.json 0.99 × its own best",
    )
    device: str = param(
        "auto", "auto, cpu, cuda, cuda:N, mps", group=HARDWARE, metavar="DEVICE", default_text="auto: CUDA when present"
    )
    precision: str = param(
        "auto", "autocast precision; auto = bf16 on CUDA, fp32 elsewhere", choices=PRECISIONS, group=HARDWARE
    )
    channels_last: bool | None = param(None, "channels-last memory format", group=HARDWARE, default_text="on for CUDA")
    sync_bn: bool = param(
        False,
        "under torchrun, BatchNorm normalises over the global batch (SyncBatchNorm) instead "
        "of each process's share, as one process would; CUDA only (refused elsewhere, and "
        "with --eval-mode train); with one process it changes nothing",
        group=HARDWARE,
    )
    compile: str | None = param(
        None,
        "torch.compile the model for training with this backend (inductor; aot_eager "
        "checks tracing without code generation); scoring and evaluation forwards run "
        "uncompiled; a runtime choice: a finished run is reused whatever its value",
        group=HARDWARE,
        metavar="BACKEND",
        default_text="eager",
    )
    tensorboard: str | None = param(
        None,
        "also log every per-epoch metric to TensorBoard under DIR (compare/sweep: "
        "one sub-directory per run); needs pip install 'hardbatch[tensorboard]'",
        group=HARDWARE,
        metavar="DIR",
    )
    checkpoint_every: float = param(
        60.0,
        "write the run's checkpoint at the end of the first epoch that ends S "
        "seconds or more after the last one (or after the start); 0: every epoch. "
        "A killed run resumes from its last checkpoint (before the first: from the "
        "start) to the same records; a finished run removes it, so a run shorter "
        "than S writes none; a runtime choice",
        range=Range(0.0),
        group=HARDWARE,
        metavar="S",
    )
    protocol: str | None = param(None, "the preset the defaults came from, for the record", cli=False)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dict (what config.json holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a saved dict (unknown keys are refused) and ``check`` it."""
        if not isinstance(values, dict):
            raise UsageError(f"a run configuration is a dict of settings, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown setting {unknown[0]!r}; valid: {', '.join(sorted(known))}")
        cfg = cls(**values)
        check(cfg)
        return cfg

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` (settings by name)."""
        return dataclasses.replace(self, **changes)

    def policy_params(self) -> dict[str, Any]:
        """The chosen policy's hyper-parameters by name, every one of them (defaults for those not given)."""
        if self.policy not in POLICIES:
            return dict(self.params)
        return {**defaults(self.policy), **self.params}

    @property
    def trained_epochs(self) -> int:
        """The epochs the run trains: ``budget`` of ``epochs``, rounded half up, at least 1."""
        return max(1, math.floor(self.budget * self.epochs + 0.5 + 1e-9))

    @property
    def delta(self) -> float:
        """δ of a δ policy (``params['delta']``); 1 for every other policy, which trains every batch."""
        return self.policy_params().get("delta", 1.0)


# Presets set defaults only; flags given by the user override them. See docs/method.md "The released code's setup".
PROTOCOLS: dict[str, dict[str, Any]] = {
    # The released code: timm-style networks at 128 px, ImageNet statistics, no augmentation, fixed batch
    # order (for the data sets in KEEP_ORDER), constant-rate SGD. Its train-mode evaluation is one flag away.
    "paper": dict(
        image_size=128,
        normalize="imagenet",
        augment="none",
        shuffle_partition=None,
        stem="imagenet",
        lr=0.005,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        schedule="constant",
        batch_size=512,
        epochs=100,
        eval_mode="eval",
    ),
    # A standard strong recipe at native resolution: crop + flip, a seeded random batch partition,
    # Nesterov SGD with weight decay and a cosine schedule over the step budget.
    "modern": dict(
        image_size=None,
        normalize="dataset",
        augment="crop_flip",
        shuffle_partition=True,
        stem="small",
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="cosine",
        batch_size=128,
        epochs=100,
        eval_mode="eval",
    ),
}


def make_config(protocol: str | None = None, **values: Any) -> RunConfig:
    """RunConfig defaults, overridden by the protocol's presets, overridden by ``values``."""
    if protocol is None:
        return RunConfig(**values)
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    return RunConfig(**{**PROTOCOLS[protocol], "protocol": protocol, **values})


def check(cfg: RunConfig) -> None:
    """Every setting against its declaration (type, range, choices), the policy's hyper-parameters against the
    policy's declaration, what the policy needs of a run, and the checks across settings. One line (UsageError,
    BadValue) for the first problem. Names that live in registries above this layer (data sets, models) and what
    needs the data or the machine are checked by ``run.checks``."""
    check_fields(cfg)
    if cfg.protocol is not None and cfg.protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {cfg.protocol!r}; valid: {', '.join(PROTOCOLS)}")
    policy = create_policy(policy_class(cfg.policy).name, **cfg.params)  # its name, then its hyper-parameters
    # Stored as the policy checked them (numpy scalars as int or float), as check_fields stores the fields.
    cfg.params = {name: getattr(policy, name) for name in cfg.params}
    for setting, (accepts, what) in POLICIES[cfg.policy].requires.items():
        if not accepts(getattr(cfg, setting)):
            raise SettingsError(f"policy {cfg.policy!r} {what}", setting)
    if cfg.mnist1d_samples is not None:
        if cfg.dataset != "mnist1d":
            raise SettingsError(f"{{}} applies to dataset mnist1d only, not {cfg.dataset!r}", "mnist1d_samples")
        if cfg.mnist1d_samples % 10:
            raise SettingsError(
                f"{{}} must be a multiple of 10 (the generator makes as many of each of the "
                f"10 classes), got {cfg.mnist1d_samples}",
                "mnist1d_samples",
            )


def resolve_partition(cfg: RunConfig) -> RunConfig:
    """``shuffle_partition=None`` ("auto") -> False for the protocol's KEEP_ORDER data sets, True otherwise."""
    if cfg.shuffle_partition is not None:
        return cfg
    return cfg.replace(shuffle_partition=cfg.dataset not in KEEP_ORDER.get(cfg.protocol or "", ()))
