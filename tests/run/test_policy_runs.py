"""Every policy as a run on disk (``train_run`` and the command line, on digits): cost counters against the trace,
equal cost at equal δ, exact resumes after an interruption or a SIGKILL, the irreducible-loss model of rho-loss, the
compare plan's folders and per-policy settings, and bad policy input refused in one line before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TIMING, required_settings, rows_of, run_cli

from hardbatch.config import DELTA_POLICIES, RunConfig, check
from hardbatch.errors import BadValue, UsageError
from hardbatch.params import flag
from hardbatch.policies import POLICIES
from hardbatch.run.experiment import train_run
from hardbatch.run.plan import SAME_AS_RULE_AT_ONE, plan_compare, run_name

# N = 320 // 32 = 10 batches, 3 epochs. δ = 0.3 (k = 3) ends epoch 2 at step 20, inside round 4; crop+flip and the
# cosine schedule bring in the augmentation generator and the scheduler, which a resume must restore too.
B, N, EPOCHS = 32, 10, 3
BASE = dict(
    dataset="digits", train_subset=320, batch_size=B, epochs=EPOCHS, augment="crop_flip", schedule="cosine", seed=1
)
# Hyper-parameters per policy (a policy missing here runs with its ``example``, and δ = 0.3 if it takes δ); with 3
# epochs and anneal 0.3 (⌊3 · 0.7⌋ = 2 pruning epochs) InfoBatch prunes in epoch 1 only (epoch 0 has no scores, epoch
# 2 is annealed).
SETTINGS = {"infobatch": dict(anneal=0.3), "selective-backprop": dict(beta=1.0)}
# What a policy needs of a run's other settings (its ``requires``, at conftest's values): rho-loss trains its
# irreducible-loss model on a validation split.
NEEDS = {name: required_settings(name) for name, cls in POLICIES.items() if cls.requires}
RUNS = {
    name: dict(
        policy=name,
        params={**({"delta": 0.3} if cls.takes("delta") else {}), **SETTINGS.get(name, cls.example)},
        **NEEDS.get(name, {}),
    )
    for name, cls in POLICIES.items()
}
RUNS["hardbatch+rescore"] = dict(policy="hardbatch", params=dict(delta=0.3, rescore=2))
RUNS["hardbatch+repartition"] = dict(policy="hardbatch", params=dict(delta=0.3, repartition=True))


def config(case: str) -> RunConfig:
    return RunConfig(**BASE, **RUNS[case])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """``straight(case)``: the uninterrupted run of a case, trained once per module."""
    root = tmp_path_factory.mktemp("straight")
    done: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in done:
            train_run(config(case), root / case, progress=False)
            done[case] = root / case
        return done[case]

    return get


def rows(path: Path, drop=TIMING) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in drop} for row in rows_of(path)]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_what_a_policy_requires_is_satisfied_by_those_settings_and_refused_without_them():
    assert NEEDS  # rho-loss at least
    for name, needs in NEEDS.items():
        check(config(name))  # they satisfy the requirement ...
        with pytest.raises(UsageError, match=f"policy {name!r} "):  # ... which is refused without them
            check(config(name).replace(**{k: RunConfig.__dataclass_fields__[k].default for k in needs}))


# ---- cost ---------------------------------------------------------------------------------------------------------


def test_the_delta_policies_spend_identical_cost_at_the_same_delta(straight):
    counted = ("optimizer_steps", "samples_loaded", "samples_forward", "samples_forward_nograd", "samples_backprop")
    costs = {p: {k: summary(straight(p))["cost"][k] for k in counted} for p in DELTA_POLICIES}
    # 3 epochs of N = 10 steps of B = 32, whichever batches each policy chose.
    expected = dict(
        optimizer_steps=30, samples_loaded=960, samples_forward=960, samples_forward_nograd=0, samples_backprop=960
    )
    assert all(cost == expected for cost in costs.values()), costs
    assert len({tuple(summary(straight(p))["batch_visits"]) for p in DELTA_POLICIES}) == 3  # but chose differently


@pytest.mark.parametrize("case", list(RUNS))
def test_cost_counters_add_up_and_agree_with_the_trace(straight, case):
    run = straight(case)
    history, trace, s = rows(run / "history.csv", ()), rows(run / "trace.csv", ()), summary(run)
    cost = s["cost"]

    def column(table: list[dict], name: str) -> list[float]:
        return [float(r[name]) for r in table]

    backprop = sum(column(history, "samples_backprop"))
    before = s.get("holdout_cost", {})  # spent before the first step (RHO-LOSS's IL model), counted in epoch 1
    policy = POLICIES[RUNS[case]["policy"]]
    assert ("irreducible_model" in s) == policy.holdout == bool(before)
    assert backprop == sum(column(trace, "samples")) + before.get("samples_backprop", 0)
    assert backprop == cost["samples_backprop"] == s["samples_backpropagated"]
    assert cost["samples_forward"] == cost["samples_backprop"]
    assert cost["optimizer_steps"] == len(trace) == int(history[-1]["step"]) == s["optimizer_steps"]
    assert [int(r["step"]) for r in trace] == list(range(1, len(trace) + 1))
    for name in ("samples_loaded", "samples_forward_nograd"):
        assert sum(column(history, name)) == cost[name]
    assert len(history) == EPOCHS
    sizes = column(trace, "samples")
    assert cost["samples_forward_nograd"] <= cost["samples_loaded"]
    if case == "selective-backprop":  # scores every loaded sample after the warm-up epoch, back-propagates the kept
        assert cost["samples_loaded"] == cost["optimizer_steps"] * B == EPOCHS * N * B  # B = 32: no batch skipped
        assert cost["samples_forward_nograd"] == (EPOCHS - 1) * N * B
        assert column(history, "samples_backprop")[0] == N * B  # the warm-up trains everything
    if policy.scores_first:  # chooses samples inside loaded batches: some are loaded and never back-propagated
        assert all(1 <= n <= B for n in sizes) and backprop < cost["samples_loaded"]
    elif case == "hardbatch+rescore":
        # Warm-up, rounds 1-6 of 3, round 7 cut to 2 (30 steps); K = 2 scores all N·B samples before rounds 2, 4, 6.
        assert cost["optimizer_steps"] == 30 and sizes == [B] * 30
        assert cost["samples_forward_nograd"] == 3 * N * B
        assert cost["samples_loaded"] == backprop + 3 * N * B
    elif policy.epoch_is_round:  # per-sample pruning (InfoBatch, SeTa, IES): whole batches, epochs of fewer steps
        assert sizes == [B] * len(trace) and cost["optimizer_steps"] <= EPOCHS * N
        if case == "infobatch":  # epoch 1 pruned, so fewer steps
            steps = [int(r["step"]) for r in history]
            assert steps[0] == N and steps[1] - steps[0] < N and steps[2] - steps[1] == N
    else:  # batch-level policies train whole batches and score nothing
        assert cost["samples_forward_nograd"] == 0 and cost["samples_loaded"] == backprop
        assert sizes == [B] * len(trace)
        assert cost["optimizer_steps"] == EPOCHS * N


@pytest.mark.parametrize("score_in_train_mode", [False, True])
def test_selective_backprop_with_beta_zero_trains_exactly_what_uniform_trains(tmp_path, score_in_train_mode):
    """β = 0 keeps every sample, and the scoring forward leaves no trace (BatchNorm statistics, RNG) in either mode,
    so one epoch equals uniform's step for step, test accuracy included (evaluation reads the BatchNorm running
    statistics). Without the warm-up epoch, that epoch is scored."""
    common = dict(BASE, epochs=1)
    params = dict(beta=0.0, warmup_epoch=False, score_in_train_mode=score_in_train_mode)
    train_run(RunConfig(**common, policy="selective-backprop", params=params), tmp_path / "sb", progress=False)
    train_run(RunConfig(**common, policy="uniform"), tmp_path / "uniform", progress=False)
    assert (tmp_path / "sb" / "trace.csv").read_text() == (tmp_path / "uniform" / "trace.csv").read_text()
    differ = (*TIMING, "samples_loaded", "samples_forward_nograd")
    assert rows(tmp_path / "sb" / "history.csv", differ) == rows(tmp_path / "uniform" / "history.csv", differ)
    assert summary(tmp_path / "sb")["cost"]["samples_forward_nograd"] == N * B


# ---- kill and resume ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(RUNS))
def test_interrupted_run_resumes_to_the_same_history_trace_and_cost(straight, case, tmp_path, interrupt):
    cfg = config(case)
    # Stop where the most state is in flight: inside a round (δ policies), after a pruned epoch (InfoBatch).
    epochs_done = 1 if POLICIES[cfg.policy].epoch_is_round else 2
    out = tmp_path / "run"
    interrupt(cfg, out, epochs_done)
    assert not (out / "summary.json").exists() and len(rows(out / "history.csv")) == epochs_done
    train_run(cfg, out, resume=True, progress=False)
    reference = straight(case)
    assert rows(out / "history.csv") == rows(reference / "history.csv")
    assert (out / "trace.csv").read_text() == (reference / "trace.csv").read_text()
    a, b = summary(out), summary(reference)
    assert {k: v for k, v in a["cost"].items() if k not in TIMING} == {
        k: v for k, v in b["cost"].items() if k not in TIMING
    }
    assert a["batch_visits"] == b["batch_visits"] and a["final_test_acc"] == b["final_test_acc"]
    assert a.get("irreducible_model") == b.get("irreducible_model")  # rho-loss: kept in the checkpoint
    assert not (out / "checkpoint.pt").exists()


def cli_flags(case: str) -> list[str]:
    values = {**BASE, **{k: v for k, v in RUNS[case].items() if k != "params"}, **RUNS[case]["params"]}
    flags = []
    for name, value in values.items():
        flags += [flag(name), str(value)] if not isinstance(value, bool) else [flag(name)] if value else []
    return [*flags, "--no-progress"]


@pytest.mark.slow
def test_sigkilled_selective_backprop_run_resumes_mid_epoch_to_the_same_records(straight, tmp_path, fork):
    """SIGKILL at step 15, in the middle of epoch 2 (steps 11-20); --resume goes on from the epoch-1 checkpoint."""
    from hardbatch.cli import main
    from hardbatch.sampler import HardBatchSampler

    case = "selective-backprop"
    out = tmp_path / "run"
    record = HardBatchSampler.record

    def record_then_die(self, *args, **kwargs):
        batch = record(self, *args, **kwargs)
        if self.steps == 15:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, as from the OOM killer
        return batch

    def train_until_killed():  # in the forked child only
        HardBatchSampler.record = record_then_die
        main(["train", *cli_flags(case), "--checkpoint-every", "0", "--out", str(out)])

    assert fork(train_until_killed).wait() == -9
    assert (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()
    assert len(rows(out / "history.csv")) == 1 and len(rows(out / "trace.csv")) == N
    assert main(["train", *cli_flags(case), "--out", str(out), "--resume"]) == 0
    reference = straight(case)
    assert rows(out / "history.csv") == rows(reference / "history.csv")
    assert (out / "trace.csv").read_text() == (reference / "trace.csv").read_text()
    assert summary(out)["batch_visits"] == summary(reference)["batch_visits"]


# ---- rho-loss's irreducible-loss model ------------------------------------------------------------------------------


def test_the_il_models_quality_is_its_top1_and_mean_loss_on_the_training_split(monkeypatch):
    from hardbatch.data import load_dataset
    from hardbatch.policies import irreducible_losses
    from hardbatch.run import holdout

    cfg = RunConfig(
        dataset="digits",
        model="mlp",
        train_subset=400,
        val_fraction=0.25,
        batch_size=32,
        epochs=3,
        policy="rho-loss",
        params={"select_fraction": 0.5},
    )
    data = load_dataset(cfg)
    scored = {}

    def spy(model, loader, device, transform=None, **kw):  # keep the IL model to check its numbers independently
        scored["model"] = model
        return irreducible_losses(model, loader, device, transform, **kw)

    monkeypatch.setattr(holdout, "irreducible_losses", spy)
    losses, cost, quality = holdout.train_irreducible(cfg, data, torch.device("cpu"))
    model = scored["model"].eval()
    x, y = zip(*[(xb, yb) for xb, yb, *_ in data.eval_loader(data.train)], strict=True)
    with torch.no_grad():
        logits = model(data.eval_transform(torch.cat(x), None) if data.eval_transform else torch.cat(x))
    y = torch.cat(y)
    assert quality["holdout_samples"] == len(data.val) and len(losses) == len(data.train) == 400
    assert quality["train_top1"] == (logits.argmax(1) == y).sum().item() / 400
    assert 0.3 < quality["train_top1"] < 1.0  # learnt something from the validation digits, not everything
    assert quality["train_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert cost["samples_forward_nograd"] == 400  # the scoring pass, counted once


# ---- the compare plan: run folders and each run's own settings ------------------------------------------------------


def test_close_deltas_get_distinct_run_folders(tmp_path):
    plan = plan_compare(RunConfig(), [0.3333333, 0.33333333], [0], tmp_path)
    assert [run.path.name for run in plan] == ["delta-0.3333333_seed-0", "delta-0.33333333_seed-0"]
    assert [run.cfg.delta for run in plan] == [0.3333333, 0.33333333]
    assert [run.cfg.params for run in plan] == [{"delta": 0.3333333}, {"delta": 0.33333333}]
    assert run_name(0.5, 2) == "delta-0.5_seed-2" and run_name(1 / 3, 0) == "delta-0.3333333333333333_seed-0"


@pytest.mark.parametrize("deltas", [[0.5, 0.5], [0.2, 0.5, 0.50], [1, 1.0]])
def test_a_repeated_delta_is_a_usage_error(tmp_path, deltas):
    with pytest.raises(UsageError, match="share"):
        plan_compare(RunConfig(), deltas, [0], tmp_path)


def test_every_policy_gets_its_own_folders_and_only_its_own_settings(tmp_path):
    needs = {k: v for extra in NEEDS.values() for k, v in extra.items()}  # rho-loss: a validation split
    base = RunConfig(params=dict(beta=2.0, prune_ratio=0.3, rescore=2, trim_top=0.1), **needs)  # of three policies
    plan = plan_compare(base, [0.5, 1.0], [0, 1], tmp_path, policies=list(POLICIES))
    names = [run.path.name for run in plan]
    runs_per_policy = {p: 4 if p in DELTA_POLICIES and p not in SAME_AS_RULE_AT_ONE else 2 for p in POLICIES}
    assert len(names) == len(set(names)) == sum(runs_per_policy.values())
    for run in plan:
        check(run.cfg)  # no run carries another policy's setting
        assert set(run.cfg.params) <= {f.name for f in dataclasses.fields(POLICIES[run.cfg.policy])}
        assert run.path.name == run_name(run.cfg.delta, run.cfg.seed, run.cfg.policy)
        if run.cfg.policy not in DELTA_POLICIES:
            assert run.cfg.delta == 1.0 and "delta" not in run.path.name
    by_policy = {run.cfg.policy: run.cfg for run in plan}
    assert by_policy["selective-backprop"].params == {"beta": 2.0}
    assert by_policy["infobatch"].policy_params()["prune_ratio"] == 0.3
    assert by_policy["hardbatch"].params["rescore"] == 2 and "rescore" not in by_policy["random"].policy_params()


@pytest.mark.parametrize("control", SAME_AS_RULE_AT_ONE)
def test_controls_at_delta_one_are_run_once_by_compare(control, tmp_path):
    # At δ = 1 the controls train what the rule trains (tests/policies/test_random.py, test_cyclic.py).
    plan = plan_compare(RunConfig(), [0.5, 1.0], [0], tmp_path, policies=["hardbatch", control])
    assert [(r.cfg.policy, r.cfg.delta) for r in plan] == [("hardbatch", 0.5), ("hardbatch", 1.0), (control, 0.5)]
    alone = plan_compare(RunConfig(), [1.0], [0], tmp_path, policies=[control])  # without the rule it still runs
    assert [(r.cfg.policy, r.cfg.delta) for r in alone] == [(control, 1.0)]


def test_a_runs_configuration_keeps_its_policys_given_hyper_parameters_and_reads_the_rest_as_defaults():
    cfg = RunConfig(policy="selective-backprop", params={"beta": 2.0})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["params"] == {"beta": 2.0}
    assert cfg.policy_params() == {**POLICIES["selective-backprop"]().hyper_parameters(), "beta": 2.0}
    assert cfg.delta == 1.0 and RunConfig(params={"delta": 0.5}).delta == 0.5
    with pytest.raises(UsageError, match="policy 'selective-backprop' does not take delta"):
        RunConfig.from_dict({**cfg.to_dict(), "params": {"delta": 0.5}})


# ---- bad policy input on the command line -------------------------------------------------------------------------


def test_every_declared_hyper_parameter_is_a_checked_flag():
    """What a policy's file declares reaches the CLI and the checks of a run's configuration, with nothing else to
    edit: a flag in ``train --help``, and a value outside its range refused naming that flag."""
    from hardbatch.cli import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name, cls in POLICIES.items():
        for f in dataclasses.fields(cls):
            assert flag(f.name) in help_text
            allowed = f.metadata.get("range")
            if allowed is not None and allowed.high is not None:
                with pytest.raises(BadValue) as error:
                    check(RunConfig(policy=name, params={f.name: allowed.high + 1}))
                assert error.value.as_flag().endswith(f"{flag(f.name)} must be {allowed}, got {allowed.high + 1}")


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--policy", "hardest"], ["unknown policy 'hardest'", "selective-backprop"]),
        (["--policy", "selective-backprop", "--beta", "-0.5"], ["--beta", "-0.5"]),
        (["--policy", "selective-backprop", "--beta", "nan"], ["--beta"]),
        (["--policy", "selective-backprop", "--loss-history", "0"], ["--loss-history"]),
        (["--policy", "infobatch", "--prune-ratio", "1.0"], ["--prune-ratio", "[0, 1)"]),
        (["--policy", "infobatch", "--prune-ratio", "-0.1"], ["--prune-ratio"]),
        (["--policy", "infobatch", "--anneal", "1.5"], ["--anneal"]),
        (["--rescore", "0"], ["rescore", ">= 1"]),
        (["--rescore", "-2"], ["rescore"]),
        (["--trim-top", "1.0"], ["--trim-top", "[0, 1)"]),
        (["--trim-top", "-0.2"], ["--trim-top"]),
        (["--mix", "1.0"], ["--mix", "[0, 1)"]),
        (["--mix", "-0.5"], ["--mix"]),
        (["--policy", "random", "--beta", "2"], ["--beta", "selective-backprop"]),
        (["--policy", "cyclic", "--rescore", "2"], ["--rescore", "hardbatch"]),
        (["--policy", "uniform", "--delta", "0.5"], ["--delta", "uniform"]),
        (["--policy", "infobatch", "--delta", "0.5"], ["--delta"]),
        (["--policy", "selective-backprop", "--repartition"], ["--repartition"]),
        (["--policy", "infobatch", "--mix", "0.2"], ["--mix"]),
        # k + ⌊qN⌋ > N, found with the data (the message names the keyword, trim_top, where it named --trim-top)
        (["--delta", "0.5", "--trim-top", "0.6"], ["trim_top 0.6", "fewer than the k = "]),
    ],
)
def test_bad_policy_input_exits_2_with_one_line_and_writes_nothing(tmp_path, flags, words):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--dataset", "digits", "--epochs", "1", *flags, "--out", out, "--no-progress")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hardbatch train: error:"), err
    for word in words:
        assert word in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "flags", [["--policies", "uniform", "infobatch", "--beta", "2"], ["--policies", "hardbatch", "nope"]]
)
def test_compare_refuses_bad_policy_input_before_training(tmp_path, flags):
    out = tmp_path / "cmp"
    code, _, err = run_cli(
        "compare",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--seeds",
        "0",
        "--deltas",
        "0.5",
        *flags,
        "--out",
        out,
        "--no-progress",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "error" in err
    assert not out.exists()
