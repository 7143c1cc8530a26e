"""Settings declared once, as dataclass fields with ``param``, and the one check of a value against its declaration.

A field's type and default come from the dataclass; ``param`` adds its one-line help, its allowed values (a
``Range`` or ``choices``) and its command-line placeholder. Everything else is derived from that declaration: a
policy's keyword arguments and their checks, ``RunConfig``'s fields and checks, the CLI flags and their help, and
the hyper-parameter table of the policy cards. ``check_fields`` is the check: every value against its field, with
one line naming the keyword, what it accepts and what it got (``BadValue``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any

from hardbatch.errors import BadValue


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: ``low``/``high`` bounds (None: unbounded), each open or closed."""

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
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            within = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
            return f"an integer {within}" if self.integer else within
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {high}"
        return kind


def _number(value: float | None) -> str:
    """A bound as written: whole numbers in full (a seed's 2147483647, not 2.14748e+09), others short (0.5, 1e-06)."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def param(
    default: Any = MISSING,
    help: str = "",
    *,
    range: Range | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    default_factory: Any = MISSING,
    group: str | None = None,
    cli: bool = True,
    default_text: str | None = None,
) -> Any:
    """A declared setting: its default, a one-line ``help``, its allowed values and how the CLI shows it.

    ``range``: the numeric values it accepts; ``choices``: the names it accepts; ``metavar``: the flag's placeholder;
    ``group``: the ``--help`` section it is listed in; ``cli=False``: no flag; ``default_text``: how ``--help``
    states the default when the value itself would not say it ("the data set's own", ...).
    """
    metadata = {
        "help": help,
        "range": range,
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "group": group,
        "cli": cli,
        "default_text": default_text,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The command-line flag of a field: ``trim_top`` -> ``--trim-top``."""
    return "--" + name.replace("_", "-")


def type_names(f: dataclasses.Field) -> tuple[str, ...]:
    """The names of the types a field's annotation allows: ``"int | None"`` -> ``("int", "None")``."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return tuple(part.strip().split("[")[0] for part in annotation.split("|"))


def _plain(value: Any) -> Any:
    """numpy and other number-like scalars as Python's own bool, int or float (what a JSON file can hold)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if type(value).__name__ in ("bool_", "bool"):  # numpy.bool_ (numpy.bool in numpy 2), without importing numpy
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def accepted(f: dataclasses.Field) -> str:
    """What a field accepts, in words: "in [0, 1)", "one of eval, train", "true or false", ... ("or unset")."""
    names = type_names(f)
    allowed, choices = f.metadata.get("range"), f.metadata.get("choices")
    if choices:
        text = f"one of {', '.join(choices)}"
    elif "bool" in names:
        text = "true or false"
    elif allowed is not None:
        text = str(allowed)
    elif "int" in names:
        text = "an integer"
    elif "float" in names:
        text = "a finite number"
    elif "str" in names:
        text = "a string"
    elif "dict" in names:
        text = "a dict"
    else:
        text = " or ".join(names)
    return text + (" (or unset)" if "None" in names and names != ("None",) else "")


def check_value(f: dataclasses.Field, value: Any, owner: str | None = None) -> Any:
    """``value`` checked against the declaration of field ``f``, returned as a plain Python value (numpy scalars
    become int or float; an int given for a float field becomes a float); ``BadValue`` otherwise."""
    names, value = type_names(f), _plain(value)
    allowed, choices = f.metadata.get("range"), f.metadata.get("choices")

    def bad() -> BadValue:
        return BadValue(f.name, accepted(f), value, owner)

    if value is None:
        if "None" in names:
            return None
        raise bad()
    if "bool" in names:
        if isinstance(value, bool):
            return value
        raise bad()
    if isinstance(value, bool):  # a bool is an int to Python, never a number here
        raise bad()
    if "str" in names and isinstance(value, str):
        if choices and value not in choices:
            raise bad()
        return value
    if "dict" in names and isinstance(value, dict):
        return value
    if "int" in names and isinstance(value, int):
        if allowed is not None and value not in allowed:
            raise bad()
        return value
    if "float" in names and isinstance(value, (int, float)):
        if not math.isfinite(value) or (allowed is not None and value not in allowed):
            raise bad()
        return float(value)
    raise bad()


def check_fields(obj: Any, owner: str | None = None) -> None:
    """Check every field of dataclass instance ``obj`` against its declaration and store the plain value
    (``check_value``); then the checks that involve several fields, ``obj.validate()``, where it has one."""
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, check_value(f, getattr(obj, f.name), owner))
    if hasattr(obj, "validate"):
        obj.validate()


def declared(cls: type) -> dict[str, dataclasses.Field]:
    """The declared settings of a dataclass, by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls)}
