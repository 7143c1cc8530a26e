"""Networks by name: a registry of builders, all trained from scratch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hardbatch.errors import UsageError

STEMS = ("imagenet", "small")  # "small": stride-1 first convolution and no max-pool, for 32-px images

Builder = Callable[[int, int], nn.Module]  # (num_classes, in_channels) -> model
MODELS: dict[str, Builder] = {}
# What each model takes: "image" batches (B, C, H, W) or "signal" batches (B, C, L) of 1-D data.
INPUTS = {"image": ("images", "(C, H, W)", 4), "signal": ("1-D signals", "(C, L)", 3)}
MODEL_INPUTS: dict[str, str] = {}


def register_model(name: str, inputs: str = "image") -> Callable[[Builder], Builder]:
    """Decorator adding a builder to MODELS, for inputs of kind ``inputs`` (a key of INPUTS); refuses duplicate
    names."""

    def add(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = builder
        MODEL_INPUTS[name] = inputs
        return builder

    return add


def models_for(inputs: str) -> list[str]:
    """The registered models that take inputs of kind ``inputs``, in registration order."""
    return [name for name, kind in MODEL_INPUTS.items() if kind == inputs]


def _input_check(name: str) -> Callable:
    """A forward pre-hook: UsageError naming the model, the shape of one sample and the models that take it, for a
    batch of another number of dimensions than the model's kind of input (a 2-D network fed 1-D signals, ...)."""
    what, shape, dims = INPUTS[MODEL_INPUTS[name]]

    def check(module: nn.Module, args: tuple) -> None:
        x = args[0]
        if x.dim() != dims:
            other = next((kind for kind, (*_, d) in INPUTS.items() if d == x.dim()), None)
            fits = f"models for that shape: {', '.join(models_for(other))}" if other else "no model takes that shape"
            raise UsageError(f"model {name!r} takes {what} {shape}, not samples of shape {tuple(x.shape[1:])}; {fits}")

    return check


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
    if stem == "small" and MODEL_INPUTS[name] != "image":
        raise UsageError(f"stem 'small' adapts image networks; model {name!r} takes {INPUTS[MODEL_INPUTS[name]][0]}")
    model = MODELS[name](num_classes, in_channels)
    model.register_forward_pre_hook(_input_check(name))  # state_dict and initial weights stay as they were
    return _small_stem(model) if stem == "small" else model


@register_model("lenet")
def lenet(num_classes: int, in_channels: int) -> nn.Module:
    """LeNet-5 (6 and 16 5x5 convolutions, 120 and 84 hidden units) with ReLU and max-pooling: a 2-conv CNN like
    the Fashion-MNIST benchmark's baselines, fast enough on a CPU for many-seed evidence runs on 28-px images.
    Adaptive pooling makes it accept any image size >= 16 px."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * 16, 120),
        nn.ReLU(inplace=True),
        nn.Linear(120, 84),
        nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


def _small_stem(model: nn.Module) -> nn.Module:
    """Stride 1 for the first convolution and no ResNet max-pool; a model without a convolution (``mlp``) has no
    stem to change and is returned as it is."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        first.stride = (1, 1)
    if hasattr(model, "maxpool"):
        model.maxpool = nn.Identity()
    return model


@register_model("mlp")
def mlp(num_classes: int, in_channels: int) -> nn.Module:
    """One hidden layer of 64 on the image pooled to 8x8, no BatchNorm and no dropout: every sample's gradient depends
    on that sample only, so training split over processes matches one process to float rounding (the DDP tests)."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(8),
        nn.Flatten(),
        nn.Linear(in_channels * 64, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, num_classes),
    )


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


MNIST1D_LENGTH = 40  # the MNIST-1D signal length the 1-D models are sized for; other lengths are pooled to it


@register_model("cnn1d", inputs="signal")
def cnn1d(num_classes: int, in_channels: int) -> nn.Module:
    """The MNIST-1D benchmark's CNN (``ConvBase`` of github.com/greydanus/mnist1d, ~94% test top-1 reported): three
    ReLU 1-D convolutions of 25 channels (kernel 5 then 3, 3; stride 2, padding 1) taking length 40 to 19, 10, 5,
    and a linear layer on the 125 features; 5,210 parameters for 1 channel and 10 classes. The length-5 map is
    pooled to 5, so other signal lengths fit too (at 40 the pooling changes nothing)."""
    return nn.Sequential(
        nn.Conv1d(in_channels, 25, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(5),
        nn.Flatten(),
        nn.Linear(25 * 5, num_classes),
    )


class ResidualMLP(nn.Module):
    """The MNIST-1D benchmark's MLP (``MLPBase``, ~68% reported): h = relu(W1 x); h = h + relu(W2 h); logits W3 h."""

    def __init__(self, num_inputs: int, num_classes: int, hidden: int = 100):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(num_inputs, hidden), nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, L) signals; returns (B, classes) logits."""
        h = self.linear1(F.adaptive_avg_pool1d(x, MNIST1D_LENGTH).flatten(1)).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


@register_model("mlp1d", inputs="signal")
def mlp1d(num_classes: int, in_channels: int) -> nn.Module:
    """``ResidualMLP`` with 100 hidden units on the signal pooled to length 40 (MNIST-1D's own length, unchanged);
    15,210 parameters for 1 channel and 10 classes."""
    return ResidualMLP(in_channels * MNIST1D_LENGTH, num_classes)


def _set_in_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the first convolution so the model accepts ``in_channels`` input planes."""
    if in_channels == 3:
        return model
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                geometry: dict[str, Any] = dict(
                    kernel_size=child.kernel_size, stride=child.stride, padding=child.padding, dilation=child.dilation
                )
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    **geometry,
                    groups=child.groups if child.groups == 1 else in_channels,
                    bias=child.bias is not None,
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
