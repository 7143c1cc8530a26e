"""Reports computed from saved run folders, never from training state: ``build_report`` writes report.md, its tables,
CSVs and plots; the evidence page (``report.evidence``) is rendered from the same statistics, read from the compact
records of its runs (``report.compact``).

Read-only over saved runs: this package imports only config, records, metrics, fileio, params, errors and the policy
registry, never training, data, the sampler or a run's machinery (tests/report/test_layers.py checks it).
"""

from hardbatch.report.groups import PAPER, Arm, Comparison, Group, group_runs
from hardbatch.report.load import LeftOut, Run, load_runs
from hardbatch.report.page import build_report
from hardbatch.report.stats import ArmStats, arm_stats

__all__ = [
    "PAPER",
    "Arm",
    "ArmStats",
    "Comparison",
    "Group",
    "LeftOut",
    "Run",
    "arm_stats",
    "build_report",
    "group_runs",
    "load_runs",
]
