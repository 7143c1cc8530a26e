"""Any hardbatch policy in a Hugging Face ``accelerate`` loop: the training loader that keeps the shared plan.

Needs ``pip install 'hardbatch[accelerate]'`` (only for the Accelerator itself; this module imports nothing of
it). See ``examples/accelerate_loop.py`` and the integrations guide. The loop is the quickstart's, with
``prepare_loader`` for the DataLoader and ``accelerator.backward``::

    model, optimizer = accelerator.prepare(model, optimizer)
    loader = prepare_loader(accelerator, train_set, sampler)     # not accelerator.prepare(DataLoader(...))
    while not sampler.done:
        for batch in loader:                                      # this rank's share of each global batch
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad(); accelerator.backward(loss); optimizer.step()

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

Time (``sampler.meter.train_seconds`` and ``cpu_seconds``): ``hardbatch.training_loss`` counts from one call to the
next, and the loader stops the clocks when a pass ends (the loop asks past its last batch, or leaves it), so the
pass's last backward and optimizer step are counted and what the loop does after the pass (evaluation) is not.
Evaluate after the ``for`` loop: evaluation inside a pass, after a step that ended an epoch, is left out too, with
that step's backward (``training_loss``'s rule); loading a pass's first batch is not counted.

Process groups: under several processes (``accelerate launch``, ``torchrun``), ``prepare_loader`` registers
``hardbatch.distributed.shutdown`` to run at interpreter exit, while the interpreter is still whole: it frees the
group and the gloo worker threads that the Accelerator's reference cycles would otherwise keep alive into
finalization (where one can abort the process after all its work). The script calls nothing at its end.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from hardbatch import batches, distributed
from hardbatch.errors import UsageError
from hardbatch.sampler import HardBatchSampler

_shutdown_registered = False


def _shutdown_at_exit() -> None:
    """Register ``distributed.shutdown`` with ``atexit`` once per process, if a process group is active."""
    global _shutdown_registered
    if distributed.active() and not _shutdown_registered:
        atexit.register(distributed.shutdown)
        _shutdown_registered = True


class DeviceLoader:
    """Iterates ``loader`` with each batch moved to ``device``; one pass of it is one pass of the policy. Stops
    ``sampler.meter``'s clocks when a pass ends (see the module docstring)."""

    def __init__(self, loader: DataLoader, device: torch.device | str, sampler: HardBatchSampler | None = None):
        self.loader = loader
        self.device = device
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        try:
            for batch in self.loader:
                yield batches.to_device(batch, self.device)
        finally:  # the pass is over (or the loop left it): its last step has trained, what follows is not training
            if self.sampler is not None:
                self.sampler.meter.stop()


def prepare_loader(accelerator: Any, dataset: Dataset, sampler: HardBatchSampler, **loader_kwargs: Any) -> DeviceLoader:
    """The training loader for ``sampler`` under ``accelerator``: this rank's contiguous share of every global batch
    the policy planned, on ``accelerator.device`` (use it instead of ``accelerator.prepare`` for this loader).

    ``sampler``'s batch is the global batch (all ranks together; it must divide by ``accelerator.num_processes``);
    ``loader_kwargs`` go to the DataLoader (``collate_fn``, ``num_workers``, ...). Under a process group, the group
    is freed at interpreter exit (see the module docstring).
    """
    size, processes = sampler.partition.shape[1], accelerator.num_processes
    if size % processes:
        raise UsageError(
            f"the sampler's batch ({size}) does not divide among {processes} processes; each trains "
            f"1/{processes} of every global batch: use a multiple of {processes}"
        )
    _shutdown_at_exit()
    loader = DataLoader(dataset, batch_sampler=distributed.LocalSlices(sampler), **loader_kwargs)
    return DeviceLoader(loader, accelerator.device, sampler)
