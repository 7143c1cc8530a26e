"""The report tests' fixtures: the scripted run folders, their groups, and a few real runs.

tests/report is a package (its __init__.py), so this module is ``report.conftest`` and does not shadow tests/conftest.py
for the test files that import helpers from it (``from conftest import ...``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hardbatch.config import RunConfig
from hardbatch.report import group_runs

from .scripted_runs import load, write_scripted


@pytest.fixture(scope="session")
def scripted(tmp_path_factory) -> Path:
    """write_scripted's folders; read only (tests that change runs write their own)."""
    return write_scripted(tmp_path_factory.mktemp("scripted"))


@pytest.fixture(scope="session")
def groups(scripted):
    return group_runs(load(scripted))


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """uniform, δ = 1 and infobatch (which back-propagates less) on 320 digits, 3 seeds, 3 epochs: real runs."""
    from hardbatch.run.plan import execute, plan_compare

    out = tmp_path_factory.mktemp("trained")
    base = RunConfig(dataset="digits", model="mlp", train_subset=320, batch_size=32, epochs=3, device="cpu")
    execute(plan_compare(base, [1.0], [0, 1, 2], out, policies=["hardbatch", "uniform", "infobatch"]), progress=False)
    return out
