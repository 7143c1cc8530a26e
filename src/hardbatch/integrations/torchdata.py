"""torchdata's ``StatefulDataLoader`` over a hardbatch sampler, resuming mid-round to the batch.

Needs ``pip install 'hardbatch[torchdata]'``. torchdata's loader saves a batch sampler's state when it sends the
sampler's indices to its workers, ahead of training (``num_workers`` x ``prefetch_factor`` batches ahead); a
hardbatch sampler's state is that of the last step it recorded, so a state saved that early makes a resumed run
train the prefetched batches twice. This loader saves the sampler's state when its own ``state_dict`` is called,
that is with the checkpoint, and restores it before the loader's: the resumed run trains exactly the batches an
uninterrupted run trains. Use it as torchdata's::

    loader = hardbatch.integrations.torchdata.StatefulDataLoader(train_set, sampler, num_workers=2)
    ...
    torch.save({"model": model.state_dict(), "loader": loader.state_dict(), ...}, path)   # after a step
    ...
    loader.load_state_dict(torch.load(path)["loader"])   # a new loader over a new sampler built alike
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset

from hardbatch import distributed
from hardbatch.errors import MissingExtra
from hardbatch.sampler import HardBatchSampler

try:
    from torchdata.stateful_dataloader import StatefulDataLoader as _StatefulDataLoader
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtra("hardbatch.integrations.torchdata", "torchdata", "torchdata") from None


class _Shares:
    """The batch sampler torchdata sees: this rank's share of each step the sampler draws, with a state of its own
    that says nothing (the sampler's state travels beside the loader's), so torchdata never fast-forwards it."""

    def __init__(self, sampler: HardBatchSampler):
        self.shares = distributed.LocalSlices(sampler)

    def __len__(self) -> int:
        return len(self.shares)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.shares)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing: the sampler's own state is restored by ``StatefulDataLoader.load_state_dict``."""


class StatefulDataLoader(_StatefulDataLoader):
    """``torchdata.stateful_dataloader.StatefulDataLoader`` drawing from ``sampler`` (this rank's share of each step,
    under several processes); ``kwargs`` as torchdata's (``num_workers``, ``collate_fn``, ...), no ``batch_size``
    or ``sampler``. Its ``state_dict`` holds the loader's state and the sampler's state as of the last recorded
    step; ``load_state_dict`` restores both."""

    def __init__(self, dataset: Dataset, sampler: HardBatchSampler, **kwargs: Any):
        super().__init__(dataset, batch_sampler=_Shares(sampler), **kwargs)
        self.hardbatch_sampler = sampler

    def state_dict(self) -> dict:
        """The loader's state and the sampler's, as of the last step it recorded."""
        return {"loader": super().state_dict(), "sampler": self.hardbatch_sampler.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from ``state_dict`` (a ``state_dict``): the sampler first, then the loader, which then draws
        from the sampler's first unrecorded step."""
        self.hardbatch_sampler.load_state_dict(state_dict["sampler"])
        loader = dict(state_dict["loader"])
        # The batches drawn after the loader's last snapshot are the sampler's business: it draws again from its
        # first unrecorded step, so the loader must not skip any (a map-style data set's workers hold no state).
        if "_steps_since_snapshot" in loader:
            loader["_steps_since_snapshot"] = 0
        if "_num_yielded" in loader:
            loader["_num_yielded"] = 0
        super().load_state_dict(loader)
