"""What training spends, counted as it happens: the cost meter that every sampler carries (docs: "Cost")."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields


@dataclass
class CostMeter:
    """What training has spent, counted by the step core and the loop; saved with the sampler's state.

    ``samples_loaded``: samples the loader delivered; ``samples_forward``: forwarded with gradient;
    ``samples_forward_nograd``: forwarded without gradient to score them (Selective Backprop, ``rescore``);
    ``samples_backprop``: samples whose loss was back-propagated; ``choose_seconds``: time in the policy's own code
    and in scoring forwards, a part of ``train_seconds``; ``train_seconds``: wall-clock time of training (loading,
    forward, backward, optimizer step; evaluation left out); ``cpu_seconds``: this process's CPU time (all its
    threads) over the same span, which other jobs on a shared machine inflate far less than wall time (not to nothing:
    they share the caches and the memory bandwidth).

    The two clocks run between ``start()`` and ``stop()``. ``fit`` and the integrations call them around training
    and pause them for evaluation; in a loop of your own, ``training_loss`` runs them from one call to the next
    (see its docstring).
    """

    optimizer_steps: int = 0
    samples_loaded: int = 0
    samples_forward: int = 0
    samples_forward_nograd: int = 0
    samples_backprop: int = 0
    train_seconds: float = 0.0
    choose_seconds: float = 0.0
    cpu_seconds: float = 0.0
    _started: tuple[float, float] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def running(self) -> bool:
        """Whether the clocks are counting."""
        return self._started is not None

    def start(self) -> None:
        """Start counting ``train_seconds`` and ``cpu_seconds`` (no-op while counting)."""
        if self._started is None:
            self._started = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        """Stop counting, adding the time since ``start`` (no-op while stopped)."""
        if self._started is not None:
            self._add_until((time.perf_counter(), time.process_time()))
            self._started = None

    def lap(self) -> None:
        """``stop()`` then ``start()`` on one reading of the clocks (one call per step in a loop of your own)."""
        now = (time.perf_counter(), time.process_time())
        if self._started is not None:
            self._add_until(now)
        self._started = now

    def _add_until(self, now: tuple[float, float]) -> None:
        """Add the span from the running start to ``now`` (wall, CPU) to the two clocks."""
        assert self._started is not None
        self.train_seconds += now[0] - self._started[0]
        self.cpu_seconds += now[1] - self._started[1]

    def discard(self) -> None:
        """Stop counting without adding the time since ``start``: what ran meanwhile was not training."""
        self._started = None

    def state_dict(self) -> dict:
        """The counters by name (a running clock's time so far is not included)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a ``state_dict``)."""
        for f in fields(self):
            if not f.name.startswith("_"):
                setattr(self, f.name, type(getattr(self, f.name))(state[f.name]))

    def since(self, earlier: dict) -> dict:
        """The amounts spent since ``earlier`` (a ``state_dict``), by counter name."""
        return {name: value - earlier[name] for name, value in self.state_dict().items()}
