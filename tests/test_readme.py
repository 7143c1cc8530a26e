"""The README's drop-in example runs as written and trains exactly epochs x N steps."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## Use it in your own training loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


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
