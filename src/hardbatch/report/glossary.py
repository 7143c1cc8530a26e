"""The definitions that close report.md: one entry per term, the epoch's meaning per policy read from the registry."""

from __future__ import annotations

import textwrap

from hardbatch.metrics import PLATEAU_POINTS, POWER
from hardbatch.policies import POLICIES
from hardbatch.report.groups import LAST_EPOCHS

WIDTH = 120  # report.md's lines, as the code's


def pass_policies() -> list[str]:
    """The policies whose epoch is one pass over the training samples, however many steps it takes (their
    ``epoch_is_round``); every other policy's epoch is N optimizer steps."""
    return [name for name, cls in POLICIES.items() if cls.epoch_is_round]


def _names(policies: list[str]) -> str:
    quoted = [f"`{p}`" for p in policies]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def epoch_axis_label() -> str:
    """The x label of the per-epoch plots: what an epoch is."""
    passes = pass_policies()
    return f"epoch (N optimizer steps; one pass for {', '.join(passes)})" if passes else "epoch (N optimizer steps)"


def _epoch() -> str:
    passes = pass_policies()
    steps = [name for name in POLICIES if name not in passes]
    text = (
        f"N optimizer steps, N = ⌊training samples / batch size⌋ fixed mini-batches, for every δ and for "
        f"{_names(steps)}"
    )
    if passes:
        text += (
            f"; for {_names(passes)} an epoch is one pass over the training samples, however many steps it "
            "takes (fewer where they prune or skip samples; history.csv records each epoch's steps)"
        )
    return text + (". Evaluation runs at the end of every epoch. For δ < 1 an epoch need not touch every sample.")


# (term, what it means), in the order report.md lists them; "{...}" fields are filled from the constants below.
ENTRIES = (
    ("Epoch", None),  # ``_epoch``: from the policy registry
    ("Final top-1", "test accuracy after the last epoch; mean ± sample standard deviation over seeds (n runs)."),
    (
        "Δ vs δ=1",
        "final top-1 of the arm minus that of ordinary training (δ = 1) with the same seed, in percentage "
        "points; the interval is a two-sided 95% Student-t interval over the seed-paired differences, shown "
        "as its half-width (±) and its ends [low, high]. Fewer than 3 pairs, or differences that are all "
        'equal, give no interval ("no CI: ..."), and such a difference decides no claim. The baseline is '
        'the paper\'s rule (`hardbatch`) at δ = 1 only, never a peer; a group without it says "no baseline". '
        "**Δ relative %** = 100 × Δ / mean final top-1 of δ = 1 over the same seeds.",
    ),
    (
        "Detectable Δ ({power:.0f}% power)",
        "the smallest true difference the comparison could have detected, the minimum detectable effect "
        "(t₀.₉₇₅ + t₀.₈₀) × SE, both Student-t quantiles with n − 1 degrees of freedom over the n seed pairs and "
        "SE = half-width / t₀.₉₇₅ their standard error: a true difference this large has its 95% interval exclude 0 "
        "with about {power:.0f}% probability. An interval that contains 0 rules out differences of about this size or "
        "more, not smaller ones.",
    ),
    (
        "Epochs to T",
        "the first epoch whose test accuracy is ≥ T, averaged over all runs; a run that never reaches T "
        "counts as its budget + 1 (censored: the truth is later), and (reached/n) says how many did. "
        "**Fewer epochs %** = 100 × (1 − epochs to T / epochs to T of δ = 1), both so averaged.",
    ),
    (
        "Balanced top-1",
        "the mean over classes of each class's final test top-1 accuracy; it weighs a rare class as "
        "much as a common one (the test split is never reshaped, so on a balanced test split it differs "
        "from top-1 only by how evenly errors spread over classes).",
    ),
    (
        "Mislabelled % of trained samples",
        "(runs with --label-noise): of all samples back-propagated, summed over "
        "steps, the share whose label the noise replaced, counted during training (summary.json's `mislabelled`); "
        '"after the first epoch" leaves the warm-up out (it trains every batch once). A ratio above 1 means the arm '
        "trained mislabelled samples more often than their share of the data.",
    ),
    (
        "Last-{last} mean",
        "test top-1 averaged over each run's last {last} epochs (then over seeds), with its "
        "seed-paired difference to δ = 1. At a constant learning rate, test accuracy can swing by "
        "points from one epoch to the next; this figure is not decided by where the last epoch "
        "happened to land.",
    ),
    ("Epochs to plateau", "the first epoch within {plateau:g} point of the run's own best test accuracy."),
    (
        "Train s",
        "wall-clock seconds spent in training steps (evaluation excluded), mean over seeds. **Train s to T**: "
        "the same, up to the end of the first epoch at or above T (the whole run's, for a run that never "
        "reaches T).",
    ),
    (
        "Cost",
        '(docs/guides/command-line.md, "Cost"): optimizer steps, samples back-propagated, samples forwarded '
        "without gradient (scoring), training seconds (evaluation excluded; choosing included), the process's "
        "CPU seconds over the same span (all its threads; other jobs inflate them far less than wall time, "
        "though not to nothing) and "
        "seconds spent choosing, means over seeds. **Δ vs uniform** / **Δ vs δ=1**: seed-paired differences of "
        "final top-1 (points, 95% t interval) to the `uniform` arm (ordinary SGD reshuffled every epoch) and to "
        "the paper's δ = 1 (fixed order). **Top-1 at equal cost**: each run's test top-1 at its last evaluation "
        "within the "
        "budget, the budget being the smallest total that every run of the group spent (no interpolation), "
        "mean over seeds.",
    ),
    (
        "Judged metric",
        "final test top-1 by default; `hardbatch report --metric bacc` (the evidence page's long-tailed "
        "benchmarks) judges every difference, verdict and the frontier on balanced top-1 instead, and "
        "the tables name it.",
    ),
    (
        "Budget",
        "the fraction F of the epoch budget a run trains: round(F × epochs) epochs (at least 1), with its "
        "learning-rate schedule decayed within them (`compare --budgets`), not a longer run read part-way. An "
        'arm at a budget short of the whole is labelled "..., budget F"; the arms at the full budget are '
        "compared with each other, the shorter ones are placed against uniform's frontier.",
    ),
    (
        "Uniform's frontier",
        "with `uniform` at two budgets or more: in each cost (samples back-propagated and the "
        "process's CPU seconds, each run's totals), the frontier's points are uniform's budgets at "
        "their mean cost over seeds with their mean final accuracy (the band: its 95% t interval); "
        "between two neighbouring budgets the frontier is a straight line in cost, and there is "
        "none beyond the smallest and largest budget: an arm whose cost lies outside that range is "
        '"outside the frontier", with no verdict. Every other arm is placed at the cost it spent '
        "(mean over seeds) c, between the budgets b₁ and b₂ of mean costs c₁ ≤ c ≤ c₂: w = (c − c₁) "
        "/ (c₂ − c₁), the same for every seed; for seed s the frontier there is f_s = (1 − w) × "
        "uniform's seed-s accuracy at b₁ + w × that at b₂, and d_s = the arm's seed-s accuracy − "
        "f_s. The mean of d over the seeds all three share, with its 95% t interval, gives the "
        "verdict: **above** or **below the frontier** when the interval excludes 0, else level with "
        "it (with the detectable Δ, as above).",
    ),
    (
        "Generalizes in fewer epochs",
        "the paper's rule (δ < 1) and δ = 1 also trained at shorter budgets, each placed "
        "against uniform's frontier: the paper's \"26.47% fewer epochs\" holds, in its "
        "honest form, where the rule at a budget short of the full one lies above the "
        "frontier in samples back-propagated.",
    ),
    (
        "Best δ chosen on validation",
        "the δ < 1 with the highest mean final accuracy on the held-out validation split "
        "(--val-fraction); its test accuracy is then an honest estimate. Chosen on test, "
        "it is optimistic.",
    ),
)


def definitions() -> str:
    """The "## Definitions" section of report.md (Markdown)."""
    values = {"power": 100 * POWER, "last": LAST_EPOCHS, "plateau": 100 * PLATEAU_POINTS}
    lines = ["## Definitions"]
    for term, text in ENTRIES:
        text = _epoch() if text is None else text.format(**values)
        entry = f"- **{term.format(**values)}**{' ' if text.startswith('(') else ': '}{text}"
        lines.append(textwrap.fill(entry, WIDTH, subsequent_indent="  ", break_on_hyphens=False))
    return "\n".join(lines) + "\n"
