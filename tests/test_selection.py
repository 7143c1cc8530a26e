"""The selection rule (docs/method.md "The rule (exact)"), pinned on scripted loss sequences, and the sampler protocol."""

from __future__ import annotations

import io
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import hardbatch
from hardbatch.functional import generator_for
from hardbatch.selection import (
    HardBatchSampler, HighLossPolicy, RandomSubsetPolicy, create_policy, fixed_partition, num_selected, top_k_batches,
)
from hardbatch.errors import TrainingDiverged

# ---- helpers -------------------------------------------------------------------------------------


def reference_rule(n: int, k: int, epochs: int, loss_of) -> list[tuple[int, int]]:
    """The rule, written from docs/method.md with plain lists: (round, batch) for every optimizer step.

    ``loss_of(batch, visit)`` is the training loss of ``batch`` the ``visit``-th time (0-based) it is trained.
    """
    stored: list[float | None] = [None] * n
    visits = [0] * n
    steps: list[tuple[int, int]] = []
    budget = epochs * n
    rnd = 0
    while len(steps) < budget:
        if rnd == 0:
            chosen = list(range(n))
        else:
            # Python's sort is stable: among equal losses the lower index ranks first.
            ranked = sorted(range(n), key=lambda i: -stored[i])
            chosen = sorted(ranked[:k])
        for b in chosen:
            if len(steps) == budget:
                break
            stored[b] = loss_of(b, visits[b])
            visits[b] += 1
            steps.append((rnd, b))
        rnd += 1
    return steps


def drive(sampler: HardBatchSampler, loss_of, as_tensor: bool = False, max_passes: int = 10_000) -> list[tuple[int, int]]:
    """Iterate ``sampler`` like a training loop, recording scripted losses; returns (round, batch) per step."""
    row_to_batch = {tuple(row): i for i, row in enumerate(sampler.partition.tolist())}
    visits: Counter = Counter()
    steps = []
    passes = 0
    while not sampler.done:
        passes += 1
        assert passes <= max_passes, "sampler never finished"
        for indices in sampler:
            b = row_to_batch[tuple(indices)]
            loss = loss_of(b, visits[b])
            visits[b] += 1
            assert sampler.record(torch.tensor(loss) if as_tensor else loss) == b
            steps.append((sampler.round, b))
    return steps


def table(rows: dict[int, list[float]]):
    """A scripted loss table: rows[b][v] is batch b's loss on its v-th visit; unscripted visits fail the test."""

    def loss_of(b: int, v: int) -> float:
        assert v < len(rows[b]), f"batch {b} trained more often ({v + 1}x) than the script expects"
        return rows[b][v]

    return loss_of


def random_losses(seed: int, ties: bool = False):
    """Deterministic pseudo-random losses per (batch, visit), exactly representable in float32 (the stored dtype)."""

    def loss_of(b: int, v: int) -> float:
        rng = random.Random(seed * 1_000_003 + b * 1009 + v)
        return float(rng.randint(0, 3)) if ties else rng.randrange(1 << 20) / (1 << 20)

    return loss_of


def batches_of(steps):
    return [b for _, b in steps]


# ---- k = floor(delta * N) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, delta, k",
    [(10, 0.3, 3), (10, 0.7, 7), (10, 0.29, 2), (100, 0.57, 57), (3, 1 / 3, 1), (5, 0.6, 3), (7, 1.0, 7),
     (20, 0.05, 1), (9, 0.999, 8), (1, 1.0, 1)],
)
def test_num_selected_is_floor_of_delta_times_n(n, delta, k):
    assert num_selected(n, delta) == k
    assert HighLossPolicy(n, delta).k == k
    assert HardBatchSampler(n, 1, delta=delta).policy.k == k


@pytest.mark.parametrize("n, delta", [(9, 0.1), (3, 0.3), (10, 0.09), (1, 0.5)])
def test_fewer_than_one_batch_per_round_is_refused(n, delta):
    with pytest.raises(hardbatch.UsageError):
        num_selected(n, delta)
    with pytest.raises(hardbatch.UsageError):
        HardBatchSampler(n, 1, delta=delta)


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.0001, 2.0, float("nan")])
def test_delta_outside_unit_interval_is_refused(delta):
    with pytest.raises(hardbatch.UsageError):
        num_selected(10, delta)
    with pytest.raises(hardbatch.UsageError):
        HardBatchSampler(10, 1, delta=delta)
    with pytest.raises(hardbatch.UsageError):
        RandomSubsetPolicy(10, delta)


def test_epochs_below_one_and_unknown_policy_are_refused():
    with pytest.raises(hardbatch.UsageError):
        HardBatchSampler(10, 1, epochs=0)
    with pytest.raises(hardbatch.UsageError, match="hardbatch"):
        HardBatchSampler(10, 1, policy="nope")
    with pytest.raises(hardbatch.UsageError):
        create_policy("nope", 10, 0.5)


def test_delta_is_refused_by_policies_that_ignore_it():
    # A δ that silently did nothing would make a "uniform at δ = 0.5" run look like a result.
    with pytest.raises(hardbatch.UsageError, match="does not use delta.*hardbatch, random, cyclic"):
        create_policy("uniform", 10, 0.5)
    with pytest.raises(hardbatch.UsageError, match="does not use delta"):
        HardBatchSampler(10, 1, delta=0.5, policy="infobatch")
    assert create_policy("random", 10, 0.5).k == 5


# ---- top_k_batches -------------------------------------------------------------------------------


def test_top_k_returns_ascending_indices_not_loss_order():
    losses = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.95, 0.2])
    result = top_k_batches(losses, 3)
    assert result.tolist() == [1, 3, 4]  # loss order would be [4, 1, 3]
    assert result.dtype == torch.long
    assert top_k_batches(losses, 1).tolist() == [4]
    assert top_k_batches(losses, 6).tolist() == list(range(6))


def test_top_k_breaks_ties_toward_lower_index():
    assert top_k_batches(torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0]), 2).tolist() == [1, 2]
    assert top_k_batches(torch.tensor([2.0, 2.0, 2.0, 2.0]), 3).tolist() == [0, 1, 2]
    assert top_k_batches(torch.tensor([0.0, 5.0, 1.0, 1.0, 1.0, 5.0]), 3).tolist() == [1, 2, 5]
    assert top_k_batches(torch.tensor([float("inf"), 1.0, float("inf")]), 1).tolist() == [0]


@pytest.mark.parametrize("n", [7, 64, 1000, 5000])
def test_top_k_matches_a_stable_python_sort_on_tie_heavy_losses(n):
    generator = torch.Generator().manual_seed(n)
    losses = torch.randint(0, 5, (n,), generator=generator).float()
    for k in {1, n // 3 or 1, n // 2 or 1, n - 1 or 1, n}:
        expected = sorted(sorted(range(n), key=lambda i: -losses[i].item())[:k])
        assert top_k_batches(losses, k).tolist() == expected


# ---- the rule on scripted losses -----------------------------------------------------------------


def test_warmup_then_top_k_in_ascending_index_order_hand_computed():
    # N = 5, delta = 0.4 -> k = 2, E = 3 -> 15 steps: the warm-up and five rounds of two.
    script = table({
        0: [5.0, 0.5, 0.05],
        1: [1.0, 0.3],
        2: [4.0, 3.5, 0.1],
        3: [2.0, 7.0, 0.4, 0.04],
        4: [3.0, 6.0, 0.2],
    })
    sampler = HardBatchSampler(10, 2, delta=0.4, epochs=3)  # N = 5
    steps = drive(sampler, script)
    assert steps == [
        (0, 0), (0, 1), (0, 2), (0, 3), (0, 4),  # warm-up, index order; L = [5, 1, 4, 2, 3]
        (1, 0), (1, 2),  # top-2 {0: 5, 2: 4}; L = [.5, 1, 3.5, 2, 3]
        (2, 2), (2, 4),  # top-2 {2: 3.5, 4: 3}; L = [.5, 1, .1, 2, 6]
        (3, 3), (3, 4),  # top-2 {4: 6, 3: 2}, trained in index order 3, 4; L = [.5, 1, .1, 7, .2]
        (4, 1), (4, 3),  # top-2 {3: 7, 1: 1}; L = [.5, .3, .1, .4, .2]
        (5, 0), (5, 3),  # top-2 {0: .5, 3: .4}
    ]
    assert sampler.done and sampler.steps == 15
    assert sampler.visits.tolist() == [3, 2, 3, 4, 3]
    assert sampler.policy.losses.tolist() == pytest.approx([0.05, 0.3, 0.1, 0.04, 0.2])
    assert list(sampler) == []  # a spent budget yields nothing more
    assert len(sampler) == 0


def test_stale_low_warmup_loss_starves_a_batch_and_ties_go_to_lower_index():
    # Batch 3's true loss would be huge if it were re-scored, but its warm-up loss stays stored forever.
    script = table({
        0: [10.0] + [5.0] * 20,
        1: [9.0] + [5.0] * 20,
        2: [8.0] + [5.0] * 20,
        3: [0.001, 1000.0],
    })
    sampler = HardBatchSampler(8, 2, delta=0.5, epochs=5)  # N = 4, k = 2, 20 steps
    steps = drive(sampler, script)
    assert batches_of(steps) == [0, 1, 2, 3] + [0, 1] + [0, 2] + [0, 1] * 6
    # round 2: {2: 8} then the tie {0: 5, 1: 5} -> 0; from round 3 on, all of 0, 1, 2 tie at 5 -> 0, 1.
    assert sampler.visits.tolist() == [9, 8, 2, 1]
    assert sampler.policy.losses[3].item() == pytest.approx(0.001)


def test_last_round_is_cut_short_at_exactly_epochs_times_n_steps():
    # N = 5, k = 3, E = 2: 10 steps = warm-up (5) + a round of 3 + the first 2 of the next round.
    script = table({0: [1.0, 9.0], 1: [2.0, 9.0], 2: [3.0, 0.0], 3: [4.0, 10.0], 4: [5.0, 0.0]})
    sampler = HardBatchSampler(5, 1, delta=0.6, epochs=2)
    row_to_batch = {tuple(r): i for i, r in enumerate(sampler.partition.tolist())}
    rounds = []
    visits = Counter()
    while not sampler.done:
        planned = len(sampler)
        drawn = []
        for indices in sampler:
            b = row_to_batch[tuple(indices)]
            sampler.record(script(b, visits[b]))
            visits[b] += 1
            drawn.append(b)
        assert planned == len(drawn)
        rounds.append(drawn)
    # round 2's top-3 would be [0, 1, 3] (L = [1, 2, 0, 10, 0]); the budget keeps its first two.
    assert rounds == [[0, 1, 2, 3, 4], [2, 3, 4], [0, 1]]
    assert sampler.steps == sampler.total_steps == 10


@pytest.mark.parametrize("n, epochs", [(6, 3), (1, 4), (11, 2)])
def test_delta_one_is_ordinary_training_in_index_order(n, epochs):
    sampler = HardBatchSampler(n * 3, 3, delta=1.0, epochs=epochs)
    steps = drive(sampler, random_losses(n))
    assert steps == [(r, b) for r in range(epochs) for b in range(n)]
    assert sampler.visits.tolist() == [epochs] * n


@pytest.mark.parametrize(
    "n, delta, epochs",
    [(10, 0.3, 4), (7, 0.5, 3), (12, 0.25, 5), (9, 1.0, 2), (13, 0.77, 3), (5, 0.2, 6), (1, 1.0, 3),
     (20, 0.05, 3), (16, 0.9, 4), (30, 0.4, 2)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_sampler_matches_an_independent_reference_of_the_rule(n, delta, epochs, ties):
    k = int(delta * n + 1e-9)
    for seed in range(3):
        losses = random_losses(seed, ties)
        expected = reference_rule(n, k, epochs, losses)
        sampler = HardBatchSampler(n * 2, 2, delta=delta, epochs=epochs)
        got = drive(sampler, losses, as_tensor=bool(seed % 2))
        assert got == expected
        assert len(got) == epochs * n == sampler.steps
        assert sampler.visits.tolist() == [Counter(batches_of(expected))[b] for b in range(n)]
        # Every round after the warm-up trains k distinct batches in ascending index order.
        for r in range(1, max(rr for rr, _ in got) + 1):
            chosen = [b for rr, b in got if rr == r]
            assert chosen == sorted(set(chosen))
            assert len(chosen) == k or r == got[-1][0]


def test_shuffled_partition_trains_the_same_batch_indices_on_other_samples():
    losses = random_losses(7)
    plain = HardBatchSampler(40, 4, delta=0.3, epochs=3)
    shuffled = HardBatchSampler(40, 4, delta=0.3, epochs=3, shuffle_partition=True, seed=5)
    # The partition has its own generator, derived from the seed (the policy has another).
    assert torch.equal(shuffled.partition, fixed_partition(40, 4, generator_for(5, "partition")))
    assert not torch.equal(shuffled.partition, plain.partition)
    assert drive(plain, losses) == drive(shuffled, losses) == reference_rule(10, 3, 3, losses)


def test_sampler_accepts_a_given_partition():
    partition = torch.tensor([[5, 4], [3, 2], [1, 0]])
    sampler = HardBatchSampler(partition, delta=2 / 3, epochs=2)
    assert sampler.num_batches == 3
    drawn = []
    while not sampler.done:
        for indices in sampler:
            drawn.append(indices)
            sampler.record(float(indices[0]))  # losses 5, 3, 1
    assert drawn == [[5, 4], [3, 2], [1, 0], [5, 4], [3, 2], [5, 4]]


# ---- fixed_partition -----------------------------------------------------------------------------


def test_fixed_partition_without_generator_is_index_order_and_drops_the_remainder():
    partition = fixed_partition(10, 3)
    assert partition.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert partition.dtype == torch.long
    assert fixed_partition(6, 6).tolist() == [[0, 1, 2, 3, 4, 5]]
    assert fixed_partition(7, 1).shape == (7, 1)


def test_fixed_partition_with_generator_is_a_seeded_permutation():
    a = fixed_partition(103, 10, torch.Generator().manual_seed(1))
    b = fixed_partition(103, 10, torch.Generator().manual_seed(1))
    c = fixed_partition(103, 10, torch.Generator().manual_seed(2))
    assert a.shape == (10, 10)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, fixed_partition(103, 10))
    flat = a.flatten().tolist()
    assert len(set(flat)) == 100 and all(0 <= i < 103 for i in flat)  # 3 samples dropped, none repeated


@pytest.mark.parametrize("batch_size", [0, -1, 11])
def test_fixed_partition_refuses_bad_batch_sizes(batch_size):
    with pytest.raises(hardbatch.UsageError):
        fixed_partition(10, batch_size)
    with pytest.raises(hardbatch.UsageError):
        HardBatchSampler(10, batch_size)


# ---- sampler protocol ----------------------------------------------------------------------------


def test_record_with_nothing_pending_raises():
    sampler = HardBatchSampler(6, 2, delta=0.5, epochs=2)
    with pytest.raises(RuntimeError):
        sampler.record(1.0)
    it = iter(sampler)
    next(it)
    sampler.record(1.0)
    with pytest.raises(RuntimeError):
        sampler.record(1.0)
    assert sampler.steps == 1


def test_new_pass_after_a_pass_that_recorded_nothing_raises():
    sampler = HardBatchSampler(8, 2, delta=0.5, epochs=3)
    drawn = list(sampler)  # the whole warm-up drawn, nothing recorded: record() is never being called
    assert len(drawn) == 4
    with pytest.raises(RuntimeError, match="record"):
        next(iter(sampler))
    # Recording the warm-up unblocks the next round, which uses all four losses.
    for loss in (1.0, 2.0, 3.0, 4.0):
        sampler.record(loss)
    assert list(sampler) == [[4, 5], [6, 7]]


def test_new_pass_after_an_early_break_resumes_even_when_the_rest_was_drawn_ahead():
    sampler = HardBatchSampler(8, 2, delta=0.5, epochs=3)
    assert len(list(sampler)) == 4  # a prefetching loader drew the whole warm-up ...
    sampler.record(1.0)
    sampler.record(2.0)  # ... and the loop broke out after two steps
    assert list(iter(sampler)) == [[4, 5], [6, 7]]  # the next pass goes on from the first unrecorded batch
    sampler.record(3.0)
    sampler.record(4.0)
    assert list(sampler) == [[4, 5], [6, 7]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_loop_that_breaks_mid_round_goes_on_where_it_stopped(num_workers):
    # The user's loop leaves a round after its second step (and, with workers, after the loader drew ahead);
    # the next `for batch in loader` must continue with the first batch it did not record.
    losses = random_losses(5)
    expected = drive(HardBatchSampler(40, 2, delta=0.5, epochs=3), losses)
    sampler = HardBatchSampler(40, 2, delta=0.5, epochs=3)
    kwargs = {"num_workers": num_workers, "persistent_workers": True, "prefetch_factor": 4} if num_workers else {}
    loader = DataLoader(IndexDataset(40), batch_sampler=sampler, **kwargs)
    row_to_batch = {tuple(r): i for i, r in enumerate(sampler.partition.tolist())}
    visits, steps, passes = Counter(), [], 0
    while not sampler.done:
        passes += 1
        assert passes < 200
        for i, (_, y) in enumerate(loader):
            if i == 2 and passes % 2:  # every other pass: break before recording the third batch
                break
            b = row_to_batch[tuple(y.tolist())]
            sampler.record(losses(b, visits[b]))
            visits[b] += 1
            steps.append((sampler.round, b))
    assert steps == expected


def test_round_needs_every_warmup_loss():
    policy = HighLossPolicy(3, 0.5)
    assert policy.next_round() == [0, 1, 2]
    policy.record(0, 1.0)
    policy.record(2, 1.0)
    with pytest.raises(RuntimeError):
        policy.next_round()


def test_pass_stopped_early_resumes_at_the_first_unrecorded_batch():
    # A loop that breaks out after a DataLoader drew ahead must not pair a loss with the wrong batch.
    sampler = HardBatchSampler(10, 1, delta=0.5, epochs=3)
    for indices in sampler:
        sampler.record(float(indices[0]))  # warm-up losses 0..9 -> round 1 = [5, 6, 7, 8, 9]
    it = iter(sampler)
    assert [next(it)[0] for _ in range(3)] == [5, 6, 7]  # drawn ahead, as a prefetching loader does
    assert sampler.record(1.0) == 5
    assert sampler.record(1.0) == 6
    resumed = iter(sampler)
    assert next(resumed) == [7]  # 7 was drawn but never recorded: it is drawn again
    assert sampler.record(1.0) == 7
    for indices in resumed:
        assert sampler.record(1.0) == indices[0]
    assert sampler.visits.tolist() == [1] * 5 + [2] * 5
    # L = [0, 1, 2, 3, 4, 1, 1, 1, 1, 1] -> round 2 = {4, 3, 2} and the ties 1, 5. With nothing
    # drawn ahead, a resumed pass simply goes on.
    it = iter(sampler)
    assert next(it) == [1]
    sampler.record(0.0)
    assert list(iter(sampler)) == [[2], [3], [4], [5]]


def test_len_follows_the_round_and_the_budget():
    sampler = HardBatchSampler(10, 1, delta=0.4, epochs=2)  # N = 10, k = 4, 20 steps
    assert len(sampler) == 10
    assert len(DataLoader(range(10), batch_sampler=sampler)) == 10
    it = iter(sampler)
    next(it), next(it), next(it)
    assert len(sampler) == 7
    for b in range(3):
        sampler.record(float(b))
    for indices in it:
        sampler.record(float(indices[0]))
    lengths = []
    while not sampler.done:
        lengths.append(len(sampler))
        for _ in sampler:
            sampler.record(0.0)
    assert lengths == [4, 4, 2]  # 10 + 4 + 4 + 2 = 20
    assert len(sampler) == 0


def test_visits_count_every_recorded_step():
    losses = random_losses(3)
    sampler = HardBatchSampler(24, 2, delta=0.25, epochs=4)
    steps = drive(sampler, losses)
    counts = Counter(batches_of(steps))
    assert sampler.visits.tolist() == [counts[b] for b in range(12)]
    assert sampler.visits.dtype == torch.long
    assert int(sampler.visits.sum()) == 48
    assert int(sampler.visits.min()) >= 1  # the warm-up touched every batch


# ---- a real DataLoader, with prefetching worker processes ----------------------------------------


class IndexDataset(Dataset):
    """Sample i is (a feature, label i): a batch's labels identify its samples."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([float(i)]), torch.tensor(i)


def run_loader(num_workers: int, losses, n_samples=62, batch_size=3, delta=0.35, epochs=4, policy="hardbatch"):
    sampler = HardBatchSampler(n_samples, batch_size, delta=delta, epochs=epochs, shuffle_partition=True, seed=3,
                               policy=policy)
    row_to_batch = {tuple(r): i for i, r in enumerate(sampler.partition.tolist())}
    kwargs = {"num_workers": num_workers}
    if num_workers:
        kwargs.update(persistent_workers=True, prefetch_factor=3)
    loader = DataLoader(IndexDataset(n_samples), batch_sampler=sampler, **kwargs)
    visits = Counter()
    steps = []
    passes = 0
    while not sampler.done:
        passes += 1
        assert passes < 1000
        for x, y in loader:
            b = row_to_batch[tuple(y.tolist())]
            assert x.flatten().tolist() == [float(i) for i in y.tolist()]
            loss = torch.tensor(losses(b, visits[b]))
            visits[b] += 1
            assert sampler.record(loss) == b
            steps.append((sampler.round, b))
    return steps, sampler


def test_dataloader_with_prefetching_workers_gives_the_same_steps():
    losses = random_losses(11)
    single, s0 = run_loader(0, losses)
    multi, s2 = run_loader(2, losses)
    n = 62 // 3
    assert single == reference_rule(n, int(0.35 * n), 4, losses)
    assert multi == single
    assert torch.equal(s0.visits, s2.visits)
    assert len(multi) == 4 * n


def test_dataloader_with_workers_and_random_policy_matches_single_process():
    losses = random_losses(12)
    single, _ = run_loader(0, losses, policy="random")
    multi, _ = run_loader(2, losses, policy="random")
    assert multi == single


# ---- checkpoints ---------------------------------------------------------------------------------


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("policy", ["hardbatch", "random"])
@pytest.mark.parametrize("stop_after, drawn_ahead", [(13, 0), (13, 2), (10, 0), (3, 1), (21, 3)])
def test_state_dict_mid_round_resumes_the_same_sequence(policy, stop_after, drawn_ahead):
    # N = 10, k = 3 (delta 0.3), 30 steps; rounds end after 10, 13, 16, ... steps.
    losses = random_losses(21, ties=True)
    make = lambda: HardBatchSampler(20, 2, delta=0.3, epochs=3, policy=policy, seed=9)  # noqa: E731
    expected = drive(make(), losses)

    first = make()
    row_to_batch = {tuple(r): i for i, r in enumerate(first.partition.tolist())}
    visits = Counter()
    steps = []
    while first.steps < stop_after:
        it = iter(first)
        for indices in it:
            b = row_to_batch[tuple(indices)]
            loss = losses(b, visits[b])
            visits[b] += 1
            first.record(loss)
            steps.append((first.round, b))
            if first.steps == stop_after:
                break
    for _ in range(drawn_ahead):  # a prefetching loader may have drawn more than was recorded
        next(it, None)
    state = roundtrip(first.state_dict())

    second = make()
    second.load_state_dict(state)
    assert second.steps == stop_after
    assert torch.equal(second.visits, first.visits)
    # The scripted visit counter continues from the first sampler's.
    rest = drive(second, lambda b, v: losses(b, v + int(first.visits[b])))
    assert steps + rest == expected
    assert torch.equal(second.visits, torch.tensor([Counter(batches_of(expected))[b] for b in range(10)]))


def test_state_dict_restores_the_partition():
    a = HardBatchSampler(30, 3, delta=0.5, epochs=2, shuffle_partition=True, seed=4)
    b = HardBatchSampler(30, 3, delta=0.5, epochs=2)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert torch.equal(a.partition, b.partition)


# ---- RandomSubsetPolicy --------------------------------------------------------------------------


def random_rounds(seed: int, losses, n=20, delta=0.25, epochs=5):
    sampler = HardBatchSampler(n, 1, delta=delta, epochs=epochs, policy="random", seed=seed)
    assert isinstance(sampler.policy, RandomSubsetPolicy)
    steps = drive(sampler, losses)
    rounds: dict[int, list[int]] = {}
    for r, b in steps:
        rounds.setdefault(r, []).append(b)
    return [rounds[r] for r in sorted(rounds)]


def test_random_policy_warms_up_then_trains_k_random_batches_in_index_order():
    rounds = random_rounds(0, random_losses(1))
    assert rounds[0] == list(range(20))
    assert len(rounds) == 1 + 16  # (100 - 20) steps / 5 per round
    for chosen in rounds[1:]:
        assert len(chosen) == 5
        assert chosen == sorted(set(chosen))
        assert all(0 <= b < 20 for b in chosen)
    assert len({tuple(c) for c in rounds[1:]}) > 1  # not the same subset every round


def test_random_policy_ignores_losses_and_is_reproducible_per_seed():
    a = random_rounds(0, random_losses(1))
    assert random_rounds(0, random_losses(2)) == a  # the choice does not depend on losses
    assert random_rounds(0, random_losses(1)) == a
    assert random_rounds(1, random_losses(1)) != a
    # The high-loss rule on the same losses chooses differently.
    high = drive(HardBatchSampler(20, 1, delta=0.25, epochs=5), random_losses(1))
    assert batches_of(high)[20:] != [b for chosen in a[1:] for b in chosen]


def test_random_policy_with_delta_one_is_index_order():
    assert random_rounds(3, random_losses(0), n=6, delta=1.0, epochs=3) == [list(range(6))] * 3


# ---- misuse: one line naming the argument, what it expects and what it got ---------------------


@pytest.mark.parametrize("data_len, batch_size, words", [
    (200.0, 4, "data_len_or_partition must be a positive int or an (N, B) integer tensor of sample indices, "
               "got 200.0 (float)"),
    ("200", 4, "got '200' (str)"),
    (True, 4, "got True (bool)"),
    (0, 4, "got 0 (int)"),
    (-3, 2, "got -3 (int)"),
    (20, 2.0, "batch_size must be a positive int, got 2.0 (float)"),
    (20, None, "batch_size must be a positive int, got None (NoneType)"),
    (20, 0, "batch_size must be a positive int, got 0 (int)"),
    (torch.tensor([0, 1, 2]), None, "(N, B) integer tensor of sample indices, got a tensor of shape (3,)"),
    (torch.zeros(3, 2), None, "(N, B) integer tensor of sample indices, got a tensor of dtype torch.float32"),
    (torch.tensor([[0, -1]]), None, "sample indices must be >= 0, got -1"),
])
def test_sampler_refuses_a_data_length_or_batch_size_that_is_not_a_positive_int(data_len, batch_size, words):
    with pytest.raises(hardbatch.UsageError) as error:
        HardBatchSampler(data_len, batch_size)
    assert words in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("epochs", [0, 2.5, "3", None])
def test_sampler_refuses_epochs_that_are_not_a_positive_int(epochs):
    with pytest.raises(hardbatch.UsageError, match=f"epochs must be a positive int, got {epochs!r}"):
        HardBatchSampler(20, 2, epochs=epochs)


def test_numpy_integers_are_accepted_as_sizes():
    sampler = HardBatchSampler(np.int64(20), np.int32(4), epochs=np.int64(2))
    assert sampler.num_batches == 5 and sampler.total_steps == 10


@pytest.mark.parametrize("loss, words", [
    (torch.tensor([1.0, 2.0]), "record(loss): loss must be a 0-d tensor or a number, got a tensor of shape (2,)"),
    (torch.ones(1, 1), "got a tensor of shape (1, 1)"),
    ("0.5", "got '0.5' (str)"),
    ([0.5], "got [0.5] (list)"),
    (None, "got None (NoneType)"),
    (True, "got True (bool)"),
])
def test_record_refuses_a_loss_that_is_not_one_number(loss, words):
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=2)
    next(iter(sampler))
    with pytest.raises(hardbatch.UsageError) as error:
        sampler.record(loss)
    assert words in str(error.value) and "\n" not in str(error.value)
    # Nothing was recorded: the pending batch takes its loss as soon as the loop passes a right one.
    assert sampler.steps == 0 and sampler.record(torch.tensor(0.5)) == 0 and sampler.steps == 1


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), -math.inf, torch.tensor(float("nan"))])
def test_record_refuses_a_non_finite_loss_at_once(loss):
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=2)
    it = iter(sampler)
    next(it)
    sampler.record(1.0)
    next(it)
    with pytest.raises(TrainingDiverged, match=r"record\(loss\): the loss is not finite at step 2; .*learning rate"):
        sampler.record(loss)
    assert sampler.steps == 1


def test_non_finite_losses_on_an_accelerator_are_refused_at_the_round_s_end_without_a_sync_per_step(monkeypatch):
    # An immediate check of a device tensor would wait for the device at every step; the sampler checks such
    # losses at the next sync the policy makes anyway (planning a round) and at the end of the budget.
    sampler = HardBatchSampler(8, 2, delta=0.5, epochs=2)
    monkeypatch.setattr(HardBatchSampler, "_on_host", staticmethod(lambda value: False))
    for i, indices in enumerate(sampler):
        sampler.record(torch.tensor(float("nan") if i == 2 else 1.0))
    assert sampler.steps == 4
    with pytest.raises(TrainingDiverged, match="the loss is not finite at step 3;"):
        next(iter(sampler))
    last = HardBatchSampler(4, 2, epochs=1)
    for indices in last:
        if last.steps == 1:
            with pytest.raises(TrainingDiverged, match="at step 2;"):
                last.record(torch.tensor(float("inf")))
        else:
            last.record(torch.tensor(1.0))


# ---- class-sorted data ---------------------------------------------------------------------------


def test_sampler_warns_when_its_fixed_batches_are_mostly_one_class():
    labels = torch.arange(40) // 10  # stored sorted by class: batches of 5 in file order are each one class
    with pytest.warns(UserWarning, match=r"100% one class.*shuffle_partition=True"):
        HardBatchSampler(40, 5, labels=labels)
    with pytest.warns(UserWarning, match="100% one class"):
        HardBatchSampler(fixed_partition(40, 5), labels=labels.tolist())  # any sequence of labels


def test_sampler_is_silent_on_mixed_batches_one_class_data_or_without_labels(recwarn):
    labels = torch.arange(40) // 10
    HardBatchSampler(40, 5, shuffle_partition=True, seed=0, labels=labels)
    HardBatchSampler(40, 5, labels=torch.arange(40) % 2 == 0)  # alternating classes: every batch mixed
    HardBatchSampler(40, 5, labels=torch.zeros(40, dtype=torch.long))  # one class: nothing to mix
    HardBatchSampler(40, 5)
    assert not [w for w in recwarn if "one class" in str(w.message)]


@pytest.mark.parametrize("labels, words", [
    (torch.zeros(39, dtype=torch.long), "labels must hold one class per sample (40), got 39"),
    (torch.zeros(40), "labels must be integer class indices, got torch.float32"),
    (torch.zeros(40, 2, dtype=torch.long), "labels must hold one class per sample (40), got shape (40, 2)"),
])
def test_sampler_refuses_labels_that_do_not_fit_the_data(labels, words):
    with pytest.raises(hardbatch.UsageError) as error:
        HardBatchSampler(40, 5, labels=labels)
    assert words in str(error.value)
