"""The ``hardbatch`` command line: its commands (train, compare, sweep and report), their parsers and ``main``.

Every flag of a run setting is generated from ``RunConfig``'s declarations, and every policy flag from the policies'
own (``hardbatch.flags``): a setting is declared once, and its flag, help and check follow from there. Only this
module and ``hardbatch.flags`` see argparse.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from hardbatch import distributed
from hardbatch.config import POLICY_NAMES
from hardbatch.errors import BadValue, SettingsError, TrainingDiverged, UsageError
from hardbatch.fileio import NoSpaceLeft
from hardbatch.flags import (
    add_budget_flags,
    add_run_flags,
    check_policy_flags,
    config_from_args,
    given,
)
from hardbatch.version import __version__

# What each optional package a command may need is installed with (``pip install 'hardbatch[EXTRA]'``).
EXTRAS = {
    "tqdm": "cli",
    "matplotlib": "cli",
    "scipy": "cli",
    "sklearn": "cli",
    "mnist1d": "cli",
    "PIL": "cli",
    "tensorboard": "tensorboard",
    "lightning": "lightning",
    "transformers": "transformers",
    "accelerate": "accelerate",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2), matching hardbatch's own input errors."""

    def error(self, message: str) -> NoReturn:  # argparse calls it for every error in the command line
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_train(args: argparse.Namespace) -> int:
    from hardbatch.run.checks import resume_config
    from hardbatch.run.experiment import train_run

    check_policy_flags(args)
    cfg = config_from_args(args)
    if args.resume:  # the saved settings, with only the flags given on top (a --protocol names itself, not its presets)
        flags_given = given(args) + (["protocol"] if args.protocol else [])
        cfg = distributed.on_writer(resume_config, args.out, cfg, flags_given)
    summary = train_run(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if not distributed.is_writer():
        return 0
    print(
        f"final test top-1 {100 * summary['final_test_acc']:.2f}% (best {100 * summary['best_test_acc']:.2f}% "
        f"at epoch {summary['best_epoch']}), {summary['optimizer_steps']} steps, "
        f"{summary['train_seconds']:.1f} s training -> {args.out}"
    )
    return 0


def _report_not_done(not_done: list) -> None:
    for run, why in not_done:
        print(f"not done: {run.path}: {why}", file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> int:
    from hardbatch.run.plan import execute, plan_compare

    check_policy_flags(args)
    plan = plan_compare(
        config_from_args(args),
        args.deltas,
        args.seeds,
        args.out,
        policies=args.policies,
        budgets=args.budgets,
        budget_policies=args.budget_policies,
    )
    not_done = execute(plan, progress=not args.no_progress)
    if not distributed.is_writer():
        return 1 if not_done else 0
    _report_not_done(not_done)
    if len(not_done) < len(plan):  # every other run of the plan is finished
        cmd_report(argparse.Namespace(dir=args.out, out=None, no_plots=False, target_acc=args.target_acc))
    return 1 if not_done else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from hardbatch.run.plan import check_plan, execute, parse_shard, plan_sweep, shard

    check_policy_flags(args)
    bases = [config_from_args(args, protocol) for protocol in (args.protocols or [None])]
    plan = plan_sweep(
        bases,
        args.datasets,
        args.models,
        args.deltas,
        args.seeds,
        args.out,
        policies=args.policies,
        budgets=args.budgets,
        budget_policies=args.budget_policies,
    )
    index, count = parse_shard(args.shard)
    mine = shard(plan, index, count)
    data = check_plan(mine)
    if not distributed.is_writer():  # the same plan; only the writer prints it and writes the report
        return 0 if args.dry_run else (1 if execute(mine, progress=False, data=data) else 0)
    print(f"sweep: {len(plan)} runs in the grid, {len(mine)} in shard {index}/{count}", file=sys.stderr)
    if args.dry_run:
        for run in mine:
            print(run.path)
        return 0
    failures = execute(mine, progress=not args.no_progress, keep_going=True, data=data)
    _report_not_done(failures)
    if count == 1 and len(failures) < len(mine):
        cmd_report(argparse.Namespace(dir=args.out, out=None, no_plots=False, target_acc=args.target_acc))
    elif count > 1:
        print(f"shard {index}/{count} done; when every shard is, run: hardbatch report {args.out}", file=sys.stderr)
    return 1 if failures else 0


def cmd_report(args: argparse.Namespace) -> int:
    from hardbatch.report import Comparison, build_report

    left_out: list = []
    comparison = Comparison(
        getattr(args, "method", None) or "hardbatch", getattr(args, "reference", None) or "hardbatch"
    )
    path, tables = build_report(
        args.dir,
        args.out,
        plots=not args.no_plots,
        target=getattr(args, "target_acc", None),
        left_out=left_out,
        comparison=comparison,
        per_arm=tuple(getattr(args, "per_arm", None) or ()),  # compare and sweep have none
        metric=getattr(args, "metric", None) or "acc",
    )
    print(tables)
    print(
        "\nEach row is an arm; Δ is its difference to the reference over the same seeds, with the half-width (±) and "
        "ends of its 95% interval:\nan interval that contains 0 is no measurable difference, and 'detectable Δ' is "
        "the smallest difference these seeds could have shown."
    )
    print(
        f"Next: {path} holds each arm's cost, its accuracy at equal cost and the plots; to try a policy in your own "
        f"loop, see the quickstart (README.md)."
    )
    for item in left_out:  # damaged, unfinished, or a second run of an arm's seed
        print(f"hardbatch report: skipped {item.kind} run {item.path}: {item.why}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hardbatch",
        description="Train neural networks on their highest-loss mini-batches (Sahayam et al., arXiv 2304.03486): "
        "after one warm-up epoch, each round trains only the floor(δ·N) mini-batches with the highest "
        "stored loss. δ = 1 is ordinary mini-batch training. Its controls and peers run through the same "
        "loop (--policy). train, compare and sweep also run under torchrun (DDP over several GPUs or CPU "
        "processes): torchrun --nproc-per-node P -m hardbatch train ...",
    )
    parser.add_argument("--version", action="version", version=f"hardbatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train one run into a run directory",
        description="Train one run. Writes config.json, history.csv (per epoch), trace.csv "
        "(per step), and summary.json last.",
    )
    add_run_flags(p)
    p.add_argument("--out", required=True, help="run directory to create")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run in --out with its saved settings: no other flag is needed, and "
        "one that differs from the saved value is refused (a finished run is left as is)",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compare",
        help="train every policy × δ × seed, then write a report",
        description="Train every policy × δ × seed into sub-directories of --out (finished runs are "
        "skipped when repeated), then print the table and write report.md, summary.csv, "
        "runs.csv and PNG plots, with every arm's cost and its accuracy at equal cost. "
        "A run that another process is training is skipped and named; the report covers "
        "the finished runs and the exit status is 1. Example: hardbatch compare --policies "
        "uniform hardbatch random cyclic selective-backprop infobatch --deltas 0.5 1.0 "
        "--out runs/peers",
    )
    p.add_argument(
        "--deltas",
        type=float,
        nargs="+",
        default=[0.2, 0.5, 0.8, 1.0],
        metavar="Δ",
        help="δ values of the policies that take one (default 0.2 0.5 0.8 1.0; include 1.0 for the reference)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S", help="seeds (default 0 1 2)")
    add_run_flags(p, skip=("seed", "delta"), many=False)
    p.add_argument(
        "--policies",
        nargs="+",
        metavar="NAME",
        help=f"policies to compare, each with every δ it uses (the others run once): "
        f"{', '.join(POLICY_NAMES)}, or all = every one at its defaults (rho-loss needs "
        f"--val-fraction) (default: --policy)",
    )
    add_budget_flags(p)
    p.add_argument("--out", required=True, help="directory for the runs and the report")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "sweep",
        help="train a grid of data sets × models × δ × seeds (× protocols), shardable",
        description="Train the grid (protocols ×) data sets × models × seeds × δ into "
        "--out/DATASET/MODEL/PROTOCOL/delta-D_seed-S, in order. Finished runs are skipped "
        "and interrupted ones resumed, so rerunning the same command continues the sweep. "
        "--shard I/N takes every N-th run starting at I: N machines (a SLURM array, "
        "separate hosts) split one grid with no coordination and their folders merge. "
        "A run that crashes, or that another process is training (a run directory is "
        "locked while in use), is reported and the sweep goes on (exit status 1).",
    )
    p.add_argument(
        "--deltas",
        type=float,
        nargs="+",
        default=[0.2, 0.5, 0.8, 1.0],
        metavar="Δ",
        help="δ values (default 0.2 0.5 0.8 1.0)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S", help="seeds (default 0 1 2)")
    add_run_flags(p, many=True, skip=("seed", "delta"))
    add_budget_flags(p)
    p.add_argument("--out", required=True, help="root directory of the sweep")
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="run only shard I of N (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
    )
    p.add_argument("--dry-run", action="store_true", help="list this shard's run directories and exit")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "report",
        help="rebuild the report from saved runs, without training",
        description="Rebuild report.md, summary.csv, runs.csv and plots from the finished runs under DIR.",
    )
    p.add_argument("dir", help="directory holding run directories (searched recursively)")
    p.add_argument("--out", help="where to write the report (default: DIR)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--target-acc",
        type=float,
        metavar="T",
        help="test accuracy (fraction) T for epochs-to-target (default: 0.99 × the reference's mean best)",
    )
    p.add_argument(
        "--method",
        metavar="POLICY",
        help=f"the policy the report judges: its best setting along its axis (δ, β, prune ratio), chosen "
        f"on validation, against --reference; one of {', '.join(POLICY_NAMES)} (default hardbatch, "
        f"the paper's rule)",
    )
    p.add_argument(
        "--reference",
        metavar="POLICY[@VALUE]",
        help="the arm differences are taken to: a policy, optionally at a value of its axis, e.g. uniform, "
        "hardbatch@1, infobatch@0.3; a δ policy without a value means δ = 1, another policy its "
        "default (default hardbatch = the paper's rule at δ = 1, its baseline)",
    )
    p.add_argument(
        "--per-arm",
        nargs="+",
        default=[],
        metavar="SETTING",
        help="settings chosen for each arm, e.g. lr (a learning rate tuned per arm, as scripts/evidence.py "
        "does): they do not split groups, and each arm must hold one value",
    )
    p.add_argument(
        "--metric",
        choices=("acc", "bacc"),
        default="acc",
        help="what the verdicts, uniform's frontier and the tables judge by: acc (test top-1, the default) "
        "or bacc (balanced test top-1: the mean of the per-class accuracies, for long-tailed data)",
    )
    p.set_defaults(func=cmd_report)
    return parser


def _join_shard(argv: list[str]) -> list[str]:
    """``--shard -1/2`` -> ``--shard=-1/2``: argparse takes a value starting with '-' for an option and would say
    "expected one argument"; joined, the value reaches parse_shard, whose error names the accepted form."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--shard" and arg.startswith("-"):
            out[-1] = f"--shard={arg}"
        else:
            out.append(arg)
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or ``kill``'s stop), raised where the process is so that it ends as Ctrl-C does."""


def _on_sigterm(pid: int) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != pid:  # a forked DataLoader worker: end as the signal would have ended it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated()

    return handler


def main(argv: list[str] | None = None) -> int:
    """Under torchrun every process runs this; the checks are made alike on each, so only rank 0 prints errors."""
    args = build_parser().parse_args(_join_shard(list(sys.argv[1:] if argv is None else argv)))
    created = False
    catch = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    previous = signal.signal(signal.SIGTERM, _on_sigterm(os.getpid())) if catch else None
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        created = args.command != "report" and distributed.init()
        return args.func(args)
    except UsageError as e:
        if distributed.is_writer():
            print(
                f"hardbatch {args.command}: error: {e.as_flag() if isinstance(e, (BadValue, SettingsError)) else e}",
                file=sys.stderr,
            )
        return 2
    except ModuleNotFoundError as e:  # an optional package the command needs (``pip install 'hardbatch[cli]'``)
        package = (e.name or "").split(".")[0]
        extra = EXTRAS.get(package)
        if extra is None:
            raise
        if distributed.is_writer():
            print(
                f"hardbatch {args.command}: error: this needs the {package} package: pip install 'hardbatch[{extra}]'",
                file=sys.stderr,
            )
        return 2
    except NoSpaceLeft as e:
        hint = "rerun with --resume" if args.command == "train" else "run the same command again"
        print(f"hardbatch {args.command}: error: {e}; free some space and {hint}", file=sys.stderr)
        return 1
    except TrainingDiverged as e:
        print(f"hardbatch {args.command}: training diverged: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        hint = (
            f"train --resume --out {args.out} (it keeps the saved settings)"
            if args.command == "train"
            else "the same command again"
        )
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"hardbatch {args.command}: {how}; run {hint} to continue from the last finished epoch", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    finally:
        if catch:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if created:
            distributed.shutdown()
