"""hardbatch.data as a package: its face re-exports what the rest of hardbatch imports, its modules import one way
(each only those below it), and from outside it only the leaves and the run configuration."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import hardbatch.data

PACKAGE = Path(hardbatch.data.__file__).parent
# Bottom to top: a module may import only modules before it in this list.
ORDER = [
    "memory",
    "transforms",
    "splits",
    "loaders",
    "readers.common",
    "readers.cifar",
    "readers.digits",
    "readers.fashion_mnist",
    "readers.imagefolder",
    "readers.mnist1d",
    "readers.stl10",
    "readers",
    "registry",
    "",
]
OUTSIDE = {
    "hardbatch.errors",
    "hardbatch.fileio",
    "hardbatch.functional",
    "hardbatch.params",
    "hardbatch.models",
    "hardbatch.config",
}  # the leaves it may use, and config for RunConfig
# What src/hardbatch (run/, cli), benchmarks/, scripts/ and tests/ import from the face today.
USED = [
    "BatchTransform",
    "DATASETS",
    "DataSplits",
    "InMemoryDataset",
    "dataset_labels",
    "default_model",
    "gives_batches",
    "keep_batch",
    "load_dataset",
]


def _modules() -> dict[str, Path]:
    """Every module of the package by its name under it ("" for the face, "readers" for the readers' face)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """The hardbatch modules ``path`` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hardbatch"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("hardbatch"))
    return names


def test_every_module_is_placed_in_the_order():
    assert sorted(_modules()) == sorted(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_imports_flow_one_way_and_reach_outside_only_to_the_leaves(name):
    path = _modules()[name]
    below = {f"hardbatch.data.{m}".rstrip(".") for m in ORDER[: ORDER.index(name)]}
    for imported in _imports(path):
        if imported.startswith("hardbatch.data"):
            assert imported in below, f"{path.name} imports {imported}, which is not below it"
        else:
            assert imported in OUTSIDE, f"{path.name} imports {imported}, outside the data layer's leaves"


def test_the_face_re_exports_what_the_rest_imports_and_every_name_it_lists():
    assert set(USED) <= set(hardbatch.data.__all__)
    for name in hardbatch.data.__all__:
        value = getattr(hardbatch.data, name)
        home = getattr(value, "__module__", None)
        if home and home.startswith("hardbatch.data."):
            assert getattr(importlib.import_module(home), name) is value


def test_importing_the_data_layer_imports_no_optional_package():
    """The readers import scikit-learn, mnist1d, torchvision and PIL when they run: the core install has none."""
    optional = ["PIL", "matplotlib", "mnist1d", "scipy", "sklearn", "torchvision"]
    code = f"import sys, hardbatch.data; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({optional!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported with hardbatch.data: {done.stdout}"
