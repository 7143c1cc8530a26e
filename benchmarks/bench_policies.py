"""What each selection policy costs on a CPU, measured by training's own CostMeter, all policies side by side in one
run.

Every policy of ``hardbatch.policies`` (and the paper's rule with its --rescore and --repartition
variants) trains the same model from the same initial weights on the same in-memory data, with the
same batch size, optimizer and epochs, through the real ``training.fit`` loop, exactly as
``train_run`` wires it on a CPU (``make_sampler``, ``make_optimizer``, ``DataSplits.loader``), with no
evaluation. The arms are interleaved (forward order, then reverse on the next repeat) so a slow drift
of the machine hits every arm alike. Per arm it prints, from the ``CostMeter``:

  choose %        choose_seconds / train_seconds: the policy's own code plus its no-grad scoring forwards;
                  split into "policy %" (plan/select, the sampler's choose_seconds) and "scoring %" (the rest);
  nograd          samples_forward_nograd: samples forwarded without gradient to score them;
  backprop        samples_backprop, and its ratio to uniform's;
  loaded/s        samples_loaded / train_seconds relative to uniform's (median of the per-repeat ratios).

Target: choose % <= 2 for the batch-level policies (uniform, hardbatch and its --repartition variant,
random, cyclic): PASS/FAIL. Selective Backprop and --rescore spend their choosing time on no-grad
forwards by design, and infobatch prunes per sample: for them the cost is reported as measured.

Run from the repository root:  .venv/bin/python benchmarks/bench_policies.py   (--help for options)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

try:
    import hardbatch
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import hardbatch

from bench_overhead import add_steady_malloc_flag, steady_malloc

from hardbatch import CostMeter, RunConfig, fit
from hardbatch.config import check
from hardbatch.data import BatchTransform, DataSplits, InMemoryDataset, load_dataset
from hardbatch.models import build_seeded
from hardbatch.policies import POLICIES, Policy, create_policy
from hardbatch.run.checks import resolve
from hardbatch.run.parts import make_optimizer, make_sampler

TARGET = 0.02  # choose_seconds / train_seconds for the batch-level policies

# The paper's rule's variants beside every registered policy at its defaults: label, RunConfig changes, and whether
# the arm is judged against TARGET (batch-level choosing: no scoring forward, no per-sample policy).
VARIANTS: list[tuple[str, dict, bool]] = [
    ("hardbatch δ=0.5 --rescore 2", dict(policy="hardbatch", params=dict(delta=0.5, rescore=2)), False),
    ("hardbatch δ=0.5 --repartition", dict(policy="hardbatch", params=dict(delta=0.5, repartition=True)), True),
]


def arms() -> list[tuple[str, dict, bool]]:
    """One arm per registered policy (δ = 0.5 where δ applies), the paper's rule first, then its VARIANTS."""
    out = []
    for name, cls in POLICIES.items():
        delta = cls.takes("delta")
        changes = dict(policy=name, params={**cls.example, **({"delta": 0.5} if delta else {})})
        policy = create_policy(name, **changes["params"])  # per_sample may depend on the hyper-parameters
        out.append((f"{name} δ=0.5" if delta else name, changes, not (policy.scores_first or policy.per_sample)))
    return out[:1] + VARIANTS + out[1:]


ARMS = arms()


def make_data(args: argparse.Namespace, base: RunConfig) -> DataSplits:
    """digits as ``train_run`` loads it, or random uint8 1x28x28 images with random labels held in memory."""
    if args.data == "digits":
        return load_dataset(base, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    n = args.samples
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    train = InMemoryDataset(images, torch.randint(0, 10, (n,), generator=g))
    transform = BatchTransform((0.5,), (0.25,))
    return DataSplits(
        train=train,
        val=None,
        test=train,
        num_classes=10,
        in_channels=1,
        image_size=28,
        train_transform=transform,
        eval_transform=transform,
    )


class PolicyClock:
    """Seconds spent inside a bound policy's own ``plan`` and ``select`` (wrapped on the instance): the policy's
    share of the meter's choose_seconds; the rest is the step core's no-grad scoring forwards."""

    def __init__(self, policy: Policy):
        self.seconds = 0.0
        for name in ("plan", "select"):
            setattr(policy, name, self.timed(getattr(policy, name)))

    def timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return call


def run_arm(data: DataSplits, cfg: RunConfig) -> tuple[CostMeter, float]:
    """Train one arm through ``fit`` as train_run does on a CPU; returns its CostMeter and the policy's own seconds."""
    # The settings, as a run of the policy would have them (rho-loss's holdout needs a validation split; this
    # benchmark gives it zero irreducible losses instead, below).
    check(cfg.replace(val_fraction=0.1) if POLICIES[cfg.policy].holdout else cfg)
    cfg = resolve(cfg, torch.device("cpu"))  # fp32, no channels_last, the partition order: as train_run resolves them
    sampler = make_sampler(cfg, data)
    clock = PolicyClock(sampler.policy)
    if sampler.policy.holdout:
        # RHO-LOSS's irreducible-loss model trains before the run (its cost is the run's holdout_cost, measured by
        # train_run, not here); this benchmark times the selection itself, on zero irreducible losses.
        sampler.policy.irreducible = torch.zeros(len(data.train))
    model = build_seeded(cfg.model, data.num_classes, data.in_channels, cfg.seed, cfg.stem)
    optimizer = make_optimizer(cfg, model)
    loader = data.loader(data.train, sampler, num_workers=0, pin_memory=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        fit(model, optimizer, loader, sampler, {}, torch.device("cpu"), train_transform=data.train_transform)
    return sampler.meter, clock.seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Choosing cost of every selection policy on a CPU, from training's CostMeter: choose_seconds / "
        "train_seconds (target <= 2%% for the batch-level policies), no-grad forwards, samples "
        "back-propagated and loaded samples per second relative to uniform. All arms interleaved in one "
        "run; defaults take about 2 minutes on one idle core.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        choices=["digits", "synthetic"],
        default="digits",
        help="digits: scikit-learn's 8x8 digits as train_run loads them (1,437 training images); "
        "synthetic: random uint8 1x28x28 images, random labels (--samples of them)",
    )
    p.add_argument("--samples", type=int, default=1280, help="training images of --data synthetic")
    p.add_argument("--model", default="small_cnn", help="a hardbatch model name")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="epochs per arm and repeat (budget of N optimizer steps each)")
    p.add_argument("--repeats", type=int, default=5, help="repeats of every arm, interleaved")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (1: the numbers hold on a shared machine; 2 threads on busy cores spin-wait)",
    )
    add_steady_malloc_flag(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~15 s): 2 epochs, 2 repeats (flags given beside it still apply)",
    )
    p.add_argument("--check", action="store_true", help="exit with status 1 if a batch-level policy misses the target")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(epochs=2, repeats=2)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        p.error("--epochs and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = steady_malloc() if args.steady_malloc else "allocator as it is"
    base = RunConfig(
        dataset="digits", model=args.model, batch_size=args.batch_size, epochs=args.epochs, seed=0, device="cpu"
    )
    data = make_data(args, base)
    n = len(data.train)
    num_batches = n // args.batch_size
    print(
        f"hardbatch {hardbatch.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), {datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores, {malloc}"
    )
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{args.model}, {args.data} ({n} training images, {tuple(data.train[0][0].shape)}), batch {args.batch_size}, "
        f"N={num_batches}, {args.epochs} epochs per arm, SGD lr {base.lr} momentum {base.momentum}, fit without "
        f"evaluation; {args.repeats} repeats, order alternating forward/reverse, after one untimed 1-epoch pass of "
        f"every arm\n"
    )

    configs = {label: base.replace(**changes) for label, changes, _ in ARMS}
    judged = {label: j for label, _, j in ARMS}
    labels = list(configs)
    short = [
        label.replace("hardbatch", "hb").replace("δ=0.5", "").replace("--", "").replace(" ", "")[:7] for label in labels
    ]
    started = time.perf_counter()
    for label in labels:  # first-touch allocations and oneDNN primitive creation for every code path
        run_arm(data, configs[label].replace(epochs=1))
    print(f"untimed warm-up pass done ({time.perf_counter() - started:.0f} s)")
    print(f"{'':14} train seconds per arm\n{'':14} " + " ".join(f"{s:>7}" for s in short))

    meters: dict[str, list[CostMeter]] = {label: [] for label in labels}
    planned: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(args.repeats):
        for label in labels if r % 2 == 0 else reversed(labels):
            meter, choose_seconds = run_arm(data, configs[label])
            meters[label].append(meter)
            planned[label].append(choose_seconds)
        print(
            f"repeat {r + 1:2d}/{args.repeats} "
            + " ".join(f"{meters[label][-1].train_seconds:7.2f}" for label in labels)
            + f"   ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

    uniform = "uniform"  # the reference arm of the ratios (its label)

    def median_share(label: str, part) -> float:
        return statistics.median(
            part(m, p) / m.train_seconds for m, p in zip(meters[label], planned[label], strict=True)
        )

    def throughput_ratio(label: str, count) -> float:
        """Median over repeats of (count / train_seconds) relative to uniform's in the same repeat."""
        return statistics.median(
            (count(m) / m.train_seconds) / (count(u) / u.train_seconds)
            for m, u in zip(meters[label], meters[uniform], strict=True)
        )

    print(
        f"\n{'policy':<30} {'steps':>5} {'loaded':>6} {'nograd':>6} {'backprop':>8} {'×uni':>5} {'train s':>7} "
        f"{'choose%':>7} {'policy%':>7} {'scoring%':>8} {'target':>6} {'result':>6} {'loaded/s':>8} {'backprop/s':>10}"
    )
    failed = False
    for label in labels:
        m, u = meters[label][0], meters[uniform][0]  # counts are the same in every repeat (same seeds)
        choose = median_share(label, lambda m, p: m.choose_seconds)
        policy = median_share(label, lambda m, p: p)
        scoring = median_share(label, lambda m, p: m.choose_seconds - p)
        if judged[label]:
            ok = choose <= TARGET
            failed |= not ok
            target, result = f"<={TARGET:.0%}", "PASS" if ok else "FAIL"
        else:
            target, result = "-", "report"
        print(
            f"{label:<30} {m.optimizer_steps:5d} {m.samples_loaded:6d} {m.samples_forward_nograd:6d} "
            f"{m.samples_backprop:8d} {m.samples_backprop / u.samples_backprop:5.2f} "
            f"{statistics.median(x.train_seconds for x in meters[label]):7.2f} {choose:7.2%} {policy:7.2%} "
            f"{scoring:8.2%} {target:>6} {result:>6} {throughput_ratio(label, lambda x: x.samples_loaded):8.3f} "
            f"{throughput_ratio(label, lambda x: x.samples_backprop):10.3f}"
        )
    print(
        f"\nchoose% = choose_seconds / train_seconds (CostMeter), median over repeats; policy% = seconds inside "
        f"the policy's own plan and select / train_seconds;\nscoring% = the rest of choose_seconds (no-grad scoring "
        f"forwards). loaded/s, backprop/s: samples_loaded or samples_backprop per train second, relative to uniform "
        f"in the same repeat (median of the ratios).\nTotal {time.perf_counter() - started:.0f} s; load average now "
        f"{os.getloadavg()[0]:.2f}."
    )
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
