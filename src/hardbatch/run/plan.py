"""Plans of runs: the compare and sweep grids, their shards, the data sets they share, and executing them."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hardbatch import distributed
from hardbatch.config import DELTA_POLICIES, POLICY_NAMES, RunConfig, check
from hardbatch.data import DataSplits, load_dataset
from hardbatch.errors import UsageError
from hardbatch.fileio import NoSpaceLeft, RunInUse, ensure_writable_dir
from hardbatch.policies import POLICIES
from hardbatch.policies.registry import policy_class
from hardbatch.records import RunDir
from hardbatch.run.checks import check_fits, check_same_settings, prepare
from hardbatch.run.experiment import train_run
from hardbatch.run.machine import resolve_device
from hardbatch.run.parts import make_sampler
from hardbatch.run.sinks import describe, terminal, warn


def _short(value: float) -> str:
    """A number written short (``0.5``) when that reads back as the same number, else in full (``0.3333333``)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def run_name(delta: float, seed: int, policy: str = "hardbatch", budget: float = 1.0) -> str:
    """Sub-directory name of one run of a comparison; distinct settings always get distinct names.

    Policies that do not use δ leave it out; a run of a shorter budget (a point of a compute frontier) ends in
    ``_budget-F``.
    """
    prefix = "" if policy == "hardbatch" else f"{policy}_"
    suffix = "" if budget == 1.0 else f"_budget-{_short(budget)}"
    if policy not in DELTA_POLICIES:
        return f"{prefix}seed-{seed}{suffix}"
    return f"{prefix}delta-{_short(delta)}_seed-{seed}{suffix}"


@dataclass(frozen=True)
class PlannedRun:
    cfg: RunConfig
    path: Path


# Controls whose δ = 1 pass is the rule's (tests/policies/test_random.py, test_cyclic.py).
SAME_AS_RULE_AT_ONE = ("random", "cyclic")


def plan_compare(
    base: RunConfig,
    deltas: Sequence[float],
    seeds: Sequence[int],
    out: Path | str,
    policies: Sequence[str] | None = None,
    budgets: Sequence[float] = (),
    budget_policies: Sequence[str] = ("uniform",),
) -> list[PlannedRun]:
    """Every policy x delta x seed of ``base``, each in ``out/[POLICY_]delta-D_seed-S``.

    A policy that does not use δ runs once per seed (``out/POLICY_seed-S``); each run keeps only its
    own policy's hyper-parameters (the others at their defaults). Two runs can never share a folder. At δ = 1
    the controls (``random``, ``cyclic``) train every batch in index order each round, exactly what
    ``hardbatch`` trains, so they are left out when ``hardbatch`` runs at δ = 1 too. ``policies=["all"]``: every
    registered policy at its defaults. ``budgets``: the fractions of the epoch budget at which the
    ``budget_policies`` also train, each run its schedule decayed within its own budget (the compute frontier the
    report places every arm against), in ``..._budget-F``.
    """
    if not deltas or not seeds:
        raise UsageError("need at least one delta and one seed")
    policies = list(policies or [base.policy])
    if policies == ["all"]:
        policies = list(POLICY_NAMES)
    for name in policies:
        policy_class(name)  # UsageError naming the valid ones
    unknown = [p for p in budget_policies if p not in POLICY_NAMES]
    if budgets and unknown:
        raise UsageError(f"unknown budget policy {unknown[0]!r}; valid: {', '.join(POLICY_NAMES)}")
    out = Path(out)
    plan = []
    for policy in [*policies, *(p for p in budget_policies if budgets and p not in policies)]:
        own = {k: v for k, v in base.params.items() if POLICIES[policy].takes(k)}  # the others keep their defaults
        fractions = ([base.budget] if policy in policies else []) + [
            float(f) for f in budgets if policy in budget_policies and float(f) != base.budget
        ]
        for d, budget, s in itertools.product(deltas if policy in DELTA_POLICIES else [None], fractions, seeds):
            if policy in SAME_AS_RULE_AT_ONE and d is not None and float(d) == 1.0 and "hardbatch" in policies:
                continue
            params = own if d is None else {**own, "delta": float(d)}
            cfg = base.replace(policy=policy, params=params, seed=int(s), budget=budget)
            check(cfg)  # every run of the plan, before the first one trains
            name = run_name(cfg.delta, cfg.seed, policy, budget)
            if base.tensorboard:  # one log directory per run, named as its run directory
                cfg = cfg.replace(tensorboard=str(Path(base.tensorboard) / name))
            plan.append(PlannedRun(cfg, out / name))
    paths = [run.path for run in plan]
    repeated = next((p for p in paths if paths.count(p) > 1), None)
    if repeated is not None:
        raise UsageError(f"two planned runs would share {repeated}; give each δ, seed and policy once")
    return plan


def plan_sweep(
    bases: Sequence[RunConfig],
    datasets: Sequence[str],
    models: Sequence[str],
    deltas: Sequence[float],
    seeds: Sequence[int],
    out: Path | str,
    policies: Sequence[str] | None = None,
    budgets: Sequence[float] = (),
    budget_policies: Sequence[str] = ("uniform",),
) -> list[PlannedRun]:
    """The grid bases (one per protocol) x datasets x models x seeds x deltas, in that order.

    Runs go to ``out/DATASET/MODEL/PROTOCOL/delta-D_seed-S`` so that shards' folders merge into one tree.
    """
    out = Path(out)
    plan = []
    for base in bases:
        for dataset in datasets:
            for model in models:
                where = Path(dataset) / model / (base.protocol or "custom")
                board = str(Path(base.tensorboard) / where) if base.tensorboard else None
                for seed in seeds:
                    plan += plan_compare(
                        base.replace(dataset=dataset, model=model, tensorboard=board),
                        deltas,
                        [seed],
                        out / where,
                        policies,
                        budgets,
                        budget_policies,
                    )
    return plan


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"shard must look like I/N with integers 0 <= I < N, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise UsageError(f"shard must look like I/N with integers 0 <= I < N, got {text!r}")
    return index, count


def shard(plan: list[PlannedRun], index: int, count: int) -> list[PlannedRun]:
    """Runs i with i % count == index: shards are disjoint, cover the plan, and need no coordination."""
    return plan[index::count]


DATA_KEYS = (
    "dataset",
    "data_dir",
    "download",
    "image_size",
    "augment",
    "normalize",
    "val_fraction",
    "data_on_device",
    "train_subset",
    "imbalance",
    "label_noise",
    "mnist1d_samples",
)


class DataCache:
    """Data sets loaded once per distinct data configuration, shared by the runs of a plan."""

    def __init__(self, device: torch.device):
        self.device = device
        self._loaded: dict[tuple, DataSplits] = {}

    def __call__(self, cfg: RunConfig) -> DataSplits:
        key = tuple(getattr(cfg, k) for k in DATA_KEYS)
        if cfg.train_subset is not None or cfg.imbalance != 1 or cfg.label_noise:
            key += (cfg.seed,)  # the training split then depends on the seed
        if key not in self._loaded:
            self._loaded[key] = load_dataset(cfg, self.device)
        return self._loaded[key]


def check_plan(plan: list[PlannedRun]) -> DataCache:
    """Check every run before any trains: names, ranges, k = floor(delta * N) >= 1, that the network takes the
    data's input, runs already on disk.

    Returns the data cache the check filled, for ``execute`` to reuse.
    """
    device = resolve_device(plan[0].cfg.device) if plan else torch.device("cpu")
    data = DataCache(device)
    for run in plan:
        cfg, _ = prepare(run.cfg)
        if distributed.on_writer(_finished_alike, run.path, cfg):
            continue
        distributed.together(lambda c: make_sampler(c, data(c)), cfg)
        check_fits(cfg, data(cfg))
    return data


def _finished_alike(path: Path, cfg: RunConfig) -> bool:
    """True for a finished run with ``cfg``'s settings; UsageError for a finished run with others."""
    if not RunDir(path).finished:
        return False
    check_same_settings(RunDir(path), cfg, hint="use another --out or move that run directory away")
    return True


def execute(
    plan: list[PlannedRun], *, progress: bool = True, keep_going: bool = False, data: DataCache | None = None
) -> list[tuple[PlannedRun, str]]:
    """Train every planned run in order: finished runs are skipped, interrupted ones resumed.

    The whole plan is checked first (``check_plan``), so bad input fails before any training. A run
    that another process is training (its directory is locked) is skipped with a note, so two commands
    on one tree, or two shards with the same index, never train a run twice at once. With ``keep_going``,
    a run that crashes (out of memory, say) is reported and the rest go on; a full disk stops everything.
    Returns the runs left unfinished with the reason: skipped as in use, or failed with their errors.
    """
    data = data or check_plan(plan)
    not_done = []
    for i, run in enumerate(plan, start=1):
        cfg = run.cfg
        resolved = prepare(cfg)[0]  # the label names the model a run trains (the data set's own when none is given)
        label = f"[{i}/{len(plan)}] {describe(resolved)}"
        if distributed.on_writer(lambda path: RunDir(path).finished, run.path):
            continue
        distributed.on_writer(ensure_writable_dir, run.path.parent)
        try:
            summary = train_run(cfg, run.path, resume=True, progress=progress, data=data(resolved), label=label)
            if progress and distributed.is_writer() and not terminal():  # a terminal has the bar, left in place
                print(
                    f"{label}: done, test top-1 {100 * summary['final_test_acc']:.2f}%, "
                    f"{summary['train_seconds']:.1f} s training",
                    file=sys.stderr,
                    flush=True,
                )
        except RunInUse:
            not_done.append(
                (run, "skipped: another hardbatch process is training it; rerun this command once it is done")
            )
            warn(f"{label} skipped: {run.path} is in use by another hardbatch process")
        except (UsageError, NoSpaceLeft, KeyboardInterrupt):
            raise
        except Exception as e:  # one crashed run must not stop a long sweep
            # Under several processes a crash may hit one rank only; the others would wait for it in their
            # collectives, so the whole job stops and the same command resumes it.
            if not keep_going or distributed.world_size() > 1:
                raise
            not_done.append((run, f"failed: {type(e).__name__}: {e}"))
            print(f"{label} failed: {type(e).__name__}: {e}", file=sys.stderr)
    return not_done
