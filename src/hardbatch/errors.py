"""The error type for bad user input, importable from anywhere without pulling in the rest of the package."""


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with status 2."""
