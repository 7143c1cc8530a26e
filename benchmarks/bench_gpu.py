"""Training throughput of hardbatch's path on a GPU: δ=1 vs δ=0.5, data held on the GPU vs fed from the host.

ResNet-18 (torchvision, 10 classes, random init) on CIFAR-shaped random uint8 data (3x32x32,
CIFAR-10's 50,000 images cut into N fixed batches of 512), with what train_run resolves on the
device: bf16 autocast and channels_last on CUDA, fp32 elsewhere. Five variants, interleaved:

  hand loop         plain PyTorch over contiguous slices of the GPU-held uint8 tensor (the reference);
  hb δ=1 / δ=0.5    hardbatch (HardBatchSampler + DataSplits.loader + training.fit), data on the device
                    (InMemoryDataset.to(device), as --data-on-device does: gathers on the GPU, no workers);
  hb δ=1 / δ=0.5    the same with the data held on the host: DataLoader workers gather, pinned memory,
                    non-blocking copies, as train_run builds it when the data stays on the CPU.

Each variant trains --warmup untimed steps, then --steps timed steps between two device
synchronisations. With the default --warmup of one epoch, δ=0.5 is timed while selecting.
Run from the repository root:  python benchmarks/bench_gpu.py --device cuda   (--quick: tiny, works on a CPU)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

# The sibling script (on sys.path as this script's folder); importing it also puts src/ on the path.
from bench_overhead import CIFAR_MEAN, CIFAR_STD, SEED, StartClock, make_data, per_step, start_clocks

import hardbatch
from hardbatch import HardBatchSampler, RunConfig, fit
from hardbatch.data import DataSplits
from hardbatch.models import MODELS, build_seeded
from hardbatch.run.checks import resolve
from hardbatch.run.machine import resolve_device


class SyncAudit:
    """Wraps fit's train_batches: from step ``warmup`` on, every synchronising CUDA call warns (and is counted).

    torch.cuda.set_sync_debug_mode("warn") makes PyTorch warn at each call that blocks the host
    until the GPU has caught up (a blocking host-to-device copy, .item(), .tolist(), ...); such a
    call each step stops the CPU from queueing step t+1 while the GPU runs step t.
    """

    def __init__(self, batches, sampler: HardBatchSampler, warmup: int):
        self.batches, self.sampler, self.warmup = batches, sampler, warmup

    def __iter__(self):
        batches = iter(self.batches)
        while True:
            if self.sampler.steps >= self.warmup:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield batch


class Bench:
    """The model, data and settings every variant shares; each ``time_*`` returns seconds per step."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = resolve_device(args.device)
        cfg = resolve(RunConfig(device=args.device), self.device)  # what train_run would use here
        self.autocast = torch.bfloat16 if cfg.precision == "bf16" else None
        self.channels_last = bool(cfg.channels_last)
        self.num_batches = args.num_samples // args.batch_size
        self.host_data = make_data(self.num_batches, args.batch_size)
        d = self.host_data
        self.device_data = DataSplits(
            train=d.train.to(self.device),
            val=None,
            test=d.test,
            num_classes=10,
            in_channels=3,
            image_size=32,
            train_transform=d.train_transform,
            eval_transform=d.eval_transform,
        )

    def model_and_optimizer(self):
        model = build_seeded(self.args.model, 10, 3, SEED).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.SGD(model.parameters(), lr=self.args.lr, momentum=0.9)

    def time_hardbatch(self, delta: float, on_device: bool) -> float:
        args = self.args
        data = self.device_data if on_device else self.host_data
        model, optimizer = self.model_and_optimizer()
        epochs = -(-(args.warmup + args.steps) // self.num_batches)
        sampler = HardBatchSampler(
            len(data.train), args.batch_size, epochs=epochs, policy=hardbatch.policies.HardBatch(delta=delta)
        )
        # A budget in steps rather than whole epochs; the sampler cuts the last round short.
        sampler.total_steps = args.warmup + args.steps
        workers = 0 if on_device else args.workers
        pin = self.device.type == "cuda" and not on_device  # as train_run decides
        clock = StartClock(data.loader(data.train, sampler, workers, pin), sampler, args.warmup, self.device)
        fit(
            model,
            optimizer,
            clock,
            sampler,
            {},
            self.device,
            train_transform=data.train_transform,
            autocast_dtype=self.autocast,
            channels_last=self.channels_last,
        )
        assert sampler.steps == args.warmup + args.steps and clock.started is not None
        return per_step(clock.started, args.steps, self.device)[0]

    def audit_syncs(self, delta: float, on_device: bool, steps: int) -> tuple[float, Counter]:
        """Synchronising CUDA calls per step of hardbatch's path after the warm-up, and where they come from."""
        args = self.args
        data = self.device_data if on_device else self.host_data
        model, optimizer = self.model_and_optimizer()
        sampler = HardBatchSampler(
            len(data.train),
            args.batch_size,
            epochs=1 + -(-steps // self.num_batches),
            policy=hardbatch.policies.HardBatch(delta=delta),
        )
        sampler.total_steps = self.num_batches + steps
        workers, pin = (0, False) if on_device else (args.workers, True)
        batches = SyncAudit(data.loader(data.train, sampler, workers, pin), sampler, self.num_batches)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit(
                    model,
                    optimizer,
                    batches,
                    sampler,
                    {},
                    self.device,
                    train_transform=data.train_transform,
                    autocast_dtype=self.autocast,
                    channels_last=self.channels_last,
                )
            finally:
                torch.cuda.set_sync_debug_mode(0)
        sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
        return sum(sites.values()) / steps, sites

    def time_hand_loop(self) -> float:
        """Plain PyTorch on the GPU-held data: slice, scale, normalise, forward, backward, step."""
        args, device = self.args, self.device
        model, optimizer = self.model_and_optimizer()
        model.train()
        images, labels, b = self.device_data.train.images, self.device_data.train.labels, args.batch_size
        mean = torch.tensor(CIFAR_MEAN, device=device).view(1, -1, 1, 1)
        std = torch.tensor(CIFAR_STD, device=device).view(1, -1, 1, 1)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        started = (0.0, 0.0, 0)
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                started = start_clocks(device)
            i = step % self.num_batches
            x = ((images[i * b : (i + 1) * b].float().div_(255) - mean) / std).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=self.autocast, enabled=self.autocast is not None):
                loss = F.cross_entropy(model(x), labels[i * b : (i + 1) * b])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return per_step(started, args.steps, device)[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="ResNet-18 training throughput through hardbatch on a GPU: δ=1 vs δ=0.5, data on the GPU vs "
        "host data through DataLoader workers and pinned memory, next to a plain PyTorch loop.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="resnet18", choices=list(MODELS))
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--num-samples", type=int, default=50_000, help="training images (CIFAR-10 has 50,000)")
    p.add_argument("--steps", type=int, default=200, help="timed optimizer steps per variant and repeat")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: one epoch, N)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each variant, interleaved")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers for the host-data variants")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--audit-steps",
        type=int,
        default=100,
        help="on CUDA: count synchronising calls over this many steps per path afterwards (0: skip)",
    )
    p.add_argument("--json", type=Path, help="also write the measurements here")
    p.add_argument(
        "--quick",
        action="store_true",
        help="logic check, also on a CPU: 128 samples, batch 16, 8+4 steps, 1 repeat, 2 workers",
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # flags given beside --quick still win
        p.set_defaults(num_samples=128, batch_size=16, steps=4, warmup=8, repeats=1, workers=2)
    args = p.parse_args(argv)
    if args.num_samples // args.batch_size < 2:
        p.error("need at least 2 batches (δ=0.5 needs floor(0.5 N) >= 1)")
    if args.warmup is None:
        args.warmup = args.num_samples // args.batch_size
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    device = bench.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"hardbatch {hardbatch.__version__}, torch {torch.__version__}, {name}, {datetime.date.today().isoformat()}")
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{args.model}, random uint8 3x32x32, batch {args.batch_size}, N={bench.num_batches} batches, "
        f"autocast {bench.autocast}, channels_last {bench.channels_last}; {args.warmup} untimed + {args.steps} timed "
        f"steps per variant, {args.repeats} repeats, order alternating forward/reverse\n",
        flush=True,
    )
    host = f"host data, pin+{args.workers} workers" if device.type == "cuda" else f"host data, {args.workers} workers"
    variants = {
        "hand loop, data on device": bench.time_hand_loop,
        "hb δ=1, data on device": lambda: bench.time_hardbatch(1.0, True),
        "hb δ=0.5, data on device": lambda: bench.time_hardbatch(0.5, True),
        f"hb δ=1, {host}": lambda: bench.time_hardbatch(1.0, False),
        f"hb δ=0.5, {host}": lambda: bench.time_hardbatch(0.5, False),
    }
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    started = time.perf_counter()
    for r in range(args.repeats):
        for n in names if r % 2 == 0 else reversed(names):
            times[n].append(variants[n]())
            print(f"  repeat {r + 1}/{args.repeats}  {n:<40} {times[n][-1] * 1e3:8.2f} ms/step", flush=True)

    median = {n: statistics.median(ts) for n, ts in times.items()}
    print(f"\n{'variant':<40} {'median ms/step':>14} {'min':>8} {'max':>8} {'images/s':>9}")
    for n in names:
        print(
            f"{n:<40} {median[n] * 1e3:14.2f} {min(times[n]) * 1e3:8.2f} {max(times[n]) * 1e3:8.2f} "
            f"{args.batch_size / median[n]:9.0f}"
        )
    hand, dev1, dev05, host1, host05 = (median[n] for n in names)
    ratios = {
        "time/step δ=0.5 / δ=1, data on device (target <= 1.03)": dev05 / dev1,
        "time/step δ=0.5 / δ=1, host data": host05 / host1,
        "throughput hb δ=1 on device / hand loop (target >= 0.97)": hand / dev1,
        "throughput host data / data on device, δ=1": dev1 / host1,
    }
    print()
    for label, value in ratios.items():
        print(f"{label:<58} {value:6.3f}")
    audits = {}
    if device.type == "cuda" and args.audit_steps > 0:
        print(
            f"\nsynchronising CUDA calls per step after the warm-up (torch.cuda.set_sync_debug_mode), "
            f"{args.audit_steps} steps each:"
        )
        for delta, on_device in ((1.0, True), (0.5, True), (1.0, False)):
            label = f"hb δ={delta:g}, " + ("data on device" if on_device else "host data")
            per, sites = bench.audit_syncs(delta, on_device, args.audit_steps)
            audits[label] = {"per_step": per, "sites": dict(sites)}
            where = ", ".join(f"{site} x{n}" for site, n in sites.most_common(6)) or "none"
            print(f"  {label:<28} {per:5.2f}/step   {where}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "device": name,
                    "torch": torch.__version__,
                    "hardbatch": hardbatch.__version__,
                    "date": datetime.date.today().isoformat(),
                    "command": " ".join(sys.argv),
                    "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "seconds_per_step": times,
                    "median_images_per_s": {n: args.batch_size / median[n] for n in names},
                    "ratios": ratios,
                    "sync_audit": audits,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
