"""hardbatch.config: RunConfig's declarations, their one check (``config.check``) with the chosen policy's
hyper-parameters under ``params``, what the registry tells the config, ``make_config`` and the protocol presets."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest

from hardbatch.config import (
    DATA,
    DELTA_POLICIES,
    HARDWARE,
    OPTIMISATION,
    POLICY_AXES,
    POLICY_NAMES,
    PROTOCOLS,
    SELECTION,
    SPLIT,
    RunConfig,
    check,
    make_config,
    resolve_partition,
)
from hardbatch.errors import BadValue, UsageError
from hardbatch.params import check_value
from hardbatch.policies import POLICIES, defaults

# ---------------------------------------------------------------- the declarations


def test_every_setting_is_declared_with_help_and_a_help_group_or_has_no_flag():
    for f in fields(RunConfig):
        assert f.metadata["help"], f"{f.name} has no help"
        if f.metadata["cli"]:
            assert f.metadata["group"] in (DATA, SPLIT, SELECTION, OPTIMISATION, HARDWARE), f.name
    # params: the policy's own flags stand for it; protocol: --protocol sets the presets and names itself.
    assert [f.name for f in fields(RunConfig) if not f.metadata["cli"]] == ["params", "protocol"]


def test_every_default_is_a_value_its_declaration_accepts():
    for f in fields(RunConfig):
        value = getattr(RunConfig(), f.name)
        assert check_value(f, value) == value, f.name
    check(RunConfig())


# Each bad value: the one-line message naming the keyword (the library's), and what --help's flag says (the CLI's).
BAD = [
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),  # a bool is no count here
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0, got -1.0"),
    ({"seed": -1}, "seed must be an integer in [0, 2147483647], got -1"),
    ({"seed": 2**31}, "seed must be an integer in [0, 2147483647], got 2147483648"),
    ({"label_noise": 1.0}, "label_noise must be in [0, 1), got 1.0"),
    ({"eval_mode": "nope"}, "eval_mode must be one of eval, train, got 'nope' (str)"),
    ({"nesterov": "yes"}, "nesterov must be true or false, got 'yes' (str)"),
    ({"image_size": 12.5}, "image_size must be an integer >= 8 (or unset), got 12.5"),
    ({"params": {"delta": 0.0}}, "HardBatch: delta must be in (0, 1], got 0.0"),
    ({"params": {"delta": "0.5"}}, "HardBatch: delta must be in (0, 1], got '0.5' (str)"),
    ({"policy": "infobatch", "params": {"prune_ratio": 1.5}}, "InfoBatch: prune_ratio must be in [0, 1), got 1.5"),
]


@pytest.mark.parametrize("values, text", BAD, ids=[text.split(" must")[0] for _, text in BAD])
def test_a_bad_value_is_one_line_naming_the_keyword_and_as_a_flag_the_flag(values, text):
    with pytest.raises(BadValue) as error:
        check(RunConfig(**values))
    assert str(error.value) == text
    name = error.value.name
    flag_text = text.split(": ", 1)[1] if text[0].isupper() else text  # the command line drops the policy's class
    assert error.value.as_flag() == flag_text.replace(f"{name} must", f"--{name.replace('_', '-')} must")


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    """As a user's numpy loop hands them; config.json must be able to hold them (issue 27 item 14)."""
    cfg = RunConfig(
        policy="seta",
        params={"groups": np.int64(3), "window": np.float32(0.5)},
        batch_size=np.int64(64),
        lr=np.float64(0.05),
    )
    check(cfg)
    assert (cfg.batch_size, cfg.lr, cfg.params) == (64, 0.05, {"groups": 3, "window": 0.5})
    assert [type(v) for v in (cfg.batch_size, cfg.lr, cfg.params["groups"], cfg.params["window"])] == [
        int,
        float,
        int,
        float,
    ]
    json.dumps(cfg.to_dict())


# ---------------------------------------------------------------- the policy and its hyper-parameters


def test_a_policy_name_or_hyper_parameter_it_does_not_take_lists_the_valid_ones():
    with pytest.raises(UsageError, match=f"unknown policy 'nope'; valid: {', '.join(POLICIES)}$"):
        check(RunConfig(policy="nope"))
    with pytest.raises(UsageError) as error:
        check(RunConfig(params={"prune_ratio": 0.5}))
    takers = ", ".join(name for name, cls in POLICIES.items() if cls.takes("prune_ratio"))  # infobatch, ...
    assert str(error.value) == (
        "policy 'hardbatch' does not take prune_ratio; it takes: delta, rescore, repartition, "
        f"trim_top, mix; policies that take prune_ratio: {takers}"
    )
    with pytest.raises(UsageError, match="policy 'uniform' does not take delta; it takes: no hyper-parameters"):
        check(RunConfig(policy="uniform", params={"delta": 0.5}))


def test_policy_params_are_complete_and_delta_is_the_delta_policies_own():
    for name in POLICIES:
        assert RunConfig(policy=name).policy_params() == defaults(name)
    cfg = RunConfig(policy="infobatch", params={"prune_ratio": 0.3})
    assert cfg.policy_params() == {**defaults("infobatch"), "prune_ratio": 0.3}
    assert cfg.params == {"prune_ratio": 0.3}  # stored as given; resolving completes it (run/checks.py)
    assert (RunConfig().delta, RunConfig(params={"delta": 0.5}).delta, cfg.delta) == (1.0, 0.5, 1.0)
    with pytest.raises(AttributeError):
        RunConfig().delta = 0.5  # read-only: params["delta"] is the one place


def test_what_a_policy_requires_of_the_run_is_checked_for_any_policy(monkeypatch):
    with pytest.raises(UsageError) as error:
        check(RunConfig(policy="rho-loss"))
    assert str(error.value) == (
        "policy 'rho-loss' trains its irreducible-loss model on the validation split: set val_fraction (e.g. 0.1)"
    )  # the keyword from the library, the flag on the command line
    assert error.value.as_flag().endswith("validation split: set --val-fraction (e.g. 0.1)")
    check(RunConfig(policy="rho-loss", val_fraction=0.2))
    # any policy's declaration is read, not a list of known ones
    monkeypatch.setattr(POLICIES["uniform"], "requires", {"epochs": (lambda e: e >= 3, "needs three epochs")})
    with pytest.raises(UsageError, match=r"^policy 'uniform' needs three epochs$"):
        check(RunConfig(policy="uniform", epochs=2))


def test_the_registry_names_the_policies_those_with_delta_and_each_axis():
    assert tuple(POLICIES) == POLICY_NAMES
    assert DELTA_POLICIES == ("hardbatch", "random", "cyclic")
    assert {name: cls.axis for name, cls in POLICIES.items() if cls.axis is not None} == POLICY_AXES
    assert all(cls.takes(axis) for name, axis in POLICY_AXES.items() for cls in [POLICIES[name]])


# ---------------------------------------------------------------- settings across fields, saved dicts, the budget


def test_mnist1d_samples_applies_to_mnist1d_only_and_is_a_multiple_of_ten():
    with pytest.raises(UsageError, match="mnist1d_samples applies to dataset mnist1d only, not 'digits'") as error:
        check(RunConfig(mnist1d_samples=100))
    assert error.value.as_flag() == "--mnist1d-samples applies to dataset mnist1d only, not 'digits'"
    with pytest.raises(UsageError, match=r"mnist1d_samples must be a multiple of 10 .* got 15"):
        check(RunConfig(dataset="mnist1d", mnist1d_samples=15))
    check(RunConfig(dataset="mnist1d", mnist1d_samples=100))


def test_a_saved_dict_round_trips_and_unknown_or_older_layouts_are_refused():
    cfg = RunConfig(policy="infobatch", params={"prune_ratio": 0.3}, epochs=3, seed=2)
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(UsageError, match=r"^unknown setting 'delta'; valid: augment, batch_size, "):  # δ at the top
        RunConfig.from_dict({**cfg.to_dict(), "delta": 0.5})
    with pytest.raises(UsageError, match="a run configuration is a dict of settings, got list"):
        RunConfig.from_dict([1])
    with pytest.raises(BadValue, match="epochs must be an integer >= 1, got 0"):  # checked as it is built
        RunConfig.from_dict({**cfg.to_dict(), "epochs": 0})


@pytest.mark.parametrize("budget, epochs, trained", [(1.0, 3, 3), (0.5, 3, 2), (0.25, 10, 3), (0.1, 3, 1)])
def test_a_budget_trains_its_fraction_of_the_epochs_rounded_half_up_and_at_least_one(budget, epochs, trained):
    assert RunConfig(budget=budget, epochs=epochs).trained_epochs == trained


# ---------------------------------------------------------------- protocols


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_protocol_presets_resolve_and_flags_override(name):
    cfg = make_config(name)
    assert cfg.protocol == name
    for key, value in PROTOCOLS[name].items():
        assert getattr(cfg, key) == value
    assert make_config(name, lr=0.123, batch_size=7).lr == 0.123
    assert make_config(name, lr=0.123, batch_size=7).batch_size == 7
    check(cfg)


def test_paper_protocol_matches_the_released_code():
    cfg = make_config("paper", dataset="cifar10")
    assert (cfg.image_size, cfg.normalize, cfg.augment) == (128, "imagenet", "none")
    assert resolve_partition(cfg).shuffle_partition is False  # the released code's batch order, for CIFAR
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.schedule) == (0.005, 0.9, 0.0, False, "constant")
    assert (cfg.batch_size, cfg.epochs) == (512, 100)


def test_modern_protocol_is_the_strong_recipe():
    cfg = make_config("modern")
    assert (cfg.augment, cfg.shuffle_partition, cfg.nesterov, cfg.weight_decay, cfg.schedule) == (
        "crop_flip",
        True,
        True,
        5e-4,
        "cosine",
    )
    assert (cfg.batch_size, cfg.eval_mode) == (128, "eval")


def test_unknown_protocol_is_a_usage_error():
    with pytest.raises(UsageError, match="valid: paper, modern"):
        make_config("fast")
    with pytest.raises(UsageError, match="unknown protocol 'fast'; valid: paper, modern"):
        check(RunConfig(protocol="fast"))


@pytest.mark.parametrize(
    "protocol, dataset, shuffled",
    [
        ("paper", "cifar10", False),
        ("paper", "stl10", False),
        ("paper", "digits", True),
        (None, "cifar10", True),
        ("modern", "cifar10", True),
    ],
)
def test_an_auto_partition_keeps_the_file_order_only_for_the_papers_data_sets(protocol, dataset, shuffled):
    cfg = make_config(protocol, dataset=dataset, shuffle_partition=None)
    assert resolve_partition(cfg).shuffle_partition is shuffled
    assert resolve_partition(cfg.replace(shuffle_partition=not shuffled)).shuffle_partition is (not shuffled)
