"""Write docs/results.md from the runs scripts/results.sh trained: one section per training set, claims checked.

Usage: python scripts/results_page.py RUNS_DIR DOC [--seconds S] [--readme README.md]

RUNS_DIR holds one folder per setting (clean, imbalance10, noise20), each a `hardbatch compare` tree. Every
number on the page is computed here from the saved runs (no training); each setting's full report and plots
are written beside the page, in DOC's folder under results/SETTING/. With --readme, that file's headline table
(between the markers <!-- results:begin --> and <!-- results:end -->) is replaced by the page's, with its answers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

from hardbatch.report.claims import check_claims, GroupResult
from hardbatch.report.build import (
    LAST_EPOCHS, REFERENCE_DELTA, Group, arm_stats, build_report, chosen_arm, group_runs, load_runs, machines,
)
from hardbatch.fileio import atomic_write_bytes
from hardbatch.metrics import has_interval, paired_difference

SETTINGS = {
    "clean": "the clean training set",
    "imbalance10": "a long-tailed training set (`--imbalance 10`: the largest class 10× the smallest)",
    "noise20": "a noisy training set (`--label-noise 0.2`: 20% of the training labels replaced by another class)",
}
COMMAND = "bash scripts/results.sh"
MARKERS = ("<!-- results:begin -->", "<!-- results:end -->")


def pts(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:+.2f}"


def pct(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def ci(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]" if has_interval(low, high) else f"{mean:+.2f} (no CI)"


def excludes_zero(low: float, high: float) -> bool:
    return has_interval(low, high) and (low > 0 or high < 0)


def arm(group: Group, policy: str, value: float | None = None):
    return group.arm(policy, value)


def paired(a, b, last: bool = False) -> tuple[float, float, float]:
    """Seed-paired difference a − b in points (final top-1, or the last-epochs mean), with its 95% interval."""
    if a is None or b is None:
        return math.nan, math.nan, math.nan
    va = a.last_accs() if last else a.values("final_test_acc")
    vb = b.last_accs() if last else b.values("final_test_acc")
    seeds = sorted(set(va) & set(vb))
    d = paired_difference([va[s] for s in seeds], [vb[s] for s in seeds])
    return 100 * d.mean, 100 * d.low, 100 * d.high


class Setting:
    """One training set's runs, grouped and summarised as the report does."""

    def __init__(self, name: str, root: Path, doc_dir: Path):
        self.name, self.root = name, root
        runs, damaged = load_runs(root)
        if damaged:
            print(f"{name}: left out {len(damaged)} damaged runs: {damaged}", file=sys.stderr)
        groups = group_runs(runs)
        if len(groups) != 1:
            raise SystemExit(f"{root}: expected one group of runs (one data set and network), found {len(groups)}")
        self.group = groups[0]
        self.rows = arm_stats(self.group)
        self.runs = len(runs)
        self.report_dir = doc_dir / "results" / name
        build_report(root, self.report_dir)
        self.chosen, self.chosen_on = chosen_arm(self.rows)
        self.reference = next(r for r in self.rows if r.is_reference)

    def row(self, policy: str, value: float | None = None):
        return next((r for r in self.rows if r.policy == policy and (value is None or r.value == value)), None)

    def claims(self):
        result = GroupResult(self.group.settings["dataset"], self.group.settings["model"], self.rows, self.chosen,
                             self.chosen_on)
        return check_claims([result])[:3]  # the three general claims; the others name CIFAR/STL-10 runs


def headline(settings: list[Setting]) -> str:
    lines = ["| training set | δ = 1 top-1 % | δ chosen on validation | Δ top-1, points [95% CI] | "
             f"Δ last-{LAST_EPOCHS} mean [95% CI] | fewer epochs to T % | rule − random at that δ | uniform | "
             "selective-backprop | infobatch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        c = s.chosen
        rnd = paired(arm(s.group, "hardbatch", c.delta), arm(s.group, "random", c.delta), last=True)
        peers = [s.row(p) for p in ("uniform", "selective-backprop", "infobatch")]
        lines.append("| " + " | ".join([
            s.name, pct(s.reference.final_acc_mean), f"{c.delta:g}",
            ci(c.diff_points, c.diff_low, c.diff_high),
            ci(c.last_diff_points, c.last_diff_low, c.last_diff_high),
            f"{c.fewer_epochs_pct:+.0f}" if not math.isnan(c.fewer_epochs_pct) else "—",
            ci(*rnd) + " (last-3)",
            *[pct(p.final_acc_mean) if p else "—" for p in peers],
        ]) + " |")
    return "\n".join(lines)


def arm_table(s: Setting) -> str:
    uniform = arm(s.group, "uniform")
    lines = [f"| arm | final top-1 % ± std | last-{LAST_EPOCHS} mean % | Δ vs δ = 1 (last-{LAST_EPOCHS}) | Δ vs uniform (last-{LAST_EPOCHS}) "
             "| Δ vs random at the same δ (last-3) | balanced top-1 % | epochs to T (reached) | samples back-propagated | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, a in zip(s.rows, s.group.arms):
        vs_random = paired(a, arm(s.group, "random", a.delta), last=True) if a.policy == "hardbatch" and a.delta < 1 \
            else (math.nan,) * 3
        lines.append("| " + " | ".join([
            a.label, f"{pct(r.final_acc_mean)} ± {100 * r.final_acc_std:.2f}", pct(r.last_acc_mean),
            "reference" if r.is_reference else ci(r.last_diff_points, r.last_diff_low, r.last_diff_high),
            "reference" if a is uniform else ci(*paired(a, uniform, last=True)),
            ci(*vs_random),
            pct(r.final_bacc_mean),
            f"{r.epochs_to_target_mean:.1f} ({r.target_reached}/{r.n})",
            f"{r.samples_backpropagated_mean:,.0f}", f"{r.train_seconds_mean:.1f}",
        ]) + " |")
    return "\n".join(lines)


def did_not_help(s: Setting) -> list[str]:
    """Plain sentences: where the paper's rule hurt, made no measurable difference, or did no better than a control."""
    out = []
    for r in s.rows:
        if r.policy != "hardbatch" or r.delta >= REFERENCE_DELTA:
            continue
        d = r.delta
        final, last = (r.diff_low, r.diff_high), (r.last_diff_low, r.last_diff_high)
        if not math.isnan(final[1]) and final[1] < 0 and last[1] < 0:
            out.append(f"δ = {d:g} **lost accuracy** against δ = 1: {ci(r.diff_points, *final)} points final, "
                       f"{ci(r.last_diff_points, *last)} on the last-{LAST_EPOCHS} mean (both intervals below 0).")
        elif not has_interval(*last):
            out.append(f"δ = {d:g} is **undecided** against δ = 1 on the last-{LAST_EPOCHS} mean: "
                       f"{ci(r.last_diff_points, *last)} points (too few seeds, or zero spread).")
        elif not excludes_zero(*last):
            out.append(f"δ = {d:g} made **no measurable difference** to δ = 1 on the last-{LAST_EPOCHS} mean: "
                       f"{ci(r.last_diff_points, *last)} points (the interval contains 0).")
        for control in ("random", "cyclic"):
            m, lo, hi = paired(arm(s.group, "hardbatch", d), arm(s.group, control, d), last=True)
            if not math.isnan(m) and not (lo > 0):
                out.append(f"δ = {d:g} did **no better than `{control}`** at the same δ (same steps and samples, no "
                           f"loss signal): {ci(m, lo, hi)} points on the last-{LAST_EPOCHS} mean.")
    best_peer = max((r for r in s.rows if r.policy in ("uniform", "selective-backprop", "infobatch")),
                    key=lambda r: r.last_acc_mean, default=None)
    best_ours = max((r for r in s.rows if r.policy == "hardbatch"), key=lambda r: r.last_acc_mean)
    if best_peer is not None and best_peer.last_acc_mean > best_ours.last_acc_mean:
        out.append(f"The best of the peers, `{best_peer.policy}` ({pct(best_peer.last_acc_mean)}% last-"
                   f"{LAST_EPOCHS} mean), beat the best δ of the paper's rule (δ = {best_ours.delta:g}, "
                   f"{pct(best_ours.last_acc_mean)}%).")
    return out


def verdicts(settings: list[Setting]) -> list[str]:
    """The page's answer, one sentence per training set, judged on the last-epochs mean (not the final epoch)."""
    out = []
    for s in settings:
        c = s.chosen
        rule = arm(s.group, "hardbatch", c.delta)
        vs_ref = (c.last_diff_points, c.last_diff_low, c.last_diff_high)
        vs_random = paired(rule, arm(s.group, "random", c.delta), last=True)
        vs_uniform = paired(rule, arm(s.group, "uniform"), last=True)
        gain = excludes_zero(*vs_ref[1:]) and vs_ref[1] > 0
        signal = excludes_zero(*vs_random[1:]) and vs_random[1] > 0
        if gain and signal:
            answer = "**helped**, and more than training the same number of random batches"
        elif gain:
            answer = "**helped** against δ = 1, but not measurably more than the `random` control"
        elif excludes_zero(*vs_ref[1:]):
            answer = "**hurt**"
        elif not has_interval(*vs_ref[1:]):
            answer = "is **undecided** (no 95% interval: too few seeds, or zero spread)"
        else:
            answer = "made **no measurable difference**"
        final = ci(c.diff_points, c.diff_low, c.diff_high)
        out.append(
            f"**{s.name}**: at the δ chosen on {s.chosen_on} (δ = {c.delta:g}) the rule {answer}: last-"
            f"{LAST_EPOCHS} mean {ci(*vs_ref)} points against δ = 1, {ci(*vs_random)} against `random`, "
            f"{ci(*vs_uniform)} against `uniform` (final epoch alone, as the claim table below uses it: {final}).")
    return out


def section(s: Setting) -> str:
    rel = f"results/{s.name}"
    slug = s.group.slug
    parts = [f"## {SETTINGS.get(s.name, s.name).capitalize()}", "",
             f"{s.runs} runs; full report: [`{rel}/report.md`]({rel}/report.md). δ = 1 reaches "
             f"{pct(s.reference.final_acc_mean)}% final test top-1 (balanced {pct(s.reference.final_bacc_mean)}%). "
             f"Target T for epochs-to-target = {pct(s.reference.target_acc)}% (0.99 × the δ = 1 mean best).", "",
             arm_table(s), "",
             f"**Claims of the paper**, judged at δ = {s.chosen.delta:g} (best δ < 1 on the {s.chosen_on} split):", "",
             "| claim | verdict | evidence |", "|---|---|---|"]
    parts += [f"| {c.claim} | **{c.verdict}** | {c.evidence.replace('|', '/')} |" for c in s.claims()]
    parts += ["", "**Where it did not help:**", ""]
    parts += [f"- {line}" for line in did_not_help(s)] or ["- Nowhere in this setting: every δ < 1 beat δ = 1 and both "
                                                           "controls with intervals above 0."]
    exposure = [r for r in s.rows if not math.isnan(r.mislabelled_trained_mean)]
    if exposure:
        parts += ["", "**Mislabelled samples**: their share of the training split, and of the samples each arm "
                      "back-propagated after the first epoch (a loss-seeking rule trains them more often):", "",
                  "| arm | % of the data | % of back-propagated samples after epoch 1 |", "|---|---|---|"]
        for r, a in zip(s.rows, s.group.arms):
            parts.append(f"| {a.label} | {pct(r.mislabelled_in_data_mean)} | {pct(r.mislabelled_trained_after_warmup_mean)} |")
    parts += ["", f"![accuracy per epoch]({rel}/{slug}_accuracy.png)",
              f"![final accuracy against δ]({rel}/{slug}_final_vs_delta.png)",
              f"![accuracy against back-propagated samples]({rel}/{slug}_accuracy_vs_samples.png)",
              f"![speed-accuracy front]({rel}/{slug}_front.png)", ""]
    return "\n".join(parts)


def machine_sentence(settings: list[Setting]) -> str:
    """Which machine(s) trained the page's runs, and what another machine reproduces."""
    listed = "; ".join(machines([run for s in settings for arm in s.group.arms for run in arm.runs.values()]))
    unknown = "; unknown: not recorded by the hardbatch that trained them" if "unknown" in listed else ""
    return (f"Machine: {listed}{unknown}. Another machine (another CPU model, kernel capability or thread count) "
            "rounds differently and training amplifies it, so it reproduces the verdicts within the seed spread, "
            "not the digits.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("doc", type=Path)
    parser.add_argument("--seconds", type=float, help="wall-clock the runs took (for the page)")
    parser.add_argument("--readme", type=Path, help="a README whose headline table (between the markers "
                                                    f"{MARKERS[0]} and {MARKERS[1]}) is replaced by the page's")
    args = parser.parse_args()
    settings = [Setting(name, args.runs / name, args.doc.parent) for name in SETTINGS if (args.runs / name).is_dir()]
    if not settings:
        raise SystemExit(f"no settings under {args.runs}; run {COMMAND} first")
    took = f" in {args.seconds / 60:.0f} minutes" if args.seconds else ""
    table = headline(settings)
    answers = [f"- {line}" for line in verdicts(settings)]
    page = [
        "# Results: does training on hard batches help on Fashion-MNIST?", "",
        f"Regenerated by `{COMMAND}`{took} on a 2-core CPU ({dt.date.today().isoformat()}); every number below comes "
        "from the runs it trains. Fashion-MNIST (60,000 / 10,000 28×28 grey images, 10 classes), LeNet-5 (`--model "
        "lenet`), 8,000 class-balanced training images (`--train-subset 8000`; the 10,000 test images stay whole), "
        "5% of the training set held out to choose δ (`--val-fraction 0.05`), batch 64 (N = 125 mini-batches), 10 "
        "epochs of constant-rate SGD (lr 0.05, momentum 0.9), seeds 0, 1, 2. Arms: the paper's rule (`hardbatch`) at "
        "δ ∈ {0.2, 0.5, 0.8, 1.0}; its control `random` at δ ∈ {0.2, 0.5, 0.8} and `cyclic` at δ = 0.5 (at δ = 1 both "
        "train exactly what the rule trains); ordinary reshuffled SGD (`uniform`), Selective Backprop and InfoBatch "
        "(docs/policies/). The network is small and the budget short, so accuracies sit below the data set's best "
        "(0.88–0.93 for 2-conv CNNs on all 60,000 images); the comparison is between arms at equal cost.", "",
        "## Headline", "",
        table, "",
        f"Δ are seed-paired differences to δ = 1 of the same seed (points, 95% Student-t interval over 3 pairs). "
        f"**Last-{LAST_EPOCHS} mean** is the test top-1 averaged over each run's last {LAST_EPOCHS} epochs: at a "
        "constant learning rate the final epoch alone can swing by a point or more, and this figure is not decided "
        "by where the last epoch landed. \"Rule − random\" is the paired difference between the paper's rule and the "
        "`random` control at the chosen δ: the share of any gain due to the loss signal rather than to training "
        "fewer distinct batches. Peers: final top-1 %, mean over seeds. Epochs to T: T = 0.99 × the δ = 1 mean best.",
        "",
        "With 3 seeds the intervals are wide (a t-interval over 3 pairs multiplies the standard error by 4.3): a "
        "difference of a few tenths of a point between arms is not resolved here, and the page says so wherever an "
        "interval contains 0.", "",
        "**Train s** is each run's own wall-clock training time on whatever else the machine was running; seconds "
        "from a shared 2-core machine vary by several times between identical runs, so compare costs by **samples "
        "back-propagated** (and samples loaded and forwarded, in each report's cost table), which do not depend on "
        "the machine.", "",
        "## What the evidence says", "",
        *answers, "",
        *[section(s) for s in settings],
        "## Reproduce", "",
        f"`{COMMAND}` (after `make setup`; `apt-get install dataset-fashion-mnist` provides the data) trains every "
        "run into `runs/results/SETTING/` and rewrites this page, its reports under `docs/results/` and the README's "
        "headline table. Rerunning skips finished runs. `hardbatch report runs/results/SETTING` rebuilds one "
        "setting's full report without training.", "",
        machine_sentence(settings), "",
    ]
    atomic_write_bytes(args.doc, "\n".join(page).encode())
    if args.readme:
        text = args.readme.read_text()
        if MARKERS[0] not in text or MARKERS[1] not in text:
            raise SystemExit(f"{args.readme}: no {MARKERS[0]} ... {MARKERS[1]} markers to put the table between")
        head, rest = text.split(MARKERS[0], 1)
        tail = rest.split(MARKERS[1], 1)[1]
        block = "\n".join([table, "", "Judged on the last-3 mean at the δ chosen on validation:", "", *answers])
        atomic_write_bytes(args.readme, f"{head}{MARKERS[0]}\n{block}\n{MARKERS[1]}{tail}".encode())
    print(f"wrote {args.doc} and {len(settings)} reports under {args.doc.parent / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
