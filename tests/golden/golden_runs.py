"""Golden runs: short digits runs of every policy and variant, recorded once and replayed by tests/test_golden.py.

Each run's record is its per-step trace (step, round, batch, loss, samples from trace.csv), a fingerprint of the
exact input tensor of every back-propagated forward pass (which samples were trained, in which order, with which
augmentation), its per-epoch history (losses, accuracies and cost counters; seconds left out) and its batch visits.
The runs use one thread and CPU kernels pinned to the portable ones (ATEN_CPU_CAPABILITY=default and friends, set by
``run_all`` for its subprocess), so that the records do not depend on the processor.

    python tests/golden/golden_runs.py record   # rewrite tests/golden/golden.json (only for an intended change)
    python tests/golden/golden_runs.py replay OUT.json   # what the test runs, in a fresh process
    python tests/golden/golden_runs.py replay-api OUT.json   # the same runs through the quickstart loop
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden.json")
# Kernels and threads that give the same floating-point results on any x86-64 processor.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
COMMON = [
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--train-subset",
    "640",
    "--batch-size",
    "32",
    "--epochs",
    "4",
    "--lr",
    "0.05",
    "--seed",
    "3",
]
VARIANTS = {
    "hardbatch-0.4": ["--delta", "0.4"],
    "hardbatch-1": ["--delta", "1"],
    "random-0.4": ["--policy", "random", "--delta", "0.4"],
    "cyclic-0.4": ["--policy", "cyclic", "--delta", "0.4"],
    "uniform": ["--policy", "uniform"],
    "selective-backprop": ["--policy", "selective-backprop"],
    "infobatch": ["--policy", "infobatch"],
    # The peers' options: Selective Backprop's earlier rules in hardbatch (this reproduces the selective-backprop
    # record made before they became options), and the InfoBatch authors' annealing weights.
    "selective-backprop-legacy": [
        "--policy",
        "selective-backprop",
        "--no-warmup-epoch",
        "--score-in-train-mode",
        "--force-one",
        "--count-ties",
    ],
    "infobatch-keep-weights": ["--policy", "infobatch", "--keep-weights-in-anneal"],
    "rescore": ["--delta", "0.4", "--rescore", "2"],
    "repartition": ["--delta", "0.4", "--repartition"],
    "trim-top-mix": ["--delta", "0.4", "--trim-top", "0.1", "--mix", "0.25"],
    "label-noise": ["--delta", "0.4", "--label-noise", "0.2"],
    "imbalance": ["--delta", "0.4", "--imbalance", "10"],
    "crop-flip-cosine": ["--delta", "0.4", "--model", "small_cnn", "--augment", "crop_flip", "--schedule", "cosine"],
    # RS2 at 0.3 (192 of 640 samples an epoch) reaches the wrapped window in its fourth epoch; its cosine spans the run.
    "rs2": ["--policy", "rs2", "--fraction", "0.3", "--schedule", "cosine"],
    "bls": ["--policy", "bls"],
}
HISTORY_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "test_loss",
    "test_acc",
    "samples_loaded",
    "samples_forward",
    "samples_forward_nograd",
    "samples_backprop",
)


class InputFingerprints:
    """A hash of the input of every outermost forward pass that builds a graph (the steps that back-propagate)."""

    def __init__(self):
        import torch

        self.seen: list[str] = []
        self._depth = 0
        self._handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(self._enter),
            torch.nn.modules.module.register_module_forward_hook(self._leave),
        ]

    def _enter(self, module, args):
        import torch

        if self._depth == 0 and torch.is_grad_enabled() and module.training and args:
            x = args[0].detach().cpu().contiguous()
            self.seen.append(hashlib.sha1(str(tuple(x.shape)).encode() + x.numpy().tobytes()).hexdigest()[:16])
        self._depth += 1

    def _leave(self, module, args, output):
        self._depth -= 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def run_variant(name: str, workdir: Path) -> dict:
    import torch

    from hardbatch.cli import main
    from hardbatch.records import RunDir

    torch.set_num_threads(1)
    out = workdir / name
    fingerprints = InputFingerprints()
    try:
        code = main(["train", *COMMON, *VARIANTS[name], "--out", str(out), "--no-progress"])
    finally:
        fingerprints.close()
    if code != 0:
        raise SystemExit(f"golden run {name} exited {code}")
    run = RunDir(out)
    return {
        "args": [*COMMON, *VARIANTS[name]],
        "trace": [
            [int(r["step"]), int(r["round"]), int(r["batch"]), r["loss"], int(r["samples"])] for r in run.trace()
        ],
        "inputs": fingerprints.seen,
        "history": [{k: row[k] for k in HISTORY_KEYS} for row in run.history()],
        "batch_visits": run.summary()["batch_visits"],
    }


def run_variant_api(name: str) -> dict:
    """The golden run's training through the public one-call API: the quickstart loop (``hardbatch.training_loss``)
    over the run's own data, model, optimizer, schedule and sampler, each input transformed as a run does (seeded
    augmentation per step). Its trace and inputs must equal the CLI's; evaluation is the run's own business."""
    import torch
    from torch.utils.data import DataLoader

    import hardbatch
    from hardbatch.cli import build_parser, config_from_args
    from hardbatch.data import load_dataset
    from hardbatch.models import build_seeded
    from hardbatch.run.checks import prepare
    from hardbatch.run.parts import make_optimizer, make_sampler, make_scheduler

    torch.set_num_threads(1)
    args = build_parser().parse_args(["train", *COMMON, *VARIANTS[name], "--out", "unused"])
    cfg, device = prepare(config_from_args(args))
    data = load_dataset(cfg, device)
    model = build_seeded(cfg.model, data.num_classes, data.in_channels, cfg.seed, cfg.stem)
    optimizer = make_optimizer(cfg, model)
    sampler = make_sampler(cfg, data)
    scheduler = make_scheduler(cfg, optimizer, sampler)
    generator = torch.Generator() if cfg.augment != "none" else None
    loader = DataLoader(data.train, batch_sampler=sampler, collate_fn=lambda batch: batch)
    trace, fingerprints = [], InputFingerprints()
    try:
        while not sampler.done:
            for x, y in loader:
                if generator is not None:
                    generator.manual_seed(cfg.seed * 1_000_003 + sampler.steps)
                batch = (data.train_transform(x, generator), y)
                loss = hardbatch.training_loss(sampler, model, batch)
                if loss is not None:
                    optimizer.zero_grad(); loss.backward(); optimizer.step()  # noqa: E702 - as in the README  # fmt: skip
                    if scheduler is not None:
                        scheduler.step()
                    last = sampler.last
                    trace.append([last.step, last.round, last.batch, float(last.loss), last.samples])
    finally:
        fingerprints.close()
    return {"trace": trace, "inputs": fingerprints.seen, "batch_visits": sampler.visits.tolist()}


def replay(path: Path, api: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = {name: run_variant_api(name) if api else run_variant(name, Path(tmp)) for name in VARIANTS}
    path.write_text(json.dumps(records, indent=1) + "\n")


def run_all(out: Path, api: bool = False) -> dict:
    """Replay every golden run in a fresh process with the portable kernels (through the CLI, or with ``api``
    through the quickstart loop); returns the records."""
    env = {**os.environ, **PORTABLE_ENV}
    mode = "replay-api" if api else "replay"
    subprocess.run([sys.executable, __file__, mode, str(out)], check=True, env=env, timeout=600)
    return json.loads(out.read_text())


if __name__ == "__main__":
    if sys.argv[1:2] in (["replay"], ["replay-api"]):
        replay(Path(sys.argv[2]), api=sys.argv[1] == "replay-api")
    elif sys.argv[1:2] == ["record"]:
        with tempfile.TemporaryDirectory() as tmp:
            records = run_all(Path(tmp) / "golden.json")
        GOLDEN.write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {GOLDEN}: {len(records)} runs")
    else:
        raise SystemExit(__doc__)
