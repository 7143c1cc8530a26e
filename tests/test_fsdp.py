"""Beyond DDP: FSDP2 (``fully_shard``) over 2 CPU processes with gloo trains the same selection as one process, its
scoring forwards counted; and the step's collectives run over the data-parallel group a sampler is given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("fsdp_job.py")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single") / "single.json"
    subprocess.run(
        [sys.executable, str(JOB), "single", str(out)],
        check=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.read_text())


def _same(got: dict, want: dict) -> None:
    for name in want:
        assert [row[:2] for row in got[name]["trace"]] == [row[:2] for row in want[name]["trace"]], name
        assert [row[2] for row in got[name]["trace"]] == pytest.approx(
            [row[2] for row in want[name]["trace"]], abs=1e-5
        ), name
        assert got[name]["scored"] == want[name]["scored"], name


@pytest.mark.slow
def test_fsdp_over_two_processes_trains_the_selection_of_one(launch, single, tmp_path):
    out = tmp_path / "fsdp.json"
    job = launch(2, str(JOB), "fsdp", str(out), timeout=240)
    assert job.returncode == 0, job.output[-3000:]
    got = json.loads(out.read_text())
    _same(got, single)
    assert got["selective-backprop"]["scored"] > 0  # the scoring forwards re-gather the sharded parameters: counted


@pytest.mark.slow
def test_each_process_its_own_data_parallel_group_trains_as_one_process(launch, single, tmp_path):
    out = tmp_path / "groups.json"
    job = launch(2, str(JOB), "groups", str(out), timeout=240)
    assert job.returncode == 0, job.output[-3000:]
    for rank in range(2):  # each rank alone in its group: the whole batch, as one process would train it
        _same(json.loads(Path(f"{out}.{rank}").read_text()), single)
