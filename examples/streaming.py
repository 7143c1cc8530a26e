"""Selection over a stream: webdataset tar shards read by a plain DataLoader, with ``hardbatch.InBatchSelector``.

    python examples/streaming.py                                    # selective-backprop over shards made here
    python examples/streaming.py --policy rho-loss                  # the most reducible samples of each batch
    python examples/streaming.py --shards 'data/train-{0..3}.tar'   # your own shards (x.npy and cls entries)

An iterable data set has no sampler hook, so the policies that decide before loading cannot run on it; those that
choose among the samples of a loaded batch can (``selective-backprop``, ``composer-sb``, ``rho-loss``).
``InBatchSelector`` runs one of them with the quickstart's one call, ``hardbatch.training_loss``. rho-loss keeps a
state per sample, its irreducible loss, read by the sample's webdataset ``__key__`` (``id_key``). Without
``--shards`` the script writes four shards of a three-class problem to a temporary folder first. Needs
``pip install webdataset``; see docs/guides/integrations.md, "Streaming data".
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

import hardbatch

CLASSES, FEATURES = 3, 8


def make_shards(folder: Path, shards: int = 4, per_shard: int = 128, seed: int = 0) -> str:
    """``shards`` tar files of ``per_shard`` samples (a noisy linear three-class problem); their brace pattern."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(CLASSES, FEATURES)).astype(np.float32)
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"train-{shard}.tar")) as sink:
            for i in range(per_shard):
                label = int(rng.integers(CLASSES))
                x = centers[label] + rng.normal(scale=1.0, size=FEATURES).astype(np.float32)
                sink.write({"__key__": f"s{shard}-{i:05d}", "x.npy": x, "cls": label})
    return str(folder / f"train-{{0..{shards - 1}}}.tar")


def stream(pattern: str, batch_size: int) -> DataLoader:
    """Dict batches ``{"x", "labels", "__key__"}`` from the shards, in shard order."""
    dataset = (
        wds.WebDataset(pattern, shardshuffle=False)
        .decode()
        .map(lambda s: {"x": torch.from_numpy(s["x.npy"]), "labels": s["cls"], "__key__": s["__key__"]})
    )
    return DataLoader(dataset, batch_size=batch_size)


def forward(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(batch["x"])


def main(argv: list[str] | None = None) -> hardbatch.InBatchSelector:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="selective-backprop", choices=["selective-backprop", "composer-sb", "rho-loss"])
    p.add_argument("--shards", help="a webdataset pattern of tar shards with x.npy and cls entries (default: made)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        pattern = args.shards or make_shards(Path(folder))
        loader = stream(pattern, args.batch_size)
        model = torch.nn.Linear(FEATURES, CLASSES)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        steps_per_epoch = sum(1 for _ in loader)  # a stream of unknown length: call selector.set_epoch(e) instead
        params = {}
        if args.policy == "rho-loss":
            params = {"id_key": "__key__", "select_fraction": 0.25}
        selector = hardbatch.InBatchSelector(args.policy, epochs=args.epochs, steps_per_epoch=steps_per_epoch, **params)
        if args.policy == "rho-loss":  # each sample's loss under a model of held-out data: here, one fitted briefly
            il_model = torch.nn.Linear(FEATURES, CLASSES)
            il_optimizer = torch.optim.SGD(il_model.parameters(), lr=0.1)
            for batch in loader:
                il_loss = torch.nn.functional.cross_entropy(il_model(batch["x"]), batch["labels"])
                il_optimizer.zero_grad()
                il_loss.backward()
                il_optimizer.step()
            with torch.no_grad():
                selector.policy.irreducible = {
                    key: float(loss)
                    for batch in loader
                    for key, loss in zip(
                        batch["__key__"], hardbatch.losses.cross_entropy(il_model(batch["x"]), batch), strict=True
                    )
                }
        while not selector.done:
            for batch in loader:
                loss = hardbatch.training_loss(selector, model, batch, forward=forward)
                if loss is not None:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        meter = selector.meter
        print(
            f"{args.policy}: {selector.steps} optimizer steps over {args.epochs} passes of {steps_per_epoch} batches; "
            f"{meter.samples_backprop} of {meter.samples_loaded} samples back-propagated"
        )
    return selector


if __name__ == "__main__":
    main()
