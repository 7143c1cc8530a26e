"""Per-arm statistics of a group, computed once from its runs and read by every table, plot, claim and page."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from hardbatch.config import POLICY_AXES
from hardbatch.metrics import (
    Interval,
    epochs_to_plateau,
    epochs_to_target,
    mean_std,
    paired_difference,
    value_at_budget,
)
from hardbatch.records import TARGET_FRACTION
from hardbatch.report.frontier import (
    FRONTIER_COSTS,
    Placement,
    clipped,
    frontiers,
    placements,
)
from hardbatch.report.groups import (
    FULL_BUDGET,
    PAPER,
    REFERENCE_DELTA,
    REFERENCE_POLICY,
    Comparison,
    Group,
)
from hardbatch.report.load import METRICS, Run, check_metric

NAN = math.nan
EQUAL_COST = ("samples_backprop", "train_seconds", "cpu_seconds")  # the costs at whose equal budget arms are compared
NOISE_SHARES = ("trained", "trained_after_warmup", "in_data")  # the label-noise shares a report averages


@dataclass(frozen=True)
class Spread:
    """A mean and sample standard deviation over seeds (``metrics.mean_std``; NaN where no run recorded it)."""

    mean: float = NAN
    std: float = NAN

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        """Mean and standard deviation over the values that are set (None and NaN left out)."""
        return cls(*mean_std(list(values)))


@dataclass(frozen=True)
class Target:
    """Epochs and seconds to the target accuracy T; a run that never reaches T counts as its budget + 1 epochs and
    its whole training time (censored)."""

    acc: float = NAN  # T
    epochs: float = NAN  # mean over runs
    reached: int = 0  # runs that reached T
    fewer_epochs_pct: float = NAN  # 100 x (1 - epochs / the reference's)
    seconds: float = NAN  # mean training seconds to T


@dataclass(frozen=True)
class Cost:
    """What an arm spent, means over seeds (docs/guides/command-line.md "Cost")."""

    optimizer_steps: float = NAN
    samples_loaded: float = NAN
    samples_forward_nograd: float = NAN
    samples_backpropagated: float = NAN
    train_seconds: float = NAN
    choose_seconds: float = NAN
    cpu_seconds: float = NAN


@dataclass(frozen=True)
class AtBudget:
    """Test top-1 (mean over seeds) at the group's equal-cost budget: the smallest total any of its runs spent."""

    budget: float = NAN
    acc: float = NAN


@dataclass
class ArmStats:
    """Everything a report says about one arm, computed once from its runs (``arm_stats``).

    Accuracies are fractions of the judged ``metric`` (``load.METRICS``: test top-1, or balanced top-1 where a
    report says so; ``balanced`` is always balanced top-1); differences (``metrics.Interval``) are seed-paired, in
    percentage points, with a 95% t interval whose ends are NaN where there is none; ``n`` = 0: the other arm was
    not run.
    """

    group: str
    arm: str
    policy: str
    axis: str | None
    value: float | None
    delta: float
    n: int
    is_reference: bool = False
    is_method: bool = False
    final: Spread = Spread()  # final test top-1
    final_ci: Interval = field(default_factory=Interval)  # its mean's 95% t interval, clipped to [0, 1]
    balanced: Spread = Spread()  # final balanced test top-1
    best_acc: float = NAN  # mean best test top-1
    final_val_acc: float = NAN  # mean final validation top-1 (NaN without a validation split)
    last: Spread = Spread()  # test top-1 averaged over each run's last LAST_EPOCHS epochs
    vs_reference: Interval = field(default_factory=Interval)  # final top-1 minus the comparison's reference's
    relative_pct: float = NAN  # vs_reference relative to the reference's mean final top-1 over the same seeds, in %
    last_vs_reference: Interval = field(default_factory=Interval)  # the same for the last-LAST_EPOCHS mean
    vs_uniform: Interval = field(default_factory=Interval)  # final top-1 minus `uniform`'s (ordinary reshuffled SGD)
    target: Target = Target()
    epochs_to_plateau: float = NAN  # mean
    cost: Cost = Cost()
    at_budget: dict[str, AtBudget] = field(default_factory=dict)  # by EQUAL_COST column
    mislabelled: dict[str, float] = field(default_factory=dict)  # NOISE_SHARES means (runs with label noise)
    metric: str = "acc"  # what ``final`` and every difference measure (load.METRICS)
    budget: float = FULL_BUDGET  # the fraction of the epoch budget the arm trained
    params: tuple = ()  # its other hyper-parameters away from their defaults (groups.extra_params)
    epochs: int = 0  # the epochs it trained (RunConfig.trained_epochs)
    vs_frontier: dict[str, Placement] = field(default_factory=dict)  # by FRONTIER_COSTS column; empty: no frontier

    @property
    def metric_name(self) -> str:
        """ "top-1" or "balanced top-1"."""
        return METRICS[self.metric]

    def row(self) -> dict:
        """The record as one summary.csv row (the file's columns, as before the record was nested)."""
        row = {
            k: getattr(self, k)
            for k in ("group", "arm", "policy", "axis", "value", "delta", "n", "is_reference", "is_method")
        }
        row.update(
            final_acc_mean=self.final.mean,
            final_acc_std=self.final.std,
            final_acc_low=self.final_ci.low,
            final_acc_high=self.final_ci.high,
            final_bacc_mean=self.balanced.mean,
            final_bacc_std=self.balanced.std,
            best_acc_mean=self.best_acc,
            final_val_acc_mean=self.final_val_acc,
        )
        row.update(
            _columns("diff", self.vs_reference),
            diff_relative_pct=self.relative_pct,
            last_acc_mean=self.last.mean,
            last_acc_std=self.last.std,
        )
        row.update({k: v for k, v in _columns("last_diff", self.last_vs_reference).items() if k != "last_diff_pairs"})
        row.update(_columns("uniform_diff", self.vs_uniform))
        row.update(
            target_acc=self.target.acc,
            epochs_to_target_mean=self.target.epochs,
            target_reached=self.target.reached,
            fewer_epochs_pct=self.target.fewer_epochs_pct,
            epochs_to_plateau_mean=self.epochs_to_plateau,
            seconds_to_target_mean=self.target.seconds,
            train_seconds_mean=self.cost.train_seconds,
            samples_backpropagated_mean=self.cost.samples_backpropagated,
        )
        row.update(
            {
                f"{k}_mean": getattr(self.cost, k)
                for k in (
                    "optimizer_steps",
                    "samples_loaded",
                    "samples_forward_nograd",
                    "choose_seconds",
                    "cpu_seconds",
                )
            }
        )
        at = {c: self.at_budget.get(c, AtBudget()) for c in EQUAL_COST}
        row.update({f"acc_at_equal_{c}": at[c].acc for c in EQUAL_COST})
        row.update({f"budget_{c}": at[c].budget for c in EQUAL_COST})
        row.update({f"mislabelled_{k}_mean": self.mislabelled.get(k, NAN) for k in NOISE_SHARES})
        row.update(metric=self.metric, budget=self.budget, epochs=self.epochs)
        for column in FRONTIER_COSTS:
            place = self.vs_frontier.get(column)
            row[f"frontier_{column}_inside"] = place.inside if place else ""
            row.update(_columns(f"frontier_{column}", place.d if place else Interval()))
        return row


def _columns(prefix: str, d: Interval) -> dict:
    return {
        f"{prefix}_points": d.mean,
        f"{prefix}_low": d.low,
        f"{prefix}_high": d.high,
        f"{prefix}_pairs": d.n,
        f"{prefix}_detectable": d.detectable,
    }


def paired_points(a: dict[int, float], b: dict[int, float]) -> Interval:
    """Seed-paired difference a − b over the seeds both have, in points."""
    seeds = sorted(set(a) & set(b))
    return paired_difference([a[s] for s in seeds], [b[s] for s in seeds]).scaled(100)


def target_accuracy(
    group: Group, target: float | None = None, comparison: Comparison = PAPER, metric: str = "acc"
) -> tuple[float | None, str]:
    """T for epochs-to-target (on ``metric``): ``target`` if given, else the runs' configured target, else 0.99 x
    the reference's mean best accuracy; and how it was set."""
    if target is not None:
        return target, "given to report --target-acc"
    ref = group.reference_for(comparison)
    configured = {run.config.target_acc for run in group.runs}
    if len(configured) == 1 and None not in configured:
        return configured.pop(), "given by --target-acc"
    if ref is None:
        return None, f"no runs of the reference ({comparison.reference_label}) to define it"
    best = Spread.of(max(run.curve(metric)) for run in ref.runs.values()).mean
    what = "accuracy" if metric == "acc" else METRICS[metric]
    how = f"{TARGET_FRACTION:g} × mean best test {what} of {comparison.reference_label} over seeds"
    return TARGET_FRACTION * best, how


def _censored_epochs(run: Run, target: float, metric: str) -> int:
    """Epochs to T; a run that never reaches T counts as its budget + 1 (censored: the truth is later)."""
    epoch = epochs_to_target(run.curve(metric), target)
    return epoch if epoch is not None else len(run.history) + 1


def _censored_seconds(run: Run, target: float, metric: str) -> float:
    seconds = run.seconds_to(target, metric)
    return seconds if seconds is not None else sum(run.seconds)


def equal_budget(group: Group, column: str) -> float:
    """The largest cost every run of the group's arms at the full budget has spent: the budget at which all arms
    can be compared (the runs of shorter budgets are placed against uniform's frontier instead)."""
    return min(run.cost(column)[-1] for arm in group.main_arms for run in arm.runs.values())


def _target(runs: list[Run], target: float | None, ref_epochs: float | None, metric: str) -> Target:
    if target is None:
        return Target()
    epochs = Spread.of(_censored_epochs(r, target, metric) for r in runs).mean
    return Target(
        target,
        epochs,
        sum(epochs_to_target(r.curve(metric), target) is not None for r in runs),
        100.0 * (1.0 - epochs / ref_epochs) if ref_epochs else NAN,
        Spread.of(_censored_seconds(r, target, metric) for r in runs).mean,
    )


def arm_stats(
    group: Group, target: float | None = None, comparison: Comparison = PAPER, metric: str = "acc"
) -> list[ArmStats]:
    """One ArmStats per arm of ``group``: accuracy (test ``metric``: "acc" top-1 or "bacc" balanced top-1),
    differences to the comparison's reference, to uniform and to uniform's compute frontier, epochs to target, cost
    and accuracy at equal cost."""
    check_metric(metric)
    target, _ = target_accuracy(group, target, comparison, metric)
    ref, uniform = group.reference_for(comparison), group.arm("uniform")
    method = group.method_arms(comparison)
    ref_epochs = None
    if ref is not None and target is not None:
        ref_epochs = Spread.of(_censored_epochs(r, target, metric) for r in ref.runs.values()).mean
    budgets = {column: equal_budget(group, column) for column in EQUAL_COST}
    fronts = frontiers(group, metric)
    stats = []
    for arm in group.arms:
        runs = list(arm.runs.values())
        final = arm.finals(metric)
        s = ArmStats(
            group=group.title,
            arm=arm.label,
            policy=arm.policy,
            axis=POLICY_AXES.get(arm.policy),
            value=arm.value,
            delta=arm.delta,
            n=len(runs),
            is_reference=arm is ref,
            is_method=arm in method,
            final=Spread.of(final.values()),
            final_ci=clipped(list(final.values())),
            balanced=Spread.of(r.summary["final_test_bacc"] for r in runs),
            best_acc=Spread.of(max(r.curve(metric)) for r in runs).mean,
            final_val_acc=Spread.of(r.summary.get(f"final_val_{metric}", NAN) for r in runs).mean,
            last=Spread.of(arm.last_accs(metric).values()),
            vs_uniform=paired_points(final, uniform.finals(metric)) if uniform is not None else Interval(),
            target=_target(runs, target, ref_epochs, metric),
            epochs_to_plateau=Spread.of(epochs_to_plateau(r.curve(metric)) for r in runs).mean,
            cost=Cost(
                **{
                    name: Spread.of(r.summary["cost"][key] for r in runs).mean
                    for name, key in (
                        ("optimizer_steps", "optimizer_steps"),
                        ("samples_loaded", "samples_loaded"),
                        ("samples_forward_nograd", "samples_forward_nograd"),
                        ("samples_backpropagated", "samples_backprop"),
                        ("train_seconds", "train_seconds"),
                        ("choose_seconds", "choose_seconds"),
                        ("cpu_seconds", "cpu_seconds"),
                    )
                }
            ),
            at_budget={
                c: AtBudget(b, Spread.of(value_at_budget(r.cost(c), r.curve(metric), b) for r in runs).mean)
                for c, b in budgets.items()
            },
            mislabelled={
                k: Spread.of(getattr(r.exposure, k) for r in runs if r.exposure is not None).mean for k in NOISE_SHARES
            },
            metric=metric,
            budget=arm.budget,
            params=arm.params,
            epochs=max(r.config.trained_epochs for r in runs),
            vs_frontier=placements(group, arm, fronts, metric),
        )
        if ref is not None:  # the reference's own difference is 0 over its n pairs, with no interval
            ref_final = ref.finals(metric)
            ref_mean = Spread.of(ref_final[seed] for seed in sorted(set(final) & set(ref_final))).mean
            s.vs_reference = paired_points(final, ref_final)
            s.relative_pct = s.vs_reference.mean / ref_mean if ref_mean else NAN
            s.last_vs_reference = paired_points(arm.last_accs(metric), ref.last_accs(metric))
        stats.append(s)
    return stats


def choose_arm(stats: list[ArmStats], on: str = "validation") -> ArmStats | None:
    """The method's arm (its reference aside) of highest mean final accuracy on ``on`` ("validation" or "test");
    for the paper, its best δ < 1."""

    def score(r: ArmStats) -> float:
        return r.final_val_acc if on == "validation" else r.final.mean

    ours = [r for r in stats if r.is_method and not math.isnan(score(r))]
    return max(ours, key=score) if ours else None


def chosen_arm(stats: list[ArmStats]) -> tuple[ArmStats | None, str]:
    """The method's arm chosen on validation, or on test where no run had a validation split; and which."""
    chosen = choose_arm(stats, "validation")
    return (chosen, "validation") if chosen is not None else (choose_arm(stats, "test"), "test")


def forest_points(stats: list[ArmStats]) -> dict[str, tuple[float, float, float]]:
    """Each arm's seed-paired difference of final accuracy to `uniform` (points: mean, low, high; NaN ends without
    an interval), `uniform` itself, the arms of shorter budgets and arms without pairs aside; empty without a
    `uniform` arm: what the forest plot draws."""
    full = max((r.budget for r in stats), default=FULL_BUDGET)
    return {
        r.arm: (r.vs_uniform.mean, r.vs_uniform.low, r.vs_uniform.high)
        for r in stats
        if r.policy != "uniform" and r.vs_uniform.n > 0 and r.budget == full
    }


def rule_budgets(stats: list[ArmStats]) -> dict[float, dict[float, ArmStats]]:
    """The paper's rule (its defaults) at each δ < 1 that also ran at a budget short of the full one, and at δ = 1,
    each by budget, where the group has uniform's frontier: {δ: {budget: stats}}, δ = 1 last; empty otherwise. What
    "does the rule generalize in fewer epochs?" reads."""
    rule = [r for r in stats if r.policy == REFERENCE_POLICY and r.value is not None and not r.params]
    by_delta: dict[float, dict[float, ArmStats]] = {}
    for r in rule:
        if r.value is not None:  # (always: the filter above)
            by_delta.setdefault(r.value, {})[r.budget] = r
    full = max((r.budget for r in stats), default=FULL_BUDGET)
    shorter = [v for v, arms in sorted(by_delta.items()) if v < REFERENCE_DELTA and any(b < full for b in arms)]
    if not shorter or not any(r.vs_frontier for r in rule):
        return {}
    return {v: dict(sorted(by_delta[v].items())) for v in [*shorter, REFERENCE_DELTA] if v in by_delta}
