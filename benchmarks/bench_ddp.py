"""hardbatch under two processes (torchrun's DDP, gloo on the CPU): does selection cost anything per step, and do two
processes take the steps of one?

1. Time per optimizer step at δ = 0.5 against δ = 1 under 2-process gloo, interleaved in one job (δ=1, δ=0.5, then
   the reverse on the next repeat), epoch 1 (the warm-up, identical for both) untimed. Target: ratio <= 1.03.
   Both variants pay the same collectives per step (DDP's gradient all-reduce, the loss all-reduce); selection adds
   only the choice at each round start.
2. The step sequence (round, batch) and losses of the paper's rule at δ = 0.5 with one process and with two, same
   global batch: identical batches, losses equal to float rounding. A model without BatchNorm, so both see the same
   per-sample gradients.

Run from the repository root (it launches itself under torch.distributed.run):
    .venv/bin/python benchmarks/bench_ddp.py            # about 1 minute on 2 idle cores
    .venv/bin/python benchmarks/bench_ddp.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

try:
    import hardbatch
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import hardbatch

from hardbatch import HardBatchSampler, distributed, fit
from hardbatch.data import BatchTransform, DataSplits, InMemoryDataset

SEED = 0


def model_for_bench(width: int) -> nn.Module:
    """Three conv-ReLU layers and a linear head, no BatchNorm (per-rank batch statistics would make 1 and 2 processes
    differ)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, 10),
        )


def make_data(num_batches: int, batch_size: int) -> DataSplits:
    g = torch.Generator().manual_seed(SEED)
    n = num_batches * batch_size
    train = InMemoryDataset(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)
    )
    transform = BatchTransform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return DataSplits(train, None, train, 10, 3, 32, transform, transform)


def train(args, delta: float) -> tuple[list[float], list[tuple]]:
    """One run: (seconds per step of each epoch after the first, trace rows of every epoch)."""
    data = make_data(args.batches, args.batch_size)
    sampler = HardBatchSampler(
        len(data.train),
        args.batch_size,
        epochs=args.epochs,
        policy=hardbatch.policies.HardBatch(delta=delta),
        seed=SEED,
    )
    model = model_for_bench(args.width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    times, rows = [], []

    def on_epoch(result):
        times.append(result.train_seconds / len(result.trace))
        rows.extend(result.trace)

    fit(
        distributed.wrap(model, torch.device("cpu")),
        optimizer,
        data.loader(data.train, distributed.LocalSlices(sampler)),
        sampler,
        {},
        torch.device("cpu"),
        train_transform=data.train_transform,
        on_epoch=on_epoch,
    )
    return times[1:], rows


def worker(args) -> None:
    distributed.init()
    torch.set_num_threads(1)
    per_step = {1.0: [], 0.5: []}
    for repeat in range(args.repeats):
        for delta in (1.0, 0.5) if repeat % 2 == 0 else (0.5, 1.0):
            times, _ = train(args, delta)
            per_step[delta].append(statistics.median(times))
    _, rows = train(args, 0.5)
    if distributed.is_writer():
        Path(args.worker).write_text(json.dumps({"per_step": {str(k): v for k, v in per_step.items()}, "trace": rows}))
    distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and epochs (a smoke run)")
    parser.add_argument("--repeats", type=int, default=6, help="repeats of each variant (default 6)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not timed (default 4)")
    parser.add_argument("--batches", type=int, default=20, help="mini-batches per epoch N (default 20)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size (default 128)")
    parser.add_argument("--width", type=int, default=32, help="model width (default 32)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the per-step ratio misses its target (1 and 2 processes taking different steps always exits 1)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # set when launched under torchrun: where rank 0 writes
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # flags given beside --quick still win
        parser.set_defaults(repeats=2, epochs=2)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        flags = list(sys.argv[1:] if argv is None else argv)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc-per-node",
                "2",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                __file__,
                *flags,
                "--worker",
                str(out),
            ],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        result = json.loads(out.read_text())
    torch.set_num_threads(1)
    _, one = train(args, 0.5)  # the same run in this process alone
    two = [tuple(r) for r in result["trace"]]
    full, half = (statistics.median(result["per_step"][k]) for k in ("1.0", "0.5"))
    ratio = half / full
    same_steps = [r[:3] + r[4:] for r in one] == [r[:3] + r[4:] for r in two]
    loss_diff = max(abs(a[3] - b[3]) for a, b in zip(one, two, strict=True))
    print(
        f"hardbatch {hardbatch.__version__}, torch {torch.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} cores; 2 processes x 1 thread, gloo"
    )
    print(
        f"global batch {args.batch_size}, N = {args.batches}, {args.epochs} epochs x {args.repeats} repeats, "
        f"epoch 1 untimed"
    )
    print("| variant | ms per step (median of repeats) | each repeat |")
    print("| --- | --- | --- |")
    for key, name in (("1.0", "δ = 1"), ("0.5", "δ = 0.5")):
        each = ", ".join(f"{1000 * t:.1f}" for t in result["per_step"][key])
        print(f"| {name} | {1000 * statistics.median(result['per_step'][key]):.2f} | {each} |")
    print(f"δ=0.5 / δ=1 per-step time: {ratio:.3f} (target <= 1.03): {'PASS' if ratio <= 1.03 else 'FAIL'}")
    print(
        f"1 process vs 2 processes, δ = 0.5, {len(one)} steps: step sequence (round, batch, samples) "
        f"{'identical' if same_steps else 'DIFFERENT'}; largest loss difference {loss_diff:.2e}"
    )
    return 0 if (ratio <= 1.03 or not args.check) and same_steps else 1


if __name__ == "__main__":
    sys.exit(main())
