"""hardbatch.functional: the pure selection functions (top-k of stored losses, the partition, SB's percentiles,
InfoBatch's pruning, SeTa's clustering, IES's mastery test, Composer's and RHO-LOSS's choices, seeds and sample ids),
pinned on hand-computed tensors.

What each policy does with them over a run: tests/policies/.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hardbatch.errors import UsageError
from hardbatch.functional import (
    batch_purity,
    batch_scores,
    composer_select,
    derive_seed,
    fill_batches,
    fixed_partition,
    generator_for,
    infobatch_prune,
    key_ids,
    kmeans_1d,
    mastered,
    num_selected,
    oldest_k,
    percentiles,
    positive_int,
    rank_percentiles,
    single_class_purity,
    top_k_batches,
    top_reducible,
    trimmed_top_k,
)

# ---- seeds and arguments ------------------------------------------------------------------------------------------


def test_each_consumer_of_randomness_gets_its_own_seed_from_the_run_seed():
    assert derive_seed(3, "policy") == derive_seed(3, "policy") < 2**63
    assert len({derive_seed(s, c) for s in (0, 1) for c in ("policy", "partition")}) == 4
    a, b = generator_for(3, "policy"), generator_for(3, "policy")
    assert torch.equal(torch.randperm(20, generator=a), torch.randperm(20, generator=b))


@pytest.mark.parametrize(
    "value, ok",
    [(3, True), (np.int64(3), True), (0, False), (-1, False), (2.0, False), (True, False), ("3", False), (None, False)],
)
def test_positive_int_takes_integers_only(value, ok):
    if ok:
        assert positive_int("epochs", value) == 3 and type(positive_int("epochs", value)) is int
    else:
        with pytest.raises(UsageError, match=f"epochs must be a positive int, got {value!r} "):
            positive_int("epochs", value)
    assert positive_int("seed", 0, "an integer >= 0", minimum=0) == 0


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
def test_num_selected_is_floor_of_delta_times_n(n, delta, k):
    assert num_selected(n, delta) == k


@pytest.mark.parametrize("n, delta", [(9, 0.1), (3, 0.3), (10, 0.09), (1, 0.5)])
def test_fewer_than_one_batch_per_round_is_refused(n, delta):
    with pytest.raises(UsageError, match=r"floor\(delta \* N\) = .* = 0 batches per round; use delta >= "):
        num_selected(n, delta)


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.0001, 2.0, float("nan")])
def test_delta_outside_unit_interval_is_refused(delta):
    with pytest.raises(UsageError, match=r"delta must be in \(0, 1\]"):
        num_selected(10, delta)


# ---- top_k_batches, trimmed_top_k, oldest_k -------------------------------------------------------------------------


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


def test_trimmed_top_k_skips_the_trim_highest_and_draws_mix_from_the_rest():
    losses = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    assert trimmed_top_k(losses, 2, trim=1).tolist() == [2, 4]  # 0 (the highest) skipped
    assert trimmed_top_k(losses, 2).tolist() == top_k_batches(losses, 2).tolist()
    draws = {
        tuple(trimmed_top_k(losses, 3, trim=1, mix=2, generator=torch.Generator().manual_seed(s)).tolist())
        for s in range(30)
    }
    # 2 (the highest untrimmed) always; two of 1, 3, 4 drawn; 0 never.
    assert all(2 in d and 0 not in d and list(d) == sorted(d) for d in draws) and len(draws) == 3


def test_oldest_k_takes_the_batches_trained_longest_ago_ties_to_the_lower_index():
    assert oldest_k(torch.tensor([5, -1, 3, -1, 0]), 3).tolist() == [1, 3, 4]
    assert oldest_k(torch.tensor([2, 2, 2]), 2).tolist() == [0, 1]


# ---- the fixed partition ----------------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "batch_size, words",
    [
        (0, "batch_size must be a positive int, got 0"),
        (-1, "batch_size must be a positive int, got -1"),
        (11, "batch size 11 is larger than the training set (10 samples)"),
    ],
)
def test_fixed_partition_refuses_bad_batch_sizes(batch_size, words):
    with pytest.raises(UsageError) as error:
        fixed_partition(10, batch_size)
    assert words in str(error.value)


def test_batch_purity_is_the_mean_share_of_each_batch_s_largest_class():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    assert batch_purity(labels, torch.tensor([[0, 1], [2, 3]])) == 1.0
    assert batch_purity(labels, torch.tensor([[0, 2], [4, 6], [1, 3]])) == pytest.approx(0.5)
    sorted_labels = torch.arange(40) // 10
    assert single_class_purity(sorted_labels, fixed_partition(40, 5)) == 1.0
    assert single_class_purity(torch.zeros(40, dtype=torch.long), fixed_partition(40, 5)) is None  # one class
    assert single_class_purity(torch.arange(40) % 2, fixed_partition(40, 5)) is None  # mixed batches


# ---- scores of batches and samples --------------------------------------------------------------------------------


def test_batch_scores_hand_computed():
    nan = math.nan
    scores = batch_scores(torch.tensor([1.0, nan, 3.0, nan, 0.5]), torch.tensor([[0, 2], [1, 3], [0, 1], [4, 2]]))
    assert scores.tolist() == [2.0, math.inf, 1.0, 1.75]  # unknown samples ignored; none known: +inf, trained first


def test_percentiles_are_the_fraction_of_the_history_strictly_below_each_loss():
    # Strictly smaller (<), as the authors' code counts (<= with ties: the earlier rule, selective-backprop's
    # count_ties).
    history = torch.tensor([4.0, 1.0, 3.0, 2.0])
    losses = torch.tensor([1.0, 2.0, 3.0, 5.0, 0.5, 2.5])
    assert percentiles(losses, history).tolist() == [0.0, 0.25, 0.5, 1.0, 0.0, 0.5]
    assert percentiles(losses, history, ties=True).tolist() == [0.25, 0.5, 0.75, 1.0, 0.0, 0.5]
    ties = torch.tensor([2.0, 2.0, 1.0, 3.0])
    assert percentiles(torch.tensor([2.0]), ties).tolist() == [0.25]  # the two other 2.0s do not count
    assert percentiles(torch.tensor([2.0]), ties, ties=True).tolist() == [0.75]


# ---- InfoBatch's pruning ------------------------------------------------------------------------------------------


def test_infobatch_prune_hand_computed():
    nan = math.nan
    # Known mean (1 + 2 + 3 + 10 + 0.5 + 8) / 6 = 4.083: below it are samples 0, 1, 2, 5 (m = 4).
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, nan, 0.5, 8.0, nan])
    below = {0, 1, 2, 5}
    seen = set()
    for seed in range(20):
        kept, boosted = infobatch_prune(scores, 0.5, torch.Generator().manual_seed(seed))
        kept = kept.tolist()
        pruned = set(range(8)) - set(kept)
        assert len(kept) == len(set(kept))
        assert len(pruned) == 2 and pruned <= below  # round(0.5 * 4): never above the mean, never unscored
        assert boosted.tolist() == [i in below for i in kept]
        seen.add(frozenset(pruned))
    assert len(seen) > 1  # which ones is drawn


@pytest.mark.parametrize("ratio, pruned", [(0.0, 0), (0.25, 1), (0.3, 1), (0.4, 2), (0.75, 3), (0.9, 4)])
def test_infobatch_prunes_round_ratio_times_m(ratio, pruned):
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])  # mean 6.6: m = 4 below
    kept, boosted = infobatch_prune(scores, ratio, torch.Generator().manual_seed(0))
    assert len(kept) == 10 - pruned and int(boosted.sum()) == 4 - pruned


def test_infobatch_prunes_nothing_without_scores():
    kept, boosted = infobatch_prune(torch.full((6,), math.nan), 0.5, torch.Generator().manual_seed(0))
    assert sorted(kept.tolist()) == list(range(6)) and not boosted.any()


def test_fill_batches_cuts_the_first_or_tops_one_batch_up_from_the_rest():
    assert fill_batches(torch.arange(7), torch.tensor([20, 21]), 3).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert fill_batches(torch.tensor([5]), torch.tensor([8, 9, 7]), 3).tolist() == [[5, 8, 9]]
    assert fill_batches(torch.zeros(0, dtype=torch.long), torch.tensor([8, 9]), 2).tolist() == [[8, 9]]


# ---- SeTa's clustering --------------------------------------------------------------------------------------------


def test_kmeans_1d_finds_separated_groups_and_sorts_them_easy_to_hard():
    values = torch.tensor([9.0, 0.1, 5.0, 0.2, 9.2, 5.1, 0.15, 8.8])
    assert kmeans_1d(values, 3).tolist() == [2, 0, 1, 0, 2, 1, 0, 2]
    # The optimum splits off the outlier: {0, 1, 3, 4} and {10} (squared distances 10, against 28.7 for {0, 1}, ...).
    assert kmeans_1d(torch.tensor([4.0, 0.0, 3.0, 1.0, 10.0]), 2).tolist() == [0, 0, 0, 0, 1]
    assert kmeans_1d(torch.full((6,), 2.0), 3).tolist() == [0, 0, 1, 1, 2, 2]  # all equal: equal chunks
    # Fewer distinct values than clusters: each value its own cluster, ids by value (Lloyd's iterations from quantile
    # starts gave [0, 2] here before the exact clustering of 6d0e06d; the window then sees ids 0 and 1).
    assert kmeans_1d(torch.tensor([1.0, 3.0]), 4).tolist() == [0, 1]
    assert kmeans_1d(torch.tensor([3.0, 1.0, 3.0]), 5).tolist() == [1, 0, 1]
    assert kmeans_1d(torch.zeros(0), 3).tolist() == []


def _sse(x: np.ndarray, labels: np.ndarray) -> float:
    """Within-cluster sum of squares."""
    return float(sum(((x[labels == c] - x[labels == c].mean()) ** 2).sum() for c in np.unique(labels)))


def _optimum(x: np.ndarray, k: int) -> float:
    """The least within-cluster sum of squares over every split of the sorted values into k intervals."""
    xs = np.sort(x)
    best = np.inf
    for cuts in itertools.combinations(range(1, len(xs)), k - 1):
        bounds = [0, *cuts, len(xs)]
        best = min(best, sum(((xs[a:b] - xs[a:b].mean()) ** 2).sum() for a, b in itertools.pairwise(bounds)))
    return best


def test_kmeans_1d_clusters_are_the_optimum_of_every_split_into_intervals():
    rng = np.random.default_rng(0)
    for _ in range(60):
        m, k = int(rng.integers(6, 11)), int(rng.integers(2, 5))
        x = np.round(rng.exponential(1.0, m), int(rng.integers(1, 4)))  # rounding makes ties and duplicates
        labels = kmeans_1d(torch.tensor(x), k).numpy()
        assert _sse(x, labels) == pytest.approx(_optimum(x, k), abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_1d_fit_is_never_worse_than_scikit_learns_kmeans_and_ids_run_easy_to_hard(seed):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    # Loss-like scores: many easy samples near 0, a band of harder ones, a long tail (as SeTa clusters them).
    x = np.concatenate([rng.exponential(0.3, 300), rng.normal(2.5, 0.5, 100), rng.gamma(3.0, 1.0, 50)])
    labels = kmeans_1d(torch.tensor(x), 5).numpy()
    fitted = KMeans(n_clusters=5, n_init=10, random_state=seed).fit(x.reshape(-1, 1))
    assert _sse(x, labels) <= fitted.inertia_ * (1 + 1e-9)
    centres = [x[labels == c].mean() for c in range(5)]
    assert centres == sorted(centres)  # id 0 is the easiest cluster


def test_kmeans_1d_gives_well_separated_scores_the_clusters_of_scikit_learn():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.05, 40) for c in (0.1, 1.0, 2.0, 4.0)])
    ours = kmeans_1d(torch.tensor(x), 4).numpy()
    theirs = KMeans(n_clusters=4, n_init=10, random_state=0).fit(x.reshape(-1, 1))
    order = np.argsort(theirs.cluster_centers_.ravel())  # their ids ranked by centre, as ours are
    assert np.array_equal(ours, np.argsort(order)[theirs.labels_])


def test_kmeans_1d_few_distinct_values_and_equal_values():
    assert kmeans_1d(torch.tensor([0.5, 0.1, 0.5, 0.1]), 3).tolist() == [1, 0, 1, 0]  # each distinct value alone
    assert kmeans_1d(torch.full((6,), 0.3), 3).tolist() == [0, 0, 1, 1, 2, 2]  # equal: k chunks in given order


# ---- IES's mastery test ---------------------------------------------------------------------------------------------


def test_mastered_averages_the_latest_absolute_second_differences_hand_computed():
    history = torch.tensor(
        [
            [1.0, 0.875, 0.75, 0.625, 0.5, 0.375],  # linear: every d = 0 -> mastered
            [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125],  # d = .25, .125, .0625, .03125: mean of the last 3 = .073
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # flat, but only 5 losses recorded yet
            [0.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # d = -1, 0, 0, 0: the oldest d is outside the window of 3
            [1.0, 0.5, 1.0, 0.5, 1.0, 0.5],  # oscillating: |d| = 1
        ]
    )
    counts = torch.tensor([6, 9, 5, 6, 6])
    assert mastered(history, counts, 1e-3, 3, 1).tolist() == [True, False, False, True, False]
    assert mastered(history, counts, 0.1, 3, 1).tolist() == [True, True, False, True, False]
    # patience 2 (L = 7 here: one more loss): the sum of the last two sliding means must stay below τ.
    wide = torch.cat([torch.zeros(5, 1), history], dim=1)
    wide[0, 0], wide[3, 0] = 1.125, 0.0
    assert mastered(wide, counts + 1, 1e-3, 3, 2).tolist() == [True, False, False, False, False]
    assert not mastered(history, counts, 0.0, 3, 1).any()  # τ = 0: nothing is ever mastered


# ---- Composer's selection and RHO-LOSS's ----------------------------------------------------------------------------


def test_rank_percentile_of_rank_i_is_i_plus_half_over_b_ties_in_position_order():
    order, percentile = rank_percentiles(torch.tensor([3.0, 1.0, 2.0, 1.0]))
    assert order.tolist() == [1, 3, 2, 0]
    assert percentile.tolist() == [0.125, 0.375, 0.625, 0.875]


@pytest.mark.parametrize(
    "keep, b, count",
    [(0.5, 4, 2), (0.3, 10, 3), (0.1, 4, 1), (0.25, 8, 2), (0.9, 10, 9), (0.57, 100, 57), (1e-4, 6, 1)],
)
def test_composer_select_keeps_floor_keep_b_at_least_one(keep, b, count):
    generator = torch.Generator().manual_seed(0)
    for scores in torch.rand(20, b, generator=torch.Generator().manual_seed(1)):
        weights = composer_select(scores, keep, generator)
        assert weights.sum().item() == count and set(weights.tolist()) <= {0.0, 1.0}
    # A tiny keep makes every weight but the top rank's underflow: the highest loss is the one kept.
    assert composer_select(torch.tensor([0.1, 0.9, 0.5]), 1e-4, generator).tolist() == [0.0, 1.0, 0.0]


def test_top_reducible_keeps_the_highest_loss_minus_irreducible_loss_ties_to_the_earlier():
    losses = torch.tensor([1.0, 2.5, 1.0, 0.25, 3.0, 1.25, 0.75, 1.5])
    irreducible = torch.tensor([0.0, 2.0, 0.5, 0.0, 3.0, 0.25, 0.0, 1.0])
    # reducible: [1, 0.5, 0.5, 0.25, 0, 1, 0.75, 0.5]: 1, 1, 0.75, then 0.5 three times: the earliest (position 1).
    assert top_reducible(losses, irreducible, 4).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]


# ---- sample ids of a stream -----------------------------------------------------------------------------------------


def test_key_ids_keep_integers_and_hash_strings_alike_in_every_process():
    assert key_ids(torch.tensor([3, 1], dtype=torch.int32)).tolist() == [3, 1]
    assert key_ids([3, np.int64(1)]).tolist() == [3, 1]
    hashed = key_ids(["a", "b", "a"])
    assert hashed[0] == hashed[2] != hashed[1] and int(hashed.min()) >= 0
    assert hashed.tolist() == key_ids(["a", "b", "a"]).tolist()
    for bad, words in [
        (torch.tensor([1.0]), "got a torch.float32 tensor of shape (1,)"),
        ([1.5], "a sample id must be an integer or a string, got 1.5 (float)"),
        ([True], "got True (bool)"),
    ]:
        with pytest.raises(UsageError) as error:
            key_ids(bad)
        assert words in str(error.value)
