"""Run examples/hf_trainer.py once per argument list (a JSON list of lists in argv[1]) in one torchrun job.

Starting processes that import transformers takes most of such a job, so tests/integrations/test_transformers.py
starts one.
Neither this script nor the example frees the process group: at exit, each rank writes exit-rank<R>.json into the
first run's --out folder, saying whether the group was still there after the integration's exit handler ran.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hf_trainer.py"


def report_group_at_exit(folder: str) -> None:
    """At exit, after the handlers registered later (atexit runs them last in, first out), write whether the process
    group is still initialized."""
    path = Path(folder) / f"exit-rank{os.environ.get('RANK', '0')}.json"

    def report() -> None:
        path.write_text(json.dumps({"initialized": dist.is_available() and dist.is_initialized()}))

    atexit.register(report)


if __name__ == "__main__":
    runs = json.loads(sys.argv[1])
    report_group_at_exit(runs[0][runs[0].index("--out") + 1])
    spec = importlib.util.spec_from_file_location("hf_trainer_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    for argv in runs:
        example.main(argv)  # twice in one process: the group must outlive the first Trainer
