"""The error types of bad input and failed training, importable from anywhere without pulling in the rest of the
package."""

from __future__ import annotations

from typing import Any


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with status 2."""


class BadValue(UsageError):
    """A setting given a value it does not accept: names the keyword (``prune_ratio``), what it accepts and what it
    got; ``as_flag()`` says the same of its command-line flag (``--prune-ratio``)."""

    def __init__(self, name: str, accepts: str, got: Any, owner: str | None = None):
        self.name, self.accepts, self.got, self.owner = name, accepts, got, owner
        super().__init__(self._text(name, owner))

    def _text(self, name: str, owner: str | None) -> str:
        got = f"{self.got!r} ({type(self.got).__name__})" if not isinstance(self.got, (int, float)) else repr(self.got)
        return f"{owner + ': ' if owner else ''}{name} must be {self.accepts}, got {got}"

    def as_flag(self) -> str:
        """The message with the keyword written as its flag, for the command line (without the owner's class name,
        which the command line never shows: a flag has one meaning there)."""
        return self._text(as_flag(self.name), None)


class SettingsError(UsageError):
    """A problem across settings (one that only applies to some data set, one a policy needs): the message names
    each setting as its keyword (``val_fraction``); ``as_flag()`` names its command-line flag (``--val-fraction``).
    ``template`` holds a ``{}`` for each name."""

    def __init__(self, template: str, *names: str):
        self.template, self.names = template, names
        super().__init__(template.format(*names))

    def as_flag(self) -> str:
        """The message with each setting written as its flag, for the command line."""
        return self.template.format(*map(as_flag, self.names))


def as_flag(name: str) -> str:
    """The command-line flag of setting ``name``: ``val_fraction`` -> ``--val-fraction``."""
    return "--" + name.replace("_", "-")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class MissingExtra(UsageError, ImportError):
    """An optional package is not installed; the message names the ``pip install`` that adds it."""

    def __init__(self, what: str, package: str, extra: str):
        super().__init__(f"{what} needs {package}: pip install 'hardbatch[{extra}]'")
