"""report.glossary: report.md's definitions, the epoch's meaning per policy read from the policy registry."""

from __future__ import annotations

from hardbatch.policies import POLICIES
from hardbatch.report.glossary import definitions, epoch_axis_label, pass_policies


def _epoch_entry(text: str) -> str:
    return " ".join(text.split("- **Epoch**: ", 1)[1].split("\n- ", 1)[0].split())


def test_each_policys_epoch_is_stated_from_its_epoch_is_round(monkeypatch):
    passes = [name for name, cls in POLICIES.items() if cls.epoch_is_round]
    assert set(passes) >= {"infobatch", "seta", "ies", "selective-backprop"} and passes == pass_policies()
    entry = _epoch_entry(definitions())
    steps, rounds = entry.split("; for ", 1)
    assert all(f"`{name}`" in rounds for name in passes) and not any(f"`{name}`" in steps for name in passes)
    assert all(f"`{name}`" in steps for name in POLICIES if name not in passes)
    # A policy that changes its flag changes the text: nothing is written down twice.
    monkeypatch.setattr(POLICIES["uniform"], "epoch_is_round", True)
    assert "`uniform`" in _epoch_entry(definitions()).split("; for ", 1)[1] and "uniform" in epoch_axis_label()


def test_definitions_fill_in_the_reports_constants():
    text = definitions()
    assert text.startswith("## Definitions\n- **Epoch**: N optimizer steps")
    assert "{" not in text and all(len(line) <= 120 for line in text.splitlines())
    text = " ".join(text.split())  # as Markdown reads it: lines wrapped anywhere
    assert "**Detectable Δ (80% power)**" in text and "about 80% probability" in text
    assert "**Last-3 mean**: test top-1 averaged over each run's last 3 epochs" in text
    assert "within 1 point of the run's own best" in text
