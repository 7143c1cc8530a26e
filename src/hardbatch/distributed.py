"""The distributed seam: rank, world size, the writer, and the few collectives the loop needs (no-ops in one process).

The step's collectives run over the data-parallel group: the whole world by default, or the group a sampler is
given (``HardBatchSampler(..., group=dp_group)``) when tensor or sequence parallelism splits the world otherwise:
every rank of a data-parallel group trains its share of the same global batch, and the ranks of a model-parallel
group (which hold the same data) see the same batches.
"""

from __future__ import annotations

import datetime
import gc
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from hardbatch.errors import UsageError

# A rank that stops answering (killed, hung) makes every other rank's next collective fail after this long,
# instead of waiting forever; torchrun's agent usually ends the job sooner (docs/guides/multi-gpu.md).
DEFAULT_TIMEOUT_S = 300
TIMEOUT_ENV = "HARDBATCH_DIST_TIMEOUT"


def active() -> bool:
    """Whether a process group is initialised (torchrun, Lightning's or Accelerate's)."""
    return dist.is_available() and dist.is_initialized()


def rank(group: Any = None) -> int:
    """This process's rank in ``group`` (default: the world): 0 without a process group (or, before init,
    torchrun's RANK)."""
    return dist.get_rank(group) if active() else int(os.environ.get("RANK", 0))


def world_size(group: Any = None) -> int:
    """The number of processes P of ``group`` (default: the world): 1 without a process group (or, before init,
    torchrun's WORLD_SIZE)."""
    return dist.get_world_size(group) if active() else int(os.environ.get("WORLD_SIZE", 1))


def is_writer() -> bool:
    """Whether this process writes files and prints: rank 0 only."""
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or anything that sets its variables) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def init() -> bool:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); no-op in one process.

    GPU tensors go over NCCL and CPU tensors over gloo, so a CPU run and the objects shared on the host work on
    a GPU machine too. Each process takes the GPU of its LOCAL_RANK. Returns whether this call created the group
    (its caller then owns ``shutdown``).
    """
    if not launched() or active():
        return False
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def shutdown() -> None:
    """Leave the process group and free it now, while the interpreter is whole; call it at the end of a script.

    ``destroy_process_group`` only unregisters the group: the Hugging Face Trainer's and Accelerate's objects keep
    it alive in reference cycles, with gloo's worker threads running, until the interpreter shuts down. A worker
    thread that then frees the last collective's tensors needs the GIL the finalizing interpreter holds, and the
    process aborts ("terminate called without an active exception", pytorch/pytorch#190489) after all its work is
    done. Collecting the cycles here frees a group that only they hold and joins its threads (a group that C++
    holds, as a live ``DistributedDataParallel`` does, stays until exit). No-op outside a process group.
    """
    if active():
        dist.destroy_process_group()
        gc.collect()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a bare ``cuda`` means this process's own GPU (LOCAL_RANK)."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def check_divisible(batch_size: int) -> None:
    """UsageError unless the global batch splits evenly over the P processes (every rank trains B / P samples)."""
    p = world_size()
    if batch_size % p:
        raise UsageError(
            f"--batch-size {batch_size} does not divide among {p} processes; each trains 1/{p} of "
            f"every mini-batch: use a multiple of {p}"
        )


def local_rows(batch_size: int, group: Any = None) -> slice:
    """This rank's contiguous share of a global batch of ``batch_size`` rows (over the data-parallel ``group``)."""
    p, r = world_size(group), rank(group)
    size = batch_size // p
    return slice(r * size, (r + 1) * size)


def kept_share(
    keep: torch.Tensor, device: torch.device, group: Any = None
) -> tuple[torch.Tensor, torch.Tensor | None, float, int]:
    """This rank's part of a keep-mask over the global batch (Selective Backprop): what to train and how to weigh it.

    ``keep``: bool, shape (b,), the same on every rank. Returns (kept, weights, scale, total): ``kept`` indexes this
    rank's rows; ``scale`` = P · kept here / ``total`` kept over all ranks, so that DDP's gradient average is the
    gradient of the mean over all kept samples (1.0 in one process). A rank that keeps none of its rows trains one
    row at ``weights`` 0 and scale 0: it must still join DDP's gradient all-reduce. ``weights`` is None otherwise.
    """
    keep = keep.cpu()  # one sync: the kept counts set the shapes
    total = int(keep.sum())
    kept = keep[local_rows(len(keep), group)].nonzero().flatten()
    if len(kept) == 0:
        return torch.zeros(1, dtype=torch.long), torch.zeros(1, device=device), 0.0, total
    return kept, None, world_size(group) * len(kept) / total, total


class LocalSlices(Sampler[list[int]]):
    """Wraps a batch sampler that yields global mini-batches; yields this rank's contiguous share of each.

    Rank and world size are read at iteration time, so a loader built before the process group (as in
    Lightning) still slices correctly; they are those of the batch sampler's data-parallel ``group`` (the world by
    default). With one process it yields the batches unchanged.
    """

    def __init__(self, batch_sampler: Any):  # a batch sampler: iterable, with a length
        self.batch_sampler = batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        group = getattr(self.batch_sampler, "group", None)
        for batch in self.batch_sampler:
            yield batch[local_rows(len(batch), group)]


def shard_range(n: int) -> range:
    """This rank's contiguous share of ``n`` items (the first ``n % P`` ranks get one more): for evaluation sets."""
    p, r = world_size(), rank()
    size, extra = divmod(n, p)
    start = r * size + min(r, extra)
    return range(start, start + size + (r < extra))


# ---- collectives: every rank calls them in the same order; with one process they return their input ----------


def all_gather(values: torch.Tensor, group: Any = None) -> torch.Tensor:
    """The ranks' equal-length (b/P,) tensors joined in rank order: the global batch's (b,) tensor."""
    if not active() or world_size(group) == 1:
        return values
    parts = [torch.empty_like(values) for _ in range(world_size(group))]
    dist.all_gather(parts, values.contiguous(), group=group)
    return torch.cat(parts)


def global_mean(local_mean: torch.Tensor, local_count: int, total: int, group: Any = None) -> torch.Tensor:
    """The mean over the global batch from each rank's mean over its ``local_count`` of ``total`` samples (0-d)."""
    if not active() or world_size(group) == 1:
        return local_mean
    value = local_mean.detach().double() * local_count
    dist.all_reduce(value, group=group)  # asynchronous on a GPU: the host does not wait
    return (value / total).to(local_mean.dtype)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over ranks (in place, returned)."""
    if active():
        dist.all_reduce(values)
    return values


def _broadcast(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


def on_writer(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` on rank 0 only and return its result on every rank; what it raises is raised on every rank.

    The decisions about the run folder (exists, finished, resume, locked) are taken this way: once.
    """
    if not active():
        return fn(*args, **kwargs)
    outcome = None
    if is_writer():
        try:
            outcome = (True, fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            outcome = (False, _picklable(e))
    ok, value = _broadcast(outcome)
    if not ok:
        raise value
    return value


def together(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` on every rank; if it raised on any, every rank raises the lowest such rank's error.

    For steps that read local files (a data set on each node): one node's missing file stops the job
    with its message instead of leaving the other ranks waiting in their next collective.
    """
    if not active():
        return fn(*args, **kwargs)
    result, error = None, None
    try:
        result = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
        error = _picklable(e)
    errors: list[BaseException | None] = [None] * world_size()
    dist.all_gather_object(errors, error)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return result


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - an exception that does not survive pickling travels as its text
        return RuntimeError(f"{type(error).__name__}: {error}")


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0 (None elsewhere); ``[obj]`` in one process."""
    if not active():
        return [obj]
    out = [None] * world_size() if is_writer() else None
    dist.gather_object(obj, out, dst=0)
    return out


# ---- the model -------------------------------------------------------------------------------------------------


def wrap(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """DistributedDataParallel around ``model`` under torchrun; ``model`` itself in one process.

    BatchNorm keeps per-rank batch statistics unless ``sync_bn`` (CUDA only: DDP refuses SyncBatchNorm on CPU
    modules), which first replaces ``model``'s BatchNorm layers in place by SyncBatchNorm layers holding the same
    parameters and buffers, so its optimizer and checkpoints are unchanged. DDP copies rank 0's buffers to every
    rank before each forward, so running statistics, evaluation and checkpoints are rank 0's.
    """
    if not active():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a ``torch.compile`` and/or DDP wrapper: what checkpoints and scoring use."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model) if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so every rank evaluates one model."""
    if not active():
        return
    for buffer in unwrap(model).buffers():
        dist.broadcast(buffer, src=0)
