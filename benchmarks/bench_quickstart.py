"""What the quickstart loop costs against the hand-written loop it replaces, on one CPU thread.

The quickstart of the README and docs (``examples/quickstart.py``): a ``HardBatchSampler`` as the DataLoader's
``batch_sampler``, ``loss = hardbatch.training_loss(sampler, model, batch)``, then zero_grad / backward / step. Against
it, a plain PyTorch loop that trains the same steps with no selection:

  hardbatch δ=1   the paper's rule at δ = 1 trains every batch of its fixed partition in the same order each epoch;
                  its hand loop is ``DataLoader(train_set, batch_size=B, drop_last=True)`` (batch i = samples
                  [iB, (i+1)B), the partition the sampler cuts without ``shuffle_partition``);
  uniform         ordinary SGD, a fresh seeded permutation each epoch; its hand loop draws the same permutations from
                  the same seeded generator (``functional.generator_for(seed, "policy")``), ``torch.randperm`` each
                  epoch cut into N batches and given to a DataLoader as its batches.

Same model (an MLP sized so a step takes about 4 ms on one thread), same initial weights, same data (random 1x28x28
tensors in a TensorDataset), same optimizer; one torch thread; the variants of each pair interleaved ABBA over the
repeats; the median time per step of each. An untimed first pass of every variant records its loss sequence: each
pair must train the identical steps (same losses, bit for bit), which is printed. The ratio hand / quickstart (time per
step) has the target >= 0.98: PASS/FAIL.

Run from the repository root:  .venv/bin/python benchmarks/bench_quickstart.py   (--help for options)
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

try:
    import hardbatch
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import hardbatch

from bench_overhead import add_steady_malloc_flag, steady_malloc

from hardbatch.functional import generator_for

TARGET = 0.98
SEED = 0


def make_model(hidden: int) -> torch.nn.Module:
    """The same initial weights on every call."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(784, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 10),
        )


def make_data(num_batches: int, batch_size: int) -> TensorDataset:
    g = torch.Generator().manual_seed(SEED)
    n = num_batches * batch_size
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def quickstart(
    train_set: TensorDataset, args: argparse.Namespace, policy: str, losses: list[torch.Tensor] | None = None
) -> int:
    """The quickstart loop, as the README writes it; returns the optimizer steps taken."""
    model = make_model(args.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = hardbatch.HardBatchSampler(
        len(train_set), batch_size=args.batch_size, epochs=args.epochs, policy=policy, seed=SEED
    )
    loader = DataLoader(train_set, batch_sampler=sampler)
    torch.manual_seed(SEED)  # the DataLoader draws its base seed from the global generator: the same in both loops
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if losses is not None:
                    losses.append(loss.detach())
    return sampler.steps


def hand(
    train_set: TensorDataset, args: argparse.Namespace, policy: str, losses: list[torch.Tensor] | None = None
) -> int:
    """The plain loop with the same steps: the fixed batches in order (hardbatch at δ = 1), or the same seeded
    permutation each epoch (uniform)."""
    model = make_model(args.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = generator_for(SEED, "policy")  # the seeded generator the uniform policy draws its permutations from
    n = args.num_batches * args.batch_size
    fixed = DataLoader(train_set, batch_size=args.batch_size, drop_last=True)
    torch.manual_seed(SEED)
    steps = 0
    for _ in range(args.epochs):
        loader = fixed
        if policy == "uniform":  # one seeded permutation per epoch, cut into N batches of B
            order = torch.randperm(n, generator=generator).view(args.num_batches, args.batch_size)
            loader = DataLoader(train_set, batch_sampler=order.tolist())
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if losses is not None:
                losses.append(loss.detach())
    return steps


def timed(loop: Callable[..., int], *args: object) -> float:
    """Wall seconds per optimizer step of one whole run of ``loop``."""
    started = time.perf_counter()
    steps = loop(*args)
    return (time.perf_counter() - started) / steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="The quickstart loop (HardBatchSampler + DataLoader + hardbatch.training_loss) against a hand "
        "loop with the same steps (hardbatch at δ=1: the fixed batches in order; uniform: the same seeded "
        "permutation), one thread, interleaved ABBA; target hand / quickstart >= 0.98. Defaults take "
        "about a minute on an idle core.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--hidden", type=int, default=256, help="width of the MLP's two hidden layers (sets the step time)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-batches", type=int, default=20, help="N: mini-batches in the data set (one epoch)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run")
    p.add_argument("--repeats", type=int, default=10, help="runs of each variant, interleaved ABBA")
    p.add_argument(
        "--profile",
        type=int,
        metavar="LINES",
        default=0,
        help="also profile one quickstart run (δ=1) and print its LINES costliest functions",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (a few seconds): 2 epochs, 2 repeats (flags given beside it still apply)",
    )
    add_steady_malloc_flag(p)
    p.add_argument("--check", action="store_true", help=f"exit with status 1 if a ratio is below {TARGET}")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(epochs=2, repeats=2)
    args = p.parse_args(argv)
    for name in ("hidden", "batch_size", "num_batches", "epochs", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    malloc = steady_malloc() if args.steady_malloc else "allocator as it is"
    train_set = make_data(args.num_batches, args.batch_size)
    policies = {"hardbatch δ=1": "hardbatch", "uniform": "uniform"}
    print(
        f"hardbatch {hardbatch.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"1 thread, {datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores, {malloc}"
    )
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"MLP 784-{args.hidden}-{args.hidden}-10, batch {args.batch_size}, N={args.num_batches}, {args.epochs} epochs "
        f"per run, {args.repeats} repeats interleaved ABBA, after one untimed run of each variant\n"
    )

    same = {}
    for label, policy in policies.items():  # untimed: warm-up, and the check that both loops train the same steps
        a: list[torch.Tensor] = []
        b: list[torch.Tensor] = []
        quickstart(train_set, args, policy, a)
        hand(train_set, args, policy, b)
        same[label] = len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        print(
            f"{label}: identical loss sequence in both loops ({len(a)} and {len(b)} steps): "
            f"{'yes' if same[label] else 'NO'}"
        )

    times: dict[str, dict[str, list[float]]] = {label: {"quickstart": [], "hand": []} for label in policies}
    started = time.perf_counter()
    for r in range(args.repeats):
        for label, policy in policies.items():
            order = ["quickstart", "hand"] if r % 2 == 0 else ["hand", "quickstart"]  # ABBA
            for variant in order:
                loop = quickstart if variant == "quickstart" else hand
                times[label][variant].append(timed(loop, train_set, args, policy))

    print(
        f"\n{'policy':<15} {'quickstart ms/step':>18} {'hand ms/step':>12} {'hand/quickstart':>15} {'(paired)':>9} "
        f"{'same steps':>10} {'target':>7}  result"
    )
    failed = False
    for label in policies:
        q, h = times[label]["quickstart"], times[label]["hand"]
        ratio = statistics.median(h) / statistics.median(q)
        paired = statistics.median(b / a for a, b in zip(q, h, strict=True))
        ok = ratio >= TARGET and same[label]
        failed |= not ok
        print(
            f"{label:<15} {statistics.median(q) * 1e3:18.3f} {statistics.median(h) * 1e3:12.3f} {ratio:15.3f} "
            f"{paired:9.3f} {'yes' if same[label] else 'NO':>10} {'>=' + str(TARGET):>7}  {'PASS' if ok else 'FAIL'}"
        )
    print(
        f"\nMedians over repeats of the wall time per step of a whole run (loading included); (paired) = median of "
        f"the per-repeat ratios.\nTotal {time.perf_counter() - started:.0f} s; load average now "
        f"{os.getloadavg()[0]:.2f}."
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        quickstart(train_set, args, "hardbatch")
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.profile)
        print(text.getvalue())
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
