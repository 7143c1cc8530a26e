"""MNIST-1D (Greydanus 2020), made offline by the mnist1d package's own generator and cached per argument set."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from hardbatch.data.memory import InMemoryDataset
from hardbatch.data.readers.common import RawData, optional_import, value_stats
from hardbatch.fileio import atomic_write_bytes

MNIST1D_CLASSES = 10
_NEEDS = ("the mnist1d data set", "mnist1d")  # what optional_import says when the package is missing


def mnist1d_arguments(samples: int | None = None) -> dict:
    """The MNIST-1D generator's arguments: the package's canonical ``get_dataset_args()`` (5,000 samples, length 40,
    seed 42), with ``num_samples`` set to ``samples`` (``--mnist1d-samples``) when given."""
    args = optional_import("mnist1d.data", *_NEEDS).get_dataset_args(as_dict=True)
    if samples is not None:
        args["num_samples"] = samples
    return args


def mnist1d_cache_file(root: str | Path | None, args: dict) -> Path:
    """Where the generated set for ``args`` is cached: ``root``/mnist1d/ (``--data-dir``), or the user's cache folder
    ($XDG_CACHE_HOME, else ~/.cache)/hardbatch/mnist1d/. The name hashes every generator argument and the mnist1d
    package's version, so other arguments or another generator never read this file."""
    from importlib.metadata import version

    if root is not None:
        folder = Path(root) / "mnist1d"
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hardbatch" / "mnist1d"
    key = json.dumps({"mnist1d": version("mnist1d"), "args": args}, sort_keys=True)
    return folder / f"mnist1d_{args['num_samples']}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    """The package's own generator (``mnist1d.data.make_dataset``) run on ``args``, offline: x (n, L) and x_test
    float32, y (n,) and y_test int64, split as the generator splits. The global numpy and ``random`` states it
    reseeds are restored after."""
    make_dataset = optional_import("mnist1d.data", *_NEEDS).make_dataset
    object_view = optional_import("mnist1d.utils", *_NEEDS).ObjectView

    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002 - the state it reseeds
    try:
        made = make_dataset(object_view(dict(args)))
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002 - given back as it was
        random.setstate(python_state)
    return {
        "x": made["x"].astype(np.float32),
        "y": made["y"].astype(np.int64),
        "x_test": made["x_test"].astype(np.float32),
        "y_test": made["y_test"].astype(np.int64),
    }


def _cached_mnist1d(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is missing or unreadable (then it is generated again)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def read_mnist1d(root: str | Path | None = None, download: bool = False, samples: int | None = None) -> RawData:
    """MNIST-1D (Greydanus 2020): 1-D signals of length 40 from 10 digit templates, made by the mnist1d package's
    generator with its canonical arguments (4,000 train / 1,000 test; ``samples`` for more), never downloaded
    (``download`` unused). Generated once (a few seconds per 5,000) and cached (``mnist1d_cache_file``), written
    atomically; a sample is (float32 (1, 40), label). Needs the mnist1d package (MissingExtra without it)."""
    args = mnist1d_arguments(samples)
    path = mnist1d_cache_file(root, args)
    arrays = _cached_mnist1d(path)
    if arrays is None:
        arrays = generate_mnist1d(args)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub reads the first keyword as allow_pickle
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as e:  # the data is in memory: a cache that cannot be written only costs time next run
            print(
                f"hardbatch: warning: cannot cache MNIST-1D in {path.parent} ({e}); it will be generated again",
                file=sys.stderr,
            )
    train, test = (
        InMemoryDataset(torch.from_numpy(arrays[x]).unsqueeze(1), torch.from_numpy(arrays[y]))
        for x, y in (("x", "y"), ("x_test", "y_test"))
    )
    mean, std = value_stats(train.images)
    return RawData(
        train, test, num_classes=MNIST1D_CLASSES, in_channels=1, image_size=train.images.shape[-1], mean=mean, std=std
    )
