"""The error types of bad input and failed training, importable from anywhere without pulling in the rest of the package."""


class UsageError(ValueError):
    """Bad user input: the CLI prints the message on one line and exits with status 2."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""
