"""Finished run folders written by hand in the format ``hardbatch train`` writes (format 2), with scripted accuracies
(the report tests' fixtures in tests/report/conftest.py write them). The scripted groups' arithmetic is spelled out
beside their numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

from hardbatch.config import DELTA_POLICIES, RunConfig
from hardbatch.fileio import atomic_write_json
from hardbatch.records import CONFIG, RUN_FORMAT, SUMMARY, RunDir, find_runs, summarize
from hardbatch.report import Run

N = 10  # scripted number of mini-batches per epoch
B = 32
# Student-t quantiles t(q, df), written out so that intervals and power are checked against a hand computation.
T975 = {
    1: 12.706204736174707,
    2: 4.302652729911275,
    4: 2.7764451051977987,
    5: 2.5705818356363146,
    6: 2.4469118511449692,
    7: 2.3646242510102993,
    23: 2.0686576104190406,
    24: 2.0638985616280205,
}
T80 = {2: 1.0606601717798212, 4: 0.9409645131325547}
DEVICE = {"type": "cpu", "name": "Scripted CPU", "threads": 1, "cpu": "Scripted CPU", "cpu_capability": "AVX2"}


def load(root: Path) -> list[Run]:
    """Every finished run under ``root``, loaded."""
    return [Run.load(r) for r in find_runs(root)]


def config(
    *, delta: float = 1.0, seed: int = 0, epochs: int = 2, policy: str = "hardbatch", lr: float = 0.05, **settings
) -> RunConfig:
    """A resolved run configuration; ``settings``: RunConfig fields, or the policy's own hyper-parameters."""
    params = {k: settings.pop(k) for k in list(settings) if k not in RunConfig.__dataclass_fields__}
    if policy in DELTA_POLICIES:
        params["delta"] = delta
    return RunConfig(
        dataset="digits",
        model="small_cnn",
        policy=policy,
        params=params,
        seed=seed,
        lr=lr,
        epochs=epochs,
        batch_size=B,
        precision="fp32",
        channels_last=False,
        shuffle_partition=True,
        **settings,
    )


def write_run(
    root: Path,
    name: str,
    *,
    accs: list[float],
    val_accs: list[float] | None = None,
    baccs: list[float] | None = None,
    device: dict | None = DEVICE,
    **settings,
) -> Path:
    """A finished run folder with test accuracies ``accs`` (one per epoch; balanced ones ``baccs``, else the same)
    and, if given, validation accuracies; each epoch takes 2 + seed seconds and back-propagates N x B samples
    (``settings``: see ``config``; ``epochs`` defaults to the epochs of ``accs``, more for a run of a shorter
    ``budget``)."""
    cfg = config(epochs=settings.pop("epochs", len(accs)), **settings)
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    environment = {"versions": {"torch": "2.0", "numpy": "1.0"}, **({"device": device} if device else {})}
    atomic_write_json(run.file(CONFIG), {"format": RUN_FORMAT, "config": cfg.to_dict(), **environment})
    seconds = 2.0 + cfg.seed
    history = [
        {
            "epoch": e,
            "step": e * N,
            "train_loss": 1.0 / e,
            "test_loss": 1.0 - acc,
            "test_acc": acc,
            "test_top5": 1.0,
            "lr": cfg.lr,
            "train_seconds": seconds,
            "eval_seconds": 0.5,
            "test_bacc": (baccs or accs)[e - 1],
            **(
                {"val_loss": 1.0, "val_acc": val_accs[e - 1], "val_top5": 1.0, "val_bacc": val_accs[e - 1]}
                if val_accs
                else {}
            ),
            "samples_loaded": N * B,
            "samples_forward": N * B,
            "samples_forward_nograd": 0,
            "samples_backprop": N * B,
            "choose_seconds": 0.0,
            "cpu_seconds": seconds / 2,
        }
        for e, acc in enumerate(accs, start=1)
    ]
    run.write_history(history)
    k = max(1, math.floor(cfg.delta * N + 1e-9))
    atomic_write_json(run.file(SUMMARY), summarize(run.history(), cfg, [len(accs)] * N, k))
    return run.path


# Group lr = 0.05. Reference (δ = 1) best accuracies .90, .905, .91 -> mean .905 -> T = 0.99 * .905 = .89595.
# A T from the min best (.891) or the max best (.9009) would change epochs-to-target below.
REF = {
    0: [0.50, 0.70, 0.85, 0.90, 0.90],  # reaches T at epoch 4, final .90, plateau (>= .89) epoch 4
    1: [0.40, 0.60, 0.893, 0.905, 0.86],  # .893 < T: epoch 4, final .86, plateau (>= .895) epoch 4
    2: [0.50, 0.60, 0.70, 0.91, 0.88],  # epoch 4, final .88, plateau (>= .90) epoch 4
}
# δ = 0.5: finals are the reference's + 1, 2, 3 points.
HALF = {
    0: [0.60, 0.898, 0.905, 0.91, 0.91],  # T at 2; plateau (>= .90) 3; final .91 (+1)
    1: [0.70, 0.85, 0.90, 0.92, 0.88],  # T at 3; plateau (>= .91) 4; final .88 (+2)
    2: [0.80, 0.925, 0.93, 0.93, 0.91],  # T at 2; plateau (>= .92) 2; final .91 (+3)
}
# δ = 0.2 has seeds 1 and 2 only (seed 0 missing); seed 2 never reaches T.
FIFTH = {
    1: [0.30, 0.50, 0.70, 0.892, 0.90],  # T at 5; plateau (>= .89) 4; final .90, vs ref .86: +4
    2: [0.30, 0.50, 0.60, 0.70, 0.80],  # never; plateau (>= .79) 5; final .80, vs ref .88: -8
}
# Group lr = 0.1, one seed: T = 0.99 * .6 = .594.
LR01 = {1.0: [0.30, 0.40, 0.50, 0.55, 0.60], 0.5: [0.30, 0.40, 0.50, 0.55, 0.58]}
T_A = 0.99 * 0.905


def write_scripted(root: Path) -> Path:
    """The scripted groups above: lr 0.05 (δ 1, 0.5 and 0.2) and lr 0.1 (δ 1 and 0.5, one seed)."""
    for seed, accs in REF.items():
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=accs)
    for seed, accs in HALF.items():
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=accs)
    for seed, accs in FIFTH.items():
        write_run(root, f"fifth_s{seed}", delta=0.2, seed=seed, accs=accs)
    for delta, accs in LR01.items():
        write_run(root / "other_lr", f"d{delta:g}", delta=delta, seed=0, accs=accs, lr=0.1)
    return root


def write_peers(root: Path) -> Path:
    """Three seeds of: the rule at δ 0.5 and 1, uniform, and infobatch at prune ratios 0.3 and 0.5 (its default)."""
    for seed in range(3):
        write_run(root, f"ref_s{seed}", delta=1.0, seed=seed, accs=[0.5, 0.80 + 0.01 * seed])
        write_run(root, f"half_s{seed}", delta=0.5, seed=seed, accs=[0.5, 0.81 + 0.012 * seed])
        write_run(root, f"uniform_s{seed}", seed=seed, accs=[0.5, 0.82 + 0.02 * seed], policy="uniform")
        write_run(
            root, f"ib03_s{seed}", seed=seed, accs=[0.5, 0.84 + 0.011 * seed], policy="infobatch", prune_ratio=0.3
        )
        write_run(root, f"ib05_s{seed}", seed=seed, accs=[0.5, 0.83 + 0.013 * seed], policy="infobatch")
    return root


# Uniform's frontier (tests/report/test_frontier.py): every run has epochs = 4, so budget 0.5 trains 2 epochs
# (2 N B = 640 samples back-propagated, CPU 2 x (2 + seed) / 2: mean 3.0 s over seeds 0-2), 0.75 trains 3 (960 samples,
# 4.5 s), 0.25 trains 1 (320, 1.5 s) and the full budget 4 (1280, 6.0 s). Final accuracies by seed:
FRONTIER_RUNS = {
    ("uniform", None, 0.5): [0.80, 0.82, 0.84],
    ("uniform", None, 1.0): [0.90, 0.91, 0.92],
    # at 960 samples (4.5 CPU s) the frontier is halfway: 0.85, 0.865, 0.88 by seed; d = +2, +1.5, +2 points
    ("hardbatch", 0.5, 0.75): [0.87, 0.88, 0.90],
    ("hardbatch", 0.5, 0.25): [0.70, 0.71, 0.72],  # 320 samples: below uniform's smallest budget, outside
    ("hardbatch", 0.5, 1.0): [0.91, 0.93, 0.92],  # d to uniform's full budget: +1, +2, 0
    ("hardbatch", 1.0, 0.75): [0.85, 0.86, 0.87],  # d: 0, -0.5, -1
    ("hardbatch", 1.0, 1.0): [0.90, 0.90, 0.91],
}


def write_frontier(root: Path, metric_gap: float = 0.0) -> Path:
    """FRONTIER_RUNS' folders (lr 0.05, 4 epochs); balanced accuracies ``metric_gap`` below the top-1 ones."""
    for (policy, delta, budget), finals in FRONTIER_RUNS.items():
        epochs = max(1, math.floor(budget * 4 + 0.5))
        for seed, final in enumerate(finals):
            accs = [final - 0.1] * (epochs - 1) + [final]
            write_run(
                root,
                f"{policy}_{delta}_{budget}_s{seed}",
                accs=accs,
                baccs=[a - metric_gap for a in accs],
                epochs=4,
                budget=budget,
                policy=policy,
                seed=seed,
                **({"delta": delta} if delta else {}),
            )
    return root
