"""Every policy end to end on digits: cost counters against the trace, equal cost at equal δ, exact resumes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import TIMING, rows_of
from hardbatch.cli import main
from hardbatch.config import DELTA_POLICIES, RunConfig, validate
from hardbatch.errors import UsageError
from hardbatch.run.experiment import train_run
from hardbatch.run.plan import SAME_AS_RULE_AT_ONE, plan_compare, run_name
from hardbatch.selection import POLICIES

# N = 320 // 32 = 10 batches, 3 epochs. δ = 0.3 (k = 3) ends epoch 2 at step 20, inside round 4; crop+flip and the
# cosine schedule bring in the augmentation generator and the scheduler, which a resume must restore too.
B, N, EPOCHS = 32, 10, 3
BASE = dict(dataset="digits", train_subset=320, batch_size=B, epochs=EPOCHS, augment="crop_flip", schedule="cosine",
            seed=1)
# Settings per policy (a policy missing here runs with its defaults, and δ = 0.3 if it takes δ); with 3 epochs and
# anneal 0.3 (⌊3 · 0.7⌋ = 2 pruning epochs) InfoBatch prunes in epoch 1 only (epoch 0 has no scores, epoch 2 is
# annealed).
SETTINGS = {"infobatch": dict(anneal=0.3), "selective-backprop": dict(beta=1.0)}
RUNS = {name: dict(policy=name, **({"delta": 0.3} if name in DELTA_POLICIES else {}),
                   **SETTINGS.get(name, cls.example), **cls.run_needs) for name, cls in POLICIES.items()}
RUNS["hardbatch+rescore"] = dict(policy="hardbatch", delta=0.3, rescore=2)
RUNS["hardbatch+repartition"] = dict(policy="hardbatch", delta=0.3, repartition=True)


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


# ---- cost ----------------------------------------------------------------------------------------


def test_the_delta_policies_spend_identical_cost_at_the_same_delta(straight):
    counted = ("optimizer_steps", "samples_loaded", "samples_forward", "samples_forward_nograd", "samples_backprop")
    costs = {p: {k: summary(straight(p))["cost"][k] for k in counted} for p in DELTA_POLICIES}
    # 3 epochs of N = 10 steps of B = 32, whichever batches each policy chose.
    expected = dict(optimizer_steps=30, samples_loaded=960, samples_forward=960, samples_forward_nograd=0,
                    samples_backprop=960)
    assert all(cost == expected for cost in costs.values()), costs
    assert len({tuple(summary(straight(p))["batch_visits"]) for p in DELTA_POLICIES}) == 3  # but chose differently


@pytest.mark.parametrize("case", list(RUNS))
def test_cost_counters_add_up_and_agree_with_the_trace(straight, case):
    run = straight(case)
    history, trace, s = rows(run / "history.csv", ()), rows(run / "trace.csv", ()), summary(run)
    cost = s["cost"]
    column = lambda table, name: [float(r[name]) for r in table]  # noqa: E731
    backprop = sum(column(history, "samples_backprop"))
    before = s.get("holdout_cost", {})  # spent before the first step (RHO-LOSS's IL model), counted in epoch 1
    assert ("irreducible_model" in s) == POLICIES[RUNS[case]["policy"]].needs_irreducible == bool(before)
    assert backprop == sum(column(trace, "samples")) + before.get("samples_backprop", 0)
    assert backprop == cost["samples_backprop"] == s["samples_backpropagated"]
    assert cost["samples_forward"] == cost["samples_backprop"]
    assert cost["optimizer_steps"] == len(trace) == int(history[-1]["step"]) == s["optimizer_steps"]
    assert [int(r["step"]) for r in trace] == list(range(1, len(trace) + 1))
    for name in ("samples_loaded", "samples_forward_nograd"):
        assert sum(column(history, name)) == cost[name]
    assert len(history) == EPOCHS
    policy = POLICIES[RUNS[case]["policy"]]
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
    train_run(RunConfig(**common, policy="selective-backprop", beta=0.0, warmup_epoch=False,
                        score_in_train_mode=score_in_train_mode), tmp_path / "sb", progress=False)
    train_run(RunConfig(**common, policy="uniform"), tmp_path / "uniform", progress=False)
    assert (tmp_path / "sb" / "trace.csv").read_text() == (tmp_path / "uniform" / "trace.csv").read_text()
    differ = TIMING + ("samples_loaded", "samples_forward_nograd")
    assert rows(tmp_path / "sb" / "history.csv", differ) == rows(tmp_path / "uniform" / "history.csv", differ)
    assert summary(tmp_path / "sb")["cost"]["samples_forward_nograd"] == N * B


# ---- kill and resume -----------------------------------------------------------------------------


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
        k: v for k, v in b["cost"].items() if k not in TIMING}
    assert a["batch_visits"] == b["batch_visits"] and a["final_test_acc"] == b["final_test_acc"]
    assert a.get("irreducible_model") == b.get("irreducible_model")  # rho-loss: kept in the checkpoint
    assert not (out / "checkpoint.pt").exists()


def cli_flags(case: str) -> list[str]:
    flags = []
    for name, value in {**BASE, **RUNS[case]}.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags + ["--no-progress"]


@pytest.mark.slow
def test_sigkilled_selective_backprop_run_resumes_mid_epoch_to_the_same_records(straight, tmp_path, fork):
    """SIGKILL at step 15, in the middle of epoch 2 (steps 11-20); --resume goes on from the epoch-1 checkpoint."""
    from hardbatch.selection.sampler import HardBatchSampler

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
        main(["train", *cli_flags(case), "--out", str(out)])

    assert fork(train_until_killed).wait() == -9
    assert (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()
    assert len(rows(out / "history.csv")) == 1 and len(rows(out / "trace.csv")) == N
    assert main(["train", *cli_flags(case), "--out", str(out), "--resume"]) == 0
    reference = straight(case)
    assert rows(out / "history.csv") == rows(reference / "history.csv")
    assert (out / "trace.csv").read_text() == (reference / "trace.csv").read_text()
    assert summary(out)["batch_visits"] == summary(reference)["batch_visits"]


# ---- run names -----------------------------------------------------------------------------------


def test_close_deltas_get_distinct_run_folders(tmp_path):
    plan = plan_compare(RunConfig(), [0.3333333, 0.33333333], [0], tmp_path)
    assert [run.path.name for run in plan] == ["delta-0.3333333_seed-0", "delta-0.33333333_seed-0"]
    assert [run.cfg.delta for run in plan] == [0.3333333, 0.33333333]
    assert run_name(0.5, 2) == "delta-0.5_seed-2" and run_name(1 / 3, 0) == "delta-0.3333333333333333_seed-0"


@pytest.mark.parametrize("deltas", [[0.5, 0.5], [0.2, 0.5, 0.50], [1, 1.0]])
def test_a_repeated_delta_is_a_usage_error(tmp_path, deltas):
    with pytest.raises(UsageError, match="share"):
        plan_compare(RunConfig(), deltas, [0], tmp_path)


def test_every_policy_gets_its_own_folders_and_only_its_own_settings(tmp_path):
    needs = {k: v for cls in POLICIES.values() for k, v in cls.run_needs.items()}  # rho-loss: a validation split
    base = RunConfig(beta=2.0, prune_ratio=0.3, rescore=2, trim_top=0.1, **needs)  # settings of three policies
    plan = plan_compare(base, [0.5, 1.0], [0, 1], tmp_path, policies=list(POLICIES))
    names = [run.path.name for run in plan]
    runs_per_policy = {p: 4 if p in DELTA_POLICIES and p not in SAME_AS_RULE_AT_ONE else 2 for p in POLICIES}
    assert len(names) == len(set(names)) == sum(runs_per_policy.values())
    for run in plan:
        validate(run.cfg)  # no run carries another policy's setting
        assert run.path.name == run_name(run.cfg.delta, run.cfg.seed, run.cfg.policy)
        if run.cfg.policy not in DELTA_POLICIES:
            assert run.cfg.delta == 1.0 and "delta" not in run.path.name
    by_policy = {run.cfg.policy: run.cfg for run in plan}
    assert by_policy["selective-backprop"].beta == 2.0 and by_policy["infobatch"].prune_ratio == 0.3
    assert by_policy["hardbatch"].rescore == 2 and by_policy["random"].rescore is None

