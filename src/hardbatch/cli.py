"""The ``hardbatch`` command line: train, compare and report; the only module that sees argparse."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import fields

from hardbatch import __version__, distributed
from hardbatch.config import (
    AUGMENTS,
    DELTA_POLICIES,
    EVAL_MODES,
    NORMALIZATIONS,
    POLICY_NAMES,
    PRECISIONS,
    PROTOCOLS,
    SCHEDULES,
    STEMS,
    RunConfig,
    make_config,
)
from hardbatch.errors import TrainingDiverged, UsageError
from hardbatch.fileio import NoSpaceLeft
from hardbatch.params import flag

DEFAULTS = RunConfig()


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2), matching hardbatch's own input errors."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_run_flags(p: argparse.ArgumentParser, many: bool = False) -> None:
    """Flags shared by train, compare and sweep; ``many``: the grid flags --protocols/--datasets/--models."""
    from hardbatch.data import DATASETS
    from hardbatch.models import MODELS

    d = DEFAULTS
    p.add_argument("--protocols" if many else "--protocol", choices=list(PROTOCOLS), nargs="+" if many else None,
                   help="preset defaults: 'paper' = the released code's setup (128 px, ImageNet statistics, no "
                        "augmentation, fixed order, SGD lr 0.005 constant, batch 512, 100 epochs); 'modern' = crop+flip, "
                        "seeded batch partition, Nesterov SGD lr 0.1, wd 5e-4, cosine, batch 128, small stem, 100 "
                        "epochs. Flags given override the preset; config.json keeps the resolved values. "
                        "The defaults shown below are those without a protocol.")
    g = p.add_argument_group("data and model")
    if many:
        g.add_argument("--datasets", nargs="+", required=True, metavar="NAME", help=f"data sets: {', '.join(DATASETS)}")
        g.add_argument("--models", nargs="+", required=True, metavar="NAME", help=f"networks: {', '.join(MODELS)}")
    else:
        g.add_argument("--dataset", help=f"data set: {', '.join(DATASETS)} (default {d.dataset})")
        g.add_argument("--model", help=f"network: {', '.join(MODELS)} (default {d.model})")
    g.add_argument("--stem", choices=STEMS,
                   help="'small': stride-1 first convolution, no max-pool, for 32-px images (default imagenet)")
    g.add_argument("--data-dir", help="where data set files live (data sets that need files)")
    g.add_argument("--download", action="store_true", default=None, help="download the data set if missing")
    g.add_argument("--num-workers", type=int,
                   help="DataLoader worker processes (default: 0 for in-memory data sets, up to 8 for imagefolder)")
    g.add_argument("--image-size", type=int, help="resize images to this side length (default: native size; 64 for imagefolder)")
    g.add_argument("--augment", choices=AUGMENTS, help=f"training augmentation, applied on the device (default {d.augment})")
    g.add_argument("--normalize", choices=NORMALIZATIONS,
                   help=f"per-channel mean/std: the data set's own or ImageNet's (default {d.normalize})")
    g.add_argument("--val-fraction", type=float,
                   help="hold out this stratified fraction of the training set as a validation split, "
                        "evaluated every epoch, to choose δ without the test set (default 0)")
    g.add_argument("--mnist1d-samples", type=int, metavar="N",
                   help="mnist1d: how many samples its generator makes, N a multiple of 10, split 80/20 into train "
                        "and test as the generator does (default: the canonical 5,000, i.e. 4,000 / 1,000)")
    g.add_argument("--data-on-device", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the whole data set on the device (uint8), so loading is never the bottleneck")
    g = p.add_argument_group("training split", "Applied in this order after the validation split is taken, seeded by "
                                               "the run's seed; the validation and test splits are never changed.")
    g.add_argument("--train-subset", type=int, metavar="N",
                   help="train on a class-balanced random subset of N samples (from the number of classes up to the "
                        "split's size), e.g. to fit a CPU budget")
    g.add_argument("--imbalance", type=float, metavar="RHO",
                   help="long tail: class c keeps floor(n_c · RHO^(−c/(C−1))) of its samples, so the largest class is "
                        "RHO times the smallest (RHO >= 1; default 1 = as is)")
    g.add_argument("--label-noise", type=float, metavar="P",
                   help="give exactly round(P·n) training samples another class, drawn uniformly, never their own "
                        "(P in [0, 1); default 0); the run directory's relabelled.json records which")
    g = p.add_argument_group("selection", "policies (docs/policies/NAME.md): hardbatch = the paper's rule; random and "
                                          "cyclic = its controls at the same δ; uniform = ordinary SGD reshuffled every "
                                          "epoch; selective-backprop and infobatch = its peers. δ applies to "
                                          f"{', '.join(DELTA_POLICIES)}.")
    if many:
        g.add_argument("--policies", nargs="+", metavar="NAME",
                       help=f"policies to compare, each with every δ it uses: {', '.join(POLICY_NAMES)}, or all "
                            f"(default: --policy). With hardbatch at δ = 1, random and cyclic skip δ = 1: "
                            f"they would train the same batches in the same order")
    g.add_argument("--policy", help=f"batch-selection policy: {', '.join(POLICY_NAMES)} (default {d.policy})")
    _add_policy_params(g)
    g.add_argument("--shuffle-partition", action=argparse.BooleanOptionalAction, default=None,
                   help="cut a seeded random permutation into the fixed mini-batches, or (--no-shuffle-partition) "
                        "the data set's own order (default: the data-set order under --protocol paper for cifar10, "
                        "cifar100 and stl10, as the released code; a seeded random cut otherwise)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=_positive_int, help=f"budget in epochs of N optimizer steps (default {d.epochs})")
    g.add_argument("--batch-size", type=_positive_int,
                   help=f"mini-batch size B (default {d.batch_size}); under torchrun the global batch, split evenly "
                        f"over the processes, so it must divide by their number")
    g.add_argument("--lr", type=float, help=f"SGD learning rate (default {d.lr})")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help=f"learning-rate schedule; cosine decays to 0 over the step budget (default {d.schedule})")
    g.add_argument("--momentum", type=float, help=f"SGD momentum (default {d.momentum})")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None, help="Nesterov momentum")
    g.add_argument("--weight-decay", type=float, help=f"SGD weight decay (default {d.weight_decay})")
    g = p.add_argument_group("evaluation and hardware")
    g.add_argument("--eval-mode", choices=EVAL_MODES,
                   help="'eval': model.eval() (default); 'train': BatchNorm batch statistics, as the released code")
    g.add_argument("--target-acc", type=float,
                   help="test accuracy (fraction) for epochs-to-target (default: in reports 0.99 × the δ = 1 mean "
                        "best; in a single run's summary.json 0.99 × its own best)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto: CUDA when present)")
    g.add_argument("--precision", choices=PRECISIONS, help="autocast precision; auto = bf16 on CUDA, fp32 elsewhere")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on for CUDA)")
    g.add_argument("--sync-bn", action="store_true", default=None,
                   help="under torchrun, BatchNorm normalises over the global batch (SyncBatchNorm) instead of each "
                        "process's share, as one process would; CUDA only (refused elsewhere, and with --eval-mode "
                        "train); with one process it changes nothing (README \"Multi-GPU\")")
    g.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="torch.compile the model for training, with BACKEND (default inductor; aot_eager checks "
                        "tracing without code generation). Every policy; scoring and evaluation forwards run "
                        "uncompiled. A runtime choice: a finished run is reused whatever its value")
    g.add_argument("--tensorboard", metavar="DIR",
                   help="also log every per-epoch metric to TensorBoard under DIR (compare/sweep: one sub-directory "
                        "per run); needs pip install 'hardbatch[tensorboard]'")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (on a terminal) or progress lines (elsewhere: one per finished run, and one "
                        "per epoch at most every 30 s)")


def _add_policy_params(g) -> None:
    """One flag per policy hyper-parameter, generated from the declaration in the policy's file (its RunConfig field)."""
    for f in fields(RunConfig):
        meta = f.metadata
        if not meta.get("policies"):
            continue
        where = f"[{', '.join(meta['policies'])}] "
        if isinstance(f.default, bool):
            # --name and --no-name: a setting that is on by default can be turned off.
            g.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                           help=where + meta["help"] + f" (default {'on' if f.default else 'off'})")
        else:
            kind = int if f.type in ("int", "int | None") else str if isinstance(f.default, str) else float
            default = "" if f.default is None or isinstance(f.default, str) else f" (default {f.default:g})"
            g.add_argument(flag(f.name), type=kind, metavar=meta["metavar"], help=where + meta["help"] + default)


def _check_policy_flags(args: argparse.Namespace) -> None:
    """A policy hyper-parameter given on the command line must be used by a chosen policy."""
    chosen = getattr(args, "policies", None) or [getattr(args, "policy", None) or RunConfig.policy]
    for f in fields(RunConfig):
        users = f.metadata.get("policies")
        if users and getattr(args, f.name, None) is not None and not set(users) & set(chosen):
            raise UsageError(f"{flag(f.name)} applies to policy {', '.join(users)}, not to {', '.join(chosen)}")


def _given(args: argparse.Namespace) -> list[str]:
    """The RunConfig fields whose flags the command line gives (``--protocol`` itself aside)."""
    return [f.name for f in fields(RunConfig) if f.name != "protocol" and getattr(args, f.name, None) is not None]


def config_from_args(args: argparse.Namespace, protocol: str | None = None) -> RunConfig:
    """A RunConfig from the flags given; flags left out keep the protocol's or RunConfig's defaults."""
    return make_config(protocol or getattr(args, "protocol", None), **{name: getattr(args, name) for name in _given(args)})


def cmd_train(args: argparse.Namespace) -> int:
    from hardbatch.run.experiment import resume_config, train_run

    _check_policy_flags(args)
    cfg = config_from_args(args)
    if args.resume:  # the saved settings, with only the flags given on top (a --protocol names itself, not its presets)
        given = _given(args) + (["protocol"] if args.protocol else [])
        cfg = distributed.on_writer(resume_config, args.out, cfg, given)
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

    _check_policy_flags(args)
    plan = plan_compare(config_from_args(args), args.deltas, args.seeds, args.out, policies=args.policies)
    not_done = execute(plan, progress=not args.no_progress)
    if not distributed.is_writer():
        return 1 if not_done else 0
    _report_not_done(not_done)
    if len(not_done) < len(plan):  # every other run of the plan is finished
        cmd_report(argparse.Namespace(dir=args.out, out=None, no_plots=False, target_acc=args.target_acc))
    return 1 if not_done else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from hardbatch.run.plan import check_plan, execute, parse_shard, plan_sweep, shard

    _check_policy_flags(args)
    bases = [config_from_args(args, protocol) for protocol in (args.protocols or [None])]
    plan = plan_sweep(bases, args.datasets, args.models, args.deltas, args.seeds, args.out, policies=args.policies)
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
    from hardbatch.report.build import Comparison, build_report

    damaged: list = []
    comparison = Comparison(getattr(args, "method", None) or "hardbatch", getattr(args, "reference", None) or "hardbatch")
    path, tables = build_report(args.dir, args.out, plots=not args.no_plots, target=getattr(args, "target_acc", None),
                                damaged=damaged, comparison=comparison,
                                per_arm=tuple(getattr(args, "per_arm", None) or ()))  # compare and sweep have none
    print(tables)
    print(f"\nreport: {path} (with each arm's cost and its accuracy at equal cost)")
    for run, why in damaged:
        print(f"hardbatch report: skipped damaged run {run}: {why}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hardbatch",
        description="Train neural networks on their highest-loss mini-batches (Sahayam et al., arXiv 2304.03486): "
                    "after one warm-up epoch, each round trains only the floor(δ·N) mini-batches with the highest "
                    "stored loss. δ = 1 is ordinary mini-batch training. train, compare and sweep also run under "
                    "torchrun (DDP over several GPUs or CPU processes): torchrun --nproc-per-node P -m hardbatch "
                    "train ... (README \"Multi-GPU\").",
    )
    parser.add_argument("--version", action="version", version=f"hardbatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train one run into a run directory",
                       description="Train one run. Writes config.json, history.csv (per epoch), trace.csv "
                                   "(per step), and summary.json last.")
    p.add_argument("--delta", type=float, help=f"fraction of mini-batches trained per round, in (0, 1] (default {DEFAULTS.delta})")
    p.add_argument("--seed", type=int, help=f"seed for initialisation and any randomness (default {DEFAULTS.seed})")
    _add_run_flags(p)
    p.add_argument("--out", required=True, help="run directory to create")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an unfinished run in --out with its saved settings: no other flag is needed, and "
                           "one that differs from the saved value is refused (a finished run is left as is)")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train every policy × δ × seed, then write a report",
                       description="Train every policy × δ × seed into sub-directories of --out (finished runs are "
                                   "skipped when repeated), then print the table and write report.md, summary.csv, "
                                   "runs.csv and PNG plots, with every arm's cost and its accuracy at equal cost. "
                                   "A run that another process is training is skipped and named; the report covers the finished runs and the "
                                   "exit status is 1. Example: hardbatch compare --policies uniform hardbatch random cyclic "
                                   "selective-backprop infobatch --deltas 0.5 1.0 --out runs/peers")
    p.add_argument("--deltas", type=float, nargs="+", default=[0.2, 0.5, 0.8, 1.0], metavar="Δ",
                   help="δ values (default 0.2 0.5 0.8 1.0; include 1.0 for the reference)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S", help="seeds (default 0 1 2)")
    p.add_argument("--policies", nargs="+", metavar="NAME",
                   help=f"policies to compare, each with every δ it uses (the others run once): "
                        f"{', '.join(POLICY_NAMES)}, or all = every one at its defaults (rho-loss needs "
                        f"--val-fraction) (default: --policy)")
    _add_run_flags(p)
    p.add_argument("--out", required=True, help="directory for the runs and the report")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="train a grid of data sets × models × δ × seeds (× protocols), shardable",
                       description="Train the grid (protocols ×) data sets × models × seeds × δ into "
                                   "--out/DATASET/MODEL/PROTOCOL/delta-D_seed-S, in order. Finished runs are skipped "
                                   "and interrupted ones resumed, so rerunning the same command continues the sweep. "
                                   "--shard I/N takes every N-th run starting at I: N machines (a SLURM array, "
                                   "separate hosts) split one grid with no coordination and their folders merge. "
                                   "A run that crashes, or that another process is training (a run directory is "
                                   "locked while in use), is reported and the sweep goes on (exit status 1).")
    p.add_argument("--deltas", type=float, nargs="+", default=[0.2, 0.5, 0.8, 1.0], metavar="Δ",
                   help="δ values (default 0.2 0.5 0.8 1.0)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S", help="seeds (default 0 1 2)")
    _add_run_flags(p, many=True)
    p.add_argument("--out", required=True, help="root directory of the sweep")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="run only shard I of N (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--dry-run", action="store_true", help="list this shard's run directories and exit")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="rebuild the report from saved runs, without training",
                       description="Rebuild report.md, summary.csv, runs.csv and plots from the finished runs under DIR.")
    p.add_argument("dir", help="directory holding run directories (searched recursively)")
    p.add_argument("--out", help="where to write the report (default: DIR)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--target-acc", type=float,
                   help="test accuracy (fraction) T for epochs-to-target (default: 0.99 × the reference's mean best)")
    p.add_argument("--method", metavar="POLICY",
                   help=f"the policy the report judges: its best setting along its axis (δ, β, prune ratio), chosen "
                        f"on validation, against --reference; one of {', '.join(POLICY_NAMES)} (default hardbatch, "
                        f"the paper's rule)")
    p.add_argument("--reference", metavar="POLICY[@VALUE]",
                   help="the arm differences are taken to: a policy, optionally at a value of its axis, e.g. uniform, "
                        "hardbatch@1, infobatch@0.3; a δ policy without a value means δ = 1, another policy its "
                        "default (default hardbatch = the paper's rule at δ = 1, its baseline)")
    p.add_argument("--per-arm", nargs="+", default=[], metavar="SETTING",
                   help="settings chosen for each arm, e.g. lr (a learning rate tuned per arm, as scripts/evidence.py "
                        "does): they do not split groups, and each arm must hold one value")
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


def _on_sigterm(pid: int):
    def handler(signum, frame):
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
    try:
        created = args.command != "report" and distributed.init()
        return args.func(args)
    except UsageError as e:
        if distributed.is_writer():
            print(f"hardbatch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NoSpaceLeft as e:
        hint = "rerun with --resume" if args.command == "train" else "run the same command again"
        print(f"hardbatch {args.command}: error: {e}; free some space and {hint}", file=sys.stderr)
        return 1
    except TrainingDiverged as e:
        print(f"hardbatch {args.command}: training diverged: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        hint = f"train --resume --out {args.out} (it keeps the saved settings)" if args.command == "train" else \
            "the same command again"
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"hardbatch {args.command}: {how}; run {hint} to continue from the last finished epoch", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    finally:
        if catch:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if created:
            distributed.shutdown()
