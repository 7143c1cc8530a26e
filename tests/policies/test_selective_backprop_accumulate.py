"""Selective Backprop as its authors' code steps: the kept samples of successive batches pooled, one optimizer step
per B of them (``accumulate``), the pass's leftover trained with its last step."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import hardbatch
from hardbatch.policies import SelectiveBackprop

SAMPLES, BATCH, EPOCHS = 640, 32, 3


def _run(accumulate: bool, stream: bool = False):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(SAMPLES, 8, generator=generator), torch.randint(0, 4, (SAMPLES,),
                                                                                     generator=generator))
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    policy = SelectiveBackprop(beta=1.0, accumulate=accumulate)
    if stream:
        sampler = hardbatch.InBatchSelector(policy, epochs=EPOCHS, steps_per_epoch=SAMPLES // BATCH)
        loader = DataLoader(data, batch_size=BATCH, shuffle=False)
    else:
        sampler = hardbatch.HardBatchSampler(SAMPLES, BATCH, epochs=EPOCHS, policy=policy, seed=1)
        loader = DataLoader(data, batch_sampler=sampler)
    kept, steps = [], []
    select = sampler.policy.select

    def recording(step, scores):  # what each scored batch keeps
        weights = select(step, scores)
        kept.append(step.samples[weights > 0])
        return weights

    sampler.policy.select = recording
    while not sampler.done:
        for batch in loader:
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad(); loss.backward(); optimizer.step()  # noqa: E702
                steps.append((sampler.epoch if not sampler.epoch_ended else sampler.epoch - 1, sampler.last.samples))
            if sampler.done:
                break
    return sampler, kept, steps


def test_the_kept_samples_are_trained_b_at_a_time_and_each_pass_trains_its_leftover():
    sampler, kept, steps = _run(accumulate=True)
    first_epoch = SAMPLES // BATCH  # the warm-up trains whole batches, without scoring
    assert [n for _, n in steps[:first_epoch]] == [BATCH] * first_epoch
    for epoch in range(1, EPOCHS):
        sizes = [n for e, n in steps if e == epoch]
        kept_in_epoch = sum(len(k) for k in kept[(epoch - 1) * first_epoch: epoch * first_epoch])
        assert sum(sizes) == kept_in_epoch  # every kept sample trained once, in its own epoch
        assert sizes[:-1] == [BATCH] * (len(sizes) - 1) and 0 < sizes[-1] < 2 * BATCH
    assert sampler.steps == len(steps) and sampler.meter.samples_backprop == sum(n for _, n in steps)
    assert sampler.trained_samples["all"] == sum(n for _, n in steps)


def test_pooling_takes_about_one_step_per_batch_of_kept_samples_where_one_step_per_batch_took_more():
    _, kept, pooled = _run(accumulate=True)
    _, _, plain = _run(accumulate=False)
    assert len(pooled) < len(plain)  # β = 1 keeps about half: about half the steps after the warm-up
    assert sum(len(k) for k in kept) <= sum(n for _, n in pooled)


def test_a_stream_pools_alike():
    selector, kept, steps = _run(accumulate=True, stream=True)
    assert selector.done and sum(n for _, n in steps) == SAMPLES // BATCH * BATCH + sum(len(k) for k in kept)
