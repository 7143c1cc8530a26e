"""Command-line flags generated from the declarations, and the RunConfig a command line gives.

Every flag of a run setting comes from ``RunConfig``'s field metadata, and every policy flag from the policies' own
(``hardbatch.params``): a setting is declared once, and its flag, help, placeholder and check follow from there.
``hardbatch.cli`` builds its commands' parsers with these.
"""

from __future__ import annotations

import argparse
from dataclasses import Field, fields

from hardbatch.config import DELTA_POLICIES, POLICY_NAMES, PROTOCOLS, RunConfig, make_config
from hardbatch.errors import UsageError
from hardbatch.params import flag, type_names
from hardbatch.policies import POLICIES
from hardbatch.policies.registry import policy_class, shared_fields

DEFAULTS = RunConfig()
POLICY_DEST = "policy_param_"  # argparse dest prefix of a policy hyper-parameter's flag


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a one-line error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def default_text(f: Field) -> str:
    """ " (default X)" for ``--help``, from the declaration."""
    if f.metadata.get("default_text"):
        return f" (default: {f.metadata['default_text']})"
    if f.default is None or f.default == "":
        return ""
    if isinstance(f.default, bool):
        return f" (default {'on' if f.default else 'off'})"
    return f" (default {f.default:g})" if isinstance(f.default, float) else f" (default {f.default})"


def add_flag(group: argparse._ArgumentGroup, f: Field, help_text: str, dest: str) -> None:
    """One flag from field ``f``'s declaration: its type, choices and placeholder; on/off flags for bools."""
    names, choices = type_names(f), f.metadata.get("choices")
    if "bool" in names:
        group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=None, dest=dest, help=help_text)
        return
    kind = int if "int" in names else float if "float" in names else str
    group.add_argument(
        flag(f.name),
        type=kind,
        default=None,
        dest=dest,
        choices=choices,
        metavar=None if choices else (f.metadata.get("metavar") or f.name.upper()),
        help=help_text,
    )


def listing_help(name: str) -> str:
    """The registries' names in the help of --dataset and --model (and the data sets' own models)."""
    from hardbatch.data import DATASETS, default_models_text
    from hardbatch.models import MODELS

    if name == "dataset":
        return f"data set: {', '.join(DATASETS)} (default {DEFAULTS.dataset})"
    return f"network: {', '.join(MODELS)} (default: the data set's own: {default_models_text()})"


def add_run_flags(p: argparse.ArgumentParser, many: bool = False, skip: tuple[str, ...] = ()) -> None:
    """Every run setting's flag, grouped as declared; ``many``: --datasets/--models/--protocols (sweep) instead of
    --dataset/--model/--protocol; ``skip``: settings the subcommand sets another way (--seeds, --deltas)."""
    p.add_argument(
        "--protocols" if many else "--protocol",
        choices=list(PROTOCOLS),
        nargs="+" if many else None,
        help="preset defaults: 'paper' = the released code's setup (128 px, ImageNet statistics, no "
        "augmentation, fixed order, SGD lr 0.005 constant, batch 512, 100 epochs); 'modern' = "
        "crop+flip, seeded batch partition, Nesterov SGD lr 0.1, wd 5e-4, cosine, batch 128, small "
        "stem, 100 epochs. Flags given override the preset; config.json keeps the resolved values. "
        "The defaults shown below are those without a protocol.",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(RunConfig):
        if not f.metadata.get("cli") or f.name in skip:
            continue
        group_name = f.metadata["group"]  # every command-line setting is declared in a group
        group = groups.get(group_name) or groups.setdefault(group_name, p.add_argument_group(group_name))
        if f.name in ("dataset", "model"):
            if many:
                group.add_argument(
                    f"--{f.name}s",
                    nargs="+",
                    required=True,
                    metavar="NAME",
                    help=listing_help(f.name).split(" (default")[0].replace(":", "s:", 1),
                )
            else:
                group.add_argument(flag(f.name), metavar="NAME", dest=f.name, help=listing_help(f.name))
            continue
        if f.name == "policy":
            add_policy_flags(group, many, skip)
            continue
        add_flag(group, f, f.metadata["help"] + default_text(f), f.name)
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (on a terminal) or progress lines (elsewhere: one per finished run, and one "
        "per epoch at most every 30 s)",
    )
    one = p.prog.split()[-1] in ("compare", "sweep")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1 if one else None,
        metavar="N",
        help="CPU threads of this process (torch.set_num_threads) "
        + (
            "(default 1: runs of a comparison are timed alike, and two jobs on a small machine do not "
            "slow each other the way several threads each would)"
            if one
            else "(default: torch's, one per core)"
        ),
    )


def add_budget_flags(p: argparse.ArgumentParser) -> None:
    """--budgets and --budget-policies: the compute frontier of a comparison."""
    p.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[],
        metavar="F",
        help="also train the --budget-policies at these fractions of the epoch budget, each run with its "
        "learning-rate schedule decayed within its own budget (e.g. 0.25 0.5 0.75): the report places "
        "every arm against the frontier of accuracy and cost they draw",
    )
    p.add_argument(
        "--budget-policies",
        nargs="+",
        default=["uniform"],
        metavar="NAME",
        help="the policies trained at every --budgets fraction (default uniform: ordinary training's "
        "frontier); the paper's rule too, to ask whether it generalizes in fewer epochs",
    )


def add_policy_flags(group: argparse._ArgumentGroup, many: bool, skip: tuple[str, ...]) -> None:
    """--policy (or --policies) and one flag per policy hyper-parameter, from the policies' own declarations."""
    group.description = (
        f"policies (docs/policies/NAME.md): {', '.join(POLICY_NAMES)}. hardbatch = the paper's "
        f"rule; random and cyclic = its controls at the same δ; uniform = ordinary SGD reshuffled "
        f"every epoch; the others its peers. δ applies to {', '.join(DELTA_POLICIES)}. Each "
        f"hyper-parameter flag names the policies that take it."
    )
    if many:
        group.add_argument(
            "--policies",
            nargs="+",
            metavar="NAME",
            help=f"policies to compare, each with every δ it uses (the others run once): "
            f"{', '.join(POLICY_NAMES)}, or all = every one at its defaults (rho-loss needs "
            f"--val-fraction) (default: --policy). With hardbatch at δ = 1, random and cyclic skip "
            f"δ = 1: they would train the same batches in the same order",
        )
    group.add_argument(
        "--policy",
        dest="policy",
        metavar="NAME",
        help=f"batch-selection policy: {', '.join(POLICY_NAMES)} (default {DEFAULTS.policy})",
    )
    for name, (f, users) in shared_fields().items():
        if name in skip:
            continue
        helps = {u: next(g for g in fields(POLICIES[u]) if g.name == name).metadata["help"] for u in users}
        text = (
            next(iter(helps.values()))
            if len(set(helps.values())) == 1
            else "; ".join(f"{u}: {h}" for u, h in helps.items())
        )
        add_flag(group, f, f"[{', '.join(users)}] {text}{default_text(f)}", POLICY_DEST + name)


def policy_flags(args: argparse.Namespace) -> dict:
    """The policy hyper-parameters given on the command line, by name."""
    return {k[len(POLICY_DEST) :]: v for k, v in vars(args).items() if k.startswith(POLICY_DEST) and v is not None}


def check_policy_flags(args: argparse.Namespace) -> None:
    """A policy hyper-parameter given on the command line must be taken by a chosen policy."""
    chosen = getattr(args, "policies", None) or [getattr(args, "policy", None) or DEFAULTS.policy]
    if chosen == ["all"]:
        chosen = list(POLICY_NAMES)
    for name in chosen if policy_flags(args) else []:
        policy_class(name)  # a known name first
    for name in policy_flags(args):
        users = [u for u, cls in POLICIES.items() if cls.takes(name)]
        if not set(users) & set(chosen):
            takes = "; ".join(
                f"{c} takes {', '.join(flag(f.name) for f in fields(policy_class(c))) or 'no hyper-parameter'}"
                for c in chosen
            )
            raise UsageError(f"{flag(name)} applies to policy {', '.join(users)}, not to {', '.join(chosen)} ({takes})")


def given(args: argparse.Namespace) -> list[str]:
    """The RunConfig fields whose flags the command line gives (``--protocol`` itself aside); ``params`` when any
    policy hyper-parameter is given."""
    names = [
        f.name
        for f in fields(RunConfig)
        if f.name not in ("protocol", "params") and getattr(args, f.name, None) is not None
    ]
    return names + (["params"] if policy_flags(args) else [])


def config_from_args(args: argparse.Namespace, protocol: str | None = None) -> RunConfig:
    """A RunConfig from the flags given; flags left out keep the protocol's or RunConfig's defaults."""
    values = {name: getattr(args, name) for name in given(args) if name != "params"}
    return make_config(protocol or getattr(args, "protocol", None), **values, params=policy_flags(args))
