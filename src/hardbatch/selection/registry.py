"""The policy registry: ``@register`` in a policy's own file is the only list of policies.

Every module of this package that is not part of the machinery (``INFRASTRUCTURE``) is a policy file, imported by
``load_policies`` so that its ``@register`` runs; a new policy is a new file here plus its card in docs/policies/.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hardbatch.selection.policy import Policy

POLICIES: dict[str, type["Policy"]] = {}
INFRASTRUCTURE = {"policy", "registry", "sampler", "step"}
# The order policies are listed in (help texts, reports, tests): the paper's rule, its controls, then its peers.
BUILTIN_ORDER = ("hardbatch", "random", "cyclic", "uniform", "selective-backprop", "composer-sb", "infobatch", "seta",
                 "ies", "rho-loss")


def register(cls: type["Policy"]) -> type["Policy"]:
    """Class decorator: add a policy under its ``name``; a name can be registered once."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in POLICIES:
        raise ValueError(f"policy {cls.name!r} is already registered")
    POLICIES[cls.name] = cls
    return cls


def load_policies() -> dict[str, type["Policy"]]:
    """Import every policy file of this package (once), and return the registry in listing order."""
    import hardbatch.selection as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in INFRASTRUCTURE:
            importlib.import_module(f"{package.__name__}.{module.name}")
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    ordered = sorted(POLICIES, key=lambda name: (order.get(name, len(order)), name))
    POLICIES.update({name: POLICIES.pop(name) for name in ordered})  # re-insert in listing order
    return POLICIES


def policy_fields() -> list[tuple[str, type, dataclasses.Field]]:
    """The hyper-parameters of every registered policy as RunConfig fields (name, type, field), in policy order.

    Two policies may share a hyper-parameter only with the same default; the field's ``policies`` metadata names
    every policy that uses it.
    """
    merged: dict[str, tuple[dataclasses.Field, list[str], list[str]]] = {}
    for name, cls in load_policies().items():
        for f in dataclasses.fields(cls.Params):
            if f.name in merged and merged[f.name][0].default != f.default:
                other = merged[f.name][1][0]
                raise ValueError(f"policy {name!r} declares {f.name!r} with default {f.default!r}, but {other!r} "
                                 f"declares it with {merged[f.name][0].default!r}; rename one")
            first, users, helps = merged.setdefault(f.name, (f, [], []))
            users.append(name)
            helps.append(f.metadata["help"])
    fields = []
    for field_name, (f, users, helps) in merged.items():
        # A shared field keeps each policy's own help: "infobatch: ...; seta: ...".
        text = helps[0] if len(set(helps)) == 1 else "; ".join(f"{u}: {h}" for u, h in zip(users, helps))
        metadata = {**f.metadata, "help": text, "policies": tuple(users)}
        fields.append((field_name, f.type, dataclasses.field(default=f.default, metadata=metadata)))
    return fields


def hyper_parameter_table() -> str:
    """The Markdown table of every registered policy's hyper-parameters (docs/policies/README.md holds a copy,
    rewritten by ``python scripts/policy_docs.py``): policy, flag, default, allowed values, help."""
    from hardbatch.params import flag

    lines = ["| policy | flag | default | allowed | what it does |", "|---|---|---|---|---|"]
    for name, cls in load_policies().items():
        params = dataclasses.fields(cls.Params)
        if not params:
            lines.append(f"| `{name}` | — | | | no hyper-parameters of its own" + (" (δ only)" if cls.uses_delta else "") + " |")
        for f in params:
            allowed = f.metadata.get("range")
            kind = "on/off" if isinstance(f.default, bool) else (str(allowed) if allowed else "any number")
            default = "unset" if f.default is None else f"`{f.default}`"
            lines.append(f"| `{name}` | `{flag(f.name)}` | {default} | {kind} | {f.metadata['help']} |")
    return "\n".join(lines)
