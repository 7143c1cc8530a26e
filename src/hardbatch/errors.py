"""The error types of bad input and failed training, importable from anywhere without pulling in the rest of the package."""

from __future__ import annotations

from typing import Any


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with status 2."""


class BadValue(UsageError):
    """A setting given a value it does not accept: names the keyword (``prune_ratio``), what it accepts and what it
    got; ``as_flag()`` says the same of its command-line flag (``--prune-ratio``)."""

    def __init__(self, name: str, accepts: str, got: Any, owner: str | None = None):
        self.name, self.accepts, self.got, self.owner = name, accepts, got, owner
        super().__init__(self._text(name))

    def _text(self, name: str) -> str:
        got = f"{self.got!r} ({type(self.got).__name__})" if not isinstance(self.got, (int, float)) else repr(self.got)
        return f"{self.owner + ': ' if self.owner else ''}{name} must be {self.accepts}, got {got}"

    def as_flag(self) -> str:
        """The message with the keyword written as its flag, for the command line."""
        return self._text("--" + self.name.replace("_", "-"))


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class MissingExtra(UsageError, ImportError):
    """An optional package is not installed; the message names the ``pip install`` that adds it."""

    def __init__(self, what: str, package: str, extra: str):
        super().__init__(f"{what} needs {package}: pip install 'hardbatch[{extra}]'")
