"""The docs hold true: every Python block of the README and the docs site runs (or says why it cannot), the own-loop
guide's loop trains every registered policy to its exact budget, the CLI reference is what the parser renders, and
every public name of the API reference has a docstring."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

import hardbatch
from hardbatch.policies import POLICIES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
OWN_LOOP = DOCS / "guides" / "own-loop.md"
ANY_LOSS = DOCS / "guides" / "any-loss.md"
INTEGRATIONS = DOCS / "guides" / "integrations.md"
QUICKSTART = DOCS / "getting-started.md"

FENCE = re.compile(r"^([ \t]*)```(?:python|py)[ \t]*\n(.*?)^\1```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not-run:(.*?)-->", re.S)
SNIPPET = re.compile(r'^--8<--\s+"([^"]+)"\s*$', re.M)


def _pages() -> list[Path]:
    """The README, every Markdown page under docs/, and the repository files the site includes (``--8<--``)."""
    pages = [README, *sorted(DOCS.rglob("*.md"))]
    included = {ROOT / name for page in pages for name in SNIPPET.findall(page.read_text())}
    return pages + sorted(included - set(pages))


def _blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """Each Python block of ``page``: (line of its fence, its code dedented, the reason it is not run or None).

    A block is not run when the last thing before its fence is an HTML comment ``<!-- not-run: REASON -->``."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        marker = NOT_RUN.fullmatch(before[before.rfind("<!--") :]) if before.endswith("-->") else None
        reason = " ".join(marker.group(1).split()) if marker else None
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, textwrap.dedent(match.group(2)), reason))
    return found


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


PAGES_WITH_CODE = [page for page in _pages() if _blocks(page)]

# What a page's blocks must have done, beyond running: checked in the namespace they leave.
QUICKSTART_CHECK = (
    "assert sampler.done and sampler.epoch == 10 and sampler.steps == 10 * sampler.num_batches\n"
    "assert int(sampler.visits.sum()) == sampler.steps and sampler.meter.samples_backprop > 0"
)
CHECKS = {
    README: QUICKSTART_CHECK,
    QUICKSTART: QUICKSTART_CHECK,
    OWN_LOOP: "assert sampler.done and sampler.steps == 5 * 10 and int(sampler.visits.sum()) == 50",
    # selective-backprop over 640 samples in batches of 64 for 3 epochs: the first epoch trains every batch unscored
    ANY_LOSS: (
        "meter = sampler.meter\n"
        "assert sampler.done and sampler.epoch == 3 and meter.optimizer_steps == sampler.steps\n"
        "assert 0 < meter.samples_backprop < meter.samples_loaded == meter.samples_forward_nograd + 10 * 64\n"
        "assert meter.samples_backprop == sampler.trained_samples['all']"
    ),
}


def runnable(page: Path) -> list[tuple[int, str]]:
    """(line, code) of the blocks of ``page`` that are run."""
    return [(line, code) for line, code, reason in _blocks(page) if reason is None]


# A page's runnable blocks run in order in one namespace (a page reads as one script), in a fresh interpreter with
# one thread, then the page's check (CHECKS); a failure names the page and the block's line.
RUNNER = """
import json, sys
page, blocks, check = sys.argv[1], json.loads(open(sys.argv[2]).read()), sys.argv[3]
namespace = {"__name__": "__main__"}
for line, code in blocks:
    exec(compile("\\n" * line + code, page, "exec"), namespace)
exec(check, namespace)
"""


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_name)
def test_every_python_block_runs_or_says_why_not(page, tmp_path):
    for line, _, reason in _blocks(page):
        assert reason is None or reason, f"{_name(page)}:{line}: a not-run marker needs its reason"
    if not runnable(page):
        return
    (tmp_path / "blocks.json").write_text(json.dumps(runnable(page)))
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(page), "blocks.json", CHECKS.get(page, "")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, f"{_name(page)}: a Python block failed:\n{result.stderr[-4000:]}"


def test_the_integrations_guides_accelerate_loop_spends_its_budget(capsys):
    line, code = next((line, code) for line, code in runnable(INTEGRATIONS) if "prepare_loader(accelerator" in code)
    namespace: dict = {"__name__": "__accelerate_block__"}
    exec(compile("\n" * line + code, str(INTEGRATIONS), "exec"), namespace)  # the guide's block, as written
    sampler = namespace["sampler"]
    meter = sampler.meter
    # 256 samples in global batches of 32: N = 8 steps an epoch, 3 epochs; selective-backprop's first epoch trains
    # every batch whole without scoring, the two others score every loaded sample and train the ones they keep.
    assert sampler.done and sampler.epoch == 3 and meter.optimizer_steps == sampler.steps
    assert meter.samples_loaded == 3 * 256 and meter.samples_forward_nograd == 2 * 256
    assert 256 < meter.samples_backprop == sampler.trained_samples["all"] < 3 * 256
    assert capsys.readouterr().out == f"{meter.samples_backprop} of {meter.samples_loaded} samples back-propagated\n"


def test_the_pages_this_file_checks_have_their_blocks():
    """The pages whose blocks the tests below read still hold them, and run them."""
    assert quickstart_block(README) and quickstart_block(QUICKSTART)
    assert any("def train(sampler)" in code for _, code in runnable(OWN_LOOP))


# -- the quickstart: one code in the README, Getting started and examples/quickstart.py ----------------------------


def quickstart_block(page: Path) -> str:
    """The runnable block of ``page`` that holds the quickstart loop."""
    blocks = [code for _, code in runnable(page) if "hardbatch.training_loss(sampler, model, batch)" in code]
    assert len(blocks) == 1, f"{_name(page)}: {len(blocks)} quickstart blocks"
    return blocks[0]


def _code_lines(code: str) -> list[str]:
    """The lines of ``code`` without comments and blank lines (comments may differ between copies)."""
    lines = (re.sub(r"\s*#.*$", "", line).rstrip() for line in code.splitlines())
    return [line for line in lines if line.strip()]


def _loop(code: str) -> list[str]:
    """The quickstart's loop: from the DataLoader to the optimizer step."""
    lines = _code_lines(code)
    start = next(i for i, line in enumerate(lines) if line.startswith("loader = DataLoader("))
    end = next(i for i, line in enumerate(lines) if "optimizer.step()" in line)
    return lines[start : end + 1]


def test_the_quickstart_is_one_code_everywhere():
    """The README's quickstart is Getting started's, and its loop is examples/quickstart.py's (which
    tests/test_examples.py runs, and whose loop tests/test_quickstart.py checks against the sampler-level reference
    for every policy)."""
    readme, guide = quickstart_block(README), quickstart_block(QUICKSTART)
    assert _code_lines(readme) == _code_lines(guide)
    example = (ROOT / "examples" / "quickstart.py").read_text()
    assert _loop(readme) == _loop(example)
    sampler = next(line for line in _code_lines(readme) if "HardBatchSampler(" in line)
    assert sampler.split("policy=")[0] in example


# -- the own-loop guide's primitives loop (tests/test_readme.py ran it from the README before the docs site) -------


def _run_own_loop() -> dict:
    """Execute the own-loop guide's primitives loop (its block that defines ``train``) as written, in a fresh
    namespace; returns the names it defined."""
    line, code = next((line, code) for line, code in runnable(OWN_LOOP) if "def train(sampler)" in code)
    namespace: dict = {"__name__": "__own_loop__"}
    exec(compile("\n" * line + code, str(OWN_LOOP), "exec"), namespace)
    return namespace


def test_own_loop_runs_and_spends_the_exact_budget(capsys):
    sampler = _run_own_loop()["sampler"]
    assert sampler.done and sampler.steps == 5 * 10
    assert int(sampler.visits.sum()) == 50 and sampler.visits.min() >= 1  # the warm-up touched every batch
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines()[:5]] == [f"epoch {e}" for e in range(1, 6)]


# Every registered policy (a new one is picked up with no edit here), and the rule's scoring pass.
CASES = {
    **{name: (name, cls.example) for name, cls in POLICIES.items()},
    "hardbatch+rescore": ("hardbatch", {"rescore": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_own_loop_runs_every_policy_unchanged(case, capsys):
    namespace = _run_own_loop()
    capsys.readouterr()
    name, params = CASES[case]
    policy = POLICIES[name]
    delta = {"delta": 0.5} if policy.takes("delta") else {}
    sampler = hardbatch.HardBatchSampler(
        len(namespace["train_set"]), 64, epochs=4, policy=name, seed=1, **delta, **params
    )
    if sampler.policy.holdout:  # rho-loss: the IL model's losses, set before training as the guide says
        sampler.policy.irreducible = torch.zeros(len(namespace["train_set"]))
    namespace["train"](sampler)  # the guide's loop, as written
    assert sampler.done and sampler.epoch == 4 and sampler.progress == 1.0
    if not policy.epoch_is_round:
        assert sampler.steps == 4 * sampler.num_batches
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines()] == [f"epoch {e}" for e in range(1, 5)]


def test_own_loop_records_the_batches_selective_backprop_keeps_none_of(capsys):
    # One sample a batch: about half of the batches keep nothing; each is recorded untrained and epochs still end.
    namespace = _run_own_loop()
    capsys.readouterr()
    sampler = hardbatch.HardBatchSampler(len(namespace["train_set"]), 1, epochs=2, policy="selective-backprop", seed=1)
    namespace["train"](sampler)
    assert sampler.done and sampler.epoch == 2 and 640 < sampler.steps < 2 * 640  # the first epoch trains all
    assert int(sampler.visits.sum()) == sampler.steps  # (reading visits settles the sampler's counts)
    assert sampler.trained_samples["all"] == sampler.steps  # one sample back-propagated per trained batch
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines()] == ["epoch 1", "epoch 2"]


# -- facts the pages state ---------------------------------------------------------------------------------------


def test_readme_starts_with_the_two_setup_commands():
    first_block = README.read_text().split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


BATCHNORM_LIST = re.compile(r"models with BatchNorm \((.*?); not (.*?)\)", re.S)


@pytest.mark.parametrize("page", [p for p in _pages() if BATCHNORM_LIST.search(p.read_text())], ids=_name)
def test_pages_name_exactly_the_models_with_batchnorm(page):
    from hardbatch.models import MODELS, create_model

    named = [re.findall(r"`(\w+)`", part) for part in BATCHNORM_LIST.search(page.read_text()).groups()]
    with torch.device("meta"):  # no weights allocated; _BatchNorm: what convert_sync_batchnorm replaces
        with_bn = [
            name
            for name in MODELS
            if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in create_model(name, 10, 3).modules())
        ]
    assert named == [with_bn, [name for name in MODELS if name not in with_bn]]


def test_the_multi_gpu_guide_names_the_models_with_batchnorm():
    assert BATCHNORM_LIST.search((DOCS / "guides" / "multi-gpu.md").read_text())


def test_the_cli_reference_is_what_the_parser_renders():
    docs_cli = _script("docs_cli")
    assert docs_cli.PAGE.read_text() == docs_cli.render(), "docs/reference/cli.md is stale: python scripts/docs_cli.py"


# -- the API reference: every public name has a docstring ----------------------------------------------------------

API_PAGES = DOCS / "reference" / "api"
DIRECTIVE = re.compile(r"^:::\s*([\w.]+)", re.M)
API_MODULES = sorted({name for page in API_PAGES.glob("*.md") for name in DIRECTIVE.findall(page.read_text())})


def _documentable(value) -> bool:
    """What can carry a docstring of its own: modules, classes, functions (values such as constants cannot)."""
    return inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value)


def public_names(module: types.ModuleType) -> dict[str, object]:
    """The module's ``__all__``, or else its names without a leading underscore that it defines itself."""
    if hasattr(module, "__all__"):
        return {name: getattr(module, name) for name in module.__all__}
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }


def _class_members(cls: type) -> list[str]:
    """The public methods and properties a class defines in its own body (dunders and inherited ones aside)."""
    members = []
    for name, raw in vars(cls).items():
        raw = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if not name.startswith("_") and (inspect.isfunction(raw) or isinstance(raw, property)):
            members.append(name)
    return members


def _own_doc(cls: type) -> str | None:
    """A class's own docstring: not a base class's, nor the signature ``@dataclass`` writes in its place."""
    doc = vars(cls).get("__doc__")
    if doc and dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return None
    return doc


def _member_doc(cls: type, member: str) -> str | None:
    """The docstring of ``cls.member``, or of the attribute it overrides in a base class (as ``help()`` shows)."""
    for owner in cls.__mro__:
        raw = vars(owner).get(member)
        raw = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if raw is not None and getattr(raw, "__doc__", None):
            return raw.__doc__
    return None


def missing_docstrings(module: types.ModuleType) -> list[str]:
    """Every public name of ``module``, and every public method or property of its public classes, that has no
    docstring."""
    missing = [] if module.__doc__ else [module.__name__]
    for name, value in public_names(module).items():
        if not _documentable(value):
            continue
        if not (_own_doc(value) if inspect.isclass(value) else value.__doc__):
            missing.append(f"{module.__name__}.{name}")
        if inspect.isclass(value) and value.__module__.startswith("hardbatch"):
            missing += [
                f"{module.__name__}.{name}.{member}"
                for member in _class_members(value)
                if not _member_doc(value, member)
            ]
    return missing


def test_the_api_reference_has_a_page_for_every_public_module():
    """Every module the package's face exports has its ``:::`` page under docs/reference/api/, and every class and
    function it exports is a public name of one of those pages' modules as well (where it is documented in full)."""
    modules = {
        name: importlib.import_module(name)
        for name in API_MODULES  # the face never exports an integration
        if name != "hardbatch" and not name.startswith("hardbatch.integrations.")
    }
    homeless = []
    for name in hardbatch.__all__:
        value = getattr(hardbatch, name)
        if inspect.ismodule(value):
            if value.__name__ not in modules:
                homeless.append(value.__name__)
        elif _documentable(value) and not any(value is v for m in modules.values() for v in public_names(m).values()):
            homeless.append(f"hardbatch.{name} (defined in {value.__module__})")
    assert not homeless, f"no page under docs/reference/api/ documents: {', '.join(homeless)}"


@pytest.mark.parametrize("module_name", API_MODULES)
def test_every_public_name_has_a_docstring(module_name):
    module = importlib.import_module(module_name)  # the test extra installs every integration's package
    missing = sorted(missing_docstrings(module))
    assert not missing, f"{len(missing)} public names without a docstring: {', '.join(missing)}"


# -- generated parts are fresh ---------------------------------------------------------------------------------------


def _script(name: str) -> types.ModuleType:
    """scripts/NAME.py as a module (the scripts are not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _verdict_table(text: str) -> list[str]:
    """The rows of the first Markdown table in ``text`` (its header and separator included)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_the_hyper_parameter_table_is_what_the_declarations_render():
    policy_docs = _script("policy_docs")
    text = policy_docs.DOC.read_text()
    assert policy_docs.rendered(text) == text, "docs/policies/README.md's table is stale: python scripts/policy_docs.py"


# -- hand-written lists that must name every registered policy ------------------------------------------------------


def _table_names(text: str, heading: str) -> list[str]:
    """The policy names in the first column of the first table after ``heading``."""
    section = text.split(heading, 1)[1]
    return [re.match(r"\| `([\w-]+)`", line).group(1) for line in _verdict_table(section)[2:]]


def test_every_registered_policy_has_a_card_a_row_and_a_place_in_the_nav():
    names = list(POLICIES)
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in names:
        assert (DOCS / "policies" / f"{name}.md").exists(), f"no card docs/policies/{name}.md"
        assert f"policies/{name}.md" in nav, f"mkdocs.yml's nav has no {name} card"
    assert _table_names((DOCS / "policies" / "README.md").read_text(), "# Selection policies") == names
    guide = (DOCS / "guides" / "command-line.md").read_text()
    assert _table_names(guide, "## Policies") == names
    policy_row = next(line for line in guide.splitlines() if line.startswith("| `--policy` |"))
    assert re.findall(r"`([\w-]+)`", policy_row.split("|")[2]) == names, "the --policy row must name every policy"


def test_the_reproducing_guide_names_the_evidence_benchmarks():
    evidence = _script("evidence")
    guide = (DOCS / "guides" / "reproducing.md").read_text()
    named = re.search(r"only those benchmarks \((.*?)\)", guide, re.S).group(1)
    assert re.findall(r"`([\w-]+)`", named) == [b.name for b in evidence.BENCHMARKS]


# -- what the pages name exists --------------------------------------------------------------------------------------

# The hand-written pages: the generated evidence pages and the changelog (which names what was removed) aside.
WRITTEN = [
    page
    for page in _pages()
    if not page.is_relative_to(DOCS / "evidence") and page.name not in ("evidence.md", "CHANGELOG.md", "changelog.md")
]
REPO_PATH = re.compile(r"(?<![\w/.-])((?:tests|examples|scripts|benchmarks)/[\w/.-]+\.(?:py|sh))(?:::(\w+))?")
DOTTED = re.compile(r"(?<![\w/.-])hardbatch(?:\.[A-Za-z_]\w*)+")
NOT_NAMES = {"md", "py", "pt", "lock", "json", "csv", "NAME"}  # file names, and the API page's placeholder


def _resolves(name: str) -> bool:
    """Whether ``name`` (``hardbatch.x.y``) is a module, or an attribute of the longest module prefix of it."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(value, part):
                return False
            value = getattr(value, part)
        return True
    return False


@pytest.mark.parametrize("page", WRITTEN, ids=_name)
def test_the_files_a_page_names_exist(page):
    """Test files everywhere; examples/, scripts/ and benchmarks/ files outside the policy cards, which also quote
    their authors' repositories (whose folders have the same names). test_NAME.py is a placeholder."""
    card = page.parent == DOCS / "policies"
    missing = []
    for path, function in REPO_PATH.findall(page.read_text()):
        if "NAME" in path or (card and not path.startswith("tests/")):
            continue
        if not (ROOT / path).exists():
            missing.append(path)
        elif function and not re.search(rf"^def {function}\(", (ROOT / path).read_text(), re.M):
            missing.append(f"{path}::{function}")
    assert not missing, f"{_name(page)} names files or tests that do not exist: {', '.join(sorted(set(missing)))}"


@pytest.mark.parametrize("page", WRITTEN, ids=_name)
def test_the_hardbatch_names_a_page_uses_exist(page):
    names = {name for name in DOTTED.findall(page.read_text()) if name.split(".")[-1] not in NOT_NAMES}
    missing = sorted(name for name in names if not _resolves(name))
    assert not missing, f"{_name(page)} names what the package does not have: {', '.join(missing)}"


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub and mkdocs' toc both make it for these pages (lower case, punctuation dropped,
    spaces as hyphens)."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text))


def test_the_readmes_links_lead_somewhere():
    """mkdocs checks the site's links; the README is not part of the site, so its relative links are checked here:
    the file exists, and the anchor is one of its headings."""
    broken = []
    for target in re.findall(r"\]\(([^)#:]+)(?:#([\w-]+))?\)", README.read_text()):
        path, anchor = ROOT / target[0], target[1]
        if not path.exists():
            broken.append(target[0])
        elif anchor:
            text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("    "))
            if anchor not in {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}:
                broken.append(f"{target[0]}#{anchor}")
    assert not broken, f"README.md links to what does not exist: {', '.join(broken)}"
