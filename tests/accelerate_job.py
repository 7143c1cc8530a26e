"""One torchrun job for tests/test_accelerate.py: examples/accelerate_loop.py for each configuration, then a probe of
what ``accelerator.prepare`` makes of a loader built on the sampler directly.

argv[1]: the output folder; argv[2]: a JSON object mapping a run's name to its example arguments.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader

from hardbatch import HardBatchSampler, distributed

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "accelerate_loop.py"

if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("accelerate_loop_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = Path(sys.argv[1])
    for name, argv in json.loads(sys.argv[2]).items():
        example.main([*argv, "--out", str(out / name)])
    # The first batch each rank loads from accelerator.prepare(DataLoader(..., batch_sampler=sampler)).
    accelerator = Accelerator(cpu=True)
    train_set = example.regression_data()
    sampler = HardBatchSampler(len(train_set), 32, delta=0.5, epochs=1, shuffle_partition=True, seed=0)
    first = next(iter(accelerator.prepare(DataLoader(train_set, batch_sampler=sampler))))
    (out / f"prepared-rank{accelerator.process_index}.json").write_text(json.dumps(first[2].tolist()))
    distributed.shutdown()  # as the example's __main__ does
