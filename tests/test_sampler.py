"""hardbatch.sampler: what HardBatchSampler owns whatever the policy: its arguments, the fixed partition, pairing each
recorded loss with the batch it trained (early breaks, prefetching loaders), the record checks, len, visits, progress,
``last``, ``set_epoch``, its meter and its state.

Each policy's choices are pinned in tests/policies/; the budget, seeds and resume of every registered policy in
tests/policies/test_contract.py.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import IndexDataset, drive, roundtrip, scripted
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.errors import TrainingDiverged, UsageError
from hardbatch.functional import fixed_partition, generator_for
from hardbatch.sampler import HardBatchSampler, Recorded


def steps_by_batch(sampler: HardBatchSampler, seed: int, **kwargs) -> list[tuple[int, int]]:
    """(round, batch) of every optimizer step, each batch's loss scripted by its visits."""
    return [(r.round, r.batch) for r in drive(sampler, scripted(seed), by="batch", **kwargs) if r.kind == "train"]


# ---- arguments: one line naming the argument, what it accepts and what it got -------------------------------------


@pytest.mark.parametrize(
    "data_len, batch_size, words",
    [
        (
            200.0,
            4,
            "data_len_or_partition must be a positive int or an (N, B) integer tensor of sample indices, "
            "got 200.0 (float)",
        ),
        ("200", 4, "got '200' (str)"),
        (True, 4, "got True (bool)"),
        (0, 4, "got 0 (int)"),
        (-3, 2, "got -3 (int)"),
        (20, 2.0, "batch_size must be a positive int, got 2.0 (float)"),
        (20, None, "batch_size must be a positive int, got None (NoneType)"),
        (20, 0, "batch_size must be a positive int, got 0 (int)"),
        (20, -1, "batch_size must be a positive int, got -1 (int)"),
        (10, 11, "batch size 11 is larger than the training set (10 samples)"),
        (torch.tensor([0, 1, 2]), None, "(N, B) integer tensor of sample indices, got a tensor of shape (3,)"),
        (torch.zeros(3, 2), None, "(N, B) integer tensor of sample indices, got a tensor of dtype torch.float32"),
        (torch.tensor([[0, -1]]), None, "sample indices must be >= 0, got -1"),
    ],
)
def test_sampler_refuses_a_data_length_or_batch_size_that_is_not_a_positive_int(data_len, batch_size, words):
    with pytest.raises(UsageError) as error:
        HardBatchSampler(data_len, batch_size)
    assert words in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("epochs", [0, 2.5, "3", None])
def test_sampler_refuses_epochs_that_are_not_a_positive_int(epochs):
    with pytest.raises(UsageError, match=f"epochs must be a positive int, got {epochs!r}"):
        HardBatchSampler(20, 2, epochs=epochs)


@pytest.mark.parametrize("seed", [-1, 0.5, "0"])
def test_sampler_refuses_a_seed_that_is_not_an_integer_of_zero_or_more(seed):
    with pytest.raises(UsageError, match=f"seed must be an integer >= 0, got {seed!r}"):
        HardBatchSampler(20, 2, seed=seed)


def test_numpy_integers_are_accepted_as_sizes_and_seed():
    sampler = HardBatchSampler(np.int64(20), np.int32(4), epochs=np.int64(2), seed=np.int64(3))
    assert sampler.num_batches == 5 and sampler.total_steps == 10 and sampler.seed == 3


@pytest.mark.parametrize(
    "policy, words",
    [
        (3, "policy must be a registered name (see hardbatch.policies.POLICIES) or a policy object"),
        (None, "got None (NoneType)"),
        (hardbatch.policies.HardBatch, "got <class"),  # the class, not an object of it
    ],
)
def test_sampler_refuses_a_policy_that_is_neither_a_name_nor_a_policy_object(policy, words):
    with pytest.raises(UsageError) as error:
        HardBatchSampler(20, 2, policy=policy)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_hyper_parameters_go_to_the_policy_object_not_beside_it():
    with pytest.raises(UsageError, match=r"pass delta to the policy object, not to the sampler: HardBatch\(delta="):
        HardBatchSampler(20, 2, policy=hardbatch.policies.HardBatch(), delta=0.5)
    with pytest.raises(UsageError, match=r"pass prune_ratio to the policy object.*InfoBatch\(prune_ratio=\.\.\.\)"):
        HardBatchSampler(20, 2, policy=hardbatch.policies.InfoBatch(), prune_ratio=0.3)


@pytest.mark.parametrize(
    "watch, words",
    [
        ([40], "watch must be sample indices in [0, 40), got (1,) values"),
        ([-1, 2], "in [0, 40)"),
        ([[1, 2]], "got (1, 2) values"),
    ],
)
def test_sampler_refuses_watched_samples_outside_the_data(watch, words):
    with pytest.raises(UsageError) as error:
        HardBatchSampler(40, 5, watch=watch)
    assert words in str(error.value)


# ---- the fixed partition ----------------------------------------------------------------------------------------


def test_sampler_accepts_a_given_partition():
    partition = torch.tensor([[5, 4], [3, 2], [1, 0]])
    sampler = HardBatchSampler(partition, delta=2 / 3, epochs=2)
    assert sampler.num_batches == 3 and sampler.num_samples == 6 and torch.equal(sampler.partition, partition)
    drawn = []
    while not sampler.done:
        for indices in sampler:
            drawn.append(indices)
            sampler.record(float(indices[0]))  # losses 5, 3, 1
    assert drawn == [[5, 4], [3, 2], [1, 0], [5, 4], [3, 2], [5, 4]]


def test_shuffled_partition_trains_the_same_batch_ids_on_other_samples():
    plain = HardBatchSampler(40, 4, delta=0.3, epochs=3)
    shuffled = HardBatchSampler(40, 4, delta=0.3, epochs=3, shuffle_partition=True, seed=5)
    assert torch.equal(plain.partition, fixed_partition(40, 4))
    # The partition has its own generator, derived from the seed (the policy has another).
    assert torch.equal(shuffled.partition, fixed_partition(40, 4, generator_for(5, "partition")))
    assert not torch.equal(shuffled.partition, plain.partition)
    assert steps_by_batch(plain, 7) == steps_by_batch(shuffled, 7)  # the rule sees batch ids, not samples


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


@pytest.mark.parametrize(
    "labels, words",
    [
        (torch.zeros(39, dtype=torch.long), "labels must hold one class per sample (40), got 39"),
        (torch.zeros(40), "labels must be integer class indices, got torch.float32"),
        (torch.zeros(40, 2, dtype=torch.long), "labels must hold one class per sample (40), got shape (40, 2)"),
        (torch.full((40,), -1), "labels must be class indices >= 0, got -1"),
    ],
)
def test_sampler_refuses_labels_that_do_not_fit_the_data(labels, words):
    with pytest.raises(UsageError) as error:
        HardBatchSampler(40, 5, labels=labels)
    assert words in str(error.value)


# ---- pairing each record with the batch it trained ------------------------------------------------------------


def test_record_with_nothing_pending_raises():
    sampler = HardBatchSampler(6, 2, delta=0.5, epochs=2)
    with pytest.raises(RuntimeError, match="no batch pending"):
        sampler.record(1.0)
    with pytest.raises(RuntimeError, match="no batch pending"):
        _ = sampler.pending
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


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_loop_that_breaks_mid_round_goes_on_where_it_stopped(num_workers):
    # The user's loop leaves a round after its second step (and, with workers, after the loader drew ahead);
    # the next `for batch in loader` must continue with the first batch it did not record.
    losses = scripted(5)
    expected = steps_by_batch(HardBatchSampler(40, 2, delta=0.5, epochs=3), 5)
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


@pytest.mark.parametrize("policy", ["hardbatch", "random"])
def test_dataloader_with_prefetching_workers_gives_the_same_steps(policy):
    def run(num_workers: int):
        sampler = HardBatchSampler(62, 3, delta=0.35, epochs=4, shuffle_partition=True, seed=3, policy=policy)
        kwargs = {"num_workers": num_workers, "persistent_workers": True, "prefetch_factor": 3} if num_workers else {}
        loader = DataLoader(IndexDataset(62), batch_sampler=sampler, **kwargs)
        log = drive(sampler, scripted(11), by="batch", loader=loader)  # each loaded batch's labels are its samples
        return [(r.round, r.batch) for r in log], sampler

    direct = steps_by_batch(
        HardBatchSampler(62, 3, delta=0.35, epochs=4, shuffle_partition=True, seed=3, policy=policy), 11
    )
    single, s0 = run(0)
    multi, s2 = run(2)
    assert single == direct and multi == single and len(multi) == 4 * (62 // 3)
    assert torch.equal(s0.visits, s2.visits) and s0.trained_samples == s2.trained_samples


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
    assert len(sampler) == 0 and list(sampler) == []  # a spent budget yields nothing more


def test_visits_count_every_recorded_step_and_trained_samples_every_sample():
    sampler = HardBatchSampler(24, 2, delta=0.25, epochs=4, watch=[0, 1, 5])
    log = drive(sampler, scripted(3))
    counts = Counter(r.batch for r in log)
    assert sampler.trained_samples["all"] == 96  # read first: up to the last step, not to the last round's plan
    assert sampler.visits.tolist() == [counts[b] for b in range(12)]
    assert sampler.visits.dtype == torch.long
    assert int(sampler.visits.sum()) == 48
    assert int(sampler.visits.min()) >= 1  # the warm-up touched every batch
    # Samples back-propagated: all of them, the watched ones (batches 0 and 2), and those of the first epoch.
    assert sampler.trained_samples == {
        "all": 96,
        "first_epoch": 24,
        "watched": 2 * counts[0] + counts[2],
        "watched_first_epoch": 3,
    }


def test_exposure_is_the_watched_share_of_the_trained_samples():
    # N = 4 batches of 2, k = 2, 8 steps; sample 0 is watched. Batch 0 has the highest loss, so both rounds after the
    # warm-up train it: 3 of the 16 samples trained, 2 of the 8 after the warm-up epoch.
    sampler = HardBatchSampler(9, 2, delta=0.5, epochs=2, watch=[0, 8])  # sample 8 is left out of the partition
    drive(sampler, lambda b, v: 1.0 if b == 0 else 0.5 - b / 10, by="batch")
    assert sampler.exposure() == {
        "trained": 3 / 16,
        "trained_after_warmup": 2 / 8,
        "in_data": 2 / 9,
        "in_partition": 1 / 8,
    }
    unwatched = HardBatchSampler(8, 2)
    assert math.isnan(unwatched.exposure()["trained"]) and unwatched.exposure()["in_data"] == 0.0


def test_exposure_after_the_warmup_is_nan_when_only_the_warmup_epoch_trained():
    # One epoch: every step is the warm-up's, so there is no share after it (NaN, not 0); the other shares are defined.
    sampler = HardBatchSampler(9, 2, delta=0.5, epochs=1, watch=[0, 8])  # sample 8 is left out of the partition
    drive(sampler, lambda b, v: 1.0 if b == 0 else 0.5 - b / 10, by="batch")
    exposure = sampler.exposure()
    assert math.isnan(exposure["trained_after_warmup"])
    assert exposure["trained"] == 1 / 8 and exposure["in_data"] == 2 / 9 and exposure["in_partition"] == 1 / 8
    assert sampler.trained_samples == {"all": 8, "first_epoch": 8, "watched": 1, "watched_first_epoch": 1}


def test_progress_is_the_spent_share_of_the_step_budget():
    sampler = HardBatchSampler(10, 1, delta=0.4, epochs=2)
    progress: list[float] = []
    drive(sampler, scripted(1), progress=progress)
    assert sampler.progress == 1.0 and progress == [s / 20 for s in range(1, 21)]


def test_set_epoch_is_accepted_and_changes_nothing():
    plain = steps_by_batch(HardBatchSampler(20, 2, delta=0.5, epochs=3), 4)
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=3)
    losses, visits, steps, passes = scripted(4), Counter(), [], 0
    while not sampler.done:
        sampler.set_epoch(passes * 7)  # as Lightning and DistributedSampler habits call it, before every pass
        passes += 1
        for _ in sampler:
            b = sampler.pending.batch
            sampler.record(losses(b, visits[b]))
            visits[b] += 1
            steps.append((sampler.round, b))
    assert steps == plain and sampler.epoch == 3 and passes == 5  # the warm-up and 4 rounds of k = 5


def test_last_is_the_step_recorded_last():
    sampler = HardBatchSampler(8, 2, delta=0.5, epochs=2)
    assert sampler.last is None
    it = iter(sampler)
    next(it), next(it)
    sampler.record(torch.tensor(0.25))
    sampler.record(0.75)
    assert sampler.last == Recorded(step=2, round=0, batch=1, loss=0.75, samples=2)
    # A scoring batch (rescore) and a batch that keeps no sample are no optimizer steps: step 0, no samples.
    scorer = HardBatchSampler(4, 1, delta=0.5, epochs=2, rescore=1)
    log = drive(scorer, scripted(2), stop_after=5)  # the warm-up, then the first batch of a scoring pass
    assert log[-1].kind == "score" and scorer.last == Recorded(0, 0, 0, log[-1].loss, 0) and scorer.steps == 4
    skipping = HardBatchSampler(4, 2, epochs=1, policy="selective-backprop", warmup_epoch=False)
    next(iter(skipping))
    assert skipping.weights(torch.full((2,), 0.5)).tolist() == [0.0, 0.0]
    skipping.record(torch.tensor(0.5))
    assert (skipping.last.step, skipping.last.samples, skipping.last.round, skipping.last.batch) == (0, 0, 0, 0)


# ---- the record checks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, words",
    [
        (torch.tensor([1.0, 2.0]), "record(loss): loss must be a 0-d tensor or a number, got a tensor of shape (2,)"),
        (torch.ones(1, 1), "got a tensor of shape (1, 1)"),
        ("0.5", "got '0.5' (str)"),
        ([0.5], "got [0.5] (list)"),
        (None, "got None (NoneType)"),
        (True, "got True (bool)"),
    ],
)
def test_record_refuses_a_loss_that_is_not_one_number(loss, words):
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=2)
    next(iter(sampler))
    with pytest.raises(UsageError) as error:
        sampler.record(loss)
    assert words in str(error.value) and "\n" not in str(error.value)
    # Nothing was recorded: the pending batch takes its loss as soon as the loop passes a right one.
    assert sampler.steps == 0 and sampler.record(torch.tensor(0.5)) == 0 and sampler.steps == 1


def test_record_takes_numpy_and_python_numbers_as_a_loss():
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=2)
    it = iter(sampler)
    for loss in (np.float32(0.5), np.float64(0.25), 1, 0.125):
        next(it)
        sampler.record(loss)
    assert sampler.steps == 4


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
    for i, _ in enumerate(sampler):
        sampler.record(torch.tensor(float("nan") if i == 2 else 1.0))
    assert sampler.steps == 4
    with pytest.raises(TrainingDiverged, match="the loss is not finite at step 3;"):
        next(iter(sampler))
    last = HardBatchSampler(4, 2, epochs=1)
    for _ in last:
        if last.steps == 1:
            with pytest.raises(TrainingDiverged, match="at step 2;"):
                last.record(torch.tensor(float("inf")))
        else:
            last.record(torch.tensor(1.0))


def test_selective_backprop_refuses_scores_of_the_wrong_shape_or_not_finite():
    # Without the warm-up epoch, whose steps are weighed before loading and take no scores.
    sampler = HardBatchSampler(12, 4, epochs=1, policy="selective-backprop", warmup_epoch=False)
    next(iter(sampler))
    with pytest.raises(RuntimeError, match=r"call weights\(scores\) with the batch's no-grad per-sample losses"):
        sampler.weights()
    with pytest.raises(
        UsageError,
        match=r"weights\(scores\): scores must have shape \(4,\) \(one loss per "
        r"sample of the batch\), got a tensor of shape \(4, 1\)",
    ):
        sampler.weights(torch.ones(4, 1))
    with pytest.raises(TrainingDiverged, match=r"weights\(scores\): scores are not finite at step 1;"):
        sampler.weights(torch.tensor([1.0, float("inf"), 0.5, 0.2]))
    assert len(sampler.policy.history) == 0  # nothing was drawn or stored


def test_asking_twice_for_a_batch_s_weights_draws_once():
    sampler = HardBatchSampler(
        8, 4, epochs=1, policy="selective-backprop", beta=1.0, loss_history=16, warmup_epoch=False
    )  # a selecting step from the first batch
    next(iter(sampler))
    scores = torch.tensor([0.1, 2.0, 0.5, 1.0])
    first = sampler.weights(scores).clone()
    generator, history = sampler.policy.generator.get_state(), sampler.policy.history.clone()
    assert torch.equal(sampler.weights(scores * 3), first)  # a loop that retried the step gets the same keep-mask
    assert torch.equal(sampler.policy.generator.get_state(), generator)
    assert torch.equal(sampler.policy.history, history) and len(history) == 4


# ---- scoring-only batches: a loop must look at pending.score_only --------------------------------------------------


def _train_everything(sampler: HardBatchSampler) -> int:
    """A loop that never looks at ``sampler.pending``: it trains every batch it draws; returns its optimizer steps."""
    steps = 0
    while not sampler.done:
        for indices in sampler:
            steps += 1
            sampler.record(torch.tensor(0.5), torch.full((len(indices),), 0.5))
    return steps


def test_a_loop_that_ignores_score_only_is_refused_at_the_first_scoring_batch():
    # rescore=2 scores all 10 batches before rounds 2, 4 and 6: a loop that trains them too takes 70 optimizer steps
    # against a budget of 40 (10 batches x 4 epochs), without an error, unless the sampler refuses.
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=4, policy="hardbatch", rescore=2)
    with pytest.raises(UsageError) as error:
        _train_everything(sampler)
    message = str(error.value)
    assert "batch 0 was drawn for scoring only, and the loop recorded it without looking at sampler.pending" in message
    assert "\n" not in message
    assert "check sampler.pending.score_only" in message and "only score those batches" in message
    assert sampler.steps == 15  # the warm-up (10) and round 1 (5): the error came at the first scoring batch


def _toy_problem(n=96, features=8, classes=3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, classes))
    return TensorDataset(x, y), model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_correct_loop_is_never_refused_even_if_it_computes_the_scoring_loss_with_gradient():
    # The check is that the loop looked at the pending step before recording a scoring batch: a loop cannot honour
    # score_only without reading it, and nothing else about a correct loop (gradient or not, .item() or a tensor)
    # is assumed.
    data, model, optimizer = _toy_problem()
    sampler = HardBatchSampler(len(data), 8, delta=0.5, epochs=4, rescore=1)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=0)
    scored = trained = 0
    while not sampler.done:
        for x, y in loader:
            losses = F.cross_entropy(model(x), y, reduction="none")  # with gradient, before branching
            if sampler.pending.score_only:
                sampler.record(losses.mean().item(), losses.detach())
                scored += 1
                continue
            loss = losses.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sampler.record(loss, losses)
            trained += 1
    assert trained == sampler.steps == 4 * 12 and scored == 6 * 12  # rounds 1-6 of k = 6 each follow a scoring pass


def test_a_loop_that_looks_at_pending_once_per_pass_is_not_refused():
    # A scoring pass scores every batch of its round, so reading score_only at the first batch of a pass is enough.
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=4, rescore=2)
    optimizer_steps = 0
    while not sampler.done:
        scoring = None
        for _ in sampler:
            if scoring is None:
                scoring = sampler.pending.score_only
            optimizer_steps += not scoring
            sampler.record(torch.tensor(0.5))
    assert optimizer_steps == sampler.steps == 40


# ---- the meter and the state ------------------------------------------------------------------------------------


def test_the_meter_times_planning_and_travels_with_the_state():
    sampler = HardBatchSampler(20, 2, delta=0.5, epochs=2)
    assert isinstance(sampler.meter, hardbatch.CostMeter) and sampler.meter.choose_seconds == 0.0
    log = drive(sampler, scripted(0), stop_after=13)
    assert sampler.meter.choose_seconds > 0  # two rounds planned
    sampler.meter.samples_loaded = 26  # what a loop counted
    state = roundtrip(sampler.state_dict())
    assert state["cost"] == sampler.meter.state_dict()
    again = HardBatchSampler(20, 2, delta=0.5, epochs=2)
    again.load_state_dict(state)
    assert again.meter.state_dict() == sampler.meter.state_dict() and again.steps == len(log) == 13


def test_a_state_loads_only_into_a_sampler_over_the_same_partition():
    # The state holds the partition's fingerprint, not the partition: the sampler is rebuilt as the saved one was.
    shuffled = HardBatchSampler(30, 3, delta=0.5, epochs=2, shuffle_partition=True, seed=4)
    state = roundtrip(shuffled.state_dict())
    plain = HardBatchSampler(30, 3, delta=0.5, epochs=2)
    with pytest.raises(UsageError) as error:
        plain.load_state_dict(state)
    assert "this state is of another partition (10 batches of 3" in str(error.value)
    assert "build the sampler as the saved one was built" in str(error.value) and "\n" not in str(error.value)
    same = HardBatchSampler(30, 3, delta=0.5, epochs=2, shuffle_partition=True, seed=4)
    same.load_state_dict(state)
    assert torch.equal(same.partition, shuffled.partition)
    given = HardBatchSampler(shuffled.partition.clone(), delta=0.5, epochs=2)  # the same partition passed in
    given.load_state_dict(state)


def test_a_mid_round_state_with_batches_drawn_ahead_draws_them_again():
    def make() -> HardBatchSampler:
        return HardBatchSampler(20, 2, delta=0.3, epochs=3, seed=9)

    expected = drive(make(), scripted(21, ties=True), by="batch")
    first = make()
    head = drive(first, scripted(21, ties=True), by="batch", stop_after=11, draw_ahead=2)  # round 1 drawn to its end
    state = roundtrip(first.state_dict())
    assert state["recorded"] == 1 and state["steps"] == 11  # one step of round 1's three recorded
    second = make()
    second.load_state_dict(state)
    trained = Counter(r.batch for r in head)
    assert head + drive(second, scripted(21, ties=True), by="batch", trained=trained) == expected
    assert torch.equal(second.visits, torch.tensor([Counter(r.batch for r in expected)[b] for b in range(10)]))
