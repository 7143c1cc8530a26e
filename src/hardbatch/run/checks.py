"""A run's configuration checked and resolved once, before anything is written: names, the machine, what the
data allows, and whether a run folder's saved settings match."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import torch

from hardbatch.config import RUNTIME_KEYS, RunConfig, check, resolve_partition
from hardbatch.data import DataSplits, dataset_spec, default_model
from hardbatch.errors import UsageError
from hardbatch.models import build_seeded, check_model_name
from hardbatch.records import CONFIG, RunDir
from hardbatch.run.machine import check_runtime, resolve_device


def settings(cfg: RunConfig) -> dict:
    """``cfg``'s settings by name, the policy's hyper-parameters among them (each by its own name, complete)."""
    values = {k: v for k, v in cfg.to_dict().items() if k != "params"}
    return {**values, **cfg.policy_params()}


def differing_settings(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """Names of the settings in which two configurations differ (a policy's hyper-parameters by their own names),
    runtime-only keys aside."""
    a, b = settings(saved), settings(wanted)
    return [k for k in {**a, **b} if k not in RUNTIME_KEYS and a.get(k) != b.get(k)]


RESUME_HINT = "drop those flags or pass the saved values to continue it, or use another --out"


def check_same_settings(run: RunDir, cfg: RunConfig, hint: str = RESUME_HINT) -> None:
    """UsageError naming each setting whose value in ``run``'s config.json differs from ``cfg``'s, then ``hint``."""
    saved_cfg = run.config()
    differing = differing_settings(saved_cfg, cfg)
    if differing:
        saved, given = settings(saved_cfg), settings(cfg)
        detail = ", ".join(f"{k} saved {saved.get(k)!r} but given {given.get(k)!r}" for k in differing)
        raise UsageError(f"{run.path} holds a run with other settings: {detail}; {hint}")


def resume_config(out: Path | str, wanted: RunConfig, given: Iterable[str]) -> RunConfig:
    """What ``--resume`` continues: the configuration saved in ``out``, with only the fields named in ``given``
    (the flags on the command line) taken from ``wanted``; ``wanted`` when ``out`` holds no config.json yet.

    A given value that differs from the saved one is then refused by the same-run check, naming both.
    """
    run = RunDir(out)
    if not run.file(CONFIG).exists():
        return wanted
    saved = run.config()
    fields = {name: getattr(wanted, name) for name in given if name != "params"}
    if "params" in given:  # the policy's hyper-parameters given on the command line, on top of the saved ones
        fields["params"] = {**saved.params, **wanted.params}
    return saved.replace(**fields)


def prepare(cfg: RunConfig) -> tuple[RunConfig, torch.device]:
    """The one check and resolution of a run's configuration, before anything is written: every setting
    (``config.check``), the registries' names (data set, models), what the processes, device and packages must
    allow (``machine.check_runtime``); then the resolved configuration (``resolve``) and its device."""
    check(cfg)
    dataset_spec(cfg.dataset)  # a known data set
    if cfg.model is not None:
        check_model_name(cfg.model)
    check_runtime(cfg)
    device = resolve_device(cfg.device)
    return resolve(cfg, device), device


def resolve(cfg: RunConfig, device: torch.device) -> RunConfig:
    """Replace "auto" and unset choices by what they mean on ``device`` and for the data set and protocol (the
    partition, the data set's own model) and complete the policy's hyper-parameters: the resolved config is what
    gets saved, so that config.json says everything the run did."""
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    model = cfg.model if cfg.model is not None else default_model(cfg.dataset)
    return resolve_partition(cfg).replace(
        precision=precision, channels_last=channels_last, model=model, params=cfg.policy_params()
    )


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
    raise UsageError(
        f"model {cfg.model!r}{stem} does not take the {'x'.join(map(str, shape[1:]))} input of "
        f"{cfg.dataset} (torch: {error}); {fix}"
    )


@functools.cache
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
