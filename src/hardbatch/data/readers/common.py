"""What every data-set reader shares: the RawData it returns, normalisation statistics, finding and fetching its
files, and the one-line errors for missing files, unreadable files and missing optional packages."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from hardbatch.data.memory import InMemoryDataset, SizedDataset
from hardbatch.errors import MissingExtra, UsageError

EXTRA = "cli"  # the extra that installs every reader's optional packages: pip install 'hardbatch[cli]'


@dataclass
class RawData:
    """What a data-set reader returns: splits with images uint8 or in [0, 1], and per-channel statistics."""

    train: SizedDataset
    test: SizedDataset
    num_classes: int
    in_channels: int
    image_size: int  # native side length (a 1-D signal's length)
    mean: Sequence[float]
    std: Sequence[float]


def optional_import(module: str, what: str, package: str) -> ModuleType:
    """``module``, imported; a MissingExtra naming the ``pip install`` that adds ``package`` when it is not installed.

    ``what`` is the data set (or the use of it) that needs it, as the message says: "the digits data set needs
    scikit-learn: pip install 'hardbatch[cli]'". A missing module other than ``module``'s own package (a broken
    install of it) propagates as it is.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtra(what, package, EXTRA) from None


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W) in [0, 1] units, from a histogram per
    channel."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        p = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        p /= p.sum()
        mean = (p * values).sum()
        means.append(mean.item())
        stds.append((p * (values - mean) ** 2).sum().sqrt().item())
    return tuple(means), tuple(stds)


def value_stats(x: torch.Tensor) -> tuple[tuple[float], tuple[float]]:
    """Mean and (sample) std over every value of float data of one channel (images (N, 1, H, W), signals (N, 1, L)),
    as 1-tuples."""
    return (x.mean().item(),), (x.std().item(),)


def in_memory_raw(train: InMemoryDataset, test: InMemoryDataset, num_classes: int) -> RawData:
    """RawData of two in-memory splits of uint8 images (N, C, H, W), normalised by the train split's
    ``channel_stats``."""
    mean, std = channel_stats(train.images)
    return RawData(
        train,
        test,
        num_classes,
        in_channels=train.images.shape[1],
        image_size=train.images.shape[-1],
        mean=mean,
        std=std,
    )


def data_dir(root: str | Path | None, name: str, holds: str) -> Path:
    """``root`` (``--data-dir``) as a Path; a UsageError saying what it must hold when it was not given."""
    if root is None:
        raise UsageError(f"{name} needs --data-dir: the folder that holds {holds}")
    return Path(root)


def fetch(name: str, root: str | Path, get: Callable[[str], object], instead: str) -> None:
    """``get(root)``: a torchvision data-set class called with download=True, which fetches the archive, checks its
    md5 and extracts it. A failed download is a UsageError naming it and what to do ``instead``."""
    try:
        get(str(root))
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on bad md5
        raise UsageError(f"{name} download into {str(root)!r} failed ({e}); {instead}") from None


def torchvision_datasets(name: str) -> ModuleType:
    """``torchvision.datasets``, which fetches the archives of ``--download``; MissingExtra without torchvision."""
    return optional_import("torchvision", f"{name} --download", "torchvision").datasets


def find_files(
    root: str | Path | None,
    download: bool,
    name: str,
    folder: str,
    files: list[str],
    listing: str,
    archive: str,
    home: str,
    get: Callable[[str], object],
) -> Path:
    """``root/folder``, checked to hold ``files``; if some are missing and ``download``, ``get(root)`` fetches them
    (see ``fetch``). Missing files without --download, or a failed download, raise UsageError."""
    root = data_dir(root, name, f"{folder}/ ({listing}), or where --download should put it")
    base = root / folder
    how = f"get {archive} from {home} and extract it into {str(root)!r}"
    if download and not all((base / f).is_file() for f in files):
        fetch(name, root, get, how)
    if not all((base / f).is_file() for f in files):
        raise UsageError(f"{name} not found in {str(root)!r}: expected {base}/ ({listing}); pass --download or {how}")
    return base


def unreadable(path: Path, error: Exception) -> UsageError:
    """The UsageError for a data file that exists but cannot be read as its format."""
    return UsageError(
        f"cannot read {path} ({type(error).__name__}: {error}); extract the archive again or delete it "
        f"and pass --download"
    )
