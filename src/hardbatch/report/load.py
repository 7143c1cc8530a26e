"""Saved run folders -> Run objects: the finished runs under a folder, and the ones left out with the reason why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.metrics import cumulative, epochs_to_target
from hardbatch.records import (
    CONFIG,
    HISTORY,
    SUMMARY,
    MislabelledExposure,
    RunDir,
    find_runs,
    find_unfinished,
    mislabelled_exposure,
)

DAMAGED, UNFINISHED, DUPLICATE = "damaged", "unfinished", "duplicate"  # why a run is left out of a report
# The accuracies a report can judge by (``report --metric``): name -> how tables call it. Each is history.csv's
# ``test_NAME`` per epoch and summary.json's ``final_test_NAME``.
METRICS = {"acc": "top-1", "bacc": "balanced top-1"}


def check_metric(metric: str) -> str:
    """``metric`` if it is one of METRICS, else UsageError naming the accepted ones."""
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; valid: " + ", ".join(f"{k} ({v})" for k, v in METRICS.items()))
    return metric


@dataclass(frozen=True)
class LeftOut:
    """A run folder a report leaves out: ``kind`` (DAMAGED, UNFINISHED or DUPLICATE) and one line saying why."""

    path: Path
    kind: str
    why: str


@dataclass
class Run:
    """One finished run as saved on disk: its configuration, summary.json, history.csv and config.json's
    environment (versions, device), every value checked when read (``hardbatch.records``)."""

    path: Path
    config: RunConfig
    summary: dict
    history: list[dict] = field(repr=False)
    environment: dict = field(default_factory=dict, repr=False)
    exposure: MislabelledExposure | None = None  # runs with label noise: how much training was on relabelled samples

    @classmethod
    def load(cls, run: RunDir) -> Run:
        """The run's files; UsageError naming the file and what is wrong."""
        config, summary, history = run.config(), run.summary(), run.history()
        if not isinstance(config.model, str):
            raise UsageError(f"cannot read {run.file(CONFIG)}: model is {config.model!r}, not a name")
        if not history:
            raise UsageError(f"cannot read {run.file(HISTORY)}: no epochs in it")
        return cls(run.path, config, summary, history, run.environment(), mislabelled_exposure(run))

    @property
    def accs(self) -> list[float]:
        """Test top-1 per epoch."""
        return [row["test_acc"] for row in self.history]

    def curve(self, metric: str = "acc") -> list[float]:
        """Test ``metric`` (METRICS) per epoch."""
        return [row[f"test_{metric}"] for row in self.history]

    def final(self, metric: str = "acc") -> float:
        """Test ``metric`` (METRICS) after the last epoch."""
        return self.summary[f"final_test_{metric}"]

    @property
    def seconds(self) -> list[float]:
        """Training wall-clock per epoch."""
        return [row["train_seconds"] for row in self.history]

    def cost(self, column: str) -> list[float]:
        """Cumulative cost at the end of each epoch: ``samples_backprop``, ``train_seconds``, ..."""
        return cumulative(self.history, column)

    def seconds_to(self, target: float, metric: str = "acc") -> float | None:
        """Training wall-clock until the end of the first epoch whose test ``metric`` is at or above ``target``."""
        epoch = epochs_to_target(self.curve(metric), target)
        return None if epoch is None else sum(self.seconds[:epoch])


def load_runs(root: Path | str) -> tuple[list[Run], list[LeftOut]]:
    """The finished runs under ``root`` that can be read, and the run folders left out: damaged ones (the file and
    what is wrong) and unfinished ones (a config.json but no summary.json), in path order."""
    runs, left_out = [], []
    for run_dir in find_runs(root):
        try:
            runs.append(Run.load(run_dir))
        except UsageError as e:
            left_out.append(LeftOut(run_dir.path, DAMAGED, str(e)))
    for run_dir in find_unfinished(root):
        left_out.append(
            LeftOut(
                run_dir.path,
                UNFINISHED,
                f"{CONFIG} but no {SUMMARY}: still training, stopped or failed; resume it or move its directory away",
            )
        )
    return runs, left_out
