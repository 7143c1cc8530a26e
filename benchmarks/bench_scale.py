"""What the selection state costs at scale, for every registered policy: planning a pass, choosing per step, memory,
and the checkpoint's size and save time, at N = 10^6 batches of B = 100 (n = 10^8 samples) by default.

Each policy runs in its own process (so its peak memory is its own), one CPU thread, no model: the sampler is
driven as a training loop drives it (``for indices in sampler`` then ``record``), with a constant 0-d loss and, for
the policies that need them, per-sample losses of ones made once. Per policy it prints:

  plan        seconds to plan the first pass (and, for the paper's rule and its controls, a pass after the warm-up,
              once every batch has a loss: the top-k over N stored losses)
  choose      the sampler's own time per step (drawing the step's indices and recording its loss), microseconds:
              the median over chunks of 2,000 steps
  memory      the process's peak resident memory minus that of the data alone (the partition the sampler holds)
  checkpoint  bytes of ``torch.save(sampler.state_dict())`` per sample, and seconds to serialise it and write it to
              disk with fsync

Run from the repository root:  .venv/bin/python benchmarks/bench_scale.py   (about 10 minutes; --samples 1e6 for a
quick look; --policies NAME ... for some)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import hardbatch  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

BATCH = 100
CHUNK = 2000


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kilobytes


def measure(name: str, samples: int) -> dict:
    """One policy at ``samples`` samples in batches of BATCH; run in a process of its own."""
    import torch

    import hardbatch
    from hardbatch.policies import POLICIES

    torch.set_num_threads(1)
    cls = POLICIES[name]
    params = {**({"delta": 0.5} if cls.takes("delta") else {}), **({"select_fraction": 0.5} if cls.holdout else {})}
    baseline = _peak_gb()
    started = time.perf_counter()
    sampler = hardbatch.HardBatchSampler(samples, BATCH, epochs=2, policy=name, **params)
    if cls.holdout:  # rho-loss: the irreducible losses a run would have computed
        sampler.policy.irreducible = torch.zeros(samples)
    build = time.perf_counter() - started
    loss = torch.tensor(1.0)
    per_sample = torch.ones(sampler.partition.shape[1] if not cls.holdout else BATCH)
    ones = {}

    def losses_for(size: int) -> torch.Tensor:
        return ones.setdefault(size, torch.ones(size))

    def step(indices) -> None:
        weights = None
        pending = sampler.pending
        if sampler.policy.needs_scores(pending) or pending.score_only:
            scores = losses_for(len(indices))
            if pending.score_only:
                sampler.record(loss, scores)
                return
            weights = sampler.weights(scores)
        kept = len(indices) if weights is None else int((weights > 0).sum())
        if kept == 0:
            sampler.record(loss)
            return
        sampler.record(loss, losses_for(kept) if sampler.policy.per_sample else None)

    started = time.perf_counter()
    iterator = iter(sampler)
    first = next(iterator)
    plan_first = time.perf_counter() - started
    step(first)
    size = max(1, min(CHUNK, (len(sampler._round) - 1) // 5))  # five chunks inside the first pass
    chunks = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(size):
            step(next(iterator))
        chunks.append((time.perf_counter() - started) / size)
    plan_later = None
    if cls.takes("delta"):  # record the rest of the warm-up, then plan the first round of the top-k
        for indices in iterator:
            step(indices)
        started = time.perf_counter()
        next(iter(sampler))
        plan_later = time.perf_counter() - started
    buffer = io.BytesIO()
    started = time.perf_counter()
    torch.save(sampler.state_dict(), buffer)
    with tempfile.NamedTemporaryFile(dir=".", delete=True) as f:
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    save = time.perf_counter() - started
    del per_sample
    return {
        "policy": name,
        "build_s": build,
        "plan_first_s": plan_first,
        "plan_later_s": plan_later,
        "choose_us": 1e6 * statistics.median(chunks),
        "memory_gb": _peak_gb() - baseline,
        "checkpoint_bytes_per_sample": len(buffer.getvalue()) / samples,
        "save_s": save,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=float, default=1e8, help="n (default 1e8: N = 10^6 batches of 100)")
    parser.add_argument("--policies", nargs="+", help="these policies only (default: every registered one)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure one policy, print JSON
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (seconds): n = 10^4, the paper's rule and uniform only (flags given beside it still apply)",
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(samples=1e4, policies=["hardbatch", "uniform"])
    args = parser.parse_args(argv)
    samples = int(args.samples)
    if args.one:
        print(json.dumps(measure(args.one, samples)))
        return 0
    import torch

    from hardbatch.policies import POLICIES

    names = args.policies or list(POLICIES)
    print(
        f"n = {samples:,} samples in N = {samples // BATCH:,} batches of {BATCH}; one thread; torch "
        f"{torch.__version__}; {os.cpu_count()} CPUs"
    )
    print(
        f"{'policy':<20} {'plan s':>8} {'later s':>8} {'choose µs':>10} {'memory GB':>10} {'ckpt B/sample':>14} "
        f"{'save s':>7}"
    )
    for name in names:
        done = subprocess.run(
            [sys.executable, __file__, "--samples", str(samples), "--one", name],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if done.returncode:
            print(f"{name:<20} failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        later = "—" if r["plan_later_s"] is None else f"{r['plan_later_s']:.3f}"
        print(
            f"{name:<20} {r['plan_first_s']:>8.3f} {later:>8} {r['choose_us']:>10.1f} {r['memory_gb']:>10.2f} "
            f"{r['checkpoint_bytes_per_sample']:>14.2f} {r['save_s']:>7.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
