"""One torchrun job for tests/integrations/test_accelerate.py: examples/accelerate_loop.py for each configuration,
then a probe of what ``accelerator.prepare`` makes of a loader built on the sampler directly.

argv[1]: the output folder; argv[2]: a JSON object mapping a run's name to its example arguments. Each run writes
the example's trace-rank<R>.json and samples-rank<R>.json: per optimizer step, the samples this rank trained. The
script ends without calling ``distributed.shutdown()``: ``prepare_loader`` frees the process group at exit.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader

from hardbatch import HardBatchSampler, step

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "accelerate_loop.py"

if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("accelerate_loop_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = Path(sys.argv[1])
    losses_of, trained = step.losses_of, []

    def recording(model, chosen, **kwargs):  # the rows of this rank's share that the step trains (batch[2]: ids)
        trained.append(chosen.batch[2].tolist())
        return losses_of(model, chosen, **kwargs)

    step.losses_of = recording
    accelerator = Accelerator(cpu=True)  # the state the example's Accelerator shares
    for name, argv in json.loads(sys.argv[2]).items():
        trained.clear()
        example.main([*argv, "--out", str(out / name)])
        (out / name / f"samples-rank{accelerator.process_index}.json").write_text(json.dumps(trained))
    # The first batch each rank loads from accelerator.prepare(DataLoader(..., batch_sampler=sampler)).
    train_set = example.regression_data()
    sampler = HardBatchSampler(len(train_set), 32, delta=0.5, epochs=1, shuffle_partition=True, seed=0)
    first = next(iter(accelerator.prepare(DataLoader(train_set, batch_sampler=sampler))))
    (out / f"prepared-rank{accelerator.process_index}.json").write_text(json.dumps(first[2].tolist()))
