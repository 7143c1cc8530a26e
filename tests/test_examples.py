"""examples/: every script imports only from ``hardbatch`` and ``hardbatch.integrations.<stack>``, runs as a user runs
it (``python examples/NAME.py``: its own process, the CPU, one thread, offline), and the task examples train what the
policy chooses with one loss per sample.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hardbatch
from hardbatch import batches, losses, step
from hardbatch.functional import top_k_batches

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Examples another test owns: it runs them, and their owner keeps them to the rules checked here.
OWNED_ELSEWHERE = {"hf_trainer.py": "the Hugging Face helper's; tests/integrations/test_transformers.py runs it"}
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py") if path.name not in OWNED_ELSEWHERE)
# hardbatch.integrations.<stack>: one module per training stack (lightning, accelerate, transformers, ...).
INTEGRATIONS = Path(hardbatch.__file__).parent / "integrations"
STACKS = {f"hardbatch.integrations.{path.stem}" for path in INTEGRATIONS.glob("*.py") if path.stem != "__init__"}
# What each script prints last begins so: the work it reports.
LAST_LINE = {
    "accelerate_loop.py": r"24 optimizer steps; last loss [\d.]+; 768 of 768 samples back-propagated; "
    r"trained [\d.]+ s",
    "lightning_example.py": r"rank 0/1: policy hardbatch, 63 steps of budget 63, 3 epochs, .* val_acc 0\.[5-9]\d+; "
    r"trained [\d.]+ s",
    "multilabel.py": r"epoch 6: test loss [\d.]+, label accuracy 0\.9\d+",
    "quickstart.py": r"hardbatch: 200 steps, 25600 samples back-propagated",
    "regression.py": r"epoch 8: test mse 0\.0\d+, 4096 samples back-propagated",
    "segmentation.py": r"epoch 6: test loss [\d.]+, pixel accuracy 0\.9\d+",
    "streaming.py": r"selective-backprop: 48 optimizer steps over 3 passes of 16 batches; \d+ of 1536 samples "
    r"back-propagated",
    "token_lm.py": r"epoch 5: test loss [\d.]+; 2048 sequences scored, \d+ back-propagated",
}


def imported_modules(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names taken from it) for every import statement of the script at ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_every_example_has_its_check():
    assert sorted(LAST_LINE) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_an_example_takes_hardbatch_only_from_its_face_and_an_integration(name):
    taken = [
        (module, names) for module, names in imported_modules(EXAMPLES / name) if module.split(".")[0] == "hardbatch"
    ]
    assert taken, f"{name} does not use hardbatch"
    for module, names in taken:
        assert module == "hardbatch" or module in STACKS, f"{name} imports {module}"
        if module == "hardbatch":
            assert set(names) <= set(hardbatch.__all__), f"{name} takes {set(names) - set(hardbatch.__all__)}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_an_example_runs_as_a_script(name, tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(hardbatch.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines and re.match(LAST_LINE[name], lines[-1]), done.stdout[-2000:]


# ---- what the task examples train (run in this process, to watch their loss and their steps) ---------------------


def run_example(name: str, capsys) -> tuple[dict, list[str]]:
    """Run ``examples/NAME.py`` as a script; returns the names it defined and the lines it printed."""
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    return namespace, capsys.readouterr().out.splitlines()


def record_loss_calls(monkeypatch, name: str, factory: bool = False) -> list[tuple[int, tuple, bool]]:
    """Wrap ``hardbatch.losses.NAME`` (the loss a factory makes, with ``factory``); returns the list that each call
    appends (the batch's size, the shape returned, whether grad was on) to."""
    calls = []
    original = getattr(losses, name)

    def recording(fn):
        def loss_fn(outputs, batch):
            values = fn(outputs, batch)
            calls.append((batches.batch_size(batch), tuple(values.shape), torch.is_grad_enabled()))
            return values

        return loss_fn

    wrapped = (lambda *a, **k: recording(original(*a, **k))) if factory else recording(original)
    monkeypatch.setattr(losses, name, wrapped)
    return calls


def assert_follows_the_rule(steps: list[tuple[int, int, float]], num_batches: int, k: int) -> None:
    """``steps``: (round, batch, loss) of every optimizer step. The warm-up trains batches 0..N-1 in order; each
    later round the k highest stored losses (the loss of each batch's last training step), in index order."""
    rounds: dict[int, list[tuple[int, float]]] = {}
    for r, batch, loss in steps:
        rounds.setdefault(r, []).append((batch, loss))
    assert [b for b, _ in rounds[0]] == list(range(num_batches))
    stored = torch.zeros(num_batches)
    for r in sorted(rounds):
        if r > 0:
            planned = top_k_batches(stored, k).tolist()
            trained = [b for b, _ in rounds[r]]
            assert trained == planned[: len(trained)], f"round {r}"  # the last round may be cut short
        for b, loss in rounds[r]:
            stored[b] = loss
    assert len(rounds) > 2  # rounds after the warm-up were checked


def assert_one_loss_per_sample(calls) -> None:
    assert calls and all(shape == (b,) for b, shape, _ in calls)
    assert {grad for *_, grad in calls} == {True, False}  # training steps, and no-grad scoring or evaluation


def test_multilabel_example_trains_the_rules_batches_on_the_mean_bce_over_labels(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "multilabel_bce")
    names, printed = run_example("multilabel", capsys)
    sampler = names["sampler"]
    assert sampler.done and sampler.steps == 6 * 16
    assert_follows_the_rule([(r, b, loss) for _, r, b, loss, _ in names["trace"]], 16, 8)
    assert_one_loss_per_sample(calls)
    assert [line.split(":")[0] for line in printed] == [f"epoch {e}" for e in range(1, 7)]
    assert float(printed[-1].rsplit(" ", 1)[1]) > 0.9  # label accuracy


def test_regression_example_runs_the_rule_in_its_own_loop_with_mse(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "mse")
    names, printed = run_example("regression", capsys)
    sampler = names["sampler"]
    assert sampler.steps == 8 * 16 and sampler.meter.samples_backprop == 8 * 16 * 32
    assert_follows_the_rule(names["trace"], 16, 8)
    assert_one_loss_per_sample(calls)
    errors = [float(line.split("mse ")[1].split(",")[0]) for line in printed]
    assert len(errors) == 8 and errors[-1] < errors[0] / 2


def test_segmentation_example_trains_dict_batches_on_the_pixels_not_ignored(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "dense", factory=True)
    names, printed = run_example("segmentation", capsys)
    assert names["sampler"].steps == 6 * 12
    assert_follows_the_rule([(r, b, loss) for _, r, b, loss, _ in names["trace"]], 12, 6)
    assert_one_loss_per_sample(calls)
    labels = names["train_set"].labels
    assert (labels == 255).any() and (labels == 1).any()  # the ignore index is exercised
    assert float(printed[-1].rsplit(" ", 1)[1]) > 0.9  # pixel accuracy


def test_token_lm_example_back_propagates_the_sequences_selective_backprop_keeps(monkeypatch, capsys):
    calls = record_loss_calls(monkeypatch, "token_lm", factory=True)
    seen = []
    select = step.select

    def recording_select(sampler, model, batch, **kwargs):
        pending = sampler.pending
        scoring = sampler.policy.needs_scores(pending)
        chosen = select(sampler, model, batch, **kwargs)
        seen.append((scoring, pending, batch, chosen, sampler.last))
        return chosen

    monkeypatch.setattr(step, "select", recording_select)
    names, printed = run_example("token_lm", capsys)
    sampler = names["sampler"]
    meter = sampler.meter
    assert sampler.done and len(printed) == 5
    scored = kept_none = 0
    for scoring, pending, batch, chosen, last in seen:
        if not scoring:  # the first epoch trains every sequence, unscored (the authors' code)
            assert chosen.batch is batch
            continue
        scored += 1
        keep = pending.weights > 0  # what the policy chose from the scoring pass's losses
        if not keep.any():  # recorded untrained: no optimizer step
            assert chosen is None and (last.step, last.samples) == (0, 0)
            kept_none += 1
            continue
        assert int(keep.sum()) == chosen.total
        for key in ("input_ids", "attention_mask", "labels"):  # the same rows of every tensor of the dict
            assert torch.equal(chosen.batch[key], batch[key][keep])
    assert scored == 4 * 16 and meter.samples_forward_nograd == scored * 32
    assert len(names["kept"]) == sampler.steps == 16 + scored - kept_none
    assert meter.samples_backprop == sum(n for _, n in names["kept"]) < meter.samples_loaded
    assert_one_loss_per_sample(calls)
    assert sum(1 for b, _, grad in calls if not grad and b == 32) >= scored  # a scoring pass per scored batch
    test_losses = [float(line.split("test loss ")[1].split(";")[0]) for line in printed]
    assert test_losses[-1] < test_losses[0] - 0.5
