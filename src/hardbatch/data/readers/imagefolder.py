"""Your own images in class folders (train/<class>/, test/<class>/), decoded per sample and checked before a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hardbatch.data.readers.common import RawData, channel_stats, data_dir, optional_import
from hardbatch.errors import UsageError

IMAGEFOLDER_SIZE = 64  # side length of imagefolder images when no --image-size is given
STATS_IMAGES = 1_000  # imagefolder mean/std come from this many train images at most


def check_images(paths: Sequence[str]) -> None:
    """UsageError naming the first file that PIL cannot identify or whose data fails ``verify()``.

    Reads every file once, without decoding pixels (about a millisecond per image), so a damaged image stops the
    run before training, not in a loader worker in the middle of an epoch.
    """
    image_module = optional_import("PIL.Image", "the imagefolder data set", "Pillow")

    for path in paths:
        try:
            with image_module.open(path) as image:
                image.verify()
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for damaged files
            raise UsageError(
                f"imagefolder: cannot read image {path} ({e or type(e).__name__}); replace or remove it"
            ) from None


def read_imagefolder(root: str | Path | None, download: bool = False, image_size: int | None = None) -> RawData:
    """Your own images in ``root`` (required): train/<class>/<image> and test/<class>/<image>, or val/ when there is
    no test/.

    Decoded per sample, not held in memory: each image is converted to RGB and stretched to a square of side
    ``image_size`` (IMAGEFOLDER_SIZE = 64 when None) so batches collate; a sample is (uint8 (3, S, S), label).
    Classes are the sorted folder names, at least 2, and must be the same in both splits. Every image is checked
    to be readable first (``check_images``). Mean/std are estimated from at most STATS_IMAGES train images, evenly
    spaced in file order. Needs torchvision (MissingExtra without it).
    """
    torchvision = optional_import("torchvision", "the imagefolder data set", "torchvision")
    datasets, transforms = torchvision.datasets, torchvision.transforms

    root = data_dir(root, "imagefolder", "train/<class>/<image> and test/<class>/<image>")
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    layout = f"expected {root / 'train'}/<class>/<image> and {root / 'test'}/<class>/<image> (or val/ instead of test/)"
    if not (root / "train").is_dir() or not test_dir.is_dir():
        raise UsageError(f"imagefolder not found in {str(root)!r}: {layout}")
    size = image_size or IMAGEFOLDER_SIZE
    to_tensor = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])

    def split(folder: Path) -> Any:  # torchvision ImageFolder
        try:
            return datasets.ImageFolder(str(folder), transform=to_tensor)
        except FileNotFoundError as e:  # no class folders, or a class folder without images: name the split's folder
            raise UsageError(f"imagefolder: {folder.name}/ split ({folder}): {e}; {layout}") from None

    train, test = split(root / "train"), split(test_dir)
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise UsageError(
            f"imagefolder: train/ and {test_dir.name}/ need the same class folders; only in train/: "
            f"{', '.join(only_train) or '-'}; only in {test_dir.name}/: {', '.join(only_test) or '-'}"
        )
    if len(train.classes) < 2:
        raise UsageError(
            f"imagefolder: {root / 'train'} has {len(train.classes)} class folder "
            f"({', '.join(train.classes)}); classification needs at least 2, one folder per class"
        )
    check_images([path for d in (train, test) for path, _ in d.samples])
    picks = torch.linspace(0, len(train) - 1, min(len(train), STATS_IMAGES)).round().long()
    mean, std = channel_stats(torch.stack([train[i][0] for i in picks.tolist()]))
    return RawData(train, test, num_classes=len(train.classes), in_channels=3, image_size=size, mean=mean, std=std)
