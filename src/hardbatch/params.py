"""A policy's hyper-parameters: declared once, as fields of the policy's own small dataclass (``Policy.Params``).

Each field says its type and default (the dataclass), and with ``param`` its one-line help, its allowed range and
its command-line placeholder. Everything else is derived from the declaration: the ``RunConfig`` field and the CLI
flag, the range check and its one-line error, ``create_policy``'s keyword arguments and the hyper-parameter table
of docs/policies/README.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hardbatch.errors import UsageError


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric hyper-parameter: ``low``/``high`` bounds (None: unbounded), each open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return f"a finite {'integer' if self.integer else 'number'}"


_NONE = object()


def param(default: Any, help: str, *, range: Range | None = None, metavar: str | None = None, legacy: Any = _NONE):
    """A hyper-parameter field: its default, a one-line help (the CLI adds the default), its range, its placeholder.

    ``legacy``: for a setting added after runs of its policy were made, the value those runs had (what their saved
    config.json, which lacks the key, stands for), so that resuming such a run keeps its rule.
    """
    metadata = {"help": help, "range": range, "metavar": metavar}
    if legacy is not _NONE:
        metadata["legacy"] = legacy
    return field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The command-line flag of a field: ``trim_top`` -> ``--trim-top``."""
    return "--" + name.replace("_", "-")


def check_value(f: dataclasses.Field, value: Any) -> None:
    """UsageError (one line: the flag, what is accepted, what was given) unless ``value`` fits the field ``f``."""
    allowed = f.metadata.get("range")
    if isinstance(f.default, bool) or f.type in ("bool", bool):
        if not isinstance(value, bool):
            raise UsageError(f"{flag(f.name)} must be true or false, got {value!r}")
        return
    if value is None and f.default is None:
        return  # an optional setting left unset
    if isinstance(f.default, str):
        if not isinstance(value, str):
            raise UsageError(f"{flag(f.name)} must be a name, got {value!r}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise UsageError(f"{flag(f.name)} must be {allowed or 'a number'}, got {value!r}")
    if allowed is not None and (value not in allowed or allowed.integer and not isinstance(value, int)):
        raise UsageError(f"{flag(f.name)} must be {allowed}, got {value}")


def check_params(params: Any) -> None:
    """Check every field of a Params dataclass instance against its declaration, then the checks that involve
    several fields (a ``validate()`` method of the Params class, where it has one)."""
    for f in dataclasses.fields(params):
        check_value(f, getattr(params, f.name))
    if hasattr(params, "validate"):
        params.validate()


@dataclass(frozen=True)
class NoParams:
    """A policy without hyper-parameters of its own."""
