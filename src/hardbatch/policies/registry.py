"""The policy registry: ``@register`` in a policy's own file is the only list of policies.

Every module of this package that is not part of the machinery (``MACHINERY``) is a policy file, imported by
``load_policies`` so that its ``@register`` runs; a new policy is a new file here plus its card in docs/policies/.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardbatch.errors import UsageError
from hardbatch.params import accepted, flag

if TYPE_CHECKING:
    from hardbatch.policies.base import Policy

POLICIES: dict[str, type[Policy]] = {}
MACHINERY = {"base", "registry"}
# The order policies are listed in (help texts, reports, tests): the paper's rule, its controls, then its peers.
BUILTIN_ORDER = (
    "hardbatch",
    "random",
    "cyclic",
    "uniform",
    "rs2",
    "selective-backprop",
    "composer-sb",
    "infobatch",
    "seta",
    "ies",
    "rho-loss",
    "bls",
)


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: add a policy under its ``name``; a name can be registered once."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in POLICIES and POLICIES[cls.name] is not cls:
        raise ValueError(f"policy {cls.name!r} is already registered")
    POLICIES[cls.name] = cls
    return cls


def load_policies() -> dict[str, type[Policy]]:
    """Import every policy file of this package (once), and return the registry in listing order."""
    # The files are found in this file's own folder: importing the package's __init__ here, which imports this
    # module, would make an import cycle.
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name not in MACHINERY:
            importlib.import_module(f"{__package__}.{module.name}")
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    ordered = sorted(POLICIES, key=lambda name: (order.get(name, len(order)), name))
    POLICIES.update({name: POLICIES.pop(name) for name in ordered})  # re-insert in listing order
    return POLICIES


def policy_class(name: str) -> type[Policy]:
    """The policy registered as ``name``; UsageError listing the valid names for any other."""
    if not isinstance(name, str) or name not in load_policies():
        separated = " (names are separated by spaces)" if isinstance(name, str) and "," in name else ""
        raise UsageError(f"unknown policy {name!r}{separated}; valid: {', '.join(POLICIES)}")
    return POLICIES[name]


def hyper_parameters(name: str) -> dict[str, dataclasses.Field]:
    """Policy ``name``'s hyper-parameters by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(policy_class(name))}


def create_policy(name: str, **params: Any) -> Policy:
    """The policy registered as ``name`` with hyper-parameters ``params`` (unbound: the sampler binds it).

    An unknown name, or a hyper-parameter the policy does not take, is refused with one line listing the valid
    ones; each value is checked against its declaration (``params.check_fields``).
    """
    cls = policy_class(name)
    takes = hyper_parameters(name)
    unknown = [p for p in params if p not in takes]
    if unknown:
        users = [n for n, c in POLICIES.items() if all(c.takes(p) for p in unknown)]
        also = f"; policies that take {', '.join(unknown)}: {', '.join(users)}" if users else ""
        raise UsageError(
            f"policy {name!r} does not take {', '.join(unknown)}; it takes: "
            f"{', '.join(takes) or 'no hyper-parameters'}{also}"
        )
    return cls(**params)


def defaults(name: str) -> dict[str, Any]:
    """Policy ``name``'s hyper-parameters at their defaults."""
    return policy_class(name)().hyper_parameters()


def shared_fields() -> dict[str, tuple[dataclasses.Field, tuple[str, ...]]]:
    """Every hyper-parameter of every registered policy, once, with the policies that take it (a flag each).

    Two policies may share a hyper-parameter's name only with the same type and default.
    """
    merged: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for name, cls in load_policies().items():
        for f in dataclasses.fields(cls):
            if f.name in merged:
                first = merged[f.name][0]
                if (first.default, first.type) != (f.default, f.type):
                    raise ValueError(
                        f"policy {name!r} declares {f.name!r} as {f.type} = {f.default!r}, but "
                        f"{merged[f.name][1][0]!r} as {first.type} = {first.default!r}; rename one"
                    )
            merged.setdefault(f.name, (f, []))[1].append(name)
    return {k: (f, tuple(users)) for k, (f, users) in merged.items()}


def hyper_parameter_table() -> str:
    """The Markdown table of every registered policy's hyper-parameters (docs/policies/README.md holds a copy,
    rewritten by ``python scripts/policy_docs.py``): policy, keyword and flag, default, allowed values, help."""
    lines = ["| policy | keyword (flag) | default | allowed | what it does |", "|---|---|---|---|---|"]
    for name, cls in load_policies().items():
        params = dataclasses.fields(cls)
        if not params:
            lines.append(f"| `{name}` | — | | | no hyper-parameters of its own |")
        for f in params:
            default = f.metadata.get("default_text") or ("unset" if f.default is None else f"`{f.default}`")
            lines.append(
                f"| `{name}` | `{f.name}` (`{flag(f.name)}`) | {default} | {accepted(f)} | {f.metadata['help']} |"
            )
    return "\n".join(lines)
