"""report.md assembled from the groups' tables, plots, claims and definitions, with summary.csv and runs.csv beside it
(``build_report``: the one entry point of ``hardbatch report``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from hardbatch.errors import UsageError
from hardbatch.fileio import atomic_write_text, csv_text, ensure_writable_dir
from hardbatch.report.claims import claims_section
from hardbatch.report.frontier import frontiers
from hardbatch.report.glossary import definitions
from hardbatch.report.groups import PAPER, Comparison, Group, by_protocol, drop_duplicates, group_runs, shown_settings
from hardbatch.report.load import DAMAGED, DUPLICATE, METRICS, UNFINISHED, LeftOut, Run, check_metric, load_runs
from hardbatch.report.machines import machine_note
from hardbatch.report.stats import ArmStats, arm_stats, choose_arm, target_accuracy
from hardbatch.report.tables import (
    cost_table,
    fewer_epochs_answers,
    fewer_epochs_table,
    frontier_table,
    markdown_table,
    noise_table,
    overview_table,
    per_class_table,
    placement_table,
)
from hardbatch.report.wording import number
from hardbatch.version import __version__

RUN_COLUMNS = (
    "path",
    "dataset",
    "model",
    "policy",
    "delta",
    "seed",
    "final_test_acc",
    "final_test_bacc",
    "best_test_acc",
    "epochs_to_plateau",
    "optimizer_steps",
    "train_seconds",
)  # runs.csv
# How report.md lists the runs it left out, by kind: its heading and what the runs are.
LEFT_OUT = {
    DAMAGED: ("Damaged runs, left out", "finished run(s) could not be read"),
    DUPLICATE: ("Duplicate runs, left out", "run(s) repeat the settings and seed of another run"),
    UNFINISHED: ("Unfinished runs, left out", "run folder(s) hold a config.json but no summary.json"),
}


def _chosen_text(comparison: Comparison) -> str:
    """How sections name the method's chosen arm: "δ < 1" for the paper's rule, else the method's setting."""
    return "δ < 1" if comparison.is_paper else f"`{comparison.method}` setting"


def _tuned_text(group: Group) -> str:
    """ " Chosen per arm: δ = 0.5 lr 0.1, uniform lr 0.3." for settings chosen per arm; "" when there are none."""
    chosen = [f"{a.label} {k} {v}" for a in group.arms for k, v in a.tuned.items()]
    return f" Chosen per arm: {', '.join(chosen)}." if chosen else ""


def _choice_lines(stats: list[ArmStats], comparison: Comparison) -> list[str]:
    on_val, on_test = choose_arm(stats, "validation"), choose_arm(stats, "test")
    what = _chosen_text(comparison)
    if on_val is not None:
        lines = [
            f"Best {what} chosen on the validation split: **{on_val.arm}** (validation "
            f"{number(on_val.final_val_acc, scale=100)}%, test {number(on_val.final.mean, scale=100)}%)."
        ]
    else:
        lines = [f"Best {what} on a validation split: not available (runs without --val-fraction)."]
    if on_test is not None:
        lines += [
            "",
            f"Best {what} chosen on test (optimistic, as the released code did): {on_test.arm} "
            f"({number(on_test.final.mean, scale=100)}%).",
        ]
    return [*lines, ""]


def _figures(paths: list[Path]) -> list[str]:
    return [line for path in paths for line in (f"![{path.stem}]({path.name})", "")]


def _frontier_section(group: Group, stats: list[ArmStats], plot_dir: Path | None) -> list[str]:
    """Uniform's compute frontier and every arm against it, and whether the rule generalizes in fewer epochs; []
    without uniform at two budgets or more."""
    metric = stats[0].metric
    fronts = frontiers(group, metric)
    if not fronts:
        return []
    section = [
        f"### Against uniform's compute frontier: {group.title}",
        "",
        f"`uniform` at {len(next(iter(fronts.values())).points)} budgets, each run its learning-rate schedule "
        "decayed within its own budget (final test accuracy, mean over seeds, and mean cost):",
        "",
        frontier_table(fronts, metric),
        "",
        "Each other arm at the cost it spent (mean over seeds), against the frontier there: per seed, the "
        "straight line between uniform's runs of that seed at the two neighbouring budgets; Δ is the "
        "seed-paired difference to it (points). Beyond the smallest or largest budget's cost: no verdict "
        "(no extrapolation).",
        "",
        placement_table(stats),
        "",
    ]
    if plot_dir is not None:
        from hardbatch.report.plots import draw_frontier

        if (drawn := draw_frontier(group, stats, plot_dir)) is not None:
            section += _figures([drawn])
    if (table := fewer_epochs_table(stats)) is not None:
        section += [
            f"### Does the rule generalize in fewer epochs? {group.title}",
            "",
            "The paper's rule and δ = 1 at shorter budgets, each run its schedule decayed within its own "
            "budget, against uniform's frontier (the paper's claim: \"generalizes in 26.47% less number of "
            'epochs"):',
            "",
            table,
            "",
            *(line for answer in fewer_epochs_answers(stats) for line in (f"**{answer}**", "")),
        ]
    return section


def _group_section(
    group: Group, stats: list[ArmStats], plot_dir: Path | None, target: float | None, comparison: Comparison
) -> str:
    target, how = target_accuracy(group, target, comparison, stats[0].metric)
    settings = ", ".join(f"{k} {v}" for k, v in shown_settings(group).items())
    section = [
        f"## {group.title}",
        "",
        f"Settings: {settings}.{_tuned_text(group)}",
        "",
        f"Target T = {number(target, 2, 100)}% test {stats[0].metric_name} ({how}).",
        "",
        markdown_table(stats, comparison),
        "",
        *_choice_lines(stats, comparison),
    ]
    if (note := machine_note(group)) is not None:
        section += [note, ""]
    if (table := per_class_table(group)) is not None:
        section += ["Final test top-1 % per class, mean over seeds:", "", table, ""]
    if group.settings.get("label_noise"):
        section += [
            f"Label noise {group.settings['label_noise']:g}: relabelled samples among those each arm trained "
            "(mean over seeds).",
            "",
            noise_table(stats),
            "",
        ]
    if plot_dir is not None:
        from hardbatch.report.plots import draw_group_plots

        section += _figures(draw_group_plots(group, stats, plot_dir, comparison))
    section += [f"### Cost and accuracy at equal cost: {group.title}", "", cost_table(stats, comparison), ""]
    if plot_dir is not None:
        from hardbatch.report.plots import draw_cost_plots

        section += _figures(draw_cost_plots(group, stats, plot_dir))
    section += _frontier_section(group, stats, plot_dir)
    return "\n".join(section)


def _overview_section(
    groups: list[Group], stats: dict[str, list[ArmStats]], protocol: str, comparison: Comparison
) -> str:
    by_dataset: dict[str, list[Group]] = {}
    for g in groups:
        by_dataset.setdefault(g.settings["dataset"], []).append(g)
    named = f" — protocol {protocol}" if protocol else ""
    parts = [f"## Overview{named}: final test top-1 %, mean ± std (n seeds)", ""]
    for dataset, members in by_dataset.items():
        parts += [f"### {dataset}", "", overview_table(members, stats, comparison), ""]
    return "\n".join(parts)


def _left_out_sections(left_out: list[LeftOut]) -> list[str]:
    sections = []
    for kind, (heading, what) in LEFT_OUT.items():
        these = [item for item in left_out if item.kind == kind]
        if these:
            sections.append(
                "\n".join(
                    [f"## {heading}", "", f"{len(these)} {what} and are not in any table:", ""]
                    + [f"- `{item.path}`: {item.why}" for item in these]
                )
                + "\n"
            )
    return sections


def _left_out_text(left_out: list[LeftOut]) -> str:
    """ ", 2 damaged and 1 unfinished run(s) left out (listed at the end)", or "" when none was."""
    counts = [f"{n} {kind}" for kind in LEFT_OUT if (n := sum(item.kind == kind for item in left_out))]
    if not counts:
        return ""
    counted = counts[0] if len(counts) == 1 else f"{', '.join(counts[:-1])} and {counts[-1]}"
    return f", {counted} run(s) left out (listed at the end)"


def build_report(
    root: Path | str,
    out_dir: Path | str | None = None,
    plots: bool = True,
    target: float | None = None,
    left_out: list[LeftOut] | None = None,
    comparison: Comparison = PAPER,
    per_arm: tuple[str, ...] = (),
    metric: str = "acc",
) -> tuple[Path, str]:
    """Write report.md, summary.csv (one row per arm), runs.csv and PNG plots for all runs under ``root``.

    ``comparison`` names the method judged and its reference (default: the paper's rule against δ = 1);
    ``per_arm``: settings chosen per arm, which do not split groups (``group_runs``); ``metric``: what the verdicts,
    the frontier and the tables judge by ("acc" test top-1, "bacc" balanced test top-1). Damaged runs, unfinished
    runs and second runs of an arm's seed are left out and listed at the end of report.md; pass a list as
    ``left_out`` to receive them (``LeftOut``). Returns the report's path and the per-group tables as text for the
    terminal.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"no such directory: {str(root)!r}")
    if target is not None and not (0.0 < target <= 1.0):
        raise UsageError(f"target accuracy must be a fraction in (0, 1], got {target}")
    check_metric(metric)
    runs, skipped = load_runs(root)
    runs, duplicates = drop_duplicates(runs, tuple(per_arm))
    skipped += duplicates
    if left_out is not None:
        left_out.extend(skipped)
    if not runs:
        damaged = [item for item in skipped if item.kind == DAMAGED]
        detail = f"; {len(damaged)} damaged, the first: {damaged[0].why}" if damaged else ""
        raise UsageError(f"no readable finished runs (directories with summary.json) under {str(root)!r}{detail}")
    return write_report(
        runs, skipped, root, out_dir if out_dir is not None else root, plots, target, comparison, per_arm, metric
    )


def write_report(
    runs: list[Run],
    skipped: list[LeftOut],
    root: Path,
    out_dir: Path | str,
    plots: bool = True,
    target: float | None = None,
    comparison: Comparison = PAPER,
    per_arm: tuple[str, ...] = (),
    metric: str = "acc",
    built: str | None = None,
) -> tuple[Path, str]:
    """``build_report``'s files for ``runs`` (read from under ``root``; ``skipped``: the runs left out), wherever the
    runs came from (run folders, or an evidence page's compact records). ``built``: when and by what the report says
    it was built (default: now, by this hardbatch)."""
    out_dir = ensure_writable_dir(Path(out_dir))
    groups = group_runs(runs, comparison.method, tuple(per_arm))
    stats = {g.title: arm_stats(g, target, comparison, metric) for g in groups}
    tables = [
        f"{g.title}\n{markdown_table(stats[g.title], comparison)}" + (f"\n{note}" if (note := machine_note(g)) else "")
        for g in groups
    ]
    sections = [
        _overview_section(members, stats, protocol, comparison)
        for protocol, members in by_protocol(groups).items()
        if len(members) > 1
    ]
    sections += [_group_section(g, stats[g.title], out_dir if plots else None, target, comparison) for g in groups]
    sections += [claims_section(groups, stats, comparison), *_left_out_sections(skipped)]
    judged = "" if comparison.is_paper else f"; method `{comparison.method}` against {comparison.reference_label}"
    judged += "" if metric == "acc" else f"; judged on {METRICS[metric]} accuracy"
    built = built or f"{dt.datetime.now().isoformat(timespec='seconds')} by hardbatch {__version__}"
    header = (
        f"# hardbatch report\n\n{len(runs)} finished runs under `{root}`, {len(groups)} group(s)"
        f"{_left_out_text(skipped)}{judged}; built {built}.\n"
    )
    rows = [s.row() for g in groups for s in stats[g.title]]
    atomic_write_text(out_dir / "summary.csv", csv_text(rows, list(rows[0])))
    run_rows = [
        {
            "path": str(r.path.relative_to(root)) if r.path != root else ".",
            **r.config.to_dict(),
            "delta": r.config.delta,
            **r.summary,
        }
        for r in runs
    ]
    atomic_write_text(out_dir / "runs.csv", csv_text(run_rows, RUN_COLUMNS))
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join([header, *sections, definitions()]))
    return path, "\n\n".join(tables)
