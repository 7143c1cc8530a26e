"""The evidence page (docs/evidence.md), its per-benchmark reports and the README's verdict block, rendered from an
evidence regeneration's compact records (``report.compact``): the same records always give the same page."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hardbatch.errors import UsageError
from hardbatch.fileio import atomic_write_text
from hardbatch.metrics import POWER
from hardbatch.report.benchmarks import (
    COLLAPSE_POINTS,
    DOC_DIR_NAME,
    FRONTIER,
    Result,
    section,
    summarise,
    training_cpu_minutes,
    verdict_table,
)
from hardbatch.report.compact import read_records
from hardbatch.report.machines import machines, packages

MARKERS = ("<!-- evidence:begin -->", "<!-- evidence:end -->")  # the README block the verdict table goes between
COMMAND = "make evidence"
RECORDS = "records"  # the compact records, beside the reports: docs/evidence/records/


def _fractions(budgets: Sequence[float]) -> str:
    shown = [f"{b:g}" for b in budgets] or ["none"]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def protocol(rule_delta: float, lr_rule: str = "", budgets: Sequence[float] = (0.25, 0.5, 0.75)) -> str:
    """The page's "Protocol" section; ``lr_rule``: the learning-rate rule as lr_choice.json states it; ``budgets``:
    the fractions of the epochs the frontier's runs also trained at."""
    rule = lr_rule or "the highest mean final validation accuracy of the grid"
    return f"""## Protocol

- **Arms**: the paper's rule (`hardbatch`) at δ = {rule_delta:g} and δ = 1, its controls `random` and `cyclic` at
  δ = {rule_delta:g} (same steps, no loss signal), ordinary reshuffled SGD (`uniform`), `rs2` (a fresh random subset
  each epoch, drawn without replacement across epochs), and every peer at its defaults: `selective-backprop`,
  `infobatch`, `composer-sb`, `seta`, `ies`, `rho-loss`, `bls` (docs/policies/). The constant-rate benchmarks (the
  paper's own setting) run the rule against δ = 1 only.
- **Budget**: the same number of epochs for every arm: E·N optimizer steps for the rule, its controls and the peers
  whose epoch is N steps; the peers that prune (`infobatch`, `seta`, `ies`, `bls`, `rs2`) or skip samples
  (`selective-backprop`, `composer-sb`, `rho-loss`) train less within it, which the cost table shows, with each arm's
  accuracy at the samples back-propagated and the process CPU seconds that the cheapest run spent. That view reads a
  longer run at an earlier evaluation, before its schedule has decayed, so it favours the arms that train less; the
  frontier below does not.
- **Uniform's compute frontier**: `uniform`, the rule and δ = 1 also train at {_fractions(budgets)} of the epochs,
  each run its learning-rate schedule decayed within its own budget. Uniform's budgets, at their mean cost over seeds
  (samples back-propagated, and process CPU seconds), make the frontier; between two neighbouring budgets it is a
  straight line in cost, and beyond the smallest and largest there is none (an arm outside is "outside the
  frontier", no verdict). Each arm is placed at the cost it spent (mean over seeds): for seed s the frontier there
  interpolates uniform's seed-s runs at the neighbouring budgets with the same weights for every seed, and the arm's
  difference to it is paired by seed, with its 95% interval: **above**, **below**, or level with the frontier. Where
  the rule at a shorter budget is above it, it "generalizes in fewer epochs" at equal compute.
- **Learning rate**: chosen per arm from the same grid on the validation split (`--val-fraction`; the test split
  never decides anything), stated before any run: {rule}. Each rate's median and its collapsed tuning seeds are in
  the tables below and `lr_choice.json`; every seed then runs at the chosen rate, at every budget. δ and the peers'
  own settings are not tuned.
- **Metric**: final test top-1, except on the long-tailed benchmarks (`--imbalance 10`), which are judged on balanced
  top-1 (the mean of the per-class accuracies) throughout: the learning rate, every difference, the frontier.
- **Seeds**: paired: seed s of every arm shares its data order, partition, initial weights and (with label noise)
  its relabelled samples.
- **Half-width**: each difference carries the half-width of its two-sided 95% Student-t interval over the seed pairs
  (±). **Detectable Δ** is the smallest true difference the comparison could have detected: the minimum
  detectable effect at {100 * POWER:.0f}% power, (t₀.₉₇₅ + t₀.₈₀) × SE with n − 1 degrees of freedom and
  SE = half-width / t₀.₉₇₅ (`hardbatch.metrics.detectable_difference`; `hardbatch report` shows it too). "No
  measurable difference" therefore rules out differences of about that size or more, not smaller ones.
- **Target**: half-width ≤ 0.5 points on MNIST-1D for the rule against every reference; where it is missed, the
  table says by how much and how many seeds would reach it at the observed spread.
- **Records**: every run leaves a compact record (its settings, seed, per-epoch accuracy and cost, the commit) in
  `docs/evidence/records/`; `python scripts/evidence.py --from-records` rewrites this page, its reports and the
  README block from them without training.
"""


def _minutes(value: float) -> str:
    return f"{value:.{0 if value >= 10 else 1}f}"


def page(
    results: list[Result],
    minutes: float,
    quick: bool,
    missing: Sequence[str] = (),
    training: float = 0.0,
    date: str = "",
) -> str:
    """The page; ``minutes`` the CPU minutes the regeneration's processes recorded, ``training`` the training CPU
    minutes of the runs on it, ``missing`` the benchmarks this regeneration did not cover (``--benchmarks``),
    ``date`` the regeneration's."""
    runs = [run for r in results for run in r.runs]
    tuning = sum(len(r.bench.arms) * len(r.bench.lrs) * r.bench.tune_seeds for r in results)
    head = (
        "# Evidence (quick check: not the page)"
        if quick
        else "# Evidence: does training on hard batches help? Every policy, one protocol, the power stated"
    )
    command = (
        COMMAND if not missing else f"python scripts/evidence.py --benchmarks {' '.join(r.bench.name for r in results)}"
    )
    lr_rule = next((r.choice.get("rule", "") for r in results), "")
    budgets = sorted({run.config.budget for run in runs if run.config.budget < 1.0})
    return "\n".join(
        [
            head,
            "",
            f"Regenerated by `{command}` ({date}): {len(runs)} runs on the page, {tuning} tuning "
            f"runs to choose learning rates (those at the chosen rate reused), "
            f"**{_minutes(minutes)} CPU minutes** in all "
            f"(one thread per process, `scripts/evidence.py`; the runs' own training CPU time, evaluation excluded: "
            f"{_minutes(training)} minutes). Every number below is computed from the runs' records.",
            "",
            *(
                [
                    f"**Partial**: this page covers {', '.join(r.bench.name for r in results)} only; still to run: "
                    f"{', '.join(missing)} (`{COMMAND}` trains them and rewrites the page). "
                    "The CPU minutes above are those the regeneration's processes have recorded so far: "
                    "each records its own when it stops, so processes still running count 0 there; "
                    "the runs' training CPU time is complete for the benchmarks on this page.",
                    "",
                ]
                if missing
                else []
            ),
            "## Verdicts",
            "",
            *(line for r in results for line in (f"### {r.bench.title}", "", verdict_table([r]), "")),
            "Δ is the seed-paired difference of final test accuracy "
            "(points; balanced top-1 where the benchmark says so), "
            f"against an arm or against {FRONTIER} at the cost the arm spent. An arm is **higher** or **lower** (above "
            "or below the frontier) when the 95% interval excludes 0. **Collapsed seeds**: seeds whose final accuracy "
            f"is {COLLAPSE_POINTS} points or more below their arm's median "
            "(a run that diverged or stalled at the arm's learning rate; for the frontier, over uniform's budgets); "
            "one such seed widens an interval far beyond what the others' spread would, "
            "and the seeds the target column asks for are those the observed spread, collapses included, needs.",
            "",
            protocol(results[0].rule_delta if results else 0.5, lr_rule, budgets),
            *[section(r) for r in results],
            "## Reproduce",
            "",
            f"`{COMMAND}` (or `python scripts/evidence.py`, with `--shard 0/2` and `--shard 1/2` in two processes) "
            "trains every run into `runs/evidence/` and rewrites this page, its reports under `docs/evidence/`, "
            "the compact records under `docs/evidence/records/` and the README's block. "
            "Rerunning skips finished runs and resumes interrupted ones; "
            "`python scripts/evidence.py --from-records` rebuilds the page from the committed records alone.",
            "",
            "Machine: " + "; ".join(machines(runs)) + ". Packages: " + "; ".join(packages(runs)) + ". The same "
            "commit, packages (`constraints.txt` pins them) and CPU kernels give the same digits; "
            "another CPU can round differently, which a run near its learning rate's edge of stability amplifies.",
            "",
        ]
    )


def check_readme(readme: Path) -> None:
    """UsageError unless ``readme`` holds the MARKERS the verdicts go between (checked before any training)."""
    try:
        text = readme.read_text()
    except OSError as e:
        raise UsageError(f"cannot read {readme}: {e.strerror or e}") from None
    if MARKERS[0] not in text or MARKERS[1] not in text:
        raise UsageError(f"{readme}: no {MARKERS[0]} ... {MARKERS[1]} markers to put the verdicts between")


def write_readme(readme: Path, results: list[Result], doc: Path) -> None:
    """Put the rule's verdicts (against every reference, per benchmark) and a link to the page (relative to the
    README) between ``readme``'s MARKERS."""
    check_readme(readme)
    head, rest = readme.read_text().split(MARKERS[0], 1)
    tail = rest.split(MARKERS[1], 1)[1]
    link = Path(os.path.relpath(doc.absolute(), readme.absolute().parent)).as_posix()
    block = f"{verdict_table(results, rule_only=True)}\n\nEvery arm, method, power and plots: [`{link}`]({link})."
    atomic_write_text(readme, f"{head}{MARKERS[0]}\n{block}\n{MARKERS[1]}{tail}")


def render(records: Path, doc: Path, readme: Path | None = None) -> list[Result]:
    """Write the page ``doc``, each benchmark's report and plots under ``doc.parent/evidence/BENCH`` and (``readme``)
    the README block, from the records in ``records`` alone; returns the benchmarks' results."""
    meta, archives = read_records(records)
    built = f"{meta['date']} by hardbatch {meta['version']}"
    results = [summarise(a, doc.parent / DOC_DIR_NAME, meta["rule_delta"], built) for a in archives]
    training = sum(training_cpu_minutes(r) for r in results)
    atomic_write_text(doc, page(results, meta["cpu_minutes"], meta["quick"], meta["missing"], training, meta["date"]))
    if readme is not None:
        write_readme(readme, results, doc)
    return results
