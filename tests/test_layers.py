"""The package's import layers, stated once (``LAYERS``) and enforced over every import statement of its source,
module-level and inside functions alike: no import runs back up a layer, none runs in a circle, the reports never reach
the training code (and read only what saved runs need), and only the plots draw."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "hardbatch"

# Bottom to top. A module may import from its own layer (without a cycle) or from the layers below, never from a layer
# above. An entry names a module or a package (every module under it). "hardbatch" is the package's face, its
# __init__: it re-exports from the layers below, so it sits at the top with the command line.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaves",
        (
            "version",
            "errors",
            "params",
            "fileio",
            "batches",
            "losses",
            "distributed",
            "models",
            "metrics",
            "cost",
            "functional",
        ),
    ),
    ("policies", ("policies",)),
    ("sampler", ("sampler",)),
    ("step and config", ("step", "config", "stream")),
    ("training, data, records", ("training", "data", "records")),
    ("runs, reports, integrations", ("run", "report", "integrations")),
    ("command line and face", ("cli", "flags", "__main__", "hardbatch")),
)
# Imports a package must never make, directly or through the modules it imports: the reports read saved runs only.
NEVER = {"report": ("training", "run", "data", "step", "sampler", "integrations", "stream")}
# All that a package's modules may import of the rest of the package (besides its own modules): the reports read a
# run's records, its configuration and the policies' declarations, and compute statistics.
ONLY = {
    "report": ("version", "config", "records", "metrics", "fileio", "params", "errors", "policies", "policies.registry")
}
# Third-party packages only some modules may import: matplotlib draws in report/plots.py alone.
DRAWS = {"matplotlib": ("report.plots",)}
# Where today's code breaks a rule: (importing module, imported module), each reported to the module's owner. The
# test fails on any other, and on an entry that no longer occurs (delete it then): this list may only shrink.
KNOWN_TODAY: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def resolve(name: str) -> str:
    """The package module an imported dotted name lives in: itself when it is a module, else the longest prefix that
    is (``hardbatch.run.plan.execute`` -> ``hardbatch.run.plan``; ``hardbatch.__version__`` -> ``hardbatch``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> dict[str, int]:
    """Every package module that ``module``'s source imports, anywhere in the file (functions too), with the line of
    its first import. ``from X import Y`` imports module X.Y when Y is a module, else X; a package's parents are not
    counted (Python runs their __init__, but the code did not name them)."""
    path = MODULES[module]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                found.setdefault(resolve(name), node.lineno)
    found.pop(module, None)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def owner(module: str) -> str:
    """The LAYERS entry ``module`` falls under: the longest one that is the module or a package above it."""
    short = module[len(PACKAGE) + 1 :] if module != PACKAGE else PACKAGE
    entries = [entry for _, entries in LAYERS for entry in entries]
    matches = [e for e in entries if short == e or short.startswith(e + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py"
    return max(matches, key=len)


def layer(module: str) -> int:
    entry = owner(module)
    return next(i for i, (_, entries) in enumerate(LAYERS) if entry in entries)


def where(module: str, imported: str) -> str:
    path = MODULES[module].relative_to(SRC.parent)
    return f"{path}:{GRAPH[module][imported]} imports {imported}"


def violations() -> dict[tuple[str, str], str]:
    """Every import that runs up a layer, by (importer, imported), with what is wrong."""
    found = {}
    for module, imported in ((m, i) for m, targets in GRAPH.items() for i in targets):
        if layer(imported) > layer(module):
            found[module, imported] = (
                f"{where(module, imported)}: up from layer {layer(module) + 1} "
                f"({LAYERS[layer(module)][0]}) to {layer(imported) + 1} "
                f"({LAYERS[layer(imported)][0]})"
            )
    return found


def cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in GRAPH[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    return components


def reached(module: str) -> dict[str, list[str]]:
    """Every package module ``module`` imports directly or through others, with one chain of imports to it (the
    KNOWN_TODAY imports aside: the layer test names them)."""
    chains = {module: [module]}
    todo = [module]
    while todo:
        current = todo.pop()
        for imported in GRAPH[current]:
            if imported not in chains and (current, imported) not in KNOWN_TODAY:
                chains[imported] = [*chains[current], imported]
                todo.append(imported)
    return chains


def test_every_module_is_in_a_layer_and_every_layer_entry_exists():
    for module in MODULES:
        owner(module)
    for _, entries in LAYERS:
        for entry in entries:
            name = PACKAGE if entry == PACKAGE else f"{PACKAGE}.{entry}"
            assert any(m == name or m.startswith(name + ".") for m in MODULES), (
                f"LAYERS names {entry}, which is no module or package of {PACKAGE}"
            )


def test_no_import_runs_up_a_layer():
    found = violations()
    new = [found[key] for key in sorted(set(found) - KNOWN_TODAY)]
    assert not new, "imports that run up a layer:\n" + "\n".join(new)
    fixed = sorted(KNOWN_TODAY - set(found))
    assert not fixed, f"no longer found (delete them from KNOWN_TODAY): {fixed}"


def test_no_import_cycle():
    assert cycles() == [], "modules that import each other in a circle:\n" + "\n".join(
        " <-> ".join(component) for component in cycles()
    )


@pytest.mark.parametrize("package", list(NEVER))
def test_reports_never_reach_the_training_code(package):
    banned = {f"{PACKAGE}.{name}" for name in NEVER[package]}
    for module in (m for m in MODULES if m == f"{PACKAGE}.{package}" or m.startswith(f"{PACKAGE}.{package}.")):
        for target, chain in reached(module).items():
            hit = next((b for b in banned if target == b or target.startswith(b + ".")), None)
            assert hit is None, f"{module} reaches {hit}: {' -> '.join(chain)}"


def members(package: str) -> list[str]:
    name = f"{PACKAGE}.{package}"
    return [m for m in MODULES if m == name or m.startswith(name + ".")]


@pytest.mark.parametrize("package", list(ONLY))
def test_reports_import_only_what_saved_runs_need(package):
    allowed = {f"{PACKAGE}.{name}" for name in ONLY[package]} | set(members(package))
    for module in members(package):
        for imported in GRAPH[module]:
            assert imported in allowed or (module, imported) in KNOWN_TODAY, where(module, imported)
    # the modules the report is made of are there to check
    assert {m.rpartition(".")[2] for m in members("report")} >= {
        "load",
        "groups",
        "stats",
        "tables",
        "plots",
        "page",
        "claims",
        "wording",
        "glossary",
        "machines",
        "benchmarks",
    }


def third_party(module: str) -> set[str]:
    """The top-level names of the packages outside hardbatch that ``module`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found - {PACKAGE}


def test_only_the_plots_draw():
    for module in MODULES:
        for name, allowed in DRAWS.items():
            if name in third_party(module):
                assert module[len(PACKAGE) + 1 :] in allowed, f"{MODULES[module].name} imports {name}"
    assert "matplotlib" in third_party("hardbatch.report.plots")


def test_imports_are_absolute():
    """Each file names what it imports as a user would (``from hardbatch.x import y``): no relative imports."""
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}:{node.lineno}: a relative import"


def test_the_check_sees_imports_inside_functions_and_reports_each_kind_of_break(monkeypatch):
    # cli imports the run layer only inside its commands, the report page its plots only inside a function.
    assert (
        "hardbatch.run.experiment" in GRAPH["hardbatch.cli"]
        and "hardbatch.report.plots" in GRAPH["hardbatch.report.page"]
    )
    monkeypatch.setitem(GRAPH, "hardbatch.errors", {**GRAPH["hardbatch.errors"], "hardbatch.cli": 1})
    assert "up from layer 1 (leaves) to 7" in violations()["hardbatch.errors", "hardbatch.cli"]
    assert any({"hardbatch.errors", "hardbatch.cli"} <= set(component) for component in cycles())
    monkeypatch.undo()
    monkeypatch.setitem(GRAPH, "hardbatch.report.claims", {"hardbatch.records": 1})
    assert "hardbatch.data" not in reached("hardbatch.report.claims")
    monkeypatch.setitem(GRAPH, "hardbatch.records", {**GRAPH["hardbatch.records"], "hardbatch.data": 1})
    assert reached("hardbatch.report.claims")["hardbatch.data"] == [
        "hardbatch.report.claims",
        "hardbatch.records",
        "hardbatch.data",
    ]


# What the contributors' guide's layer table leaves out, and why; it names every other LAYERS entry at its layer.
GUIDE = SRC.parent / "docs" / "contributing" / "index.md"
NOT_IN_GUIDE = {"__main__": "it only runs cli", PACKAGE: "the face, described under the table"}


def test_the_contributors_guide_states_the_same_layers():
    rows = re.findall(r"^\| (\d)\. [^|]+\| ([^|]+) \|", GUIDE.read_text(), flags=re.MULTILINE)
    guide = {int(number) - 1: {name.strip("`/ ") for name in cell.split(",")} for number, cell in rows}
    code = {i: set(entries) - set(NOT_IN_GUIDE) for i, (_, entries) in enumerate(LAYERS)}
    assert guide == code
