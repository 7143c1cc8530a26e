"""What hardbatch's training path costs per optimizer step on a CPU: δ=0.5 vs δ=1, and δ=1 vs a hand-written loop.

Three variants train the same model on the same data with the same batch size, interleaved in one
process (forward then reverse order on alternate repeats, so a slow drift of the machine hits every
variant alike), and each reports its median time per step over the repeats:

  hand      a minimal plain-PyTorch loop over contiguous slices of the tensors;
  hb δ=1    hardbatch's full path: HardBatchSampler + the DataLoader DataSplits.loader builds + training.fit;
  hb δ=0.5  the same with selection on: after the warm-up round, the top half of the batches each round.

Targets: (a) time per step at δ=0.5 / at δ=1 <= 1.03 (selection costs nothing measurable);
(b) throughput of hb δ=1 / of the hand loop >= 0.97 (the package adds no measurable overhead).
Each variant also reports CPU time and page faults per step; ``--model pool_linear`` (a near-free
model) measures the per-step cost of the machinery alone, in absolute terms.

Run from the repository root:  .venv/bin/python benchmarks/bench_overhead.py   (--help for options)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

try:
    import hardbatch
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import hardbatch

from hardbatch import HardBatchSampler, fit
from hardbatch.data import BatchTransform, DataSplits, InMemoryDataset
from hardbatch.models import MODELS, build_seeded

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
SEED = 0


def bench_cnn(width: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Four conv-BN-ReLU blocks (width w, 2w stride 2, 4w stride 2, 4w) and a linear head.

    Lighter than hardbatch's small_cnn (about 110 ms per step at batch 128 on 2 idle cores here, which
    would bury any loop overhead): at width 16 a step takes about 23 ms, at 24 about 46 ms, the
    regime of a small GPU-less experiment, where per-step Python and data work would show.
    """

    def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(in_channels, width),
        *block(width, 2 * width, 2),
        *block(2 * width, 4 * width, 2),
        *block(4 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


class PoolLinear(nn.Module):
    """A near-free model (global average pool + linear): a step's time is then the loop's own machinery."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


LOCAL_MODELS = {"bench_cnn": "defined here, width --width", "pool_linear": "near-free: measures the machinery alone"}


def build_model(name: str, width: int) -> nn.Module:
    """The same initial weights on every call: each repeat of each variant starts from one state."""
    if name in LOCAL_MODELS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return bench_cnn(width) if name == "bench_cnn" else PoolLinear()
    return build_seeded(name, 10, 3, SEED)


def make_data(num_batches: int, batch_size: int) -> DataSplits:
    """CIFAR-shaped random uint8 images (3x32x32) and labels, held in an InMemoryDataset as train_run holds them."""
    g = torch.Generator().manual_seed(SEED)
    n = num_batches * batch_size
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    train = InMemoryDataset(images, labels)
    transform = BatchTransform(CIFAR_MEAN, CIFAR_STD)
    return DataSplits(
        train=train,
        val=None,
        test=train,
        num_classes=10,
        in_channels=3,
        image_size=32,
        train_transform=transform,
        eval_transform=transform,
    )


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


class StartClock:
    """Wraps fit's train_batches: once ``warmup`` steps are recorded, synchronises and starts the clocks.

    fit records each step's loss before it draws the next batch, so ``sampler.steps`` here is the
    number of steps already taken; the check comes before the draw, so the first timed step's
    batch loading (and, at a round start, the sampler's planning) is inside the timed span.
    """

    def __init__(self, batches, sampler: HardBatchSampler, warmup: int, device: torch.device):
        self.batches, self.sampler, self.warmup, self.device = batches, sampler, warmup, device
        self.started: tuple[float, float, int] | None = None

    def __iter__(self):
        batches = iter(self.batches)
        while True:
            if self.started is None and self.sampler.steps >= self.warmup:
                self.started = start_clocks(self.device)
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _faults() -> int:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def start_clocks(device: torch.device) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, minor page faults) now, after the device has finished its queued work."""
    synchronize(device)
    return time.perf_counter(), time.process_time(), _faults()


def per_step(started: tuple[float, float, int], steps: int, device: torch.device) -> tuple[float, float, float]:
    """(wall s, CPU s, page faults) per step since ``started``, after the device has finished."""
    now = start_clocks(device)
    return tuple((b - a) / steps for a, b in zip(started, now, strict=True))


def add_steady_malloc_flag(parser: argparse.ArgumentParser) -> None:
    """``--steady-malloc`` / ``--no-steady-malloc`` (default on), as every CPU benchmark here takes it."""
    parser.add_argument(
        "--steady-malloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="raise glibc malloc's mmap/trim thresholds first, so steps do not page-fault on fresh memory: "
        "that costs 5-25%% of a step here, by an amount set by allocation history, not by the code "
        "timed (see README); --no-steady-malloc measures with the allocator as a plain run has it",
    )


def steady_malloc() -> str:
    """Stop glibc malloc from handing large blocks back to the OS after each step (see README, "Page faults").

    PyTorch's CPU tensors come from malloc, which by default serves large blocks by mmap or trims
    the heap top on free; the next step then touches fresh pages and page-faults on every 4 KiB.
    How many it does depends on the process's allocation history, not on the code being timed.
    Raising both thresholds (as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ would) removes that.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        if libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30):
            return "glibc malloc: mmap and trim thresholds raised to 1 GiB"
    except (OSError, AttributeError):
        pass
    return "mallopt unavailable: allocator left as it is"


def time_hardbatch(data: DataSplits, args: argparse.Namespace, delta: float) -> tuple[float, float, float]:
    """(wall s, CPU s, page faults) per step of hardbatch's path as train_run runs it on a CPU; epoch 1 not timed.

    fit is given no evaluation set, so the span is training alone: every step, the sampler's
    planning at each round start, the DataLoader's gathers and new iterator per round, and fit's
    per-epoch bookkeeping (the loss stack and copy to the host). Epoch 1 (the warm-up round,
    identical for both δ) is not timed: it holds first-touch allocations and oneDNN primitive creation.
    """
    model = build_model(args.model, args.width)
    optimizer = make_optimizer(model, args.lr)
    sampler = HardBatchSampler(
        len(data.train), args.batch_size, epochs=args.epochs, policy=hardbatch.policies.HardBatch(delta=delta)
    )
    # As train_run builds it on a CPU: num_workers 0 (the default), no pinned memory.
    loader = data.loader(data.train, sampler, num_workers=0, pin_memory=False)
    clock = StartClock(loader, sampler, args.num_batches, torch.device("cpu"))
    fit(model, optimizer, clock, sampler, {}, torch.device("cpu"), train_transform=data.train_transform)
    timed = args.epochs * args.num_batches - args.num_batches
    assert sampler.steps == args.epochs * args.num_batches and clock.started is not None
    return per_step(clock.started, timed, torch.device("cpu"))


def time_hand_loop(data: DataSplits, args: argparse.Namespace) -> tuple[float, float, float]:
    """(wall s, CPU s, page faults) per step of the plain loop a user would write; the same steps, epoch 1 not timed.

    Batch i is a contiguous slice (a view: no gather), scaled and normalised inline exactly as
    BatchTransform does, so both paths do the same arithmetic and differ only in the machinery
    around it. It stores no losses and never synchronises: the cheapest honest loop.
    """
    model = build_model(args.model, args.width)
    optimizer = make_optimizer(model, args.lr)
    model.train()
    images, labels, b = data.train.images, data.train.labels, args.batch_size
    mean = torch.tensor(CIFAR_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, -1, 1, 1)
    started = (0.0, 0.0, 0)
    for step in range(args.epochs * args.num_batches):
        if step == args.num_batches:
            started = start_clocks(torch.device("cpu"))
        i = step % args.num_batches
        x = (images[i * b : (i + 1) * b].float().div_(255) - mean) / std
        loss = F.cross_entropy(model(x), labels[i * b : (i + 1) * b])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return per_step(started, (args.epochs - 1) * args.num_batches, torch.device("cpu"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Per-step overhead of hardbatch's training path on a CPU: selection on (δ=0.5) vs off (δ=1), "
        "and hardbatch at δ=1 vs a minimal hand-written PyTorch loop, interleaved in one run. Defaults "
        "take about 2-4 minutes on 2 idle CPU cores. Exit status 0 whatever the result, unless --check.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        default="bench_cnn",
        choices=[*LOCAL_MODELS, *MODELS],
        help="; ".join(f"{k}: {v}" for k, v in LOCAL_MODELS.items()) + "; or a hardbatch model name",
    )
    p.add_argument("--width", type=int, default=24, help="channel width of bench_cnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-batches", type=int, default=20, help="N: mini-batches in the data set (one epoch)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per repeat; the first is warm-up and not timed")
    p.add_argument("--repeats", type=int, default=11, help="repeats of each variant, interleaved")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch.set_num_threads; use 1 if other processes are running (2 threads on 2 busy cores "
        "spin-wait and slow down 3-5x)",
    )
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="which clock PASS/FAIL judges: wall-clock, or this process's CPU time (steadier when other "
        "processes share the cores; with --threads 1 it is the work done, whoever else runs)",
    )
    add_steady_malloc_flag(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~15 s): N=8, 3 epochs, 5 repeats, width 16 (flags given beside it still apply)",
    )
    p.add_argument("--check", action="store_true", help="exit with status 1 if a target is missed")
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # flags given beside --quick still win
        p.set_defaults(num_batches=8, epochs=3, repeats=5, width=16)
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is not timed)")
    if args.num_batches < 2:
        p.error("--num-batches must be >= 2 (δ=0.5 needs floor(0.5 N) >= 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = steady_malloc() if args.steady_malloc else "allocator as it is"
    data = make_data(args.num_batches, args.batch_size)
    variants = {
        "hand loop (plain PyTorch)": lambda: time_hand_loop(data, args),
        "hardbatch fit, δ=1": lambda: time_hardbatch(data, args, 1.0),
        "hardbatch fit, δ=0.5": lambda: time_hardbatch(data, args, 0.5),
    }
    names = list(variants)
    timed_steps = (args.epochs - 1) * args.num_batches
    model_desc = f"bench_cnn(width={args.width})" if args.model == "bench_cnn" else args.model
    cpu_name = platform.processor() or platform.machine()
    print(
        f"hardbatch {hardbatch.__version__}, torch {torch.__version__}, {cpu_name}, {args.threads} threads, "
        f"{datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} cores, {malloc}"
    )
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{model_desc}, random uint8 3x32x32, batch {args.batch_size}, N={args.num_batches} batches; per repeat "
        f"{args.epochs} epochs, {timed_steps} steps timed (epoch 1 not); {args.repeats} repeats, order alternating "
        f"forward/reverse\n"
    )
    short = ["hand", "δ=1", "δ=0.5"]
    print(f"{'':14} {'wall ms/step':^31}  {'CPU ms/step':^31}")
    print(f"{'':14} " + "  ".join(f"{n:>9}" for n in short) + "  " + "  ".join(f"{n:>9}" for n in short))

    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    faults: dict[str, list[float]] = {n: [] for n in names}
    started = time.perf_counter()
    for r in range(args.repeats):
        for n in names if r % 2 == 0 else reversed(names):
            w, c, f = variants[n]()
            wall[n].append(w)
            cpu[n].append(c)
            faults[n].append(f)
        print(
            f"repeat {r + 1:2d}/{args.repeats} "
            + "  ".join(f"{wall[n][-1] * 1e3:9.2f}" for n in names)
            + "  "
            + "  ".join(f"{cpu[n][-1] * 1e3:9.2f}" for n in names)
            + f"   ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    med_wall = {n: statistics.median(ts) for n, ts in wall.items()}
    med_cpu = {n: statistics.median(ts) for n, ts in cpu.items()}
    print(
        f"\n{'variant':<26} {'wall ms/step':>12} {'min':>7} {'max':>7} {'images/s':>8} {'CPU ms/step':>11} "
        f"{'faults/step':>11}   (medians over repeats)"
    )
    for n in names:
        print(
            f"{n:<26} {med_wall[n] * 1e3:12.2f} {min(wall[n]) * 1e3:7.2f} {max(wall[n]) * 1e3:7.2f} "
            f"{args.batch_size / med_wall[n]:8.0f} {med_cpu[n] * 1e3:11.2f} {statistics.median(faults[n]):11.0f}"
        )

    hand, hb1, hb05 = names

    def ratios(times: dict[str, list[float]], num: str, den: str) -> tuple[float, float]:
        """Ratio of the medians, and (a drift-free cross-check) the median of the per-repeat ratios."""
        return (
            statistics.median(times[num]) / statistics.median(times[den]),
            statistics.median(a / b for a, b in zip(times[num], times[den], strict=True)),
        )

    checks = [  # label, numerator, denominator, target test, target text
        ("(a) time/step δ=0.5 / δ=1", hb05, hb1, lambda v: v <= 1.03, "<= 1.03"),
        ("(b) throughput hb δ=1 / hand", hand, hb1, lambda v: v >= 0.97, ">= 0.97"),
    ]
    print(
        f"\n{'ratio':<30} {'wall':>6} {'(paired)':>9} {'CPU':>6} {'(paired)':>9} {'target':>8}  "
        f"result ({args.clock} clock)"
    )
    failed = False
    for label, num, den, test, target in checks:
        w, wp = ratios(wall, num, den)
        c, cp = ratios(cpu, num, den)
        ok = test(w if args.clock == "wall" else c)
        failed |= not ok
        print(f"{label:<30} {w:6.3f} {wp:9.3f} {c:6.3f} {cp:9.3f} {target:>8}  {'PASS' if ok else 'FAIL'}")
    print(
        f"\nRatios are of the medians; (paired) = median over repeats of the ratio within one repeat; CPU = this "
        f"process's CPU time.\nTotal {time.perf_counter() - started:.0f} s; load average now "
        f"{os.getloadavg()[0]:.2f} (other processes make wall-clock noisy: see benchmarks/README.md)."
    )
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
