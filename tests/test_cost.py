"""hardbatch.cost: the CostMeter's clocks (start, stop, lap, discard) and its counters' state.

What the step core and the loops count with it: tests/test_step.py, tests/test_training.py, tests/test_quickstart.py;
the meter saved in the sampler's state: tests/test_sampler.py.
"""

from __future__ import annotations

import pytest

import hardbatch.cost
from hardbatch.cost import CostMeter


class Clock:
    """Stands in for the ``time`` module of ``hardbatch.cost``: wall and CPU clocks a test moves by hand."""

    def __init__(self):
        self.wall, self.cpu = 100.0, 10.0

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def advance(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(hardbatch.cost, "time", fake)
    return fake


def test_the_clocks_count_between_start_and_stop_only(clock):
    meter = CostMeter()
    assert not meter.running
    clock.advance(5.0, 5.0)  # before start: not counted
    meter.start()
    assert meter.running
    clock.advance(2.0, 1.5)
    meter.start()  # no-op while counting: the span goes on from the first start
    clock.advance(1.0, 0.5)
    meter.stop()
    assert not meter.running and (meter.train_seconds, meter.cpu_seconds) == (3.0, 2.0)
    meter.stop()  # no-op while stopped
    clock.advance(4.0, 4.0)
    assert (meter.train_seconds, meter.cpu_seconds) == (3.0, 2.0)


def test_lap_counts_the_span_since_start_and_starts_the_next_at_the_same_reading(clock):
    meter = CostMeter()
    meter.lap()  # stopped: only starts
    assert meter.running and (meter.train_seconds, meter.cpu_seconds) == (0.0, 0.0)
    clock.advance(2.0, 1.0)
    meter.lap()
    clock.advance(3.0, 2.5)
    meter.lap()
    assert meter.running and (meter.train_seconds, meter.cpu_seconds) == (5.0, 3.5)
    clock.advance(1.0, 1.0)
    meter.discard()  # the span since the last lap is not training
    assert not meter.running and (meter.train_seconds, meter.cpu_seconds) == (5.0, 3.5)


def test_discard_stops_without_counting_what_ran_meanwhile(clock):
    meter = CostMeter()
    meter.start()
    clock.advance(2.0, 2.0)
    meter.stop()
    meter.start()
    clock.advance(7.0, 7.0)  # evaluation, say
    meter.discard()
    assert not meter.running and meter.train_seconds == 2.0 and meter.cpu_seconds == 2.0


def test_the_state_holds_the_counters_not_a_running_clock(clock):
    meter = CostMeter(
        optimizer_steps=3,
        samples_loaded=96,
        samples_forward=80,
        samples_forward_nograd=16,
        samples_backprop=80,
        choose_seconds=0.5,
    )
    meter.start()
    clock.advance(1.0, 1.0)
    state = meter.state_dict()
    assert state == {
        "optimizer_steps": 3,
        "samples_loaded": 96,
        "samples_forward": 80,
        "samples_forward_nograd": 16,
        "samples_backprop": 80,
        "train_seconds": 0.0,
        "choose_seconds": 0.5,
        "cpu_seconds": 0.0,
    }
    again = CostMeter()
    again.load_state_dict({**state, "samples_loaded": 96.0})  # a JSON round trip may turn counts into floats
    assert again.state_dict() == state and type(again.samples_loaded) is int and not again.running
    meter.stop()
    assert meter.since(state) == {**dict.fromkeys(state, 0), "train_seconds": 1.0, "cpu_seconds": 1.0}
