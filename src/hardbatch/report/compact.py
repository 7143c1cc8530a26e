"""Compact records of an evidence regeneration: each benchmark's runs (settings, seed, per-epoch accuracy and cost,
the commit), learning-rate choice and declaration in one gzip'd JSON-lines file, written in a stable order, and read
back as the Runs the page is rendered from, without run folders.

A records folder holds ``page.json`` (what the regeneration was: its date, hardbatch version, CPU minutes, the
benchmarks on the page and those still to run) and ``BENCH.jsonl.gz`` per benchmark: its first line the benchmark
(declaration, where its runs were, lr_choice.json, the main runs left out), then one line per finished run, tuning
runs then main runs, each in path order. Floats are kept to FLOAT_DIGITS significant digits (far below what the page
shows), and the same runs always give the same bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardbatch.config import RunConfig
from hardbatch.errors import UsageError
from hardbatch.fileio import atomic_write_text, ensure_writable_dir, read_json
from hardbatch.records import COST_COLUMNS, HistoryRow, Summary, check_record, check_rows, exposure_of
from hardbatch.report.load import DAMAGED, LeftOut, Run, load_runs

FORMAT = 1  # the layout of a records folder
META = "page.json"
SUFFIX = ".jsonl.gz"
FLOAT_DIGITS = 6  # significant digits kept of every float: 1e-6 of an accuracy, far below the page's 0.01 points
PHASES = ("tune", "main")  # OUT/BENCH/tune: the learning-rate grid on the tuning seeds; OUT/BENCH/main: the page's runs
# The per-epoch columns kept (history.csv's others, the losses, top-5 and the learning rate, no report reads).
HISTORY_COLUMNS = (
    "epoch",
    "step",
    "test_acc",
    "test_bacc",
    "val_acc",
    "val_bacc",
    "train_seconds",
    "eval_seconds",
    *COST_COLUMNS,
)


@dataclass(frozen=True)
class Declared:
    """What the page reads of a benchmark declaration (report.benchmarks.Benchmark), as its records keep it."""

    name: str
    title: str
    settings: dict
    arms: tuple[str, ...]  # the arms' labels
    lrs: tuple[float, ...]
    seeds: int
    tune_seeds: int
    target: float | None = None
    metric: str = "acc"

    @classmethod
    def of(cls, bench: Any) -> Declared:
        """A benchmark declaration (scripts/evidence.py's ``Benchmark``) as records keep it."""
        return cls(
            bench.name,
            bench.title,
            dict(bench.settings),
            tuple(getattr(a, "label", a) for a in bench.arms),
            tuple(bench.lrs),
            bench.seeds,
            bench.tune_seeds,
            bench.target,
            getattr(bench, "metric", "acc"),
        )


@dataclass
class Archive:
    """One benchmark's evidence: its declaration, where its runs were (``root``: OUT/BENCH), lr_choice.json, the
    finished tuning and main runs, and the main runs left out (unfinished: they failed at their learning rate)."""

    bench: Declared
    root: str
    choice: dict
    main: list[Run] = field(default_factory=list)
    tune: list[Run] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)


def archive_folders(bench: Any, out: Path | str) -> Archive:
    """``out/BENCH``'s finished runs and lr_choice.json; UsageError naming a damaged run."""
    root = Path(out) / bench.name
    runs = {}
    left_out = []
    for phase in PHASES:
        runs[phase], skipped = load_runs(root / phase) if (root / phase).is_dir() else ([], [])
        if damaged := [item for item in skipped if item.kind == DAMAGED]:
            raise UsageError(f"{root / phase}: damaged run {damaged[0].path}: {damaged[0].why}")
        left_out += skipped if phase == "main" else []
    return Archive(
        Declared.of(bench), root.as_posix(), read_json(root / "lr_choice.json"), runs["main"], runs["tune"], left_out
    )


# ---- writing ----------------------------------------------------------------------------------------------------


def _rounded(value: Any) -> Any:
    """``value`` with every float kept to FLOAT_DIGITS significant digits and NaN as null (JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.{FLOAT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def run_record(run: Run, phase: str, root: Path) -> dict:
    """One run as a records line: its phase and folder (relative to OUT/BENCH/PHASE), resolved settings, seed, the
    commit it ran at, its machine and versions, per-epoch accuracy and cost (columns), and summary.json."""
    history = {c: [row.get(c, math.nan) for row in run.history] for c in HISTORY_COLUMNS}
    return _rounded(
        {
            "phase": phase,
            "path": _relative(run.path, root / phase),
            "seed": run.config.seed,
            "git_commit": run.environment.get("git_commit"),
            "config": run.config.to_dict(),
            "environment": {k: v for k, v in run.environment.items() if k in ("versions", "device")},
            "history": history,
            "summary": run.summary,
        }
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def records_text(archive: Archive) -> str:
    """The benchmark's records file, uncompressed: its header line, then its runs in (phase, path) order."""
    root = Path(archive.root)
    header = {
        "format": FORMAT,
        "benchmark": vars(archive.bench),
        "root": archive.root,
        "lr_choice": archive.choice,
        "left_out": [
            {"path": _relative(item.path, root), "kind": item.kind, "why": item.why} for item in archive.left_out
        ],
    }
    lines = [_dumps(_rounded(header))]
    runs = [run_record(run, phase, root) for phase in PHASES for run in getattr(archive, phase)]
    lines += [_dumps(r) for r in sorted(runs, key=lambda r: (PHASES.index(r["phase"]), r["path"]))]
    return "\n".join(lines) + "\n"


def _gzip(text: str) -> bytes:
    """``text`` gzip'd with no file name and time in the header, so the same text always gives the same bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as f:
        f.write(text.encode())
    return buffer.getvalue()


def write_records(directory: Path | str, archives: Sequence[Archive], meta: dict) -> list[Path]:
    """``directory/page.json`` (``meta``) and one BENCH.jsonl.gz per archive; records of benchmarks not in
    ``archives`` are removed, so the folder holds exactly the page's. Returns the files written."""
    directory = ensure_writable_dir(Path(directory))
    names = {a.bench.name for a in archives}
    for stale in directory.glob(f"*{SUFFIX}"):
        if stale.name[: -len(SUFFIX)] not in names:
            stale.unlink()
    paths = []
    for archive in archives:
        path = directory / f"{archive.bench.name}{SUFFIX}"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two shards may write the same records at once
        tmp.write_bytes(_gzip(records_text(archive)))
        tmp.replace(path)
        paths.append(path)
    atomic_write_text(directory / META, json.dumps({"format": FORMAT, **meta}, indent=2, sort_keys=True) + "\n")
    return [*paths, directory / META]


# ---- reading ----------------------------------------------------------------------------------------------------


def _nan(values: list) -> list:
    return [math.nan if v is None else v for v in values]


def _run(record: dict, root: Path) -> Run:
    config = RunConfig.from_dict(record["config"])
    history = record["history"]
    columns = {c: _nan(history[c]) for c in HISTORY_COLUMNS}
    rows = [{c: columns[c][e] for c in HISTORY_COLUMNS} for e in range(len(columns["epoch"]))]
    check_rows(rows, KeptHistoryRow)
    summary = check_record(Summary, record["summary"])
    return Run(
        root / record["phase"] / record["path"],
        config,
        summary,
        rows,
        {**record["environment"], "git_commit": record["git_commit"]},
        exposure_of(summary),
    )


# The history columns records keep, each checked as history.csv's is (HistoryRow's declaration of it).
KeptHistoryRow = dataclasses.make_dataclass(
    "KeptHistoryRow",
    [
        (c, HistoryRow.__annotations__[c], dataclasses.field(metadata=f.metadata))
        for c in HISTORY_COLUMNS
        for f in [HistoryRow.__dataclass_fields__[c]]
    ],
    kw_only=True,
)


def read_archive(path: Path) -> Archive:
    """One benchmark's records file; UsageError naming the file and line that cannot be read."""
    line_no = 0
    try:
        with gzip.open(path, "rt") as f:
            lines = f.read().splitlines()
        line_no = 1
        header = json.loads(lines[0])
        if header.get("format") != FORMAT:
            raise UsageError(f"records format {header.get('format')!r}, this hardbatch reads format {FORMAT}")
        declared = header["benchmark"]
        bench = Declared(**{**declared, "arms": tuple(declared["arms"]), "lrs": tuple(declared["lrs"])})
        root = Path(header["root"])
        archive = Archive(
            bench,
            header["root"],
            header["lr_choice"],
            left_out=[LeftOut(root / item["path"], item["kind"], item["why"]) for item in header["left_out"]],
        )
        for line_no, line in enumerate(lines[1:], start=2):  # noqa: B007 - the except clauses name the line
            record = json.loads(line)
            getattr(archive, record["phase"]).append(_run(record, root))
    except FileNotFoundError:
        raise UsageError(f"cannot read {path}: the file is missing") from None
    except UsageError as e:
        raise UsageError(f"cannot read {path} line {line_no}: {e}") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise UsageError(f"cannot read {path} line {line_no}: {type(e).__name__}: {e}") from None
    return archive


def read_records(directory: Path | str) -> tuple[dict, list[Archive]]:
    """``directory``'s page.json and its benchmarks' archives, in the page's order; UsageError if it holds none."""
    directory = Path(directory)
    if not (directory / META).exists():
        raise UsageError(f"no records in {directory}: no {META} (scripts/evidence.py writes them after training)")
    meta = read_json(directory / META)
    return meta, [read_archive(directory / f"{name}{SUFFIX}") for name in meta["benchmarks"]]
