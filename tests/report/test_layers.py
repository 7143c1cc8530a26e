"""The report package is read-only over saved runs: its modules import only the layers below it that hold no training
(config, records, metrics, fileio, params, errors, the policy registry) and each other; matplotlib only in plots."""

from __future__ import annotations

import ast
from pathlib import Path

import hardbatch.report

PACKAGE = Path(hardbatch.report.__file__).parent
ALLOWED = {"hardbatch.config", "hardbatch.records", "hardbatch.metrics", "hardbatch.fileio", "hardbatch.params",
           "hardbatch.errors", "hardbatch.policies", "hardbatch.policies.registry"}
NEVER = ("hardbatch.training", "hardbatch.run", "hardbatch.data", "hardbatch.step", "hardbatch.sampler",
         "hardbatch.integrations", "hardbatch.stream", "hardbatch.cli")


def _imports(path: Path) -> set[tuple[str, str]]:
    """(module, name) for every ``import module`` and ``from module import name`` of the file, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(alias.name, "") for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found |= {(node.module, alias.name) for alias in node.names}
    return found


def test_report_imports_nothing_that_trains():
    files = sorted(PACKAGE.glob("*.py"))
    assert {p.stem for p in files} >= {"load", "groups", "stats", "tables", "plots", "page", "claims", "wording",
                                       "glossary", "machines", "benchmarks"}
    for path in files:
        for module, name in _imports(path):
            if module.split(".")[0] == "matplotlib":
                assert path.stem == "plots", f"{path.name} imports {module}: only plots.py draws"
            if module.split(".")[0] != "hardbatch":
                continue
            assert not module.startswith(NEVER), f"{path.name} imports {module}"
            if module == "hardbatch":  # the package's version string only (the face imports the training code)
                assert name == "__version__", f"{path.name} imports hardbatch.{name}"
                continue
            assert module in ALLOWED or module.startswith("hardbatch.report."), f"{path.name} imports {module}"
