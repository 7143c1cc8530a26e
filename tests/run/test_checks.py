"""hardbatch.run.checks: a run's configuration checked and resolved once (``prepare``), before anything is written:
the registries' names, the machine, what the data allows (``check_fits``), and a run folder's saved settings."""

from __future__ import annotations

import pytest
import torch

from hardbatch.config import RUNTIME_KEYS, RunConfig
from hardbatch.data import load_dataset
from hardbatch.errors import UsageError
from hardbatch.policies import defaults
from hardbatch.records import RunDir
from hardbatch.run.checks import (
    check_fits,
    check_same_settings,
    differing_settings,
    prepare,
    resolve,
    resume_config,
    settings,
)
from hardbatch.run.experiment import train_run

CPU = torch.device("cpu")


def test_prepare_checks_then_resolves_everything_config_json_will_say():
    cfg, device = prepare(RunConfig(policy="infobatch", params={"prune_ratio": 0.3}, device="cpu"))
    assert device == CPU
    assert (cfg.model, cfg.precision, cfg.channels_last, cfg.shuffle_partition) == ("small_cnn", "fp32", False, True)
    assert cfg.params == {**defaults("infobatch"), "prune_ratio": 0.3}
    assert prepare(cfg) == (cfg, device)  # resolving a resolved configuration changes nothing


def test_auto_precision_and_channels_last_follow_the_device():
    cfg = resolve(RunConfig(), CPU)
    assert (cfg.precision, cfg.channels_last) == ("fp32", False)
    cfg = resolve(RunConfig(), torch.device("cuda"))
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)
    given = resolve(RunConfig(precision="bf16", channels_last=True, model="mlp"), CPU)
    assert (given.precision, given.channels_last, given.model) == ("bf16", True, "mlp")


@pytest.mark.parametrize(
    "values, words",
    [
        ({"dataset": "nope"}, "unknown dataset 'nope'; valid: digits, "),
        ({"model": "resnet19"}, "unknown model 'resnet19'; valid: "),
        ({"policy": "rho-loss", "val_fraction": 0.2, "params": {"il_model": "resnet19"}}, "unknown model 'resnet19'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"compile": "nope"}, "unknown --compile backend 'nope'; valid: "),
        ({"sync_bn": True}, "--sync-bn needs CUDA devices"),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ],
)
def test_prepare_refuses_what_no_run_can_use(values, words):
    with pytest.raises(UsageError) as error:
        prepare(RunConfig(**values))
    assert words in str(error.value)


def test_a_network_that_does_not_take_the_images_is_refused_before_anything_is_written(tmp_path):
    data = load_dataset(prepare(RunConfig())[0], CPU)
    with pytest.raises(UsageError) as error:
        check_fits(prepare(RunConfig(model="lenet"))[0], data)
    message = str(error.value)
    assert all(word in message for word in ("'lenet'", "1x8x8", "digits", "--image-size 16 or larger")), message
    out = tmp_path / "run"
    with pytest.raises(UsageError, match="--image-size 16 or larger"):
        train_run(RunConfig(model="lenet", epochs=1), out, progress=False)
    assert not out.exists()
    # the corrected run goes through: no leftover blocks it
    train_run(RunConfig(model="lenet", image_size=16, epochs=1, train_subset=100), out, progress=False)
    assert RunDir(out).finished


def test_differing_settings_name_a_policy_s_hyper_parameters_by_their_own_names_and_skip_runtime_ones():
    base = RunConfig(params={"delta": 0.5})
    assert differing_settings(base, base.replace(params={"delta": 0.25})) == ["delta"]
    assert differing_settings(base, RunConfig(params={"delta": 0.5, "rescore": None})) == []  # a default, given
    assert differing_settings(base, base.replace(epochs=3, seed=1)) == ["epochs", "seed"]
    assert differing_settings(RunConfig(), RunConfig(sync_bn=True)) == ["sync_bn"]  # it changes what DDP computes
    # another policy: the name, and each hyper-parameter one of them holds (rescore is unset in both)
    assert sorted(differing_settings(base, RunConfig(policy="infobatch"))) == sorted(
        ["policy", *(k for k, v in defaults("hardbatch").items() if v is not None), *defaults("infobatch")]
    )
    runtime = dict(
        device="cuda",
        num_workers=3,
        data_dir="x",
        download=True,
        target_acc=0.9,
        compile="inductor",
        tensorboard="tb",
        checkpoint_every=0,
    )
    assert set(runtime) == set(RUNTIME_KEYS)
    assert differing_settings(base, base.replace(**runtime)) == []
    assert settings(base)["delta"] == 0.5 and "params" not in settings(base)


def test_a_folder_holding_other_settings_is_refused_naming_each_value(tmp_path):
    cfg = RunConfig(params={"delta": 0.5}, epochs=1, train_subset=100)
    train_run(cfg, tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    check_same_settings(run, prepare(cfg)[0])
    with pytest.raises(UsageError) as error:
        check_same_settings(run, prepare(cfg.replace(params={"delta": 1.0}, epochs=2))[0], hint="move it away")
    assert str(error.value) == (
        f"{run.path} holds a run with other settings: epochs saved 1 but given 2, delta saved "
        f"0.5 but given 1.0; move it away"
    )


def test_resume_takes_the_saved_settings_and_only_the_given_flags(tmp_path):
    out = tmp_path / "run"
    wanted = RunConfig(policy="infobatch", params={"anneal": 0.25}, epochs=4, lr=0.5)
    assert resume_config(out, wanted, ["epochs"]) is wanted  # nothing saved yet: the flags as given
    saved = RunConfig(policy="infobatch", params={"prune_ratio": 0.3}, epochs=1, train_subset=100)
    train_run(saved, out, progress=False)
    resumed = resume_config(out, wanted, ["epochs", "params"])
    assert (resumed.epochs, resumed.lr, resumed.train_subset) == (4, saved.lr, 100)  # lr was not given
    assert resumed.params == {**defaults("infobatch"), "prune_ratio": 0.3, "anneal": 0.25}
    assert resume_config(out, wanted, []) == RunDir(out).config()
