"""Run examples/hf_trainer.py once per argument list (a JSON list of lists in argv[1]) in one torchrun job.

Starting processes that import transformers takes most of such a job, so tests/test_transformers.py starts one.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from hardbatch import distributed

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hf_trainer.py"

if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("hf_trainer_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    for argv in json.loads(sys.argv[1]):
        example.main(argv)
    distributed.shutdown()  # as the example's __main__ does
