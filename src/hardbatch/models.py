"""Networks by name: a registry of builders, all trained from scratch."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from hardbatch.config import STEMS, UsageError

Builder = Callable[[int, int], nn.Module]  # (num_classes, in_channels) -> model
MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding a builder to MODELS; refuses duplicate names."""

    def add(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return add


def check_model_name(name: str) -> None:
    """UsageError listing the valid names, for a name not in the registry."""
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def create_model(name: str, num_classes: int, in_channels: int = 3, stem: str = "imagenet") -> nn.Module:
    """A randomly initialised model; unknown names list the valid ones.

    ``stem="small"`` adapts ImageNet networks to small (32-px) images: the first convolution gets
    stride 1 and ResNet's max-pool is removed, so the last feature map is 4x4 rather than 1x1.
    """
    check_model_name(name)
    if stem not in STEMS:
        raise UsageError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    model = MODELS[name](num_classes, in_channels)
    return _small_stem(model) if stem == "small" else model


@register_model("lenet")
def lenet(num_classes: int, in_channels: int) -> nn.Module:
    """LeNet-5 (6 and 16 5x5 convolutions, 120 and 84 hidden units) with ReLU and max-pooling: a 2-conv CNN like
    the Fashion-MNIST benchmark's baselines, fast enough on a CPU for many-seed evidence runs on 28-px images.
    Adaptive pooling makes it accept any image size >= 16 px."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(16 * 16, 120), nn.ReLU(inplace=True),
        nn.Linear(120, 84), nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


def _small_stem(model: nn.Module) -> nn.Module:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.stride = (1, 1)
    if hasattr(model, "maxpool"):
        model.maxpool = nn.Identity()
    return model


@register_model("mlp")
def mlp(num_classes: int, in_channels: int) -> nn.Module:
    """One hidden layer of 64 on the image pooled to 8x8, no BatchNorm and no dropout: every sample's gradient depends on
    that sample only, so training split over processes matches one process to float rounding (the DDP tests)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(in_channels * 64, 64), nn.ReLU(inplace=True),
                         nn.Linear(64, num_classes))


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head; a few seconds per run on ``digits`` on a CPU."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(in_channels, 32),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def _set_in_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the first convolution so the model accepts ``in_channels`` input planes."""
    if in_channels == 3:
        return model
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups if child.groups == 1 else in_channels,
                    child.bias is not None,
                )
                setattr(parent, child_name, new)
                return model
    raise ValueError("model has no convolution to adapt")


def _torchvision(arch: str) -> Builder:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        return _set_in_channels(model, in_channels)

    build.__doc__ = f"torchvision {arch}, random initialisation."
    return build


for _arch in ("resnet18", "resnet50", "efficientnet_b4", "efficientnet_v2_s", "mobilenet_v3_small"):
    register_model(_arch)(_torchvision(_arch))


def build_seeded(name: str, num_classes: int, in_channels: int, seed: int, stem: str = "imagenet") -> nn.Module:
    """Build a model whose initial weights depend only on ``seed``, leaving the global RNG untouched.

    Only the CPU generator is seeded (and restored): models are built on the CPU, and ``torch.manual_seed``
    would also reseed every CUDA generator, which ``fork_rng(devices=[])`` does not restore.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return create_model(name, num_classes, in_channels, stem)
