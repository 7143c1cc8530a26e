"""What a whole small run costs through hardbatch: MNIST-1D through ``hardbatch train`` against a minimal hand loop.

Both variants train the same cnn1d on the canonical MNIST-1D set (4,000 / 1,000, generated offline once and held in
memory for both) with the same steps: the rule at δ = 1, i.e. the N fixed mini-batches of the seeded partition in
index order every epoch, SGD with momentum and a cosine schedule stepped per optimizer step, and the same evaluation
of the test split after every epoch. In one process, alternating (hand, hardbatch, then the reverse on the next
repeat), each repeat from the same initial weights:

  hardbatch   ``experiment.train_run``: what ``hardbatch train`` runs once its flags are parsed (the data set passed in,
              as ``compare`` and ``sweep`` pass it to every run): the checks, the run folder (config.json, history.csv,
              trace.csv, a checkpoint every ``--checkpoint-every`` seconds, summary.json), the sampler, the cost meter,
              ``training.fit``;
  hand        a loop over the same index tensors with the same model, optimizer, schedule and evaluation, writing
              nothing.

It prints the median wall time per run of each and the ratio hand / hardbatch (target >= 0.95 on an idle machine: the
run folder, its checks and records cost at most about 5% of a hand loop's time), with the CPU time of each, and with
``--profile`` where hardbatch's time goes. The run writes its records as ``hardbatch train`` does by default: history
and trace every epoch, the checkpoint every 60 s (``--checkpoint-every``; none in a run this short) and removed at
the end; ``--checkpoint-every 0`` measures a checkpoint every epoch.

Run from the repository root:  .venv/bin/python benchmarks/bench_runs.py   (--help for options)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import hardbatch  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_overhead import add_steady_malloc_flag, steady_malloc

from hardbatch import RunConfig
from hardbatch.data import DataSplits, load_dataset
from hardbatch.models import build_seeded
from hardbatch.run.checks import prepare
from hardbatch.run.experiment import train_run
from hardbatch.run.parts import make_sampler

TARGET = 0.95


def config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration, checked and resolved as ``train_run`` resolves it (what its config.json holds)."""
    return prepare(
        RunConfig(
            dataset="mnist1d",
            model="cnn1d",
            epochs=args.epochs,
            batch_size=100,
            lr=0.1,
            schedule="cosine",
            device="cpu",
            data_dir=args.data_dir,
            checkpoint_every=args.checkpoint_every,
        )
    )[0]


def run_hardbatch(cfg: RunConfig, data: DataSplits, out: Path) -> float:
    """One ``train_run`` into a fresh folder; returns its final test top-1."""
    shutil.rmtree(out, ignore_errors=True)
    return train_run(cfg, out, progress=False, data=data)["final_test_acc"]


def run_hand(cfg: RunConfig, data: DataSplits) -> float:
    """The same steps and evaluations in a plain loop; returns the final test top-1."""
    partition = make_sampler(cfg, data).partition  # the N fixed mini-batches of the seeded cut, (N, B)
    x_train, y_train = data.train.images, data.train.labels
    x_test, y_test = data.eval_transform(data.test.images), data.test.labels
    model = build_seeded(cfg.model, data.num_classes, data.in_channels, cfg.seed, cfg.stem)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    budget = cfg.epochs * len(partition)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / budget)))
    acc = math.nan
    for _ in range(cfg.epochs):
        model.train()
        for index in partition:
            x = data.train_transform(x_train.index_select(0, index))
            loss = F.cross_entropy(model(x), y_train.index_select(0, index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            acc = sum(
                (model(x_test[i : i + 1024]).argmax(1) == y_test[i : i + 1024]).sum().item()
                for i in range(0, len(y_test), 1024)
            ) / len(y_test)
    return acc


def timed(fn, *args) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, result) of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def profile(cfg: RunConfig, data: DataSplits, out: Path, lines: int) -> str:
    """cProfile of one hardbatch run: the functions with the most cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_hardbatch(cfg, data, out)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(lines)
    return text.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=6, help="runs of each variant, alternating (default 6)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10: 400 steps)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data-dir", help="where the MNIST-1D set is cached (default ~/.cache/hardbatch)")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="LINES",
        default=0,
        help="also profile one hardbatch run and print its LINES costliest functions",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=60.0,
        metavar="S",
        help="the run's checkpoint_every (default 60, the run's default; 0: every epoch)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (seconds): 2 epochs, 2 repeats (flags given beside it still apply)",
    )
    add_steady_malloc_flag(parser)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the ratio is below {TARGET}")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(epochs=2, repeats=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = steady_malloc() if args.steady_malloc else "allocator as it is"
    cfg = config(args)
    data = load_dataset(cfg)
    out = Path(tempfile.mkdtemp(prefix="bench_runs_"))
    variants = {"hand": lambda: run_hand(cfg, data), "hardbatch": lambda: run_hardbatch(cfg, data, out / "run")}
    for fn in variants.values():  # untimed: first-touch allocations, oneDNN primitives, imports
        fn()
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    accs: dict[str, float] = {}
    for repeat in range(args.repeats):
        for name in list(variants) if repeat % 2 == 0 else list(variants)[::-1]:
            w, c, accs[name] = timed(variants[name])
            wall[name].append(w)
            cpu[name].append(c)
    print(
        f"MNIST-1D cnn1d, {args.epochs} epochs of {len(make_sampler(cfg, data).partition)} steps, test split "
        f"evaluated every epoch; {args.repeats} repeats alternating; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {malloc}"
    )
    for name in variants:
        print(
            f"  {name:9s}  wall {statistics.median(wall[name]):.3f} s/run (min {min(wall[name]):.3f}, max "
            f"{max(wall[name]):.3f}), CPU {statistics.median(cpu[name]):.3f} s/run, final test top-1 {accs[name]:.4f}"
        )
    ratio = statistics.median(wall["hand"]) / statistics.median(wall["hardbatch"])
    paired = statistics.median(h / b for h, b in zip(wall["hand"], wall["hardbatch"], strict=True))
    cpu_ratio = statistics.median(cpu["hand"]) / statistics.median(cpu["hardbatch"])
    same = "yes" if accs["hand"] == accs["hardbatch"] else "NO (the variants did not take the same steps)"
    print(f"same final test top-1 in both (same steps): {same}")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"wall-time ratio hand / hardbatch: {ratio:.3f} (paired {paired:.3f}; CPU {cpu_ratio:.3f}); target >= "
        f"{TARGET}: {verdict}"
    )
    if args.profile:
        print(profile(cfg, data, out / "run", args.profile))
    shutil.rmtree(out, ignore_errors=True)
    return 1 if args.check and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
