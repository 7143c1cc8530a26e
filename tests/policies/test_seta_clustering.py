"""SeTa's clustering of losses: hardbatch's exact 1-D k-means reaches the fit of the authors' scikit-learn KMeans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hardbatch.functional import kmeans_1d


def _sse(x: np.ndarray, labels: np.ndarray) -> float:
    """Within-cluster sum of squares."""
    return float(sum(((x[labels == c] - x[labels == c].mean()) ** 2).sum() for c in np.unique(labels)))


def _optimum(x: np.ndarray, k: int) -> float:
    """The least within-cluster sum of squares over every split of the sorted values into k intervals."""
    xs = np.sort(x)
    best = np.inf
    for cuts in itertools.combinations(range(1, len(xs)), k - 1):
        bounds = [0, *cuts, len(xs)]
        best = min(best, sum(((xs[a:b] - xs[a:b].mean()) ** 2).sum() for a, b in zip(bounds, bounds[1:])))
    return best


def test_the_clusters_are_the_optimum_of_every_split_into_intervals():
    rng = np.random.default_rng(0)
    for _ in range(60):
        m, k = int(rng.integers(6, 11)), int(rng.integers(2, 5))
        x = np.round(rng.exponential(1.0, m), int(rng.integers(1, 4)))  # rounding makes ties and duplicates
        labels = kmeans_1d(torch.tensor(x), k).numpy()
        assert _sse(x, labels) == pytest.approx(_optimum(x, k), abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_the_fit_is_never_worse_than_scikit_learns_kmeans_and_ids_run_easy_to_hard(seed):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    # Loss-like scores: many easy samples near 0, a band of harder ones, a long tail (as SeTa clusters them).
    x = np.concatenate([rng.exponential(0.3, 300), rng.normal(2.5, 0.5, 100), rng.gamma(3.0, 1.0, 50)])
    labels = kmeans_1d(torch.tensor(x), 5).numpy()
    fitted = KMeans(n_clusters=5, n_init=10, random_state=seed).fit(x.reshape(-1, 1))
    assert _sse(x, labels) <= fitted.inertia_ * (1 + 1e-9)
    centres = [x[labels == c].mean() for c in range(5)]
    assert centres == sorted(centres)  # id 0 is the easiest cluster


def test_well_separated_scores_get_the_same_clusters_as_scikit_learn():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.05, 40) for c in (0.1, 1.0, 2.0, 4.0)])
    ours = kmeans_1d(torch.tensor(x), 4).numpy()
    theirs = KMeans(n_clusters=4, n_init=10, random_state=0).fit(x.reshape(-1, 1))
    order = np.argsort(theirs.cluster_centers_.ravel())  # their ids ranked by centre, as ours are
    assert np.array_equal(ours, np.argsort(order)[theirs.labels_])


def test_few_distinct_values_and_equal_values():
    assert kmeans_1d(torch.tensor([0.5, 0.1, 0.5, 0.1]), 3).tolist() == [1, 0, 1, 0]  # each distinct value alone
    assert kmeans_1d(torch.full((6,), 0.3), 3).tolist() == [0, 0, 1, 1, 2, 2]  # equal: k chunks in given order
    assert kmeans_1d(torch.zeros(0), 3).tolist() == []
