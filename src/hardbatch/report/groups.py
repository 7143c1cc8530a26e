"""Runs sorted into groups (runs that share every setting but the policy, its hyper-parameters, the budget and the
seed) and arms (one policy at one setting of its hyper-parameters and one budget), and the comparison a report judges:
which arm is the method and which its reference."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hardbatch.config import AXIS_SYMBOLS, POLICY_AXES, POLICY_NAMES, RUNTIME_KEYS, RunConfig
from hardbatch.errors import UsageError
from hardbatch.policies import defaults as policy_defaults
from hardbatch.report.load import DUPLICATE, LeftOut, Run

# Settings that tell arms apart inside a group (the policy, its hyper-parameters and the fraction of the epoch budget
# trained), and settings that never split groups.
ARM_KEYS = ("policy", "params", "budget")
NOT_GROUPING = (*ARM_KEYS, "seed", *RUNTIME_KEYS)
FULL_BUDGET = 1.0  # RunConfig.budget of a run that trains all its epochs
LAST_EPOCHS = 3  # "last-3 mean": test top-1 over a run's last 3 epochs, which epoch-to-epoch swings do not decide
REFERENCE_DELTA = 1.0  # every policy trains every batch at δ = 1: ordinary mini-batch training
REFERENCE_POLICY = "hardbatch"  # the paper's baseline is its own rule at δ = 1, never a peer that records δ = 1


def axis_value(cfg: RunConfig) -> float | None:
    """The value of the hyper-parameter ``cfg.policy`` sweeps (its axis: δ, β, the prune ratio), or None."""
    axis = POLICY_AXES.get(cfg.policy)
    return None if axis is None else cfg.policy_params().get(axis)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def arm_label(policy: str, value: float | None, params: tuple = (), budget: float = FULL_BUDGET) -> str:
    """ "δ = 0.5" for the paper's rule, "random δ = 0.5" for a control, "infobatch r = 0.3" for a peer away from
    its default, the bare name for a peer at its default or a policy without an axis; then the other
    hyper-parameters away from their defaults (``params``: (name, value) pairs, ``extra_params``) and a budget short
    of the whole: "infobatch r = 0.3, anneal = 0.5", "uniform, budget 0.25"."""
    axis = POLICY_AXES.get(policy)
    if axis is None or value is None or (axis != "delta" and value == policy_defaults(policy)[axis]):
        label = policy
    else:
        name = f"{AXIS_SYMBOLS.get(axis, axis)} = {value:g}"
        label = name if policy == REFERENCE_POLICY else f"{policy} {name}"
    label += "".join(f", {AXIS_SYMBOLS.get(k, k)} = {_shown(v)}" for k, v in params)
    return label if budget == FULL_BUDGET else f"{label}, budget {budget:g}"


def extra_params(policy: str, params: dict) -> tuple[tuple[str, object], ...]:
    """The hyper-parameters in ``params`` away from ``policy``'s defaults, its axis aside, sorted by name: what,
    beside the axis value, tells two arms of one policy apart."""
    axis, defaults = POLICY_AXES.get(policy), policy_defaults(policy) if policy in POLICY_NAMES else {}
    return tuple(sorted((k, v) for k, v in params.items() if k != axis and (k not in defaults or v != defaults[k])))


def arm_key(cfg: RunConfig) -> tuple:
    """What identifies a run's arm inside its group: (policy, axis value, other non-default hyper-parameters,
    budget)."""
    return cfg.policy, axis_value(cfg), extra_params(cfg.policy, cfg.policy_params()), cfg.budget


def run_label(cfg: RunConfig) -> str:
    """The label of the arm a run belongs to (``arm_label``)."""
    policy, value, params, budget = arm_key(cfg)
    return arm_label(policy, value, params, budget)


@dataclass
class Arm:
    """The runs of one policy at one setting of its hyper-parameters and one budget within a group, keyed by seed."""

    policy: str
    value: float | None  # the axis value (δ for δ policies); None for a policy without an axis
    delta: float  # the recorded δ (1 for policies that ignore it)
    runs: dict[int, Run] = field(default_factory=dict)
    tuned: dict = field(default_factory=dict)  # settings chosen per arm (group_runs' per_arm), e.g. {"lr": 0.1}
    budget: float = FULL_BUDGET  # the fraction of the epoch budget its runs trained (RunConfig.budget)
    params: tuple = ()  # its other hyper-parameters away from their defaults (``extra_params``)

    @property
    def label(self) -> str:
        return arm_label(self.policy, self.value, self.params, self.budget)

    def values(self, key: str) -> dict[int, float]:
        """summary.json's ``key`` of each run, by seed."""
        return {seed: run.summary[key] for seed, run in self.runs.items()}

    def finals(self, metric: str = "acc") -> dict[int, float]:
        """Each run's final test ``metric`` (``load.METRICS``: top-1 or balanced top-1), by seed."""
        return {seed: run.final(metric) for seed, run in self.runs.items()}

    def last_accs(self, metric: str = "acc") -> dict[int, float]:
        """Test ``metric`` averaged over each run's last LAST_EPOCHS epochs, by seed."""
        return {
            seed: sum(run.curve(metric)[-LAST_EPOCHS:]) / len(run.curve(metric)[-LAST_EPOCHS:])
            for seed, run in self.runs.items()
        }


@dataclass(frozen=True)
class Comparison:
    """Which arm is the method a report judges and which is its reference.

    ``method``: a policy name; its arms (but the reference) are the method's settings along its axis.
    ``reference``: ``POLICY`` or ``POLICY@VALUE``; a δ policy without a value means δ = 1 (ordinary training),
    another policy its default value, a policy without an axis its one arm. The default is the paper's own
    comparison: its rule against its rule at δ = 1.
    """

    method: str = REFERENCE_POLICY
    reference: str = REFERENCE_POLICY

    def __post_init__(self) -> None:
        for what, name in (("method", self.method), ("reference", self.reference_policy)):
            if name not in POLICY_NAMES:
                raise UsageError(f"unknown {what} policy {name!r}; valid: {', '.join(POLICY_NAMES)}")
        value = self.reference.partition("@")[2]
        if value:
            if POLICY_AXES.get(self.reference_policy) is None:
                raise UsageError(
                    f"reference {self.reference!r}: policy {self.reference_policy!r} has no "
                    f"hyper-parameter to set; give it as {self.reference_policy!r}"
                )
            try:
                float(value)
            except ValueError:
                raise UsageError(
                    f"reference {self.reference!r}: {value!r} is not a number; give POLICY or "
                    f"POLICY@VALUE, e.g. hardbatch@1 or infobatch@0.3"
                ) from None

    @property
    def reference_policy(self) -> str:
        return self.reference.partition("@")[0]

    @property
    def reference_value(self) -> float | None:
        """The reference arm's axis value: the one given, δ = 1 for δ policies, else the policy's default."""
        policy, _, value = self.reference.partition("@")
        axis = POLICY_AXES.get(policy)
        if axis is None:
            return None
        if value:
            return float(value)
        return REFERENCE_DELTA if axis == "delta" else policy_defaults(policy)[axis]

    @property
    def is_paper(self) -> bool:
        """The paper's own comparison: its rule against δ = 1."""
        return (
            self.method == REFERENCE_POLICY
            and self.reference_policy == REFERENCE_POLICY
            and self.reference_value == REFERENCE_DELTA
        )

    @property
    def reference_text(self) -> str:
        """How tables name the reference: "δ=1" for the paper's baseline, else the arm's label."""
        if self.reference_policy == REFERENCE_POLICY and self.reference_value == REFERENCE_DELTA:
            return "δ=1"
        return arm_label(self.reference_policy, self.reference_value)

    @property
    def reference_label(self) -> str:
        """The reference arm's label in prose: "δ = 1", "uniform", "infobatch r = 0.3"."""
        return arm_label(self.reference_policy, self.reference_value)

    @property
    def axis(self) -> str | None:
        return POLICY_AXES.get(self.method)


PAPER = Comparison()


@dataclass
class Group:
    """Runs that share every setting except the policy, its hyper-parameters, the budget and the seed."""

    title: str
    settings: dict
    arms: list[Arm]

    @property
    def full_budget(self) -> float:
        """The largest budget of the group's arms (the whole epoch budget, unless every run trained less)."""
        return max(a.budget for a in self.arms)

    @property
    def main_arms(self) -> list[Arm]:
        """The arms at the full budget: those the comparisons judge (shorter budgets are frontier points)."""
        return [a for a in self.arms if a.budget == self.full_budget]

    def arm(self, policy: str, value: float | None = None, budget: float | None = None) -> Arm | None:
        """The arm of ``policy`` at axis ``value`` (any value when None) and ``budget`` (the full budget when None),
        its other hyper-parameters at their defaults where such an arm was run."""
        budget = self.full_budget if budget is None else budget
        found = [
            a for a in self.arms if a.policy == policy and (value is None or a.value == value) and a.budget == budget
        ]
        return min(found, key=lambda a: len(a.params)) if found else None

    def reference_for(self, comparison: Comparison) -> Arm | None:
        """The comparison's reference arm; None when it was not run. Peers record δ = 1 too (it does not apply
        to them), so the policy decides, never the recorded δ alone. The paper's baseline, its rule at δ = 1, may
        be stood in for by a control at δ = 1 (`random`, `cyclic`): at δ = 1 they train exactly the rule's batches
        in the rule's order."""
        arm = self.arm(comparison.reference_policy, comparison.reference_value)
        if arm is None and (comparison.reference_policy, comparison.reference_value) == (
            REFERENCE_POLICY,
            REFERENCE_DELTA,
        ):
            arm = next(
                (
                    a
                    for a in self.main_arms
                    if POLICY_AXES.get(a.policy) == "delta" and a.value == REFERENCE_DELTA and not a.params
                ),
                None,
            )
        return arm

    @property
    def reference(self) -> Arm | None:
        """The paper's baseline: its rule at δ = 1 (ordinary training in fixed order); None when it was not run."""
        return self.reference_for(PAPER)

    def method_arms(self, comparison: Comparison) -> list[Arm]:
        """The method's arms at the full budget other than the reference (for the paper: its rule at δ < 1)."""
        ref = self.reference_for(comparison)
        return [a for a in self.main_arms if a.policy == comparison.method and a is not ref]

    @property
    def runs(self) -> list[Run]:
        return [run for arm in self.arms for run in arm.runs.values()]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.title).strip("-")


def _check_per_arm(per_arm: tuple[str, ...]) -> None:
    unknown = [k for k in per_arm if k not in RunConfig.__dataclass_fields__ or k in NOT_GROUPING]
    if unknown:
        raise UsageError(
            f"cannot choose {unknown[0]!r} per arm; valid: the settings of config.json (lr, epochs, ...) "
            f"but the policy, its hyper-parameters (params), the budget, the seed and runtime settings"
        )


def group_settings(cfg: RunConfig) -> dict:
    """The settings that put a run in its group: config.json's, but those of its arm (policy, params, budget), the
    seed and the runtime ones."""
    return {k: v for k, v in cfg.to_dict().items() if k not in NOT_GROUPING}


def _group_key(settings: dict, per_arm: tuple[str, ...]) -> tuple:
    return tuple((k, repr(v)) for k, v in settings.items() if k not in per_arm)


def drop_duplicates(runs: list[Run], per_arm: tuple[str, ...] = ()) -> tuple[list[Run], list[LeftOut]]:
    """``runs`` without the second and later runs of the same arm and seed in one group (the same settings, as an
    evidence tree's tuning and main folders hold them), in path order; and those left out, each naming the run kept."""
    _check_per_arm(per_arm)
    kept: dict[tuple, Run] = {}
    left_out = []
    for run in sorted(runs, key=lambda r: r.path):
        key = (_group_key(group_settings(run.config), per_arm), arm_key(run.config), run.config.seed)
        if key in kept:
            why = (
                f"a second run of {run_label(run.config)} seed {run.config.seed} with the same settings as "
                f"{kept[key].path}, which the report keeps"
            )
            left_out.append(LeftOut(run.path, DUPLICATE, why))
        else:
            kept[key] = run
    chosen = {id(r) for r in kept.values()}
    return [r for r in runs if id(r) in chosen], left_out


def group_runs(runs: list[Run], method: str = REFERENCE_POLICY, per_arm: tuple[str, ...] = ()) -> list[Group]:
    """Group runs by their settings; within a group, one arm per (policy, axis value, other hyper-parameters,
    budget); the method's arms first, each policy's arms in axis order, its default settings first and the whole
    budget before the shorter ones. Two runs of one arm and seed are a UsageError (``drop_duplicates`` first).

    ``per_arm``: settings chosen for each arm (a learning rate tuned per arm, say), which then do not split groups;
    all runs of one arm must share their values (``Arm.tuned``), else UsageError.
    """
    _check_per_arm(per_arm)
    groups: dict[tuple, dict[tuple, Arm]] = {}
    settings: dict[tuple, dict] = {}
    for run in runs:
        flat = group_settings(run.config)
        key = _group_key(flat, per_arm)
        settings[key] = {k: v for k, v in flat.items() if k not in per_arm}
        arms = groups.setdefault(key, {})
        policy, value, params, budget = arm_key(run.config)
        tuned = {k: flat[k] for k in per_arm}
        arm = arms.setdefault(
            (policy, value, params, budget),
            Arm(policy, value, run.config.delta, tuned=tuned, budget=budget, params=params),
        )
        if run.config.seed in arm.runs:
            raise UsageError(
                f"two runs of {arm.label} seed {run.config.seed}: {arm.runs[run.config.seed].path} and {run.path}"
            )
        if tuned != arm.tuned:
            other = next(iter(arm.runs.values())).path
            raise UsageError(
                f"{arm.label} holds runs with other per-arm settings: {arm.tuned} in {other}, {tuned} in "
                f"{run.path}; one value per arm"
            )
        arm.runs[run.config.seed] = run
    # Titles name data set and model, plus the settings that differ between groups of the same pair.
    result = []
    for key, arms in groups.items():
        s = settings[key]
        same_pair = [
            other for other in settings.values() if (other["dataset"], other["model"]) == (s["dataset"], s["model"])
        ]
        differing = sorted({k for other in same_pair for k in s if other[k] != s[k]})
        title = f"{s['dataset']} / {s['model']}" + "".join(f", {k}={s[k]}" for k in differing)
        order = sorted(
            arms.values(),
            key=lambda a: (
                a.policy != method,
                a.value if a.value is not None else 0.0,
                a.policy,
                len(a.params),
                repr(a.params),
                -a.budget,
            ),
        )
        result.append(Group(title, s, order))
    return sorted(result, key=lambda g: g.title)


def by_protocol(groups: list[Group]) -> dict[str, list[Group]]:
    """Groups keyed by protocol name ("" for runs without a preset), protocols in sorted order."""
    keyed: dict[str, list[Group]] = {}
    for g in groups:
        keyed.setdefault(g.settings.get("protocol") or "", []).append(g)
    return dict(sorted(keyed.items()))


def shown_settings(group: Group) -> dict:
    """The group's settings as a report lists them: data set and model aside (the title names them)."""
    return {k: v for k, v in group.settings.items() if k not in ("dataset", "model")}
