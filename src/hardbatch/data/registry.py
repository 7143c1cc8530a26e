"""The data-set table (name -> reader, description, default model, kind of sample) and ``load_dataset``, which reads
a run's data set and cuts and transforms it as the run's configuration asks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hardbatch.config import RunConfig
from hardbatch.data.loaders import DataSplits
from hardbatch.data.memory import InMemoryDataset, SizedDataset
from hardbatch.data.readers import (
    RawData,
    read_cifar10,
    read_cifar100,
    read_digits,
    read_fashion_mnist,
    read_imagefolder,
    read_mnist1d,
    read_stl10,
)
from hardbatch.data.readers.imagefolder import IMAGEFOLDER_SIZE
from hardbatch.data.splits import hold_out, reshape_train
from hardbatch.data.transforms import BatchTransform, normalisation
from hardbatch.errors import UsageError
from hardbatch.models import INPUTS, MODEL_INPUTS


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the data-set table. ``dims``: 2 for images (samples (C, H, W)), 1 for signals (samples (C, L)).

    ``read(root, download, **options)`` returns both splits: ``root`` is ``--data-dir`` (None when not given),
    ``download`` is ``--download``, and ``options`` maps each further keyword the reader takes to the ``RunConfig``
    field it comes from. ``default_model``: the registered model (``hardbatch.models``) a run trains when it names
    none; it must take this data set's kind of sample.
    """

    name: str
    read: Callable[..., RawData]
    description: str
    default_model: str
    dims: int = 2
    options: tuple[tuple[str, str], ...] = ()


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    """Add ``spec`` to DATASETS; refuses a name already there and a default model that is not registered or takes
    another kind of sample (images, 1-D signals) than the data set holds."""
    if spec.name in DATASETS:
        raise ValueError(f"data set {spec.name!r} is already registered")
    kind = next((k for k, (*_, batch_dims) in INPUTS.items() if batch_dims == spec.dims + 2), None)  # + batch, channel
    if MODEL_INPUTS.get(spec.default_model) != kind:
        raise ValueError(
            f"data set {spec.name!r}: default model {spec.default_model!r} is not a registered model "
            f"for {INPUTS[kind][0] if kind else f'{spec.dims}-D samples'}"
        )
    DATASETS[spec.name] = spec


# Default models: small_cnn for the 8-px digits (lenet's two 5x5 convolutions need 16 px), LeNet-5 for 28-px grey
# Fashion-MNIST (the benchmark's baseline kind, fast on a CPU), the MNIST-1D benchmark's own CNN for its signals, and
# ResNet-18, the smallest of the paper's networks on CIFAR-10/100 and STL-10, for colour images of any size.
register_dataset(
    DatasetSpec("digits", read_digits, "scikit-learn 8x8 handwritten digits, 10 classes, bundled offline", "small_cnn")
)
register_dataset(
    DatasetSpec(
        "cifar10", read_cifar10, "CIFAR-10, 32x32 colour, 10 classes; files in --data-dir or --download", "resnet18"
    )
)
register_dataset(
    DatasetSpec(
        "cifar100",
        read_cifar100,
        "CIFAR-100, 32x32 colour, 100 fine classes; files in --data-dir or --download",
        "resnet18",
    )
)
register_dataset(
    DatasetSpec(
        "stl10",
        read_stl10,
        "STL-10 labelled split, 96x96 colour, 10 classes; files in --data-dir or --download",
        "resnet18",
    )
)
register_dataset(
    DatasetSpec(
        "fashion-mnist",
        read_fashion_mnist,
        "Fashion-MNIST, 28x28 grey, 10 classes; Debian package dataset-fashion-mnist, --data-dir or --download",
        "lenet",
    )
)
register_dataset(
    DatasetSpec(
        "imagefolder",
        read_imagefolder,
        f"your images in --data-dir/{{train,test}}/<class>/, resized to --image-size (default {IMAGEFOLDER_SIZE})",
        "resnet18",
        options=(("image_size", "image_size"),),
    )
)
register_dataset(
    DatasetSpec(
        "mnist1d",
        read_mnist1d,
        "MNIST-1D, 1-D signals of length 40, 10 classes, 4,000 / 1,000; generated offline by the "
        "mnist1d package, cached",
        "cnn1d",
        dims=1,
        options=(("samples", "mnist1d_samples"),),
    )
)


def dataset_spec(name: str) -> DatasetSpec:
    """The table's row for data set ``name``; a UsageError listing the valid names for any other."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_model(dataset: str) -> str:
    """The model a run of ``dataset`` trains when it names none (the spec's ``default_model``)."""
    return dataset_spec(dataset).default_model


def default_models_text() -> str:
    """Every data set's default model, in table order, for help text: "digits small_cnn, cifar10 resnet18, ..."."""
    return ", ".join(f"{spec.name} {spec.default_model}" for spec in DATASETS.values())


def check_signal_options(cfg: RunConfig) -> None:
    """UsageError for options that only images have (crop/flip, resizing, the small stem, ImageNet statistics),
    given for a data set of 1-D signals; the message says how to undo what a protocol preset set."""
    options = {
        f"--augment {cfg.augment}": (cfg.augment != "none", "--augment none"),
        f"--image-size {cfg.image_size}": (cfg.image_size is not None, None),
        f"--stem {cfg.stem}": (cfg.stem != "imagenet", "--stem imagenet"),
        "--normalize imagenet": (cfg.normalize == "imagenet", "--normalize dataset"),
    }
    given = {text: undo for text, (on, undo) in options.items() if on}  # what undoes each (None: only the protocol)
    if not given:
        return
    undo = [u for u in given.values() if u is not None]
    if cfg.protocol is None:
        fix = "leave them out"
    elif len(undo) < len(given):
        fix = f"drop --protocol {cfg.protocol}"
    else:
        fix = f"add {' '.join(undo)} or drop --protocol {cfg.protocol}"
    preset = f" (set by --protocol {cfg.protocol})" if cfg.protocol else ""
    raise UsageError(f"{cfg.dataset} holds 1-D signals, and {', '.join(given)}{preset} apply to images only; {fix}")


def load_dataset(cfg: RunConfig, device: torch.device | str = "cpu") -> DataSplits:
    """Read ``cfg.dataset``, hold out the validation split, reshape the training split, and set up the transforms
    the config asks for.

    Unknown names list the valid ones. With ``cfg.data_on_device``, in-memory splits move to ``device``.
    """
    spec = dataset_spec(cfg.dataset)
    if spec.dims == 1:
        check_signal_options(cfg)
    raw = spec.read(cfg.data_dir, cfg.download, **{keyword: getattr(cfg, name) for keyword, name in spec.options})
    train, val = hold_out(raw.train, cfg.val_fraction)
    train, relabelled = reshape_train(train, cfg, raw.num_classes)  # after the validation split: val stays clean
    test = raw.test
    if cfg.data_on_device:

        def moved(d: SizedDataset) -> SizedDataset:
            return d.to(device) if isinstance(d, InMemoryDataset) else d

        train, test, val = moved(train), moved(test), None if val is None else moved(val)
    mean, std = normalisation(cfg.normalize, raw.mean, raw.std, raw.in_channels)
    size = cfg.image_size or raw.image_size
    return DataSplits(
        train=train,
        val=val,
        test=test,
        num_classes=raw.num_classes,
        in_channels=raw.in_channels,
        image_size=size,
        train_transform=BatchTransform(mean, std, cfg.image_size, crop_flip=cfg.augment == "crop_flip"),
        eval_transform=BatchTransform(mean, std, cfg.image_size),
        relabelled=relabelled,
    )
