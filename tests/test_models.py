"""The model registry: names, errors, and the paper's five networks at 32 and 128 px on 10 and 100 classes."""

import pytest
import torch
from torch import nn

from hardbatch.errors import UsageError
from hardbatch.models import MODELS, build_seeded, create_model, models_for, register_model

PAPER_NETWORKS = ["resnet18", "resnet50", "efficientnet_b4", "efficientnet_v2_s", "mobilenet_v3_small"]


def test_registry_holds_the_papers_networks_and_a_small_cnn():
    assert set(PAPER_NETWORKS) | {"small_cnn"} <= set(MODELS)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UsageError) as error:
        create_model("resnet19", 10)
    message = str(error.value)
    assert "resnet19" in message and all(name in message for name in PAPER_NETWORKS)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18")(lambda num_classes, in_channels: nn.Identity())


@pytest.mark.parametrize("name", PAPER_NETWORKS)
@pytest.mark.parametrize("size, classes, stem", [(32, 10, "small"), (32, 100, "imagenet"), (128, 100, "imagenet")])
def test_paper_networks_give_logits_for_each_resolution_and_class_count(name, size, classes, stem):
    model = create_model(name, classes, 3, stem).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_small_stem_keeps_more_resolution():
    base, small = create_model("resnet18", 10).eval(), create_model("resnet18", 10, stem="small").eval()
    x = torch.randn(1, 3, 32, 32)

    def feature(m: nn.Module) -> int:  # the width of the map before pooling
        return nn.Sequential(*list(m.children())[:-2])(x).shape[-1]

    assert feature(base) == 1 and feature(small) == 4


def test_grey_images_get_a_one_channel_first_convolution():
    model = create_model("resnet18", 10, in_channels=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_initial_weights_depend_only_on_the_seed():
    state = torch.get_rng_state()
    a, b, c = (build_seeded("small_cnn", 10, 1, s) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state), "building a model must not move the global RNG"
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_build_seeded_reseeds_no_cuda_generator_and_keeps_cpu_weights(monkeypatch):
    """torch.manual_seed would also reseed every CUDA generator, which fork_rng(devices=[]) does not restore."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)  # the weights build_seeded gave before: they must not change
        reference = create_model("small_cnn", 10, 1)

    def touched(*args, **kwargs):
        raise AssertionError("build_seeded reseeded the CUDA generators")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", touched)
    monkeypatch.setattr(torch.cuda, "manual_seed", touched)
    state = torch.get_rng_state()
    model = build_seeded("small_cnn", 10, 1, 11)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_lenet_is_lenet5_and_takes_any_size_from_16_px(size):
    model = create_model("lenet", 10, in_channels=1)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [6, 16] and all(c.kernel_size == (5, 5) for c in convs)
    assert [layer.out_features for layer in linears] == [120, 84, 10]
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_the_1d_models_are_the_mnist1d_benchmarks_networks():
    """cnn1d is ConvBase (25 channels, kernels 5, 3, 3, stride 2, padding 1; 5,210 parameters), mlp1d is MLPBase
    (100 hidden units with a residual second layer; 15,210 parameters), for 1 channel and 10 classes."""
    cnn, mlp = create_model("cnn1d", 10, 1), create_model("mlp1d", 10, 1)
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (25, (5,), (2,), (1,)),
        (25, (3,), (2,), (1,)),
        (25, (3,), (2,), (1,)),
    ]
    assert [m.in_features for m in cnn.modules() if isinstance(m, nn.Linear)] == [125]
    assert sum(p.numel() for p in cnn.parameters()) == 5210 and sum(p.numel() for p in mlp.parameters()) == 15210
    x = torch.randn(3, 1, 40)
    h = mlp.linear1(x.flatten(1)).relu()
    assert torch.allclose(mlp(x), mlp.linear3(h + mlp.linear2(h).relu()))
    for model in (cnn, mlp):
        assert model(x).shape == (3, 10) and model(torch.randn(3, 1, 64)).shape == (3, 10)


@pytest.mark.parametrize(
    "name, x, words",
    [
        ("small_cnn", torch.randn(2, 1, 40), ["'small_cnn'", "(1, 40)", "cnn1d, mlp1d"]),
        ("cnn1d", torch.randn(2, 3, 32, 32), ["'cnn1d'", "(3, 32, 32)", "small_cnn", "resnet18"]),
        ("mlp1d", torch.randn(2, 8), ["'mlp1d'", "(8,)", "no model takes that shape"]),
    ],
)
def test_a_model_fed_another_kind_of_input_says_which_models_take_it(name, x, words):
    with pytest.raises(UsageError) as error:
        create_model(name, 10, x.shape[1] if x.dim() > 2 else 1)(x)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_the_small_stem_is_refused_for_1d_models():
    with pytest.raises(UsageError, match="stem 'small' adapts image networks; model 'cnn1d' takes 1-D signals"):
        create_model("cnn1d", 10, 1, stem="small")


@pytest.mark.parametrize("name", models_for("image"))
@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_every_image_network_builds_with_every_stem(name, stem):
    """``--protocol modern`` sets the small stem for every image network; one without a convolution (mlp) keeps its
    own (the 1-D networks refuse it: test_the_small_stem_is_refused_for_1d_models)."""
    model = create_model(name, 10, 1, stem)
    assert isinstance(model, nn.Module)
