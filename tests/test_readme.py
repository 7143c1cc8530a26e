"""The README's drop-in example runs as written and trains exactly epochs x N steps."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Use it in your own training loop", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _example() -> str:
    return _examples()[0]


def test_readme_example_runs_and_spends_the_exact_budget(capsys):
    namespace: dict = {}
    exec(compile(_example(), str(README), "exec"), namespace)
    sampler = namespace["sampler"]
    assert sampler.done and sampler.steps == 5 * 10
    assert int(sampler.visits.sum()) == 50 and sampler.visits.min() >= 1  # the warm-up touched every batch
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines()[:5]] == [f"epoch {e}" for e in range(1, 6)]


def test_readme_starts_with_the_two_setup_commands():
    first_block = README.read_text().split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_per_sample_example_runs_infobatch_and_selective_backprop(capsys):
    namespace: dict = {}
    first, second = _examples()[:2]
    exec(compile(first, str(README), "exec"), namespace)
    infobatch = None
    original = namespace["HardBatchSampler"]

    def spy(*args, **kwargs):  # keep each sampler the example builds
        nonlocal infobatch
        sampler = original(*args, **kwargs)
        if kwargs.get("policy") == "infobatch":
            infobatch = sampler
        return sampler

    namespace["HardBatchSampler"] = spy
    exec(compile(second, str(README), "exec"), namespace)
    assert infobatch is not None and infobatch.done and infobatch.epoch == 4
    # The first epoch trains every batch; pruned epochs take fewer than N steps; the last one (12.5%) is full again.
    assert 4 * infobatch.num_batches > infobatch.steps > 2 * infobatch.num_batches
    sb = namespace["sampler"]
    assert sb.policy.name == "selective-backprop" and sb.done and sb.steps == 2 * sb.num_batches
    assert 0 < len(sb.policy.history) <= 1024


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
