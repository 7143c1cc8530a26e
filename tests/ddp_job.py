"""Run several ``hardbatch`` commands in one torchrun job (process start-up dominates a small run), for
test_distributed.

Usage: python -m torch.distributed.run --nproc-per-node P tests/ddp_job.py SPEC.json. SPEC holds
{"commands": [argv, ...], "log_dir": DIR, "kill_rank": R, "kill_after_evals": K}. Each rank appends (command index,
step, batch, loss) of every recorded step to DIR/rank-R.jsonl, so the test can check that all ranks chose alike. With
kill_rank, that rank SIGKILLs itself after its K-th evaluation, as a crashed GPU or a killed process would end.
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch

from hardbatch import batches, distributed, step, training
from hardbatch.cli import main
from hardbatch.sampler import HardBatchSampler

spec = json.loads(Path(sys.argv[1]).read_text())
distributed.init()
rank = distributed.rank()
log_path = Path(spec["log_dir"]) / f"rank-{rank}.jsonl"
current = {"command": -1, "evals": 0}
record = HardBatchSampler.record


def logged_record(self, loss, sample_losses=None):
    batch = record(self, loss, sample_losses)
    with log_path.open("a") as f:
        f.write(json.dumps([current["command"], self.steps, batch, float(loss)]) + "\n")
    return batch


HardBatchSampler.record = logged_record

if "kill_rank" in spec:
    evaluate = training.evaluate

    def dying_evaluate(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        current["evals"] += 1
        if rank == spec["kill_rank"] and current["evals"] >= spec["kill_after_evals"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    training.evaluate = dying_evaluate

codes = []
for i, argv in enumerate(spec["commands"]):
    current["command"] = i
    codes.append(main(argv))
if spec.get("grad_check"):
    # One step with unequal shares kept per rank (as Selective Backprop leaves them): the DDP gradient must equal
    # the gradient of the global batch's mean loss in one process.
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    reference = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 5, (8,))
    keep = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool)  # rank 0 keeps 3 of its 4, rank 1 keeps 1
    # This rank's share of the kept samples, trained as the step core trains it: its mean, scaled for DDP's average.
    kept, weights, scale, total = distributed.kept_share(keep, torch.device("cpu"))
    rows = distributed.local_rows(8)
    chosen = step.Chosen(batches.take((x[rows], y[rows]), kept), weights, scale, len(kept), total)
    wrapped = DistributedDataParallel(model)  # alive through backward: its hooks all-reduce the gradients
    loss, _ = step.losses_of(wrapped, chosen, per_sample=False)
    (loss * chosen.scale).backward()
    torch.nn.functional.cross_entropy(reference(x[keep]), y[keep]).backward()
    pairs = zip(model.parameters(), reference.parameters(), strict=True)
    diff = max((a.grad - b.grad).abs().max().item() for a, b in pairs)
    Path(spec["log_dir"], f"grad-{rank}.json").write_text(json.dumps(diff))
distributed.shutdown()
sys.exit(max(codes, default=0))
