"""The paper's rule, ``hardbatch.policies.HardBatch`` (docs/method.md "The rule (exact)"), pinned on scripted
losses: k = ⌊δ·N⌋, the warm-up, the top-k in ascending index order with stale losses and ties to the lower index, the
budget's last round cut short, against an independent reference; and its opt-in variants rescore, repartition,
trim_top and mix.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from conftest import Rec, drive, rounds_of, scripted, table

from hardbatch.errors import BadValue, UsageError
from hardbatch.functional import generator_for, top_k_batches
from hardbatch.policies import HardBatch
from hardbatch.sampler import HardBatchSampler


def batches_by_round(log: list[Rec]) -> list[tuple[int, int]]:
    """(round, batch) of every optimizer step."""
    return [(r.round, r.batch) for r in log if r.kind == "train"]


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


def stored_before_each_round(log: list[Rec], n: int) -> dict[int, list[float]]:
    """Each batch's last recorded loss when each round r >= 1 was planned."""
    stored = [math.nan] * n
    before: dict[int, list[float]] = {}
    for rec in log:
        if rec.kind == "train" and rec.round not in before:
            before[rec.round] = list(stored)
        stored[rec.batch] = rec.loss
    return before


# ---- k = floor(delta * N) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, delta, k",
    [
        (10, 0.3, 3),
        (10, 0.7, 7),
        (10, 0.29, 2),
        (100, 0.57, 57),
        (3, 1 / 3, 1),
        (5, 0.6, 3),
        (7, 1.0, 7),
        (20, 0.05, 1),
        (9, 0.999, 8),
        (1, 1.0, 1),
    ],
)
def test_k_is_floor_of_delta_times_n(n, delta, k):
    assert HardBatch(delta=delta).bind(n).k == k
    assert HardBatchSampler(n, 1, delta=delta).policy.k == k
    assert HardBatchSampler(n, 1, policy=HardBatch(delta=delta)).policy.k == k


@pytest.mark.parametrize("n, delta", [(9, 0.1), (3, 0.3), (10, 0.09), (1, 0.5)])
def test_fewer_than_one_batch_per_round_is_refused(n, delta):
    with pytest.raises(UsageError, match=r"= 0 batches per round; use delta >= .* or a smaller batch size"):
        HardBatch(delta=delta).bind(n)
    with pytest.raises(UsageError, match="0 batches per round"):
        HardBatchSampler(n, 1, delta=delta)


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.0001, 2.0, float("nan")])
def test_delta_outside_unit_interval_is_refused(delta):
    with pytest.raises(BadValue, match=r"^HardBatch: delta must be in \(0, 1\], got "):
        HardBatch(delta=delta)
    with pytest.raises(BadValue, match=r"delta must be in \(0, 1\]"):
        HardBatchSampler(10, 1, delta=delta)


def test_a_round_needs_every_warmup_loss():
    policy = HardBatch(delta=0.5).bind(3)
    assert policy.next_round().tolist() == [0, 1, 2]
    policy.record(0, 1.0)
    policy.record(2, 1.0)
    with pytest.raises(RuntimeError, match=r"no loss was recorded for batches \[1\] before round 1"):
        policy.next_round()


# ---- the rule on scripted losses ------------------------------------------------------------------------------------


def test_warmup_then_top_k_in_ascending_index_order_hand_computed():
    # N = 5, delta = 0.4 -> k = 2, E = 3 -> 15 steps: the warm-up and five rounds of two.
    script = table(
        {
            0: [5.0, 0.5, 0.05],
            1: [1.0, 0.3],
            2: [4.0, 3.5, 0.1],
            3: [2.0, 7.0, 0.4, 0.04],
            4: [3.0, 6.0, 0.2],
        }
    )
    sampler = HardBatchSampler(10, 2, delta=0.4, epochs=3)  # N = 5
    steps = batches_by_round(drive(sampler, script, by="batch"))
    assert steps == [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),  # warm-up, index order; L = [5, 1, 4, 2, 3]
        (1, 0),
        (1, 2),  # top-2 {0: 5, 2: 4}; L = [.5, 1, 3.5, 2, 3]
        (2, 2),
        (2, 4),  # top-2 {2: 3.5, 4: 3}; L = [.5, 1, .1, 2, 6]
        (3, 3),
        (3, 4),  # top-2 {4: 6, 3: 2}, trained in index order 3, 4; L = [.5, 1, .1, 7, .2]
        (4, 1),
        (4, 3),  # top-2 {3: 7, 1: 1}; L = [.5, .3, .1, .4, .2]
        (5, 0),
        (5, 3),  # top-2 {0: .5, 3: .4}
    ]
    assert sampler.done and sampler.steps == 15
    assert sampler.visits.tolist() == [3, 2, 3, 4, 3]
    assert sampler.policy.losses.tolist() == pytest.approx([0.05, 0.3, 0.1, 0.04, 0.2])
    assert list(sampler) == [] and len(sampler) == 0  # a spent budget yields nothing more


def test_stale_low_warmup_loss_starves_a_batch_and_ties_go_to_lower_index():
    # Batch 3's true loss would be huge if it were re-scored, but its warm-up loss stays stored forever.
    script = table(
        {
            0: [10.0] + [5.0] * 20,
            1: [9.0] + [5.0] * 20,
            2: [8.0] + [5.0] * 20,
            3: [0.001, 1000.0],
        }
    )
    sampler = HardBatchSampler(8, 2, delta=0.5, epochs=5)  # N = 4, k = 2, 20 steps
    steps = batches_by_round(drive(sampler, script, by="batch"))
    assert [b for _, b in steps] == [0, 1, 2, 3] + [0, 1] + [0, 2] + [0, 1] * 6
    # round 2: {2: 8} then the tie {0: 5, 1: 5} -> 0; from round 3 on, all of 0, 1, 2 tie at 5 -> 0, 1.
    assert sampler.visits.tolist() == [9, 8, 2, 1]
    assert sampler.policy.losses[3].item() == pytest.approx(0.001)


def test_last_round_is_cut_short_at_exactly_epochs_times_n_steps():
    # N = 5, k = 3, E = 2: 10 steps = warm-up (5) + a round of 3 + the first 2 of the next round.
    script = table({0: [1.0, 9.0], 1: [2.0, 9.0], 2: [3.0, 0.0], 3: [4.0, 10.0], 4: [5.0, 0.0]})
    sampler = HardBatchSampler(5, 1, delta=0.6, epochs=2)
    rounds = []
    visits = Counter()
    while not sampler.done:
        planned = len(sampler)
        drawn = []
        for _ in sampler:
            b = sampler.pending.batch
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
    steps = batches_by_round(drive(sampler, scripted(n), by="batch"))
    assert steps == [(r, b) for r in range(epochs) for b in range(n)]
    assert sampler.visits.tolist() == [epochs] * n


@pytest.mark.parametrize(
    "n, delta, epochs",
    [
        (10, 0.3, 4),
        (7, 0.5, 3),
        (12, 0.25, 5),
        (9, 1.0, 2),
        (13, 0.77, 3),
        (5, 0.2, 6),
        (1, 1.0, 3),
        (20, 0.05, 3),
        (16, 0.9, 4),
        (30, 0.4, 2),
    ],
)
@pytest.mark.parametrize("ties", [False, True])
def test_sampler_matches_an_independent_reference_of_the_rule(n, delta, epochs, ties):
    k = int(delta * n + 1e-9)
    for seed in range(3):
        losses = scripted(seed, ties)
        expected = reference_rule(n, k, epochs, losses)
        sampler = HardBatchSampler(n * 2, 2, delta=delta, epochs=epochs)
        got = batches_by_round(drive(sampler, losses, by="batch", as_number=bool(seed % 2)))  # numbers or tensors
        assert got == expected
        assert len(got) == epochs * n == sampler.steps
        assert sampler.visits.tolist() == [Counter(b for _, b in expected)[b] for b in range(n)]
        # Every round after the warm-up trains k distinct batches in ascending index order.
        for r in range(1, max(rr for rr, _ in got) + 1):
            chosen = [b for rr, b in got if rr == r]
            assert chosen == sorted(set(chosen))
            assert len(chosen) == k or r == got[-1][0]


def test_a_shuffled_partition_follows_the_same_reference():
    losses = scripted(7)
    sampler = HardBatchSampler(40, 4, delta=0.3, epochs=3, shuffle_partition=True, seed=5)
    assert batches_by_round(drive(sampler, losses, by="batch")) == reference_rule(10, 3, 3, losses)


# ---- rescore: a scoring pass over every batch before every K-th round ------------------------------------------------


def test_rescore_scores_every_batch_before_every_kth_round_and_refreshes_stale_losses():
    # N = 4 batches of one sample, k = 2, K = 2, 12 optimizer steps: scoring passes before rounds 2 and 4.
    train = table({0: [5.0, 1.0, 0.7], 1: [4.0, 0.9], 2: [3.0, 1.5, 0.5, 0.4], 3: [0.1, 8.0, 0.2]})
    score_rows = {(0, 2): 1.0, (1, 2): 0.8, (2, 1): 2.0, (3, 1): 9.0, (2, 3): 3.0, (3, 3): 0.3}
    sampler = HardBatchSampler(4, 1, delta=0.5, epochs=3, rescore=2)
    log = drive(sampler, train, lambda i, v: score_rows[(i, v)])
    assert [(r.kind, r.round, r.batch) for r in log] == [
        ("train", 0, 0),
        ("train", 0, 1),
        ("train", 0, 2),
        ("train", 0, 3),  # L = [5, 4, 3, 0.1]
        ("train", 1, 0),
        ("train", 1, 1),  # L = [1, 0.9, 3, 0.1]
        ("score", 1, 0),
        ("score", 1, 1),
        ("score", 1, 2),
        ("score", 1, 3),  # L = [1, 0.8, 2, 9]
        ("train", 2, 2),
        ("train", 2, 3),  # the stale batch 3 (0.1 since the warm-up) is chosen; L = [1, .8, 1.5, 8]
        ("train", 3, 2),
        ("train", 3, 3),  # L = [1, .8, .5, .2]
        ("score", 3, 0),
        ("score", 3, 1),
        ("score", 3, 2),
        ("score", 3, 3),  # L = [1, .8, 3, .3]
        ("train", 4, 0),
        ("train", 4, 2),
    ]
    assert sampler.done and sampler.steps == 12 and sampler.epoch == 3  # scoring steps are no optimizer steps ...
    assert sampler.visits.tolist() == [3, 2, 4, 3]  # ... nor visits
    assert sampler.policy.losses.tolist() == pytest.approx([0.7, 0.8, 0.4, 0.3])  # 1 and 3: from the scoring pass


@pytest.mark.parametrize("rescore, passes", [(1, [1, 2, 3, 4, 5, 6, 7]), (3, [3, 6]), (8, [])])
def test_rescore_passes_cover_all_batches_and_skip_nothing_of_the_budget(rescore, passes):
    # N = 10, k = 3, 30 steps: warm-up, rounds 1..6 of 3 and round 7 cut to 2.
    sampler = HardBatchSampler(10, 1, delta=0.3, epochs=3, rescore=rescore)
    log = drive(sampler, scripted(8))
    scored = [r for r in log if r.kind == "score"]
    assert [r.batch for r in scored] == list(range(10)) * len(passes)
    assert sorted({r.round + 1 for r in scored}) == passes  # planned before round `upcoming`
    assert [len(r) for r in rounds_of(log)] == [10, 3, 3, 3, 3, 3, 3, 2]
    assert sampler.steps == 30 and int(sampler.visits.sum()) == 30


# ---- repartition: a fresh cut every round, batches scored by their samples' last losses -----------------------------


def reference_repartition(n: int, batch_size: int, k: int, epochs: int, seed: int, loss_of) -> list[list[int]]:
    """The samples of each step under repartition, written from the docs with plain lists: a warm-up over the
    fixed cut, then per round a fresh permutation of all n samples from the policy's generator cut into N batches
    of B, each scored by the mean of its samples' last known losses (+inf when none is known), top k by score."""
    n_batches = n // batch_size
    generator = generator_for(seed, "policy")
    last: dict[int, float] = {}
    trained: Counter = Counter()
    steps: list[list[int]] = []

    def train(samples):
        steps.append(samples)
        for i in samples:
            last[i] = loss_of(i, trained[i])
            trained[i] += 1

    for b in range(n_batches):
        train(list(range(b * batch_size, (b + 1) * batch_size)))
    while len(steps) < epochs * n_batches:
        cut = torch.randperm(n, generator=generator)[: n_batches * batch_size].view(n_batches, batch_size).tolist()
        scores = []
        for batch in cut:
            known = [last[i] for i in batch if i in last]
            scores.append(sum(known) / len(known) if known else math.inf)
        chosen = sorted(sorted(range(n_batches), key=lambda b: -scores[b])[:k])
        for b in chosen[: epochs * n_batches - len(steps)]:
            train(cut[b])
    return steps


@pytest.mark.parametrize(
    "n, batch_size, delta, seed", [(6, 2, 1 / 3, 0), (7, 2, 1 / 3, 1), (20, 4, 0.4, 2), (13, 3, 0.5, 3)]
)
def test_repartition_recuts_every_round_and_scores_batches_by_their_samples_last_losses(n, batch_size, delta, seed):
    k = math.floor(delta * (n // batch_size) + 1e-9)
    losses = scripted(seed)
    sampler = HardBatchSampler(n, batch_size, delta=delta, epochs=3, repartition=True, seed=seed)
    assert sampler.policy.per_sample  # it needs each sample's loss
    log = drive(sampler, losses)
    assert [s.samples for s in log] == reference_repartition(n, batch_size, k, 3, seed, losses)
    # From round 1 on the trace's batch id is the position in the round's own cut.
    assert all(0 <= s.batch < n // batch_size for s in log)


def test_repartition_round_one_scores_the_new_cut_from_the_warmup_losses():
    # n = 7, B = 2: the fixed cut [[0, 1], [2, 3], [4, 5]] drops sample 6, which the re-cut may draw (never trained).
    warmup = [0.6, 0.1, 0.5, 0.3, 0.2, 0.4]
    policy = HardBatch(delta=1 / 3, repartition=True).bind(torch.arange(6).view(3, 2), num_samples=7, seed=0)
    planned = policy.plan()
    for i in range(len(planned)):
        step = planned.step(i)
        policy.observe(step, torch.tensor(0.0), torch.tensor([warmup[j] for j in step.samples.tolist()]))
    planned = policy.plan()
    assert len(planned) == 1  # k = 1
    step = planned.step(0)
    cut = policy.cut.tolist()
    flat = [i for row in cut for i in row]
    assert len(set(flat)) == 6 and set(flat) <= set(range(7))  # 6 of the 7 samples, none twice
    known = [[warmup[i] for i in row if i < 6] for row in cut]
    scores = [sum(v) / len(v) if v else math.inf for v in known]
    assert policy.losses.tolist() == pytest.approx(scores)
    assert step.batch == scores.index(max(scores)) and step.samples.tolist() == cut[step.batch]


# ---- trim_top and mix: the noise guards -------------------------------------------------------------------------


def test_trim_top_skips_the_highest_stored_losses_hand_computed():
    # N = 5, k = 2, trim floor(0.2 * 5) = 1: each round the highest stored loss is skipped, the next two trained.
    script = table(
        {0: [5.0, 0.1, 0.01], 1: [1.0, 0.2, 0.02], 2: [4.0, 0.5, 0.05], 3: [2.0, 7.0], 4: [3.0, 6.0, 0.3, 0.04]}
    )
    sampler = HardBatchSampler(5, 1, delta=0.4, epochs=3, trim_top=0.2)
    assert rounds_of(drive(sampler, script)) == [
        [0, 1, 2, 3, 4],  # L = [5, 1, 4, 2, 3]
        [2, 4],  # 0 skipped; L = [5, 1, .5, 2, 6]
        [0, 3],  # 4 skipped; L = [.1, 1, .5, 7, 6]
        [1, 4],  # 3 skipped (and from now on starved); L = [.1, .2, .5, 7, .3]
        [2, 4],  # L = [.1, .2, .05, 7, .04]
        [0, 1],
    ]


@pytest.mark.parametrize("trim_top, trim", [(0.1, 1), (0.25, 2), (0.39, 3)])
def test_trim_top_never_chooses_the_floor_q_n_highest(trim_top, trim):
    sampler = HardBatchSampler(10, 1, delta=0.3, epochs=4, trim_top=trim_top)
    assert sampler.policy.trim == trim
    log = drive(sampler, scripted(4))
    for r, chosen in enumerate(rounds_of(log)[1:], start=1):
        stored = torch.tensor(stored_before_each_round(log, 10)[r])
        order = torch.sort(stored, descending=True, stable=True).indices.tolist()
        assert chosen == sorted(order[trim : trim + 3])[: len(chosen)]


def test_trim_top_leaving_fewer_than_k_batches_is_refused():
    with pytest.raises(UsageError) as error:
        HardBatchSampler(10, 1, delta=0.5, trim_top=0.6)
    assert str(error.value) == (
        "trim_top 0.6 leaves 4 of 10 batches, fewer than the k = 5 to train per round; use a smaller trim_top or δ"
    )


def test_mix_draws_floor_f_k_of_the_k_outside_the_top_set_seeded():
    # N = 10, k = 4, mix floor(0.5 * 4) = 2: the top 2 by stored loss plus 2 drawn from the other 8.
    def run(seed):
        sampler = HardBatchSampler(10, 1, delta=0.4, epochs=5, mix=0.5, seed=seed)
        assert sampler.policy.mixed == 2
        return drive(sampler, scripted(6))

    log = run(1)
    before = stored_before_each_round(log, 10)
    beyond_top_k = 0
    for r, chosen in enumerate(rounds_of(log)[1:], start=1):
        stored = torch.tensor(before[r])
        assert chosen == sorted(set(chosen)) and len(chosen) == 4
        assert set(top_k_batches(stored, 2).tolist()) <= set(chosen)
        beyond_top_k += bool(set(chosen) - set(top_k_batches(stored, 4).tolist()))
    assert beyond_top_k >= 5  # of 10 rounds: the two drawn are not simply the 3rd and 4th highest
    assert run(1) == log and run(2) != log
    # floor(0.2 * 4) = 0: nothing mixed, the paper's rule exactly
    plain = drive(HardBatchSampler(10, 1, delta=0.4, epochs=5), scripted(6))
    assert drive(HardBatchSampler(10, 1, delta=0.4, epochs=5, mix=0.2, seed=3), scripted(6)) == plain


def test_trim_top_is_never_chosen_even_with_mix():
    """trim_top's help: "never select the top q fraction of stored losses"; mix must not bring them back."""
    sampler = HardBatchSampler(10, 1, delta=0.4, epochs=6, trim_top=0.2, mix=0.5, seed=0)
    log = drive(sampler, scripted(2))
    before = stored_before_each_round(log, 10)
    for r, chosen in enumerate(rounds_of(log)[1:], start=1):
        trimmed = top_k_batches(torch.tensor(before[r]), 2).tolist()
        assert not set(trimmed) & set(chosen), f"round {r} trained the trimmed batches {set(trimmed) & set(chosen)}"
