"""RS2 without replacement, pinned down on scripted runs: the window the authors' UniformNoReplacement moves over a
permutation (its rounding, its wrap-around of m − 1 samples, its reshuffle), the dropped remainder, the epoch count
and the cosine schedule over the whole run."""

from __future__ import annotations

import math

import pytest
import torch

import hardbatch
from hardbatch.config import RunConfig
from hardbatch.errors import BadValue, UsageError
from hardbatch.functional import rs2_next_window, rs2_window_samples
from hardbatch.policies.rs2 import RS2
from hardbatch.run.parts import make_scheduler


def _windows(num_samples: int, size: int, rounds: int) -> list[tuple[int, int, bool]]:
    start = end = 0
    out = []
    for _ in range(rounds):
        start, end, fresh = rs2_next_window(start, end, size, num_samples)
        out.append((start, end, fresh))
    return out


def test_the_window_moves_over_the_permutation_and_wraps_with_one_sample_fewer():
    # n = 10, m = 4: [0, 4), [4, 8), then 8, 9 and the permutation's first sample again (end = 12 mod 11 = 1): 3
    # samples, not 4; then a new permutation.
    assert _windows(10, 4, 5) == [(0, 4, True), (4, 8, False), (8, 1, False), (0, 4, True), (4, 8, False)]
    # n = 11, m = 4: the wrapped window ends at 0 (12 mod 12), so it is the permutation's last 3 samples alone.
    assert _windows(11, 4, 4) == [(0, 4, True), (4, 8, False), (8, 0, False), (0, 4, True)]
    # m divides n: the windows tile the permutation and the next round draws a new one.
    assert _windows(9, 3, 4) == [(0, 3, True), (3, 6, False), (6, 9, False), (0, 3, True)]
    # m = n (fraction 1): every round a new permutation of all the samples.
    assert _windows(5, 5, 3) == [(0, 5, True)] * 3


def test_window_samples_follow_the_permutation_and_wrap_to_its_start():
    order = torch.tensor([7, 3, 9, 0, 5, 1, 8, 2, 6, 4])
    assert rs2_window_samples(order, 4, 8).tolist() == [5, 1, 8, 2]
    assert rs2_window_samples(order, 8, 1).tolist() == [6, 4, 7]
    assert rs2_window_samples(order, 8, 0).tolist() == [6, 4]


@pytest.mark.parametrize(
    "num_samples, fraction, size", [(25, 0.1, 2), (35, 0.1, 4), (5, 0.5, 2), (15, 0.5, 8), (7, 1.0, 7)]
)
def test_a_round_draws_round_r_times_n_samples_with_pythons_round(num_samples, fraction, size):
    # Python's round, as the authors' round(n_train * fraction): 25 · 0.1 = 2.5 -> 2 (half to even), 35 · 0.1 =
    # 3.5000000000000004 -> 4, 7.5 -> 8.
    assert RS2(fraction=fraction).bind(num_samples).round_size == size


def _rounds(sampler: hardbatch.HardBatchSampler) -> list[dict]:
    """Run ``sampler`` to its end, recording a constant loss; each round's trained rows and the window it drew."""
    rounds = []
    while not sampler.done:
        rows = []
        for indices in sampler:
            rows.append(indices)
            sampler.record(torch.tensor(1.0))
        policy = sampler.policy
        rounds.append({"rows": rows, "window": (policy.start, policy.end), "order": policy.order.clone()})
    return rounds


def test_epochs_draw_without_replacement_until_every_sample_was_drawn():
    # n = 100, m = 30, B = 8: three windows of 30 (3 batches each, 6 dropped), then one of 10 + 19 = 29 samples that
    # ends the permutation and starts it again, then a new permutation.
    rounds = _rounds(hardbatch.HardBatchSampler(100, 8, epochs=6, policy=RS2(fraction=0.3), seed=4))
    assert [r["window"] for r in rounds] == [(0, 30), (30, 60), (60, 90), (90, 19), (0, 30), (30, 60)]
    assert [len(r["rows"]) for r in rounds] == [3, 3, 3, 3, 3, 3]
    assert all(len(row) == 8 for r in rounds for row in r["rows"])  # full batches only: the remainder is dropped
    order = rounds[0]["order"]
    assert all(torch.equal(r["order"], order) for r in rounds[:4]) and not torch.equal(rounds[4]["order"], order)
    trained = [{i for row in r["rows"] for i in row} for r in rounds]
    for r, (start, end) in zip(trained[:3], [(0, 30), (30, 60), (60, 90)], strict=True):
        assert r <= set(order[start:end].tolist())  # each epoch trains 24 of its window's 30
    assert not (trained[0] & trained[1] or trained[0] & trained[2] or trained[1] & trained[2])  # none drawn twice
    assert trained[3] <= set(order[90:].tolist()) | set(order[:19].tolist())  # the wrap: the rest, then the start
    assert trained[4] <= set(rounds[4]["order"][:30].tolist())


def test_the_drawn_window_is_reshuffled_before_it_is_cut():
    rounds = _rounds(hardbatch.HardBatchSampler(100, 10, epochs=1, policy=RS2(fraction=0.5), seed=0))
    trained = [i for row in rounds[0]["rows"] for i in row]
    window = rounds[0]["order"][:50].tolist()
    assert sorted(trained) == sorted(window) and trained != window  # the loader's shuffle=True, here seeded


def test_a_wrapped_window_of_fewer_than_b_samples_is_one_shorter_batch():
    # n = 10, m = B = 4: the third window wraps and holds 3 samples; they train as one batch of 3, never an empty
    # epoch (the authors' drop_last would train nothing that epoch).
    rounds = _rounds(hardbatch.HardBatchSampler(10, 4, epochs=4, policy=RS2(fraction=0.4), seed=1))
    assert [[len(row) for row in r["rows"]] for r in rounds] == [[4], [4], [3], [4]]


def test_every_epoch_is_one_pass_and_the_run_ends_after_e_of_them():
    sampler = hardbatch.HardBatchSampler(100, 8, epochs=5, policy="rs2", fraction=0.3, seed=2)
    ends = []
    while not sampler.done:
        for _ in sampler:
            sampler.record(torch.tensor(1.0))
            if sampler.epoch_ended:
                ends.append((sampler.epoch, sampler.steps, sampler.progress))
    assert ends == [(1, 3, 0.2), (2, 6, 0.4), (3, 9, 0.6), (4, 12, 0.8), (5, 15, 1.0)]
    assert int(sampler.visits.sum()) == 15  # (reading visits settles the sampler's counts)
    assert sampler.trained_samples["all"] == 15 * 8  # 24 of 30 a round; 6 dropped every round


def test_a_cosine_schedule_decays_over_the_whole_run_of_short_epochs():
    # The authors' CosineAnnealingLR spans (steps of an epoch) · E steps; here the schedule follows the passes done,
    # so it reaches 0 at the last step even though the wrapped epoch has fewer steps: m = 24 in batches of 8 gives
    # 3 steps an epoch, and the fifth epoch's wrapped window of 23 gives 2.
    sampler = hardbatch.HardBatchSampler(100, 8, epochs=5, policy=RS2(fraction=0.24), seed=0)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = make_scheduler(RunConfig(schedule="cosine"), optimizer, sampler)
    rates, steps = [], []
    while not sampler.done:
        steps.append(0)
        for _ in sampler:
            rates.append(optimizer.param_groups[0]["lr"])
            sampler.record(torch.tensor(1.0))
            optimizer.step()
            scheduler.step()
            steps[-1] += 1
    assert steps == [3, 3, 3, 3, 2]
    expected = [0.5 * (1 + math.cos(math.pi * (e + i / n) / 5)) for e, n in enumerate(steps) for i in range(n)]
    assert rates == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_the_same_seed_draws_the_same_epochs_and_a_checkpoint_resumes_them():
    def run(stop_at: int | None = None):
        sampler = hardbatch.HardBatchSampler(100, 8, epochs=6, policy="rs2", fraction=0.3, seed=7)
        trained = []
        while not sampler.done:
            for indices in sampler:
                trained.append(indices)
                sampler.record(torch.tensor(1.0))
                if len(trained) == stop_at:
                    state = sampler.state_dict()
                    resumed = hardbatch.HardBatchSampler(100, 8, epochs=6, policy="rs2", fraction=0.3, seed=7)
                    resumed.load_state_dict(state)
                    return trained + list(_rest(resumed))
        return trained

    straight = run()
    assert run() == straight
    assert run(stop_at=10) == straight  # mid-epoch, in the wrapped window
    assert run(stop_at=9) == straight  # at an epoch's end, before the wrap
    other = hardbatch.HardBatchSampler(100, 8, epochs=6, policy="rs2", fraction=0.3, seed=8)
    assert list(_rest(other)) != straight


def _rest(sampler: hardbatch.HardBatchSampler) -> list[list[int]]:
    out = []
    while not sampler.done:
        for indices in sampler:
            out.append(indices)
            sampler.record(torch.tensor(1.0))
    return out


def test_a_fraction_of_less_than_one_batch_or_outside_0_1_is_refused():
    with pytest.raises(
        UsageError,
        match=r"rs2: fraction 0.05 of 100 samples is round\(100 · 0.05\) = 5 samples an "
        r"epoch, fewer than one batch of 8; use a fraction of at least 0.08",
    ):
        hardbatch.HardBatchSampler(100, 8, policy="rs2", fraction=0.05)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(BadValue, match="fraction"):
            RS2(fraction=bad)
    assert RS2().fraction == 0.1  # the authors' default (--fraction 0.1)


def test_rs2_needs_no_loss_of_any_kind():
    sampler = hardbatch.HardBatchSampler(100, 10, epochs=2, policy="rs2", fraction=0.5)
    assert not sampler.policy.per_sample and not sampler.policy.scores_first and sampler.policy.epoch_is_round
    for _ in sampler:
        assert sampler.weights().tolist() == [1.0] * 10  # the plain mean
        sampler.record(3.0)  # a plain number is enough
