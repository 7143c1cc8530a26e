"""The README's drop-in loop runs as written, trains exactly epochs x N steps, and runs every registered policy."""

import re
from pathlib import Path

import pytest
import torch

from hardbatch.selection import POLICIES, HardBatchSampler

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Use it in your own training loop", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _run_example() -> dict:
    """Execute the section's first example as written; returns the names it defined."""
    namespace: dict = {}
    exec(compile(_examples()[0], str(README), "exec"), namespace)
    return namespace


def test_readme_example_runs_and_spends_the_exact_budget(capsys):
    sampler = _run_example()["sampler"]
    assert sampler.done and sampler.steps == 5 * 10
    assert int(sampler.visits.sum()) == 50 and sampler.visits.min() >= 1  # the warm-up touched every batch
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines()[:5]] == [f"epoch {e}" for e in range(1, 6)]


def test_readme_starts_with_the_two_setup_commands():
    first_block = README.read_text().split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


# Every registered policy (a new one is picked up with no edit here), and the rule's scoring pass.
CASES = {**{name: (name, cls.example) for name, cls in POLICIES.items()}, "hardbatch+rescore": ("hardbatch", {"rescore": 2})}


@pytest.mark.parametrize("case", list(CASES))
def test_readme_loop_runs_every_policy_unchanged(case, capsys):
    namespace = _run_example()
    capsys.readouterr()
    name, params = CASES[case]
    policy = POLICIES[name]
    delta = 0.5 if policy.uses_delta else 1.0
    sampler = HardBatchSampler(len(namespace["train_set"]), 64, delta=delta, epochs=4, policy=name, seed=1, **params)
    if sampler.policy.needs_irreducible:  # rho-loss: the IL model's losses, set before training as the README says
        sampler.policy.irreducible = torch.zeros(len(namespace["train_set"]))
    namespace["train"](sampler)  # the README's loop, as written
    assert sampler.done and sampler.epoch == 4 and sampler.progress == 1.0
    if not policy.epoch_is_round:
        assert sampler.steps == 4 * sampler.num_batches
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines()] == [f"epoch {e}" for e in range(1, 5)]


def test_readme_loop_records_the_batches_selective_backprop_keeps_none_of(capsys):
    # One sample a batch: about half of the batches keep nothing; each is recorded untrained and epochs still end.
    namespace = _run_example()
    capsys.readouterr()
    sampler = HardBatchSampler(len(namespace["train_set"]), 1, epochs=2, policy="selective-backprop", seed=1)
    namespace["train"](sampler)
    assert sampler.done and sampler.epoch == 2 and 640 < sampler.steps < 2 * 640  # the first epoch trains all
    assert int(sampler.sample_visits.sum()) == sampler.steps
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines()] == ["epoch 1", "epoch 2"]


def test_multi_gpu_section_names_exactly_the_models_with_batchnorm():
    import torch

    from hardbatch.models import MODELS, create_model

    section = README.read_text().split("## Multi-GPU", 1)[1].split("\n## ", 1)[0]
    listed = re.search(r"models with BatchNorm \((.*?); not (.*?)\)", section, re.S)
    named = [re.findall(r"`(\w+)`", part) for part in listed.groups()]
    with torch.device("meta"):  # no weights allocated; _BatchNorm: what convert_sync_batchnorm replaces
        with_bn = [name for name in MODELS if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                                  for m in create_model(name, 10, 3).modules())]
    assert named == [with_bn, [name for name in MODELS if name not in with_bn]]
