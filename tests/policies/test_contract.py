"""The contract every registered policy keeps, parametrized over the registry (a new policy file is covered with no
edit here): the registry and the declarations, misuse (one line naming the keyword and the accepted values), an
unbound policy object, the budget, seeds, resume (also through a DataLoader that prefetches), per-sample weights, the
record checks of per-sample policies, and training through ``fit``.

The 10-line quickstart loop for every registered policy, against the sampler-level reference: tests/test_quickstart.py.
Each policy's own rule on scripted losses: tests/policies/test_<policy>.py.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import IndexDataset, Rec, drive, roundtrip, scripted
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.config import DELTA_POLICIES, POLICY_NAMES
from hardbatch.errors import BadValue, TrainingDiverged, UsageError
from hardbatch.params import accepted, flag
from hardbatch.policies import POLICIES, Policy, create_policy, defaults, policy_class, register
from hardbatch.policies.registry import hyper_parameter_table, shared_fields
from hardbatch.run.plan import SAME_AS_RULE_AT_ONE
from hardbatch.sampler import HardBatchSampler

N_SAMPLES, BATCH, EPOCHS = 26, 2, 3
# Settings that make each policy do something in a short run (a policy missing here runs with its ``example``, so a
# newly registered policy is still covered by every test below).
SETTINGS = {
    "hardbatch": dict(delta=0.3),
    "random": dict(delta=0.3),
    "cyclic": dict(delta=0.3),
    "selective-backprop": dict(beta=1.0, loss_history=16),
    "composer-sb": dict(start=0.2, end=0.8),  # the selection window inside the 3 epochs
    "infobatch": dict(prune_ratio=0.5, anneal=0.25),
}
# Opt-in variants, run through the same tests: (policy, hyper-parameters, epochs).
VARIANTS = {
    "hardbatch+rescore": ("hardbatch", dict(delta=0.3, rescore=2), EPOCHS),
    "hardbatch+repartition": ("hardbatch", dict(delta=0.3, repartition=True), EPOCHS),
    "hardbatch+trim+mix": ("hardbatch", dict(delta=0.3, trim_top=0.2, mix=0.5), EPOCHS),
    "hardbatch+all": ("hardbatch", dict(delta=0.3, rescore=1, repartition=True, mix=0.4), EPOCHS),
    # hardbatch's earlier rules of selective-backprop, the authors' code's annealing weights of InfoBatch.
    "selective-backprop+earlier-rule": (
        "selective-backprop",
        dict(beta=1.0, loss_history=16, warmup_epoch=False, score_in_train_mode=True, force_one=True, count_ties=True),
        EPOCHS,
    ),
    "infobatch+keep-weights": ("infobatch", dict(prune_ratio=0.5, anneal=0.25, keep_weights_in_anneal=True), EPOCHS),
    # Every sample mastered once it has L = 4 losses: IES leaves them out of epochs 4 and 5 and scores them after 4.
    "ies+scoring": ("ies", dict(threshold=10.0, smoothing=1), 6),
}
CASES = {**{name: (name, SETTINGS.get(name, cls.example), EPOCHS) for name, cls in POLICIES.items()}, **VARIANTS}
WATCHED = list(range(0, N_SAMPLES, 3))  # samples whose trained count the sampler reports apart


def make_case(case: str, seed: int = 7, partition: torch.Tensor | None = None) -> HardBatchSampler:
    """The case's sampler over N_SAMPLES samples in batches of BATCH (a seeded cut, or ``partition``)."""
    name, params, epochs = CASES[case]
    data = N_SAMPLES if partition is None else partition
    sampler = HardBatchSampler(
        data,
        BATCH,
        epochs=epochs,
        policy=create_policy(name, **params),
        shuffle_partition=partition is None,
        seed=seed,
        watch=WATCHED,
    )
    if sampler.policy.holdout:  # rho-loss: what a run's irreducible-loss model would give
        sampler.policy.irreducible = torch.tensor([scripted(9)(i, 0) for i in range(N_SAMPLES)])
    return sampler


def trained_steps(log: list[Rec]) -> list[Rec]:
    return [r for r in log if r.kind == "train"]


def other_policys_hyper_parameter(name: str) -> str:
    """A hyper-parameter some other registered policy takes and ``name`` does not (δ aside: every sampler takes
    δ = 1; see test_delta_is_refused_by_the_policies_that_do_not_take_it)."""
    return next(p for p, (_, users) in shared_fields().items() if name not in users and p != "delta")


# ---- the registry and the declarations ---------------------------------------------------------------------------


def test_registry_holds_exactly_the_policies_the_cli_accepts():
    assert tuple(POLICIES) == POLICY_NAMES
    assert (
        DELTA_POLICIES == tuple(n for n, c in POLICIES.items() if c.takes("delta")) == ("hardbatch", "random", "cyclic")
    )
    for name, cls in POLICIES.items():
        assert cls.name == name and policy_class(name) is cls
        assert getattr(hardbatch.policies, cls.__name__) is cls  # each class is public in hardbatch.policies
        assert isinstance(create_policy(name, **cls.example), cls)


def test_registering_a_name_twice_is_refused():
    @dataclass(eq=False)
    class Impostor(Policy):
        name = "uniform"

    with pytest.raises(ValueError, match="policy 'uniform' is already registered"):
        register(Impostor)

    @dataclass(eq=False)
    class Nameless(Policy):
        pass

    with pytest.raises(ValueError, match="Nameless has no name"):
        register(Nameless)
    # The class a name holds may register again (a module imported twice): the registry is unchanged.
    before = dict(POLICIES)
    assert register(POLICIES["uniform"]) is POLICIES["uniform"] and before == POLICIES


@pytest.mark.parametrize("name", list(POLICIES))
def test_hyper_parameters_are_declared_once_with_help_and_the_values_they_accept(name):
    cls = POLICIES[name]
    fields = dataclasses.fields(cls)
    for f in fields:
        assert f.metadata["help"] and "\n" not in f.metadata["help"]
        assert f.metadata["range"] is not None or isinstance(f.default, (bool, str)) or f.default is None, f.name
    # The defaults pass every check, and are what the policy holds when given nothing.
    assert defaults(name) == {f.name: f.default for f in fields} == cls().hyper_parameters()
    assert all(cls.takes(f.name) for f in fields) and not cls.takes("no_such_parameter")
    assert create_policy(name, **defaults(name)).hyper_parameters() == defaults(name)
    for f in fields:  # a name two policies share means the same setting: one type and default
        assert shared_fields()[f.name][0].default == f.default


def test_docs_hyper_parameter_table_is_generated_from_the_declarations():
    import importlib.util
    from pathlib import Path

    # What ``python scripts/policy_docs.py --check`` checks, in this process: the docs' table is today's.
    script = Path(__file__).resolve().parents[2] / "scripts" / "policy_docs.py"
    spec = importlib.util.spec_from_file_location("policy_docs", script)
    policy_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policy_docs)
    text = policy_docs.DOC.read_text()
    assert policy_docs.rendered(text) == text, "the table is stale: run python scripts/policy_docs.py"
    table = hyper_parameter_table()
    for name, cls in POLICIES.items():  # every registered policy and every hyper-parameter it declares is listed
        assert f"| `{name}` |" in table
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` (`{flag(f.name)}`) |" in table


# ---- misuse: one line, naming the keyword and what is accepted ------------------------------------------------------


def test_an_unknown_policy_lists_the_valid_names():
    valid = "valid: " + ", ".join(POLICY_NAMES)
    for call in (
        lambda: create_policy("hardest"),
        lambda: policy_class("hardest"),
        lambda: defaults("hardest"),
        lambda: HardBatchSampler(10, 1, policy="hardest"),
    ):
        with pytest.raises(UsageError) as error:
            call()
        assert str(error.value) == f"unknown policy 'hardest'; {valid}"
    with pytest.raises(UsageError, match=f"unknown policy 3; {valid}"):
        policy_class(3)


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_hyper_parameter_the_policy_does_not_take_is_refused_naming_those_it_takes(name):
    other = other_policys_hyper_parameter(name)
    value = shared_fields()[other][0].default
    takes = ", ".join(f.name for f in dataclasses.fields(POLICIES[name])) or "no hyper-parameters"
    users = ", ".join(shared_fields()[other][1])
    message = f"policy {name!r} does not take {other}; it takes: {takes}; policies that take {other}: {users}"
    with pytest.raises(UsageError) as error:
        create_policy(name, **{other: value})
    assert str(error.value) == message
    with pytest.raises(UsageError) as error:
        HardBatchSampler(10, 1, policy=name, **{other: value})
    assert str(error.value) == message
    with pytest.raises(TypeError):  # the class itself takes its hyper-parameters only
        POLICIES[name](**{other: value})


@pytest.mark.parametrize(
    "name, param, value",
    [
        ("random", "beta", 2.0),
        ("uniform", "rescore", 2),
        ("cyclic", "trim_top", 0.1),
        ("infobatch", "beta", 1.0),
        ("selective-backprop", "prune_ratio", 0.5),
    ],
)
def test_create_policy_refuses_another_policys_hyper_parameter(name, param, value):
    with pytest.raises(UsageError, match=f"policy '{name}' does not take {param}; it takes: "):
        create_policy(name, **{param: value})
    with pytest.raises(UsageError, match=f"does not take {param}"):
        HardBatchSampler(10, 1, policy=name, **{param: value})


@pytest.mark.parametrize("name", list(POLICIES))
def test_delta_is_refused_by_the_policies_that_do_not_take_it(name):
    # A δ that silently did nothing would make a "uniform at δ = 0.5" run look like a result; δ = 1 (train every
    # batch) is every policy's, so the sampler accepts it for any.
    if name in DELTA_POLICIES:
        assert create_policy(name, delta=0.5).bind(10).k == 5
        assert HardBatchSampler(10, 1, policy=name, delta=0.5).policy.k == 5
        return
    with pytest.raises(
        UsageError, match=f"does not take delta; .* policies that take delta: {', '.join(DELTA_POLICIES)}$"
    ):
        create_policy(name, delta=0.5)
    with pytest.raises(UsageError) as error:
        HardBatchSampler(10, 1, policy=name, delta=0.5)
    assert str(error.value) == (
        f"policy {name!r} does not take delta (got 0.5); policies that do: {', '.join(DELTA_POLICIES)}"
    )
    example = POLICIES[name].example
    assert (
        HardBatchSampler(40, 4, policy=name, delta=1.0, **example).policy.hyper_parameters()
        == create_policy(name, **example).hyper_parameters()
    )


def _outside(f: dataclasses.Field):
    """A value field ``f`` refuses: just outside its range, or of another type."""
    allowed = f.metadata["range"]
    if allowed is None:
        return "yes" if isinstance(f.default, bool) else 1.5
    if allowed.high is not None:
        return allowed.high + 1
    return allowed.low - 1 if not allowed.low_open else allowed.low


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_declared_hyper_parameter_refuses_a_bad_value_in_one_line(name):
    cls = POLICIES[name]
    for f in dataclasses.fields(cls):
        bad = _outside(f)
        with pytest.raises(BadValue) as error:
            create_policy(name, **{f.name: bad})
        got = repr(bad) if isinstance(bad, (int, float)) else f"{bad!r} ({type(bad).__name__})"
        assert str(error.value) == f"{cls.__name__}: {f.name} must be {accepted(f)}, got {got}"
        assert error.value.as_flag() == f"{flag(f.name)} must be {accepted(f)}, got {got}"
        with pytest.raises(BadValue):  # the class alone checks too
            cls(**{f.name: bad})


@pytest.mark.parametrize("name", list(POLICIES))
def test_numpy_scalars_are_accepted_as_hyper_parameters_and_stored_as_python_values(name):
    cls = POLICIES[name]
    for f in dataclasses.fields(cls):
        if isinstance(f.default, str):
            continue
        value = {bool: np.bool_, int: np.int64, float: np.float32}.get(type(f.default), np.int64)(
            f.default if f.default is not None else 2
        )
        policy = create_policy(name, **{f.name: value})
        stored = getattr(policy, f.name)
        assert stored == value and type(stored) is type(f.default if f.default is not None else 2), f.name


# ---- a policy object holds hyper-parameters; the sampler binds a copy to the data ----------------------------------


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_policy_object_holds_only_its_hyper_parameters_and_stays_unbound(name):
    policy = create_policy(name, **CASES[name][1])
    held = dict(vars(policy))
    assert held == policy.hyper_parameters()  # nothing else: no data, no state
    first = HardBatchSampler(N_SAMPLES, BATCH, policy=policy)
    second = HardBatchSampler(2 * N_SAMPLES, BATCH, policy=policy, seed=1)
    if first.policy.holdout:
        first.policy.irreducible, second.policy.irreducible = torch.zeros(N_SAMPLES), torch.zeros(2 * N_SAMPLES)
    assert first.policy is not policy and second.policy is not first.policy and type(first.policy) is type(policy)
    assert first.policy.hyper_parameters() == second.policy.hyper_parameters() == policy.hyper_parameters()
    assert (first.policy.num_samples, second.policy.num_samples) == (N_SAMPLES, 2 * N_SAMPLES)
    drive(first, scripted(0), stop_after=5)  # training one leaves the other and the object as they were
    assert second.policy.round == -1 and vars(policy) == held and not hasattr(policy, "partition")
    bound = policy.bind(10, epochs=2)
    assert bound is not policy and bound.num_batches == 10 and vars(policy) == held


# ---- the budget ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_spends_exactly_its_budget_and_progress_reaches_one(case):
    sampler = make_case(case)
    epochs = CASES[case][2]
    progress: list[float] = []
    log = drive(sampler, scripted(1), progress=progress)
    steps = trained_steps(log)
    assert sampler.done and list(sampler) == [] and len(sampler) == 0
    assert sampler.steps == len(steps) and sampler.epoch == epochs
    if sampler.policy.epoch_is_round:
        assert sorted({r.round for r in steps}) == list(range(epochs))  # an epoch is a pass
    else:
        assert sampler.steps == epochs * sampler.num_batches  # N = 26 // 2 = 13 steps an epoch
    assert progress == sorted(progress) and progress[-1] == 1.0 and all(0 < p <= 1 for p in progress)
    # Every step trains at least one sample, and no sample twice.
    for r in steps:
        assert r.kept and len(set(r.kept)) == len(r.kept) and set(r.kept) <= set(r.samples)
    # The sampler counts what was back-propagated, the watched samples apart, and each batch id's visits.
    kept = [i for r in steps for i in r.kept]
    first = [r for r in steps if r.round == 0] if sampler.policy.epoch_is_round else steps[: sampler.num_batches]
    first_epoch = [i for r in first for i in r.kept]
    assert sampler.trained_samples == {
        "all": len(kept),
        "first_epoch": len(first_epoch),
        "watched": sum(i in WATCHED for i in kept),
        "watched_first_epoch": sum(i in WATCHED for i in first_epoch),
    }
    assert int(sampler.visits.sum()) == len(steps)
    if sampler.policy.name in DELTA_POLICIES:
        assert sampler.visits.tolist() == [Counter(r.batch for r in steps)[b] for b in range(sampler.num_batches)]


# ---- seeds ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_is_reproducible_per_seed(case):
    a = drive(make_case(case, seed=3), scripted(2))
    assert drive(make_case(case, seed=3), scripted(2)) == a
    # The partition is seeded too, so another seed trains other samples whatever the policy.
    assert [r.samples for r in drive(make_case(case, seed=4), scripted(2))] != [r.samples for r in a]


# ---- resume ---------------------------------------------------------------------------------------------------------


def stop_points(log: list[Rec]) -> dict[str, int]:
    """Where to interrupt a run of ``log`` (records kept): early; from the middle on, the first record that its pass
    goes on after; inside a scoring pass or a pass that skipped a batch (when the run has one; else two thirds in);
    and two records before the end."""

    def pass_of(r: Rec) -> tuple[int, bool]:
        return r.round, r.kind == "score"

    middle = next(n for n in range(len(log) // 2, len(log)) if pass_of(log[n - 1]) == pass_of(log[n]))
    special = next((n for n, r in enumerate(log) if r.kind != "train"), None)
    return {
        "early": 3,
        "middle": middle,
        "scoring": special + 1 if special else 2 * len(log) // 3,
        "late": len(log) - 2,
    }


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("where, draw_ahead", [("early", 0), ("middle", 2), ("scoring", 1), ("late", 1)])
def test_every_policy_resumes_mid_pass_from_its_state_dict(case, where, draw_ahead):
    losses = scripted(5)
    expected = drive(make_case(case), losses)
    stop_after = stop_points(expected)[where]
    first = make_case(case)
    trained = Counter()
    head = drive(first, losses, trained=trained, stop_after=stop_after, draw_ahead=draw_ahead)
    assert len(head) == stop_after
    # Built as the saved sampler was (its partition) but with another seed: the state carries every generator.
    second = make_case(case, seed=99, partition=first.partition.clone())
    second.load_state_dict(roundtrip(first.state_dict()))
    assert second.steps == first.steps and second.epoch == first.epoch and second.progress == first.progress
    assert head + drive(second, losses, trained=trained) == expected
    whole = make_case(case)
    drive(whole, losses)
    assert torch.equal(second.visits, whole.visits) and second.trained_samples == whole.trained_samples


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_resumes_through_a_dataloader_that_prefetched_ahead(case):
    # One worker with 4 batches in flight: when the loop stops, the loader has drawn up to 4 batches it never
    # trained; the state is the one of the last recorded step, and a new loader goes on from there.
    losses = scripted(6)
    expected = drive(make_case(case), losses)
    stop_after = stop_points(expected)["middle"]

    def loader(sampler):
        return DataLoader(
            IndexDataset(N_SAMPLES), batch_sampler=sampler, num_workers=1, prefetch_factor=4, persistent_workers=True
        )

    first = make_case(case)
    trained = Counter()
    head = drive(first, losses, trained=trained, stop_after=stop_after, loader=loader(first))
    assert first._yielded > first._recorded  # the loader drew batches the loop never trained
    second = make_case(case)
    second.load_state_dict(roundtrip(first.state_dict()))
    assert head + drive(second, losses, trained=trained, loader=loader(second)) == expected


# ---- per-sample weights ---------------------------------------------------------------------------------------------


def _first_training_step(sampler: HardBatchSampler):
    """Draw batches, scoring the score-only ones, until a training step is pending; returns it."""
    for _ in sampler:
        step = sampler.pending
        if not step.score_only:
            return step
        sampler.record(torch.tensor(0.5), torch.full((len(step.samples),), 0.5))
    raise AssertionError("no training step")


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_gives_per_sample_weights_for_every_training_step(case):
    # One generic loop, loss = (weights * per-sample losses).mean(), runs every policy: batch policies weigh by 1.
    sampler = make_case(case)
    for _ in range(5):
        step = _first_training_step(sampler)
        scores = torch.rand(len(step.samples)) if sampler.policy.scores_first else None
        weights = sampler.weights(scores)
        assert isinstance(weights, torch.Tensor) and weights.is_floating_point()
        assert weights.shape == (len(step.samples),) and bool((weights >= 0).all())
        if not (sampler.policy.per_sample or sampler.policy.scores_first):
            assert weights.tolist() == [1.0] * len(step.samples)
        assert torch.equal(sampler.weights(scores), weights)
        sampler.record(torch.tensor(0.5), torch.full((len(step.samples),), 0.5))


# ---- the record checks of policies that learn from each sample's loss ---------------------------------------------

PER_SAMPLE = [case for case in CASES if make_case(case).policy.per_sample]


@pytest.mark.parametrize("case", PER_SAMPLE)
def test_record_refuses_a_missing_batch_mean_instead_of_per_sample_losses(case):
    sampler = make_case(case)
    _first_training_step(sampler)
    with pytest.raises(UsageError) as error:
        sampler.record(1.0)
    assert str(error.value) == (
        f"policy {sampler.policy.name!r} needs per-sample losses: record(loss, sample_losses) "
        f"with sample_losses of shape ({BATCH},)"
    )
    assert sampler.steps == 0


@pytest.mark.parametrize("case", PER_SAMPLE)
@pytest.mark.parametrize(
    "sample_losses, words",
    [
        (torch.ones(2, 1), "(one loss per sample of the batch), got a tensor of shape (2, 1)"),
        (torch.ones(3), "got a tensor of shape (3,)"),
        (torch.ones(()), "got a tensor of shape ()"),
        ([0.5, 0.5], "got [0.5, 0.5] (list)"),
    ],
)
def test_record_refuses_per_sample_losses_of_the_wrong_shape(case, sample_losses, words):
    sampler = make_case(case)
    _first_training_step(sampler)
    steps = sampler.steps
    with pytest.raises(UsageError) as error:
        sampler.record(torch.tensor(0.5), sample_losses)
    message = str(error.value)
    assert message.startswith("record(loss, sample_losses): sample_losses must have shape (2,)") and words in message
    assert "\n" not in message
    assert sampler.steps == steps
    sampler.record(torch.tensor(0.5), torch.ones(2))  # the batch is still pending
    assert sampler.steps == steps + 1


@pytest.mark.parametrize("case", PER_SAMPLE)
def test_record_refuses_non_finite_per_sample_losses(case):
    sampler = make_case(case)
    _first_training_step(sampler)
    with pytest.raises(
        TrainingDiverged,
        match=r"record\(loss, sample_losses\): sample_losses are not finite at "
        r"step 1; .*learning rate",
    ):
        sampler.record(torch.tensor(0.5), torch.tensor([0.5, float("nan")]))


# ---- training through fit -------------------------------------------------------------------------------------------


class PlainSGD:
    """Plain SGD for the loop tests: torch.optim's first step imports torch._dynamo, seconds on a loaded machine."""

    def __init__(self, params, lr: float):
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                p -= self.param_groups[0]["lr"] * p.grad


@pytest.mark.parametrize("case", list(CASES))
def test_every_policy_trains_through_fit_to_its_budget(case):
    from hardbatch.training import fit

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 5, generator=generator)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    sampler = make_case(case)
    ends = []
    fit(
        model,
        PlainSGD(model.parameters(), lr=0.1),
        DataLoader(data, batch_sampler=sampler),
        sampler,
        {},
        torch.device("cpu"),
        on_epoch=ends.append,
    )
    meter = sampler.meter
    assert sampler.done and len(ends) == CASES[case][2] == sampler.epoch
    assert meter.optimizer_steps == sampler.steps and meter.samples_backprop == sampler.trained_samples["all"]
    assert meter.samples_forward == meter.samples_backprop <= meter.samples_loaded


# ---- scoring forwards that move BatchNorm's statistics, where a policy's authors let them ---------------------------


def _batchnorm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))


def _first_scored_step(policy) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm's running mean before and after the first step that scores (its training step aside)."""
    data = TensorDataset(torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,)))
    sampler = HardBatchSampler(64, 8, epochs=4, policy=policy)
    if sampler.policy.holdout:
        sampler.policy.irreducible = torch.zeros(64)
    model = _batchnorm_net()
    bn = model[2]
    for batch in DataLoader(data, batch_sampler=sampler):
        if sampler.policy.needs_scores(sampler.pending):
            before = bn.running_mean.clone()
            with torch.no_grad():
                hardbatch.step.select(sampler, model, batch)
            return before, bn.running_mean.clone()
        sampler.record(torch.tensor(1.0))
    raise AssertionError("no step scored")


@pytest.mark.parametrize("name", [name for name, cls in POLICIES.items() if cls.takes("score_moves_batchnorm")])
def test_the_scoring_forward_moves_batchnorm_only_when_asked(name):
    settings = {"rho-loss": dict(select_fraction=0.5), "composer-sb": dict(start=0.0)}.get(name, {})
    before, after = _first_scored_step(create_policy(name, **settings))
    assert torch.equal(before, after)  # restored: the default
    before, after = _first_scored_step(create_policy(name, **settings, score_moves_batchnorm=True))
    assert not torch.equal(before, after)  # moved, as the authors' code leaves them


@pytest.mark.parametrize("control", SAME_AS_RULE_AT_ONE)
def test_a_control_that_compare_runs_once_at_delta_one_trains_what_the_rule_trains(control):
    # compare leaves out a control's δ = 1 run because it would train the rule's batches: true of every such control.
    def samples(policy):
        sampler = HardBatchSampler(12, 1, delta=1.0, epochs=4, policy=policy, seed=3)
        return [rec.samples for rec in drive(sampler, scripted(5))]

    assert samples(control) == samples("hardbatch")
