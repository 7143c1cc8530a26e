"""report.load: finished run folders read into Runs; damaged and unfinished ones left out, each with its reason."""

from __future__ import annotations

import json
import math

from hardbatch.fileio import read_csv
from hardbatch.records import CONFIG, HISTORY, SUMMARY, RunDir
from hardbatch.report import Run, load_runs

from .scripted_runs import write_run


def test_a_run_reads_back_its_files(tmp_path):
    path = write_run(tmp_path, "r", delta=0.5, seed=3, accs=[0.2, 0.4])
    run = Run.load(RunDir(path))
    assert (run.config.seed, run.config.delta, run.accs, run.seconds) == (3, 0.5, [0.2, 0.4], [5.0, 5.0])
    assert run.cost("samples_backprop") == [320, 640] and run.seconds_to(0.3) == 10.0 and run.seconds_to(0.9) is None
    assert run.environment["device"]["cpu"] == "Scripted CPU" and run.exposure is None
    assert math.isnan(read_csv(path / HISTORY)[0]["val_acc"])  # empty cells (no validation split) read as NaN


def test_damaged_and_unfinished_runs_are_left_out_with_the_reason(tmp_path):
    write_run(tmp_path, "good", accs=[0.5, 0.6])
    write_run(tmp_path, "empty_history", seed=1, accs=[0.5, 0.6])
    (tmp_path / "empty_history" / HISTORY).write_text((tmp_path / "good" / HISTORY).read_text().splitlines()[0] + "\n")
    write_run(tmp_path, "no_model", seed=2, accs=[0.5, 0.6])
    saved = json.loads((tmp_path / "no_model" / CONFIG).read_text())
    saved["config"]["model"] = None
    (tmp_path / "no_model" / CONFIG).write_text(json.dumps(saved))
    write_run(tmp_path, "stopped", seed=3, accs=[0.5, 0.6])
    (tmp_path / "stopped" / SUMMARY).unlink()  # as a run stopped before its last epoch leaves it
    (tmp_path / "never_started").mkdir()  # no config.json: not a run folder
    runs, left_out = load_runs(tmp_path)
    assert [r.path.name for r in runs] == ["good"]
    reasons = {item.path.name: (item.kind, item.why) for item in left_out}
    assert set(reasons) == {"empty_history", "no_model", "stopped"}
    assert reasons["empty_history"][0] == "damaged" and "history.csv: no epochs in it" in reasons["empty_history"][1]
    assert reasons["no_model"][0] == "damaged" and "model is None, not a name" in reasons["no_model"][1]
    assert reasons["stopped"] == (
        "unfinished",
        "config.json but no summary.json: still training, stopped or failed; resume it or move its directory away",
    )
