"""The drop-in sampler in a Hugging Face ``accelerate`` loop: a training loader that keeps the shared plan.

Needs ``pip install 'hardbatch[accelerate]'`` (only for the Accelerator itself; this module imports nothing of
it). See ``examples/accelerate_loop.py`` and README "Accelerate".

Why not ``accelerator.prepare(DataLoader(dataset, batch_sampler=sampler))``: with W processes, prepare wraps the
batch sampler in accelerate's ``BatchSamplerShard``, which hands rank r the batches r, r + W, r + 2W, ... of each
pass (and, with ``even_batches``, repeats the first ones to even out a pass whose length does not divide by W). The
policy plans one global batch per step, and every rank must train its share of that same batch and record its
loss: sharded that way, rank r trains other batches than the one it records, each rank's table holds other losses,
and the ranks soon plan different rounds. ``split_batches=True`` slices each batch instead, but it needs a fixed
``batch_size`` attribute on the sampler, drops a shorter batch inside a pass and pads the last one with samples of
the pass's first batch.
``prepare_loader`` gives each rank its contiguous share of every global batch (``distributed.LocalSlices``, as
``hardbatch train`` does under torchrun) and moves it to the accelerator's device; the model and optimizer still go
through ``accelerator.prepare``.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader, Dataset

from hardbatch import batches, distributed
from hardbatch.errors import UsageError
from hardbatch.sampler import HardBatchSampler


class DeviceLoader:
    """Iterates ``loader`` with each batch moved to ``device``; one pass of it is one pass of the policy."""

    def __init__(self, loader: DataLoader, device):
        self.loader = loader
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield batches.to_device(batch, self.device)


def prepare_loader(accelerator, dataset: Dataset, sampler: HardBatchSampler, **loader_kwargs) -> DeviceLoader:
    """The training loader for ``sampler`` under ``accelerator``: this rank's contiguous share of every global batch
    the policy planned, on ``accelerator.device`` (use it instead of ``accelerator.prepare`` for this loader).

    ``sampler``'s batch is the global batch (all ranks together; it must divide by ``accelerator.num_processes``);
    ``loader_kwargs`` go to the DataLoader (``collate_fn``, ``num_workers``, ...).
    """
    size, processes = sampler.partition.shape[1], accelerator.num_processes
    if size % processes:
        raise UsageError(f"the sampler's batch ({size}) does not divide among {processes} processes; each trains "
                         f"1/{processes} of every global batch: use a multiple of {processes}")
    loader = DataLoader(dataset, batch_sampler=distributed.LocalSlices(sampler), **loader_kwargs)
    return DeviceLoader(loader, accelerator.device)
