"""Dependencies by use: the library imports with torch and numpy alone; a command whose extra is missing says in one
line which ``pip install`` adds it (exit status 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

OPTIONAL = (
    "torchvision",
    "sklearn",
    "scipy",
    "matplotlib",
    "tqdm",
    "mnist1d",
    "lightning",
    "transformers",
    "accelerate",
    "tensorboard",
    "torchdata",
    "PIL",
)


def _python(code: str, tmp_path, missing=OPTIONAL) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter where importing any of ``missing`` fails as on a machine without it: a stub
    package of that name, first on the path, raises ModuleNotFoundError."""
    for name in missing:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'
        )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, timeout=120, env=env
    )


def test_the_library_and_the_quickstart_need_only_torch_and_numpy(tmp_path):
    done = _python(
        """
import torch, hardbatch
from torch.utils.data import DataLoader, TensorDataset
train_set = TensorDataset(torch.randn(160, 8), torch.randint(0, 3, (160,)))
model = torch.nn.Linear(8, 3)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for policy in hardbatch.policies.POLICIES:
    if hardbatch.policies.POLICIES[policy].holdout:
        continue
    sampler = hardbatch.HardBatchSampler(len(train_set), batch_size=8, epochs=2, policy=policy)
    while not sampler.done:
        for batch in DataLoader(train_set, batch_sampler=sampler):
            loss = hardbatch.training_loss(sampler, model, batch)
            if loss is not None:
                optimizer.zero_grad(); loss.backward(); optimizer.step()
loaded = [m for m in sys.modules if m.split(".")[0] in {optional!r}]
print("loaded:", loaded)
""".replace("{optional!r}", repr(set(OPTIONAL))),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded: []" in done.stdout


@pytest.mark.parametrize(
    "argv, package",
    [
        (["train", "--dataset", "digits", "--out", "/nonexistent/run"], "sklearn"),
        (["train", "--dataset", "mnist1d", "--out", "/nonexistent/run"], "mnist1d"),
    ],
)
def test_a_command_whose_extra_is_missing_names_the_pip_install_in_one_line(argv, package, tmp_path):
    argv = [a.replace("/nonexistent", str(tmp_path)) for a in argv]
    done = _python(f"from hardbatch.cli import main; raise SystemExit(main({argv!r}))", tmp_path, missing=(package,))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'hardbatch[cli]'" in lines[0] and "Traceback" not in done.stderr
