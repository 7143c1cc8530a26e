"""Pure helpers of the selection policies: functions of loss tensors and seeds, no state."""

from __future__ import annotations

import hashlib
import math
import numbers
import operator
from typing import Any

import numpy as np
import torch

from hardbatch.errors import UsageError


def derive_seed(seed: int, consumer: str) -> int:
    """A 63-bit seed for one consumer of randomness (``"partition"``, ``"policy"``, ...) derived from the run seed.

    Each consumer gets its own ``torch.Generator`` seeded with this, so that no two consumers share a stream.
    """
    digest = hashlib.sha256(f"hardbatch:{seed}:{consumer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator_for(seed: int, consumer: str) -> torch.Generator:
    """A CPU ``torch.Generator`` of its own for ``consumer``, seeded from the run seed (``derive_seed``)."""
    return torch.Generator().manual_seed(derive_seed(seed, consumer))


def top_k_batches(losses: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest stored losses, returned in ascending index order.

    ``losses``: shape (N,), one stored loss per mini-batch. Ties go to the lower index
    (a stable sort over index order), so the result is deterministic.
    Returns a LongTensor of shape (k,) on the same device as ``losses``.
    """
    order = torch.sort(losses, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def num_selected(num_batches: int, delta: float) -> int:
    """k = floor(delta * N), the number of batches trained per round; refuses k < 1 or delta outside (0, 1]."""
    if not (0.0 < delta <= 1.0):
        raise UsageError(f"delta must be in (0, 1], got {delta}")
    # A tiny epsilon keeps floor(0.3 * 10) == 3 despite 0.3 * 10 == 2.9999999999999996.
    k = math.floor(delta * num_batches + 1e-9)
    if k < 1:
        raise UsageError(
            f"floor(delta * N) = floor({delta} * {num_batches}) = 0 batches per round; "
            f"use delta >= {1.0 / num_batches:.4g} or a smaller batch size (more batches)"
        )
    return k


def positive_int(name: str, value: Any, expected: str = "a positive int", minimum: int = 1) -> int:
    """``value`` as an int (numpy integers too); anything but an integer >= ``minimum`` (a float, a bool, a string)
    is refused with one line naming ``name``."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise UsageError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
    return number


def fixed_partition(num_samples: int, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut sample indices into N = num_samples // batch_size fixed mini-batches; the remainder is dropped.

    Without a generator, batch i holds samples [i*B, (i+1)*B) (the released code's fixed order);
    with one, a seeded permutation is cut instead. Returns a LongTensor of shape (N, B).
    """
    num_samples = positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    if batch_size > num_samples:
        raise UsageError(f"batch size {batch_size} is larger than the training set ({num_samples} samples)")
    n = num_samples // batch_size
    order = torch.arange(num_samples) if generator is None else torch.randperm(num_samples, generator=generator)
    return order[: n * batch_size].view(n, batch_size)


def trimmed_top_k(
    losses: torch.Tensor, k: int, trim: int = 0, mix: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The paper's top-k with two noise guards, in ascending index order.

    The ``trim`` highest losses are never chosen, not even by the draw; of the ``k`` chosen, ``k - mix``
    are the highest of the rest and ``mix`` are drawn uniformly (with ``generator``) from the untrimmed
    batches not already chosen.
    ``losses``: shape (N,); needs k + trim <= N. Returns a LongTensor of shape (k,).
    """
    order = torch.sort(losses.cpu(), descending=True, stable=True).indices
    chosen = order[trim : trim + k - mix]
    if mix:
        rest = order[trim + k - mix :]
        chosen = torch.cat([chosen, rest[torch.randperm(len(rest), generator=generator)[:mix]]])
    return torch.sort(chosen).values


def oldest_k(last_trained: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` batches trained longest ago (ties to the lower index), in ascending index order.

    ``last_trained``: shape (N,), the step at which each batch was last trained.
    """
    order = torch.sort(last_trained, stable=True).indices
    return torch.sort(order[:k]).values


def batch_scores(sample_losses: torch.Tensor, batches: torch.Tensor) -> torch.Tensor:
    """Each batch's score: the mean of its samples' last known losses (NaN = never trained).

    ``sample_losses``: shape (n,); ``batches``: shape (N, B) of sample indices. A batch whose samples
    were all never trained scores +inf, so unseen data is trained first. Returns shape (N,).
    """
    values = sample_losses[batches]
    known = ~torch.isnan(values)
    sums = torch.where(known, values, torch.zeros_like(values)).sum(dim=1)
    counts = known.sum(dim=1)
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.inf))


def percentiles(losses: torch.Tensor, history: torch.Tensor, ties: bool = False) -> torch.Tensor:
    """Each loss's percentile in ``history``: the fraction of history values strictly below it (<), in [0, 1].

    With ``ties`` the values equal to it count too (<=).
    ``losses``: shape (B,); ``history``: shape (H,), H >= 1. Returns shape (B,).
    """
    ranked = torch.sort(history).values
    return torch.searchsorted(ranked, losses, right=ties).to(torch.float32) / len(ranked)


def infobatch_prune(
    scores: torch.Tensor, ratio: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoBatch's epoch plan: prune round(ratio * m) of the m samples scored below the mean, drawn at random.

    ``scores``: shape (n,), NaN for samples without a score yet (never pruned). Returns (kept, boosted):
    the kept sample indices in a seeded random order, and a bool mask over ``kept`` of the below-mean
    samples that survived, whose loss is to be weighted 1 / (1 - ratio).
    """
    known = ~torch.isnan(scores)
    low = torch.zeros(len(scores), dtype=torch.bool)
    if known.any():
        low = known & (scores < scores[known].mean())
    candidates = low.nonzero().flatten()
    count = math.floor(ratio * len(candidates) + 0.5)
    pruned = torch.zeros(len(scores), dtype=torch.bool)
    pruned[candidates[torch.randperm(len(candidates), generator=generator)[:count]]] = True
    order = torch.randperm(len(scores), generator=generator)
    kept = order[~pruned[order]]
    return kept, low[kept]


def fill_batches(first: torch.Tensor, rest: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut ``first`` into ⌊len(first) / B⌋ batches of B (the remainder dropped), or one batch topped up by ``rest``.

    ``first``, ``rest``: LongTensors of sample indices, each in the order to be used. When ``first`` holds fewer
    than B samples, the one batch takes all of it and the first B − len(first) of ``rest``, so a pass is never
    empty (needs len(first) + len(rest) >= B). Returns a LongTensor of shape (max(1, len(first) // B), B).
    """
    count = max(1, len(first) // batch_size)
    return torch.cat([first, rest])[: count * batch_size].view(count, batch_size)


def batch_loss_scores(scores: torch.Tensor, batch_losses: torch.Tensor, alpha: float) -> torch.Tensor:
    """Batch Loss Score's update (Zhou et al., CVPR 2026): s ← α·s + (1 − α)·L(B), an exponential moving average of
    the mean losses of the batches a sample was trained in.

    ``scores``: shape (m,), the current scores of m samples; ``batch_losses``: shape (m,), the mean (unweighted)
    training loss of the batch each of them was just trained in. Returns the new scores, shape (m,), computed in the
    order of the authors' code (``alpha * s + (1 - alpha) * L``), so the float32 values are theirs.
    """
    return alpha * scores + (1 - alpha) * batch_losses


def batch_mean_weights(weights: torch.Tensor) -> torch.Tensor:
    """Each row of per-sample loss weights replaced by its mean, shape (S, b) -> (S, b).

    The loss of a step that has only a batch mean: Batch Loss Score's code multiplies the batch's mean loss by the
    mean of its samples' InfoBatch weights, mean(l)·mean(w), where InfoBatch trains on mean(w·l); a row of equal
    weights gives exactly that as a weighted mean.
    """
    return weights.mean(dim=1, keepdim=True).expand_as(weights).contiguous()


def rs2_next_window(start: int, end: int, size: int, num_samples: int) -> tuple[int, int, bool]:
    """RS2 without replacement (Okanovic et al., ICLR 2024): the window [start, end) of a permutation of the n
    samples that the next round trains, moved as the authors' ``UniformNoReplacement.select`` moves it.

    ``start``, ``end``: the last round's window (0, 0 before the first round); ``size``: the samples a round draws.
    Returns (start, end, fresh). ``fresh``: draw a new permutation first, and the window is [0, size); that happens
    before the first round, when the last window ended at n, and after a window that wrapped around (end <= start).
    Otherwise the window moves on, start = end and end = (end + size) mod (n + 1): one that passes the end of the
    permutation wraps around to its first samples, and holds size − 1 of them (the modulus is n + 1, not n).
    """
    if end <= start or end == num_samples:
        return 0, size, True
    return end, (end + size) % (num_samples + 1), False


def rs2_window_samples(order: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """The samples of the window [start, end) of the permutation ``order`` (shape (n,)), in its order: ``order[start:
    end]``, or for a window that wrapped around (end <= start) the rest of ``order`` from ``start`` followed by its
    first ``end`` samples. Returns a LongTensor of shape (m,)."""
    if start < end:
        return order[start:end]
    return torch.cat([order[start:], order[:end]])


def kmeans_1d(values: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k-means of 1-D ``values`` (shape (m,)): the split into k clusters of least within-cluster sum of
    squares, found by dynamic programming (in one dimension the clusters of an optimum are intervals of the sorted
    values). Returns each value's cluster id, shape (m,), ids sorted by centre (0 = lowest).

    It reaches the optimum scikit-learn's ``KMeans`` looks for (SeTa's authors cluster with it) on every input,
    where Lloyd's iterations from one start can stop at a worse fit. Fewer distinct values than k: each distinct
    value is its own cluster. All values equal: k equal chunks in their given order.
    """
    m = len(values)
    if m == 0:
        return torch.zeros(0, dtype=torch.long)
    x = values.double().cpu().numpy()
    if (x == x[0]).all():
        return torch.arange(m) * k // m
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    distinct = np.unique(ordered)
    if len(distinct) <= k:
        sorted_labels = np.searchsorted(distinct, ordered)
    else:
        starts = _interval_starts(ordered - ordered.mean(), k)  # centred: prefix sums of squares stay small
        sorted_labels = np.searchsorted(starts, np.arange(m), side="right") - 1
    labels = np.empty(m, dtype=np.int64)
    labels[order] = sorted_labels
    return torch.from_numpy(labels)


def _interval_starts(xs: np.ndarray, k: int) -> np.ndarray:
    """The first index of each of the k intervals of sorted ``xs`` (shape (m,), m > k) that minimise the summed
    squared distances to their means, shape (k,).

    D[i][j], the least cost of splitting xs[0..j] into i + 1 intervals, is min over s of D[i − 1][s − 1] +
    cost(s..j); the best s grows with j (the cost has the quadrangle inequality), so each row is filled by divide
    and conquer (the middle j first, its best s bounding both halves), one vectorised step per level: O(k·m·log m).
    """
    m = len(xs)
    sums = np.concatenate([[0.0], np.cumsum(xs)])
    squares = np.concatenate([[0.0], np.cumsum(xs * xs)])

    def cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # the interval xs[a..b], inclusive
        total = sums[b + 1] - sums[a]
        return squares[b + 1] - squares[a] - total * total / (b - a + 1)

    previous = cost(np.zeros(m, dtype=np.int64), np.arange(m))
    best_start = np.zeros((k, m), dtype=np.int64)
    for i in range(1, k):
        current = np.full(m, np.inf)
        lo, hi, low_s, high_s = (np.array([v], dtype=np.int64) for v in (i, m - 1, i, m - 1))
        while len(lo):
            mid = (lo + hi) // 2
            counts = np.minimum(high_s, mid) - low_s + 1
            task = np.repeat(np.arange(len(lo)), counts)
            first = np.cumsum(counts) - counts
            s = low_s[task] + np.arange(counts.sum()) - first[task]
            value = previous[s - 1] + cost(s, mid[task])
            least = np.minimum.reduceat(value, first)
            hits = np.nonzero(value <= least[task])[0]
            _, leftmost = np.unique(task[hits], return_index=True)
            chosen = s[hits[leftmost]]
            current[mid], best_start[i, mid] = least, chosen
            left, right = lo <= mid - 1, mid + 1 <= hi
            lo, hi, low_s, high_s = (
                np.concatenate([a[left], b[right]])
                for a, b in ((lo, mid + 1), (mid - 1, hi), (low_s, chosen), (chosen, high_s))
            )
        previous = current
    starts, j = [0] * k, m - 1
    for i in range(k - 1, 0, -1):
        starts[i] = int(best_start[i, j])
        j = starts[i] - 1
    return np.array(starts, dtype=np.int64)


def mastered(
    history: torch.Tensor, counts: torch.Tensor, threshold: float, smoothing: int, patience: int
) -> torch.Tensor:
    """IES's test: which samples are mastered, bool shape (n,).

    ``history``: shape (n, L), each sample's last L = smoothing + patience + 2 recorded losses, oldest first;
    ``counts``: shape (n,), how many losses each sample has had recorded. From them come the last smoothing +
    patience second differences d_t = l_t − 2·l_{t−1} + l_{t−2}; their |d| are averaged over sliding windows of
    ``smoothing``, and a sample is mastered when the sum of the latest ``patience`` averages is below
    ``threshold``. A sample with fewer than L losses is not mastered.
    """
    h = history.double()
    second = (h[:, 2:] - 2 * h[:, 1:-1] + h[:, :-2]).abs()
    averaged = second.unfold(1, smoothing, 1).mean(dim=2)  # (n, patience + 1) sliding means
    return (counts >= history.shape[1]) & (averaged[:, -patience:].sum(dim=1) < threshold)


PURITY_WARNING = 0.9  # mean share of a batch's largest class above which a run gets a warning


def batch_purity(labels: torch.Tensor, partition: torch.Tensor) -> float:
    """Mean over the fixed batches of the share of each batch's largest class.

    ``labels``: (n,) class per sample; ``partition``: (N, B) sample indices. 1/C for well-mixed batches, 1 when
    every batch holds one class.
    """
    batch_labels = labels[partition]  # (N, B)
    counts = torch.zeros(len(partition), int(labels.max()) + 1, dtype=torch.long)
    counts.scatter_add_(1, batch_labels, torch.ones_like(batch_labels))
    return (counts.max(dim=1).values.double() / partition.shape[1]).mean().item()


def single_class_purity(labels: torch.Tensor, partition: torch.Tensor) -> float | None:
    """``batch_purity`` when it is above PURITY_WARNING on labels of two classes or more, else None.

    A value means the batches are mostly one class, as when the data set is stored sorted by class.
    """
    if len(torch.unique(labels)) < 2:
        return None
    purity = batch_purity(labels, partition)
    return purity if purity > PURITY_WARNING else None


def rank_percentiles(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Composer's percentile of each rank: the i-th lowest of b losses (0-based) gets (i + 0.5) / b.

    ``scores``: shape (b,). Returns (order, percentile): ``order`` the positions sorted by ascending loss (ties
    keep their position order), and ``percentile[i]`` that of rank i, both shape (b,).
    """
    order = torch.sort(scores, stable=True).indices
    return order, (torch.arange(len(scores), dtype=torch.float64) + 0.5) / len(scores)


def composer_select(scores: torch.Tensor, keep: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Composer's Selective Backprop choice in one batch: ⌊keep·b⌋ samples (at least 1) drawn without replacement,
    rank i (by ascending loss) with weight ((i + 0.5) / b)^(1/keep − 1). Returns (b,) weights: 1 kept, 0 not.

    ``scores``: the batch's per-sample losses, shape (b,). For a tiny ``keep`` the weights of all but the top ranks
    underflow to 0; they are then computed relative to the largest, in logs, so a draw is always possible.
    """
    order, percentile = rank_percentiles(scores)
    count = max(1, math.floor(keep * len(scores) + 1e-9))
    power = 1.0 / keep - 1.0
    chance = percentile**power
    if int((chance > 0).sum()) < count or not torch.isfinite(chance).all():
        chance = torch.exp(power * (percentile.log() - percentile.log().max()))
    chosen = torch.multinomial(chance, count, replacement=False, generator=generator)
    weights = torch.zeros(len(scores))
    weights[order[chosen]] = 1.0
    return weights


def top_reducible(losses: torch.Tensor, irreducible: torch.Tensor, count: int) -> torch.Tensor:
    """RHO-LOSS's choice in a candidate batch: the ``count`` samples of highest reducible loss, loss − irreducible
    loss (ties to the earlier position). ``losses``, ``irreducible``: shape (C,). Returns (C,) weights: 1 kept, 0 not.
    """
    reducible = losses - irreducible
    top = torch.sort(reducible, descending=True, stable=True).indices[:count]
    weights = torch.zeros(len(reducible))
    weights[top] = 1.0
    return weights


def key_ids(keys: Any) -> torch.Tensor:
    """Sample ids as a LongTensor (b,): integers (a tensor or a sequence) as they are, strings (webdataset's
    ``__key__``) hashed to 63-bit integers, the same in every process and run."""
    if isinstance(keys, torch.Tensor):
        if keys.dtype.is_floating_point or keys.dtype.is_complex or keys.dim() != 1:
            raise UsageError(
                f"sample ids must be a 1-D integer tensor or a sequence of integers or strings, got a "
                f"{keys.dtype} tensor of shape {tuple(keys.shape)}"
            )
        return keys.long().cpu()
    ids = []
    for key in keys:
        if isinstance(key, str):
            ids.append(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            ids.append(int(key))
        else:
            raise UsageError(f"a sample id must be an integer or a string, got {key!r} ({type(key).__name__})")
    return torch.tensor(ids, dtype=torch.long)
