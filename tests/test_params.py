"""hardbatch.params: the one value-check system. A setting declared once with ``param`` (type, default, help, a
``Range`` or ``choices``), checked by ``check_fields``/``check_value`` with one line naming the keyword, what it
accepts and what it got (``BadValue``, whose ``as_flag`` names the command-line flag); numpy scalars accepted as plain
Python values.

Every registered policy's own declarations against this system: tests/policies/test_contract.py.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pytest

from hardbatch.errors import BadValue, UsageError
from hardbatch.params import Range, accepted, check_fields, check_value, declared, flag, param, type_names


@dataclass
class Settings:
    """A declaration of every kind of setting, as policies and RunConfig write them."""

    ratio: float = param(0.5, "a fraction", range=Range(0.0, 1.0, high_open=True), metavar="R")
    count: int = param(3, "a count", range=Range(1, integer=True))
    every: int | None = param(None, "an optional count", range=Range(1, integer=True), metavar="K")
    on: bool = param(False, "a switch")
    mode: str = param("eval", "a choice", choices=("eval", "train"), group="evaluation")
    name: str = param("", "any string", metavar="NAME", cli=False, default_text="the data set's")
    scale: float = param(1.0, "any finite number")
    extra: dict = param(default_factory=dict, help="a dict")

    def validate(self) -> None:
        if self.count > 10 and self.on:
            raise UsageError(f"Settings: count {self.count} with on")


FIELDS = declared(Settings)


# ---- Range ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "allowed, inside, outside, text",
    [
        (Range(0.0, 1.0), [0.0, 0.5, 1.0], [-0.1, 1.01, math.nan, math.inf], "in [0, 1]"),
        (Range(0.0, 1.0, high_open=True), [0.0, 0.999], [1.0], "in [0, 1)"),
        (Range(0.0, 1.0, low_open=True), [1.0, 1e-9], [0.0], "in (0, 1]"),
        (Range(0.0), [0.0, 1e9], [-1e-9, math.inf], "a finite number >= 0"),
        (Range(0.0, low_open=True), [1e-9], [0.0], "a finite number > 0"),
        (Range(1, integer=True), [1, 7, 2.0], [0, 1.5, -3], "an integer >= 1"),
        (Range(high=5, high_open=True), [-100, 4.9], [5], "a finite number < 5"),
        (Range(integer=True), [-3, 0], [0.5, math.nan], "an integer"),
    ],
)
def test_a_range_holds_its_bounds_open_or_closed_and_says_them(allowed, inside, outside, text):
    assert all(v in allowed for v in inside)
    assert not any(v in allowed for v in outside)
    assert str(allowed) == text


# ---- param and what is derived from it ---------------------------------------------------------------------------


def test_param_keeps_the_declaration_in_the_field_metadata():
    ratio, name, extra = FIELDS["ratio"], FIELDS["name"], FIELDS["extra"]
    assert ratio.default == 0.5 and ratio.metadata["help"] == "a fraction" and ratio.metadata["metavar"] == "R"
    assert ratio.metadata["range"] == Range(0.0, 1.0, high_open=True) and ratio.metadata["cli"]
    assert FIELDS["mode"].metadata["choices"] == ("eval", "train") and FIELDS["mode"].metadata["group"] == "evaluation"
    assert not name.metadata["cli"] and name.metadata["default_text"] == "the data set's"
    assert extra.default is dataclasses.MISSING and Settings().extra == {} and Settings().extra is not Settings().extra
    assert list(FIELDS) == ["ratio", "count", "every", "on", "mode", "name", "scale", "extra"]  # declaration order


def test_flags_types_and_accepted_values_in_words():
    assert flag("trim_top") == "--trim-top" and flag("delta") == "--delta"
    assert type_names(FIELDS["every"]) == ("int", "None") and type_names(FIELDS["ratio"]) == ("float",)
    assert {name: accepted(f) for name, f in FIELDS.items()} == {
        "ratio": "in [0, 1)",
        "count": "an integer >= 1",
        "every": "an integer >= 1 (or unset)",
        "on": "true or false",
        "mode": "one of eval, train",
        "name": "a string",
        "scale": "a finite number",
        "extra": "a dict",
    }


# ---- check_value and check_fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, given, stored",
    [
        ("ratio", 0, 0.0),
        ("ratio", np.float32(0.25), 0.25),
        ("ratio", np.float64(0.5), 0.5),
        ("count", np.int64(4), 4),
        ("count", 4, 4),
        ("every", None, None),
        ("every", np.int32(2), 2),
        ("on", np.bool_(True), True),
        ("mode", "train", "train"),
        ("scale", -3, -3.0),
        ("extra", {"a": 1}, {"a": 1}),
    ],
)
def test_accepted_values_come_back_as_plain_python_values(name, given, stored):
    value = check_value(FIELDS[name], given)
    assert value == stored and type(value) is type(stored)


@pytest.mark.parametrize(
    "name, given, message",
    [
        ("ratio", 1.0, "ratio must be in [0, 1), got 1.0"),
        ("ratio", math.nan, "ratio must be in [0, 1), got nan"),
        ("ratio", "0.5", "ratio must be in [0, 1), got '0.5' (str)"),
        ("ratio", None, "ratio must be in [0, 1), got None (NoneType)"),
        ("ratio", True, "ratio must be in [0, 1), got True"),  # a bool is no number here
        ("count", 0, "count must be an integer >= 1, got 0"),
        ("count", 2.0, "count must be an integer >= 1, got 2.0"),
        ("count", np.float32(2.5), "count must be an integer >= 1, got 2.5"),
        ("every", 0, "every must be an integer >= 1 (or unset), got 0"),
        ("on", 1, "on must be true or false, got 1"),
        ("on", "yes", "on must be true or false, got 'yes' (str)"),
        ("mode", "test", "mode must be one of eval, train, got 'test' (str)"),
        ("scale", math.inf, "scale must be a finite number, got inf"),
        ("extra", [1], "extra must be a dict, got [1] (list)"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_keyword_what_it_accepts_and_what_it_got(name, given, message):
    with pytest.raises(BadValue) as error:
        check_value(FIELDS[name], given, owner="Settings")
    assert str(error.value) == f"Settings: {message}" and "\n" not in str(error.value)
    assert isinstance(error.value, UsageError) and error.value.name == name
    assert error.value.as_flag() == f"{flag(name)}{message[len(name) :]}"  # the same, for the command line
    with pytest.raises(BadValue) as error:
        check_value(FIELDS[name], given)
    assert str(error.value) == message  # no owner: the keyword alone


def test_check_fields_stores_the_plain_values_then_runs_the_checks_across_fields():
    settings = Settings(ratio=np.float32(0.5), count=np.int64(2), on=np.bool_(False))
    check_fields(settings)
    assert (settings.ratio, settings.count, settings.on) == (0.5, 2, False)
    assert (type(settings.ratio), type(settings.count), type(settings.on)) == (float, int, bool)
    with pytest.raises(BadValue, match=r"^Settings: ratio must be in"):
        check_fields(Settings(ratio=2.0), owner="Settings")
    with pytest.raises(UsageError, match=r"^Settings: count 11 with on$"):
        check_fields(Settings(count=11, on=True))
    check_fields(Settings(count=11))  # each alone is fine

    @dataclass(frozen=True)
    class Frozen:
        value: float = param(1.0, "a number", range=Range(0.0))

    frozen = Frozen(value=np.float64(2.0))
    check_fields(frozen)  # a frozen declaration is checked and stored too
    assert type(frozen.value) is float
