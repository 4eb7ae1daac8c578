"""The reproduction ledger: each headline claim of the paper as an effect with a verdict.

Every row is computed from the chapters' results files (``results/<chapter>.json`` in the
artefact store), never typed by hand. A claim is stated as an *effect*, one number per
unit (a task, a method and task, or a random label-word choice), oriented so that the
paper claims it is above the row's *null* (the value of "no effect"). This book's
estimate is the mean over the units. Its 95% interval depends on what the row's numbers
are:

- where each unit's effect is measured on examples (accuracies on a test split, or
  Fig. 6's z-scores of them, by a bootstrap over the examples: `importance_errors`), the
  units are the book's tasks, taken as fixed, as the paper's claims are about its own
  tasks; the interval covers the measurement: which examples were drawn, which trials
  (each trial a prompt trained anew, so the spread between trials is what a rerun with
  other rounding or other seeds moves) and which random draws (a normal interval from
  each unit's standard error, `Effect.errors`). Paired comparisons on the same examples
  use each example's outcome, with the spread over trials or random draws added;
  comparisons whose per-example outcomes are not kept count the two accuracies as
  independent, which can only widen the interval. The table also shows Student's t over
  the units ("across units"), which asks instead whether the effect would generalise to
  other tasks like these;
- otherwise (similarities, correlations, timings), Student's t over the units.

**Which units enter a row** is decided before any verdict, from dev and from the
permutation null, never from the effect itself (`left_out`): a task enters a row that
rests on trained prompts only if its prompts learnt it (the lower end of the 95%
interval of their dev accuracy is at least `LEARNT_MARGIN` points above chance), and a
row that rests on skill neurons only if, besides, the top neuron of every binary
(sub)task beats the best of the label-permuted nulls. Each row lists the units it left
out and why.

**A verdict has two parts.** The *effect*, in the book's own units, against the null and
a *smallest effect of interest* ``δ`` stated with the claim:

- ``absent``: the interval lies inside null ± δ (whatever its sign, the effect is
  smaller than any that matters; checked first);
- ``present``: the interval lies above the null;
- ``reversed``: the interval lies below the null;
- ``undecided``: none of these; the row says what would decide it at today's estimate
  and spread.

Claims of equivalence ("about as well", "keeps accuracy", "do not depend") are judged
against their margin ``m`` instead (non-inferiority): ``equivalent`` where the interval
lies above null − m, ``not equivalent`` where it lies below, else ``undecided``.

The *size against the paper* compares a scale-free version of the effect (`Size`) with
the paper's value on the same scale: ``compatible`` (the paper's value is inside the
interval), ``smaller``, ``larger``, or ``not comparable`` (another method, or no number
in the paper). The *headline* comes from the effect alone: ``holds`` (present,
equivalent), ``fails`` (absent, reversed, not equivalent) or ``undecided``. A number
that merely differs from the paper's never makes a claim fail.

A row is ``knife-edge`` where moving an end of its interval by one standard error would
change its effect class, and ``unstable`` where a replicate of the book (every seed
shifted) gives it another headline (`stability`). The summary counts the effects that
stay present after Holm's adjustment for the number of claims (`holm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler
from scipy import stats

from helpers import paper, tables
from helpers.perturbation import correct_matrix
from helpers.store import ArtefactStore


class LedgerError(ValueError):
    """A results file does not hold what a ledger row needs."""


Results = Mapping[str, Mapping[str, Any]]
Kind = Literal["effect", "equivalence"]
Needs = Literal["nothing", "prompt", "neurons"]
HOLDS, FAILS, UNDECIDED, NOT_RUN = "holds", "fails", "undecided", "not run"
PRESENT, ABSENT, REVERSED = "present", "absent", "reversed"
EQUIVALENT, NOT_EQUIVALENT = "equivalent", "not equivalent"
COMPATIBLE, SMALLER, LARGER, NOT_COMPARABLE = "compatible", "smaller", "larger", "not comparable"
STABLE, UNSTABLE, KNIFE_EDGE, ONE_RUN = "stable", "unstable", "knife-edge", "one run"
LEVEL = 0.95
LEARNT_MARGIN = 5.0  # points above chance that a prompt's dev interval must clear


def _interval(
    units: Mapping[str, float], errors: Mapping[str, float] | None, level: float
) -> tuple[float, float, float, float, int | None]:
    """Mean over units, its interval, its standard error and the degrees of freedom
    (None: a normal interval from the units' own errors; else Student's t over them)."""
    values = np.asarray(list(units.values()), dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    if errors is not None:
        spread = np.asarray([errors[name] for name in units], dtype=float)
        se = math.sqrt(float((spread**2).sum())) / max(len(values), 1)
        half = stats.norm.ppf((1 + level) / 2) * se
        return mean, mean - half, mean + half, se, None
    if len(values) < 2:
        return mean, math.nan, math.nan, math.nan, None
    se = float(values.std(ddof=1)) / math.sqrt(len(values))
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * se
    return mean, mean - half, mean + half, se, len(values) - 1


@dataclass(frozen=True)
class Size:
    """A scale-free version of a row's effect, beside the paper's value on that scale.

    Attributes:
        estimate, low, high: this book's value and its 95% interval (NaN: not computed).
        paper: the paper's value on the same scale, or None (then not comparable).
        what: the scale in words.
        reason: why the row is not comparable, where it is not.
    """

    estimate: float
    low: float
    high: float
    paper: float | None
    what: str
    reason: str = ""

    @classmethod
    def ratio(
        cls,
        interval: tuple[float, float, float],
        denominator: float,
        paper_value: float | None,
        what: str,
        offset: float = 0.0,
    ) -> Size:
        """``offset + effect / denominator`` for the estimate and both ends (the
        denominator is taken as fixed); NaN where it is not positive."""
        if not denominator > 0:
            return cls(math.nan, math.nan, math.nan, paper_value, what, "no scale")
        mean, low, high = (offset + v / denominator for v in interval)
        return cls(mean, low, high, paper_value, what)


def not_comparable(reason: str) -> Size:
    """A row whose effect has no counterpart in the paper on a scale-free footing."""
    return Size(math.nan, math.nan, math.nan, None, "", reason)


@dataclass(frozen=True)
class Effect:
    """One claim's effect in one run: its value per unit, the null and how it is judged.

    Attributes:
        units: unit name -> effect (e.g. task -> accuracy points).
        null: the value under "no effect".
        paper: the paper's effect in the row's own units, or None where it gives no number
            (shown for reference; the size against the paper uses `size`).
        unit: what the numbers are (e.g. "points").
        errors: unit name -> standard error of that unit's effect from its measurement
            (examples, trials, random draws); with it the units are fixed and the
            interval covers the measurement alone. None: Student's t over the units.
        kind: ``effect`` (present / absent / reversed) or ``equivalence`` (judged against
            the margin ``smallest`` below the null).
        smallest: the smallest effect of interest (``effect``) or the margin
            (``equivalence``), in the row's units, stated before the data.
        size: the scale-free size against the paper.
        left_out: unit -> why it was left out of the row.
    """

    units: Mapping[str, float]
    null: float
    paper: float | None
    unit: str
    errors: Mapping[str, float] | None = None
    kind: Kind = "effect"
    smallest: float = 0.0
    size: Size | None = None
    left_out: Mapping[str, str] = field(default_factory=dict)

    def interval(self, level: float = LEVEL) -> tuple[float, float, float]:
        """Return the mean over units and its interval: from the units' standard errors
        where there are ``errors``, else Student's t over the units (NaN below two)."""
        return _interval(self.units, self.errors, level)[:3]

    def standard_error(self) -> tuple[float, int | None]:
        """The mean's standard error and its degrees of freedom (None: normal)."""
        return _interval(self.units, self.errors, LEVEL)[3:]

    def across_units(self, level: float = LEVEL) -> tuple[float, float, float]:
        """Return the mean over units and its Student-t interval over them (NaN below two
        units): whether the effect generalises to other units like these."""
        return _interval(self.units, None, level)[:3]

    def thresholds(self) -> tuple[float, ...]:
        """The values an interval's ends are compared with to decide the effect class."""
        if self.kind == "equivalence":
            return (self.null - self.smallest,)
        return (self.null - self.smallest, self.null, self.null + self.smallest)


def effect_class(effect: Effect, level: float = LEVEL) -> str:
    """The effect part of a verdict, by the module's rule."""
    _, low, high = effect.interval(level)
    if math.isnan(low):
        return UNDECIDED
    if effect.kind == "equivalence":
        bar = effect.null - effect.smallest
        return EQUIVALENT if low > bar else NOT_EQUIVALENT if high < bar else UNDECIDED
    if effect.null - effect.smallest < low and high < effect.null + effect.smallest:
        return ABSENT
    return PRESENT if low > effect.null else REVERSED if high < effect.null else UNDECIDED


HEADLINE = {
    PRESENT: HOLDS,
    EQUIVALENT: HOLDS,
    ABSENT: FAILS,
    REVERSED: FAILS,
    NOT_EQUIVALENT: FAILS,
    UNDECIDED: UNDECIDED,
}


def verdict(effect: Effect, level: float = LEVEL) -> str:
    """The headline: ``holds``, ``fails`` or ``undecided``, from the effect part alone."""
    return HEADLINE[effect_class(effect, level)]


def size_class(effect: Effect) -> str:
    """The size part of a verdict: the paper's scale-free value against this book's
    interval on that scale."""
    size = effect.size
    if size is None or size.paper is None or math.isnan(size.low):
        return NOT_COMPARABLE
    if size.high < size.paper:
        return SMALLER
    return LARGER if size.low > size.paper else COMPATIBLE


def rule_text(effect: Effect) -> str:
    """The row's verdict rule in words, with its numbers."""
    null, delta, unit = f"{effect.null:g}", f"{effect.smallest:g}", effect.unit
    if effect.kind == "equivalence":
        bar = f"{effect.null - effect.smallest:g}"
        return (
            f"equivalent if the interval lies above {bar} {unit} (the null {null} less the "
            f"margin {delta}); not equivalent if below it"
        )
    return (
        f"absent if the interval lies inside {null} ± {delta} {unit} (the smallest effect "
        f"of interest); else present if it lies above {null}, reversed if below"
    )


def knife_edge(effect: Effect, level: float = LEVEL) -> bool:
    """Whether an end of the interval lies within one standard error of a threshold that
    decides the effect class (so a rerun could easily move the row)."""
    _, low, high = effect.interval(level)
    se, _ = effect.standard_error()
    if math.isnan(low) or math.isnan(se):
        return False
    return any(abs(end - bar) < se for end in (low, high) for bar in effect.thresholds())


def p_value(effect: Effect) -> float:
    """One-sided p-value against the null (``effect``: the effect is not above it) or
    against the margin (``equivalence``: the effect is not above null − margin)."""
    mean, _, _ = effect.interval()
    se, df = effect.standard_error()
    bar = effect.null - effect.smallest if effect.kind == "equivalence" else effect.null
    if math.isnan(se) or math.isnan(mean):
        return math.nan
    if se == 0:
        return 0.0 if mean > bar else 1.0
    z = (mean - bar) / se
    return float(stats.norm.sf(z) if df is None else stats.t.sf(z, df))


def holm(p_values: Sequence[float], level: float = 1 - LEVEL) -> list[bool]:
    """Holm's step-down rejections at family-wise error ``level`` (NaN never rejected).

    Written out rather than imported: scipy has only false-discovery-rate adjustments,
    and the project does not otherwise need statsmodels.
    """
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    rejected = [False] * len(p_values)
    for rank, (p, index) in enumerate(order):
        if p > level / (len(order) - rank):
            break
        rejected[index] = True
    return rejected


def _distance(effect: Effect, mean: float) -> float:
    """How far the estimate is from the nearest decision it could reach by a narrower
    interval: above or below the null, inside ± the smallest effect, or past the margin."""
    if effect.kind == "equivalence":
        return abs(mean - (effect.null - effect.smallest))
    off = abs(mean - effect.null)
    return max(off, effect.smallest - off)


def units_to_decide(effect: Effect, level: float = LEVEL) -> int | None:
    """How many units would make the Student-t interval decide the effect (the nearest
    decision), at today's estimate and spread; None if no number of units would (the
    estimate sits on a threshold) or the spread is unknown (fewer than two units)."""
    mean, low, high = effect.across_units(level)
    n = len(effect.units)
    if math.isnan(low) or high == low:
        return None
    distance = _distance(effect, mean)
    if distance <= 0:
        return None
    return max(n + 1, math.ceil(n * ((high - low) / 2 / distance) ** 2))


def examples_to_decide(effect: Effect, level: float = LEVEL) -> float | None:
    """For an effect with ``errors``: by what factor every unit's examples would have to
    grow for the interval to decide the effect (standard errors shrink with the square
    root of the examples), at today's estimate; None if none would (the estimate sits
    on a threshold) or the interval is empty."""
    mean, low, high = effect.interval(level)
    distance = _distance(effect, mean)
    if math.isnan(low) or high == low or distance <= 0:
        return None
    return ((high - low) / 2 / distance) ** 2


def to_decide(effect: Effect, level: float = LEVEL) -> str:
    """What would decide an undecided row, in words (empty if nothing would)."""
    if effect.errors is not None:
        factor = examples_to_decide(effect, level)
        return "" if factor is None else f"{factor:.1f}× the examples"
    needed = units_to_decide(effect, level)
    return "" if needed is None else f"{needed} units"


def paired_error(differences: np.ndarray, draws: np.ndarray | None = None) -> float:
    """Standard error of a mean paired difference over examples, in the differences' unit.

    Args:
        differences: per example, the difference between two conditions on it (e.g. the
            mean over random draws of being right, minus being right in the own order).
        draws: where one side is a mean over random draws, each draw's mean; their spread
            adds the draws' own noise (with one draw there is no spread to add).
    """
    n = len(differences)
    variance = float(np.var(differences, ddof=1)) / n if n > 1 else math.nan
    if draws is not None and len(draws) > 1:
        variance += float(np.var(draws, ddof=1)) / len(draws)
    return math.sqrt(variance)


def binomial_error(accuracies: Sequence[float], examples: int) -> float:
    """Standard error of a difference of accuracies (fractions) on ``examples`` each, taken
    as independent: an upper bound where both are measured on the same examples, since
    outcomes on one example agree more often than chance."""
    return math.sqrt(sum(a * (1 - a) for a in accuracies) / examples)


def trial_error(within: Sequence[float], values: Sequence[float]) -> float:
    """Standard error of a unit's mean over trials that share one test split: each
    trial's own measurement error (``within``, not shrunk by averaging, since the trials
    share their examples) plus the spread between the trials' values."""
    variance = float(np.mean(np.square(within)))
    if len(values) > 1:
        variance += float(np.var(values, ddof=1)) / len(values)
    return math.sqrt(variance)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and how this book measures it.

    Attributes:
        source: where the paper makes it (section, table or figure).
        claim: the claim in a sentence.
        effect: what is measured per unit, in words.
        rule: what the null and the margin mean, in words; their numbers are the
            effect's own (`rule_text`), so they are stated in one place.
        chapter: the notebook whose results decide it (its results file's name).
        anchor: the section of that chapter's page holding the computing cell.
        measure: results -> the effect (every unit the chapter measured).
        needs: which units may enter: every unit (``nothing``), tasks whose prompts
            learnt (``prompt``), or those whose top neurons also beat the null
            (``neurons``); see `left_out`.
        size: results and the effect on the units kept -> its scale-free size.
    """

    source: str
    claim: str
    effect: str
    rule: str
    chapter: str
    anchor: str
    measure: Callable[[Results], Effect]
    needs: Needs
    size: Callable[[Results, Effect], Size]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _paper_mean(pairs: Mapping[str, tuple[float, float]]) -> float:
    """Mean over the paper's tasks of random order's accuracy minus the own order's, from
    ``(own, random)`` pairs."""
    return _mean([random - own for own, random in pairs.values()])


def _split_rows(results: Results, split: str) -> dict[str, Mapping[str, Any]]:
    """Each task's row of chapter 00's split table for ``split`` (empty if not run)."""
    splits = results.get("00_data_and_models", {}).get("splits", [])
    return {r["task"]: r for r in splits if r["split"] == split}


def _test_sizes(results: Results) -> dict[str, int]:
    """Each task's test examples, from chapter 00's split table (empty if not run)."""
    return {task: int(r["n"]) for task, r in _split_rows(results, "test").items()}


def chances(results: Results) -> dict[str, float]:
    """Each task's chance accuracy (%), 100 over its classes: the class columns of chapter
    00's split table that hold a share for it."""
    found = {}
    for task, row in _split_rows(results, "test").items():
        shares = [v for k, v in row.items() if k not in ("task", "split", "n")]
        classes = sum(1 for v in shares if isinstance(v, int | float) and not math.isnan(v))
        if classes:
            found[task] = 100 / classes
    return found


def task_of(unit: str) -> str:
    """The task a unit belongs to: ``task``, ``task:view`` or ``task: anything``."""
    return unit.split(":")[0].strip()


def left_out(
    results: Results, *, learnt_margin: float = LEARNT_MARGIN
) -> dict[str, dict[str, str]]:
    """Which tasks may enter the rows, decided from dev and the permutation null only.

    A task's prompts learnt it if the lower end of the 95% interval of their mean dev
    accuracy (each trial's binomial error on its dev examples, plus the spread between
    trials: `trial_error`) lies at least ``learnt_margin`` points above chance (the dev
    accuracy each trial reports is its best evaluation's, so a little optimistic: the
    margin absorbs that). Its skill
    neurons are worth studying if, besides, the top neuron of every binary (sub)task of
    the first trial beats the largest of chapter 02's label-permutation maxima.

    Returns:
        ``{"prompt": {task: reason}, "neurons": {task: reason}}`` for the tasks left out
        of rows that need trained prompts, and of rows that need skill neurons (the
        second includes the first). A task missing from a chapter's results is not
        judged by it.
    """
    trials = results.get("01_prompt_tuning", {}).get("trials", [])
    chance, dev = chances(results), _split_rows(results, "dev")
    examples = results.get("01_prompt_tuning", {}).get("dev_examples", {})
    prompt: dict[str, str] = {}
    for task in dict.fromkeys(r["task"] for r in trials):
        if task not in chance:
            continue
        accuracy = [r["dev_accuracy"] / 100 for r in trials if r["task"] == task]
        n = int(examples.get(task, dev[task]["n"] if task in dev else 0))
        if n == 0:
            continue
        within = [binomial_error([a], n) for a in accuracy]
        se = 100 * trial_error(within, accuracy)
        low = 100 * _mean(accuracy) - stats.norm.ppf((1 + LEVEL) / 2) * se
        if low < chance[task] + learnt_margin:
            prompt[task] = (
                f"prompt not learnt: dev {100 * _mean(accuracy):.1f}% (95% lower end "
                f"{low:.1f}) against chance {chance[task]:.1f} + {learnt_margin:g}"
            )
    neurons = dict(prompt)
    null = results.get("02_neuron_discovery", {}).get("null", {})
    for view, found in null.items():
        task = task_of(view)
        if task not in neurons and found["observed"] <= found["null_max"]:
            neurons[task] = (
                f"top neuron at the null: {view} {100 * found['observed']:.1f} against "
                f"the permutations' largest {100 * found['null_max']:.1f}"
            )
    return {"prompt": prompt, "neurons": neurons}


def restrict(effect: Effect, reasons: Mapping[str, str]) -> Effect:
    """The effect on the units whose task has no reason to be left out; the others are
    listed in ``left_out`` with their reason."""
    kept = {u: v for u, v in effect.units.items() if task_of(u) not in reasons}
    gone = {u: reasons[task_of(u)] for u in effect.units if task_of(u) in reasons}
    errors = None if effect.errors is None else {u: effect.errors[u] for u in kept}
    return replace(effect, units=kept, errors=errors, left_out={**effect.left_out, **gone})


def _scale(effect: Effect, denominators: Mapping[str, float]) -> float:
    """The mean over the effect's units of their denominators (NaN if one is missing)."""
    values = [denominators.get(u, math.nan) for u in effect.units]
    return _mean(values) if values else math.nan


def _tab1(results: Results) -> Effect:
    found = results["02_neuron_discovery"]
    units = {r["task"]: r[tables.TOP_SOFT_NEURON] - r[tables.PROMPT] for r in found["table1"]}
    paper_gap = _mean(
        [paper.TABLE1_NEURON[t][0] - paper.TABLE1_PROMPT[t][0] for t in paper.TABLE1_PROMPT]
    )
    equivalence = {"kind": "equivalence", "smallest": 3.0}
    prompt_correct = results.get("01_prompt_tuning", {}).get("test_correct", {})
    neuron_correct = found.get("top_neuron_correct", {}).get(tables.TOP_SOFT_NEURON, {})
    if units and all(task in prompt_correct and task in neuron_correct for task in units):
        errors = {}
        for task in units:  # trials in seed order in both chapters, paired on the examples
            neuron = correct_matrix([{"correct": c} for c in neuron_correct[task]])
            prompt = correct_matrix([{"correct": c} for c in prompt_correct[task]])
            differences = neuron - prompt  # [trial, example]
            errors[task] = 100 * paired_error(differences.mean(axis=0), differences.mean(axis=1))
        return Effect(units, 0.0, paper_gap, "points", errors, **equivalence)
    sizes, prompts = _test_sizes(results), results.get("01_prompt_tuning", {}).get("trials")
    neurons = found.get("top_neuron_trials", {}).get(tables.TOP_SOFT_NEURON)
    errors = None
    if prompts and neurons and all(task in sizes for task in units):
        errors = {}
        for task in units:  # trials in seed order in both chapters
            neuron = neurons[task]
            prompt = [r["test_accuracy"] / 100 for r in prompts if r["task"] == task]
            pairs = list(zip(neuron, prompt, strict=True))
            within = [binomial_error(pair, sizes[task]) for pair in pairs]
            errors[task] = 100 * trial_error(within, [a - b for a, b in pairs])
    return Effect(units, 0.0, paper_gap, "points", errors, **equivalence)


def _paper_retained(pairs: Mapping[str, tuple[float, float]]) -> float:
    """The paper's ``1 + mean(after - before) / mean(before - chance)`` over its tasks, from
    ``(before, after)`` accuracies (%)."""
    before = [100 / paper.CLASSES[t] for t in pairs]
    gap = _mean([after - b for b, after in pairs.values()])
    return 1 + gap / _mean([b - c for (b, _), c in zip(pairs.values(), before, strict=True)])


def _retained(effect: Effect, before: Mapping[str, float], chance: Mapping[str, float]) -> float:
    """The mean over the effect's units of ``before - chance``: what the effect's points
    are a share of."""
    return _scale(effect, {t: before[t] - chance[t] for t in before if t in chance})


def _tab1_size(results: Results, effect: Effect) -> Size:
    rows = results["02_neuron_discovery"]["table1"]
    before = {r["task"]: r[tables.PROMPT] for r in rows}
    paper_value = _paper_retained(
        {t: (paper.TABLE1_PROMPT[t][0], paper.TABLE1_NEURON[t][0]) for t in paper.TABLE1_PROMPT}
    )
    what = "(neuron − chance) / (prompt − chance), over the units' means"
    denominator = _retained(effect, before, chances(results))
    return Size.ratio(effect.interval(), denominator, paper_value, what, offset=1.0)


def _tab3(results: Results) -> Effect:
    rows = results["02_neuron_discovery"]["table3"]
    units = {r["task"]: r[tables.RANDOM_PROMPT] - r[tables.RANDOM_MODEL] for r in rows}
    paper_gap = _mean([prompt - model for prompt, model in paper.TABLE3_RANDOM.values()])
    sizes = _test_sizes(results)
    errors = None
    if all(r["task"] in sizes for r in rows):
        errors = {
            r["task"]: 100
            * binomial_error(
                [r[tables.RANDOM_PROMPT] / 100, r[tables.RANDOM_MODEL] / 100], sizes[r["task"]]
            )
            for r in rows
        }
    return Effect(units, 0.0, paper_gap, "points", errors, smallest=3.0)


def _tab3_size(results: Results, effect: Effect) -> Size:
    rows = results["02_neuron_discovery"]["table3"]
    before = {r["task"]: r[tables.RANDOM_PROMPT] for r in rows}
    paper_value = 1 - _paper_retained({t: (p, m) for t, (p, m) in paper.TABLE3_RANDOM.items()})
    what = "(random prompt − random backbone) / (random prompt − chance)"
    denominator = _retained(effect, before, chances(results))
    return Size.ratio(effect.interval(), denominator, paper_value, what)


def _at_largest(
    rows: Sequence[Mapping[str, Any]], own: Callable[[Mapping[str, Any]], bool]
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Per task: random order's mean accuracy minus the own order's, in points, at the
    largest fraction swept, within each trial the own order was swept in (random draws
    averaged), then averaged over those trials; and its standard error from the
    per-example outcomes, paired on the same examples (None where the rows have no
    outcomes), with the spread between trials added (`trial_error`)."""
    table = pd.DataFrame(list(rows))
    top = table[table["fraction"] == table["fraction"].max()]
    units: dict[str, float] = {}
    errors: dict[str, float] | None = {} if "correct" in table else None
    for task, part in top.groupby("task", sort=False):
        mine = part[part.apply(own, axis=1)]
        random = part[part["order"] == "random"]
        effects, within = [], []
        for trial, mine_trial in mine.groupby("trial"):
            drawn = random[random["trial"] == trial]
            effects.append(float(drawn["accuracy"].mean() - mine_trial["accuracy"].mean()))
            if errors is not None:
                matrix = correct_matrix(drawn.to_dict(orient="records"))
                differences = matrix.mean(axis=0) - correct_matrix(
                    mine_trial.to_dict(orient="records")
                ).mean(axis=0)
                within.append(paired_error(differences, matrix.mean(axis=1)))
        units[str(task)] = 100 * _mean(effects)
        if errors is not None:
            errors[str(task)] = 100 * trial_error(within, effects)
    return units, errors


def random_damage(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per task: the unperturbed accuracy (the rows at fraction 0) minus the random
    order's at the largest fraction, in points: what perturbing random neurons costs.
    Empty where the rows have no fraction 0."""
    table = pd.DataFrame(list(rows))
    if table.empty or table["fraction"].min() != 0:
        return {}
    clean = table[table["fraction"] == 0].groupby("task")["accuracy"].mean()
    top = table[(table["fraction"] == table["fraction"].max()) & (table["order"] == "random")]
    drawn = top.groupby("task")["accuracy"].mean()
    return {str(t): 100 * float(clean[t] - drawn[t]) for t in drawn.index if t in clean.index}


def _paper_extra_damage() -> float:
    """The paper's Fig. 4 at 17%: mean over tasks of random minus own order's accuracy,
    over the mean damage of the random order (from the unperturbed prompt, Tab. 1)."""
    pairs = paper.FIG4_AT_17
    damage = _mean([paper.TABLE1_PROMPT[t][0] - random for t, (_, random) in pairs.items()])
    return _paper_mean(pairs) / damage


EXTRA_DAMAGE = "(random − own order) / (unperturbed − random order): the extra damage"


def order_effect(
    rows: Sequence[Mapping[str, Any]], order: str, paper_effect: float | None = None
) -> Effect:
    """Random order's test accuracy minus order ``order``'s at the largest fraction swept,
    per task, in points, paired on the examples (rows as `perturbation.sweep` writes them,
    with ``task`` and ``trial``); 1 point is the smallest effect of interest."""
    units, errors = _at_largest(rows, lambda r: r["order"] == order)
    return Effect(units, 0.0, paper_effect, "points", errors, smallest=1.0)


def _ablation(results: Results) -> Effect:
    return order_effect(results["07_beyond_the_paper"]["ablation_sweeps"], "predictivity")


def _swap(results: Results) -> Effect:
    return order_effect(results["07_beyond_the_paper"]["swap_sweeps"], "predictivity")


def _fig4(results: Results) -> Effect:
    rows = results["03_perturbation"]["sweeps"]
    units, errors = _at_largest(rows, lambda r: r["order"] == r["task"])
    return Effect(units, 0.0, _paper_mean(paper.FIG4_AT_17), "points", errors, smallest=1.0)


def _fig4_size(results: Results, effect: Effect) -> Size:
    damage = _scale(effect, random_damage(results["03_perturbation"]["sweeps"]))
    return Size.ratio(effect.interval(), damage, _paper_extra_damage(), EXTRA_DAMAGE)


def _fig6(results: Results) -> Effect:
    found = results["03_perturbation"]
    z = found["importance_z"]  # {source: {evaluated: z}}
    tasks = list(z)
    units = {
        t: z[t][t] - _mean([z[s][t] for s in tasks if s != t]) for t in tasks if len(tasks) > 1
    }
    rows = found.get("importance_sweeps")
    if not rows or "correct" not in rows[0] or len(tasks) < 2:
        return Effect(units, 0.0, None, "z", smallest=0.25)
    return Effect(units, 0.0, None, "z", importance_errors(rows, list(units)), smallest=0.25)


def _example_areas(curve: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One order's sweep rows (one trial, several fractions): the fractions, and each
    example's area under its 0/1 outcomes over them (trapezoid rule, as `curve_area`)."""
    curve = curve.sort_values("fraction")
    x = curve["fraction"].to_numpy()
    return x, np.trapezoid(correct_matrix(curve.to_dict(orient="records")), x, axis=0)


def importance_errors(
    rows: Sequence[Mapping[str, Any]], tasks: Sequence[str], draws: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Bootstrap standard error of each evaluated task's own-order z-score lead (Fig. 6).

    The test examples of a task are resampled with replacement, the same resample for
    every order and trial (they are scored on the same examples); each order's area is
    recomputed from the per-example outcomes, then the importances, their z-score over
    the source orders and the own order's lead over the others' mean. The random curve
    is constant across the sources of a task, so it cancels from the z-scores.
    """
    table = pd.DataFrame(list(rows))
    generator = np.random.default_rng(seed)
    errors = {}
    for task in tasks:
        part = table[table["task"] == task]
        n = len(part["correct"].iloc[0])
        weights = generator.multinomial(n, np.full(n, 1 / n), size=draws) / n  # [draws, n]

        def area(
            order: str, part: pd.DataFrame = part, weights: np.ndarray = weights
        ) -> np.ndarray:
            per_trial = [
                weights @ _example_areas(curve)[1]
                for _, curve in part[part["order"] == order].groupby("trial")
            ]
            return np.mean(per_trial, axis=0)

        sources = [str(o) for o in part["order"].unique() if o != "random"]
        importance = -np.stack([area(source) for source in sources], axis=1)  # [draws, S]
        spread = importance.std(axis=1, keepdims=True)
        centred = importance - importance.mean(axis=1, keepdims=True)
        z = np.where(spread > 0, centred / np.where(spread > 0, spread, 1.0), 0.0)
        own = sources.index(task)
        lead = z[:, own] - np.delete(z, own, axis=1).mean(axis=1)
        errors[task] = float(lead.std(ddof=1))
    return errors


def _fig15(results: Results) -> Effect:
    """App. H at the largest fraction swept: accuracy in the selectivity-index order minus
    in the predictivity order, per task and trial the selectivity order was swept for,
    paired on the examples, the spread between trials added (`trial_error`). The paper
    finds the selectivity order no better than random, so its effect on this scale is
    Fig. 4's: random order minus own order."""
    found = results["03_perturbation"]
    chosen = pd.DataFrame(found["selectivity_sweeps"])
    top = chosen["fraction"].max()
    sweeps = pd.DataFrame(found["sweeps"])
    own = sweeps[(sweeps["order"] == sweeps["task"]) & (sweeps["fraction"] == top)]
    units: dict[str, float] = {}
    errors: dict[str, float] | None = {} if "correct" in chosen else None
    for task, part in chosen[chosen["fraction"] == top].groupby("task", sort=False):
        effects, within = [], []
        for trial, theirs in part.groupby("trial"):
            mine = own[(own["task"] == task) & (own["trial"] == trial)]
            if mine.empty:
                raise LedgerError(
                    f"{task}: the predictivity order was not swept at {top:g} in trial {trial}"
                )
            effects.append(float(theirs["accuracy"].mean() - mine["accuracy"].mean()))
            if errors is not None:
                differences = correct_matrix(theirs.to_dict(orient="records")).mean(axis=0)
                differences -= correct_matrix(mine.to_dict(orient="records")).mean(axis=0)
                within.append(paired_error(differences))
        units[str(task)] = 100 * _mean(effects)
        if errors is not None:
            errors[str(task)] = 100 * trial_error(within, effects)
    paper_effect = _paper_mean(paper.FIG4_AT_17)
    return Effect(units, 0.0, paper_effect, "points", errors, smallest=1.0)


def _fig15_size(results: Results, effect: Effect) -> Size:
    found = results["03_perturbation"]
    trials = {r["trial"] for r in found["selectivity_sweeps"]}
    damage = _scale(effect, random_damage([r for r in found["sweeps"] if r["trial"] in trials]))
    return Size.ratio(effect.interval(), damage, _paper_extra_damage(), EXTRA_DAMAGE)


def _fig7(results: Results) -> Effect:
    rows = results["03_perturbation"]["method_sweeps"]
    units, errors = _at_largest(rows, lambda r: r["order"] != "random") if rows else ({}, None)
    paper_effect = _paper_mean(paper.FIG7_BITFIT_AT_17)
    return Effect(units, 0.0, paper_effect, "points", errors, smallest=1.0)


def _fig5_parts(results: Results) -> tuple[dict[str, float], dict[str, float]]:
    """Per view: mean ρ with same-type views of other tasks minus with other-type views,
    and its own trials' ρ (the diagonal) minus the same cross-type mean."""
    found = results["04_cross_task_similarity"]
    names, types, matrix = found["names"], found["types"], np.asarray(found["similarity"])
    tasks = [task_of(name) for name in names]
    units, scale = {}, {}
    for i, name in enumerate(names):
        same = [
            matrix[i, j]
            for j in range(len(names))
            if tasks[j] != tasks[i] and types[tasks[j]] == types[tasks[i]]
        ]
        cross = [matrix[i, j] for j in range(len(names)) if types[tasks[j]] != types[tasks[i]]]
        if same and cross:
            units[name] = _mean(same) - _mean(cross)
            scale[name] = float(matrix[i, i]) - _mean(cross)
    return units, scale


def _fig5(results: Results) -> Effect:
    units, _ = _fig5_parts(results)
    (same_lo, same_hi), (cross_lo, cross_hi) = (
        paper.SIMILARITY_FIG5["same type"],
        paper.SIMILARITY_FIG5["cross type"],
    )
    paper_effect = (same_lo + same_hi) / 2 - (cross_lo + cross_hi) / 2
    return Effect(units, 0.0, paper_effect, "ρ", smallest=0.05)


def _fig5_size(results: Results, effect: Effect) -> Size:
    _, scale = _fig5_parts(results)
    mid = {k: (lo + hi) / 2 for k, (lo, hi) in paper.SIMILARITY_FIG5.items()}
    paper_value = (mid["same type"] - mid["cross type"]) / (mid["same task"] - mid["cross type"])
    what = "(same type − cross type) / (same task's trials − cross type)"
    return Size.ratio(effect.interval(), _scale(effect, scale), paper_value, what)


AVERAGED = "ρ averaged rankings"  # chapter 04's column: the paper's own §4.4 quantity


def _label_words(results: Results) -> Effect:
    rows = results["04_cross_task_similarity"]["label_word_robustness"]
    units = {
        f"{r.get('task', '')}: {r['label words']} ({r['view']})": r["ρ with default words"]
        - r["ρ default vs default"]
        for r in rows
    }
    same_task = _mean(paper.SIMILARITY_FIG5["same task"])
    paper_effect = paper.LABEL_WORD_SPEARMAN - same_task
    return Effect(units, 0.0, paper_effect, "ρ", kind="equivalence", smallest=0.1)


def _label_words_size(results: Results, effect: Effect) -> Size:
    rows = [
        r
        for r in results["04_cross_task_similarity"]["label_word_robustness"]
        if AVERAGED in r
        and f"{r.get('task', '')}: {r['label words']} ({r['view']})" in effect.units
    ]
    if not rows:
        return not_comparable("not computed: chapter 04 predates the averaged rankings")
    by_view = {r["view"]: (r[AVERAGED], r[f"{AVERAGED} se"]) for r in rows}
    mean = _mean([v for v, _ in by_view.values()])
    se = math.sqrt(sum(s**2 for _, s in by_view.values())) / len(by_view)
    half = stats.norm.ppf((1 + LEVEL) / 2) * se
    what = "ρ between trial-averaged rankings, default vs random words (jackknife interval)"
    return Size(mean, mean - half, mean + half, paper.LABEL_WORD_SPEARMAN, what)


def _pruned_size(results: Results, effect: Effect) -> Size:
    """Tab. 4's scale-free size: (pruned − chance) / (unpruned − chance)."""
    rows = results["05_pruning"]["trials"]
    before = {
        str(t): float(p[tables.PROMPT].mean())
        for t, p in pd.DataFrame(rows).groupby("task", sort=False)
    }
    paper_value = _paper_retained({t: (b[0], a[0]) for t, (b, a, _) in paper.TABLE4.items()})
    what = "(pruned − chance) / (unpruned prompt − chance)"
    denominator = _retained(effect, before, chances(results))
    return Size.ratio(effect.interval(), denominator, paper_value, what, offset=1.0)


def _kept(units: dict[str, float], errors: dict[str, float]) -> Effect:
    """A pruned model's accuracy minus the unpruned prompt's, as an equivalence within 3
    points (the margin of 'keeps accuracy'), beside the paper's Tab. 4 gap; the errors
    count only where every unit has one."""
    paper_gap = _mean([after[0] - before[0] for before, after, _ in paper.TABLE4.values()])
    errors_or_none = errors if len(errors) == len(units) else None
    return Effect(units, 0.0, paper_gap, "points", errors_or_none, "equivalence", 3.0)


def _tab4_accuracy(results: Results) -> Effect:
    trials = pd.DataFrame(results["05_pruning"]["trials"]).dropna(subset=[tables.RETRAINED])
    sizes = _test_sizes(results)
    units, errors = {}, {}
    for task, part in trials.groupby("task", sort=False):  # retrained trials, paired
        gaps = (part[tables.RETRAINED] - part[tables.PROMPT]).tolist()
        units[str(task)] = _mean(gaps)
        if task in sizes:
            after, before = part[tables.RETRAINED] / 100, part[tables.PROMPT] / 100
            pairs = zip(after, before, strict=True)
            within = [binomial_error(pair, sizes[str(task)]) for pair in pairs]
            errors[str(task)] = 100 * trial_error(within, [g / 100 for g in gaps])
    return _kept(units, errors)


def _chosen_accuracy(results: Results) -> Effect:
    sizes = _test_sizes(results)
    prompt_correct = results.get("01_prompt_tuning", {}).get("test_correct", {})
    units, errors = {}, {}
    for row in results["05_pruning"]["chosen"]:
        task, after, before = str(row["task"]), row["test_recovered"], row["unpruned_test"]
        units[task] = after - before
        if row.get("test_correct") and task in prompt_correct:
            # paired on the examples with trial 0, the prompt the model was pruned with
            both = correct_matrix(
                [{"correct": row["test_correct"]}, {"correct": prompt_correct[task][0]}]
            )
            errors[task] = 100 * paired_error(both[0] - both[1])
        elif task in sizes:
            errors[task] = 100 * binomial_error([after / 100, before / 100], sizes[task])
    return _kept(units, errors)


def _criteria(results: Results) -> Effect:
    rows = [r for r in results["05_pruning"]["criteria"] if r["criterion"] == "magnitude"]
    z = stats.norm.ppf((1 + LEVEL) / 2)  # the comparison's own 95% normal interval
    units = {str(r["task"]): float(r["difference"]) for r in rows}
    errors = {str(r["task"]): (r["high"] - r["low"]) / (2 * z) for r in rows}
    return Effect(units, 0.0, None, "points", errors, smallest=1.0)


def _tab4_speed(results: Results) -> Effect:
    units = {r["task"]: r[tables.SPEED_UP] for r in results["05_pruning"]["table4"]}
    return Effect(units, 1.0, _mean([v[2] for v in paper.TABLE4.values()]), "×", smallest=0.05)


def _as_is(what: str) -> Callable[[Results, Effect], Size]:
    """A size for a row whose own units are already scale-free (a ratio, a correlation):
    the effect itself against the paper's effect."""

    def size(results: Results, effect: Effect) -> Size:
        return Size(*effect.interval(), effect.paper, what)

    return size


def _no_paper(reason: str) -> Callable[[Results, Effect], Size]:
    return lambda results, effect: not_comparable(reason)


def _transfer(results: Results) -> Effect:
    found = results["06_transferability"]
    per_target = found.get("per_target_by_prompt", found["per_target"])  # sources: prompts
    skill, on = per_target["skill-neuron ON"], per_target["ON"]
    units = {t: a - b for t, a, b in zip(found["tasks"], skill, on, strict=True)}
    paper_effect = paper.TRANSFER_SPEARMAN["skill-neuron ON"] - paper.TRANSFER_SPEARMAN["ON"]
    return Effect(units, 0.0, paper_effect, "Spearman ρ", smallest=0.1)


NO_NUMBER = "the paper gives no number"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "§4.1, Tab. 1",
        "A single skill neuron classifies about as well as the whole prompt-tuned model.",
        "top soft-position neuron's test accuracy minus the prompt's, per task (the neuron "
        "read at soft vectors only, never the prediction position)",
        "equivalence: not much worse than the prompt (the margin of 'about as well')",
        "02_neuron_discovery",
        "the-top-neuron-against-the-whole-prompt-tab-1",
        _tab1,
        "neurons",
        _tab1_size,
    ),
    Claim(
        "§5, Tab. 3",
        "Untuned random prompts already have skill neurons; a random backbone has none.",
        "top-neuron accuracy with a random prompt minus with a random backbone, per task",
        "null: no difference",
        "02_neuron_discovery",
        "without-prompt-tuning-tab-3",
        _tab3,
        "nothing",
        _tab3_size,
    ),
    Claim(
        "§4.2, Fig. 4",
        "Perturbing neurons in the task's predictivity order hurts more than random neurons.",
        "accuracy in random order minus in the task's own order at the largest fraction, per task",
        "null: no difference",
        "03_perturbation",
        "perturbing-in-predictivity-order-and-at-random",
        _fig4,
        "neurons",
        _fig4_size,
    ),
    Claim(
        "§4.3, Fig. 6",
        "Skill neurons are task-specific: a task's own order matters most for it.",
        "z-scored importance of the task's own order minus the mean of the other tasks' "
        "orders, per evaluated task",
        "null: no difference",
        "03_perturbation",
        "neuronal-importance",
        _fig6,
        "neurons",
        _no_paper(NO_NUMBER),
    ),
    Claim(
        "App. H, Fig. 15",
        "Ranking by the selectivity index is no better than random; predictivity is better.",
        "accuracy in the selectivity-index order minus in the predictivity order at the "
        "largest fraction, per task (mean over the trials swept)",
        "null: no difference (the paper's selectivity "
        "curves lie on its random ones, so its size is Fig. 4's)",
        "03_perturbation",
        "selectivity-index-instead-of-predictivity",
        _fig15,
        "neurons",
        _fig15_size,
    ),
    Claim(
        "§5, Fig. 7",
        "Models tuned by other methods depend on the prompt-tuning skill neurons.",
        "accuracy in random order minus in the prompt-tuning skill-neuron order at the "
        "largest fraction, per method and task",
        "null: no difference",
        "03_perturbation",
        "other-tuning-methods",
        _fig7,
        "neurons",
        _no_paper("another method: LoRA here, BitFit in the paper's number"),
    ),
    Claim(
        "§4.3, Fig. 5",
        "Tasks of one type rank neurons alike; tasks of different types do not.",
        "mean ρ with other tasks of the same type minus with tasks of other types, per "
        "task that has a same-type partner",
        "null: no difference",
        "04_cross_task_similarity",
        "similarity-of-neuron-rankings",
        _fig5,
        "neurons",
        _fig5_size,
    ),
    Claim(
        "§4.4",
        "Skill neurons do not depend on the label words.",
        "ρ of random-word rankings with the default words' minus ρ among the default "
        "words' trials, per random-word choice",
        "equivalence: not much lower (the margin of 'do not depend')",
        "04_cross_task_similarity",
        "robustness-to-label-words",
        _label_words,
        "neurons",
        _label_words_size,
    ),
    Claim(
        "§6.1, Tab. 4",
        "Pruning all but the skill neurons keeps accuracy after prompt retraining.",
        "test accuracy of the pruned model after prompt retraining minus prompt tuning's, per task",
        "equivalence: not much lower (the margin of 'keeps accuracy')",
        "05_pruning",
        "accuracy-before-and-after-pruning-tab-4",
        _tab4_accuracy,
        "neurons",
        _pruned_size,
    ),
    Claim(
        "§6.1, Tab. 4",
        "The pruned model is faster on a CPU.",
        "measured speed-up of each task's pruned model (chapter 05's Tab. 4 batch shape)",
        "null: 1× (no speed-up)",
        "05_pruning",
        "speed",
        _tab4_speed,
        "nothing",
        _as_is("speed-up (×)"),
    ),
    Claim(
        "§6.1, Tab. 4 (size chosen on dev)",
        "Skill neurons alone keep accuracy at a pruned size chosen on dev, after recovery.",
        "test accuracy of the pruned model chosen on dev, after its recovery chosen on dev "
        "(the prompt retrained, or a LoRA), minus the unpruned prompt's, per search task",
        "equivalence: not much lower (the margin of 'keeps accuracy')",
        "05_pruning",
        "a-pruned-model-chosen-on-dev",
        _chosen_accuracy,
        "neurons",
        _pruned_size,
    ),
    Claim(
        "not in the paper (§6.1)",
        "At equal size, skill neurons are a better thing to keep than the neurons of largest "
        "magnitude.",
        "test accuracy with the skill neurons kept minus with the magnitude criterion's "
        "(fold only, at the chosen point's layers and size), per search task",
        "null: no difference",
        "05_pruning",
        "skill-neurons-against-other-criteria-at-equal-size",
        _criteria,
        "neurons",
        _no_paper(NO_NUMBER),
    ),
    Claim(
        "not in the paper (§4.2)",
        "Setting the top predictivity neurons to their mean hurts more than setting "
        "scale-matched random neurons to theirs.",
        "test accuracy with random neurons mean-ablated minus with the top predictivity "
        "neurons mean-ablated (the largest share, at the scored positions), per scored task",
        "null: no difference",
        "07_beyond_the_paper",
        "causal-tests-mean-ablation",
        _ablation,
        "neurons",
        _no_paper(NO_NUMBER),
    ),
    Claim(
        "not in the paper (§4.2)",
        "Setting the top predictivity neurons to the other class's mean hurts more than "
        "doing so to scale-matched random neurons.",
        "test accuracy with random neurons class-swapped minus with the top predictivity "
        "neurons class-swapped (the largest share, at the scored positions), per scored task",
        "null: no difference",
        "07_beyond_the_paper",
        "causal-tests-class-swap-patching",
        _swap,
        "neurons",
        _no_paper(NO_NUMBER),
    ),
    Claim(
        "§6.2",
        "Overlap of activated skill neurons predicts prompt transfer better than ON.",
        "Spearman ρ of skill-neuron ON with transfer minus ρ of ON, per target task, over "
        "the prompts of the other tasks (every trial a source)",
        "null: no difference",
        "06_transferability",
        "which-indicator-predicts-transfer",
        _transfer,
        "neurons",
        _as_is("difference of Spearman ρ"),
    ),
)


def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _judged(claim: Claim, results: Results, reasons: Mapping[str, Mapping[str, str]]) -> Effect:
    """The claim's effect on the units that qualify, with its size against the paper."""
    effect = claim.measure(results)
    if claim.needs != "nothing":
        effect = restrict(effect, reasons[claim.needs])
    return replace(effect, size=claim.size(results, effect) if effect.units else None)


def ledger_rows(
    results: Results, claims: tuple[Claim, ...] = CLAIMS, *, learnt_margin: float = LEARNT_MARGIN
) -> list[dict[str, Any]]:
    """One row per claim: the units used and left out, the estimate and its interval,
    the null and smallest effect of interest, the effect class and headline, the size
    against the paper, whether the row is knife-edge, and its one-sided p-value.

    A claim whose chapter has no results (not run yet) gets the verdict ``not run``; one
    whose units are all left out is ``undecided``, and says so.
    """
    reasons = left_out(results, learnt_margin=learnt_margin)
    rows = []
    for claim in claims:
        row: dict[str, Any] = {"source": claim.source, "claim": claim.claim}
        if claim.chapter in results:
            effect = _judged(claim, results, reasons)
            mean, low, high = effect.interval()
            _, across_low, across_high = effect.across_units()
            judged = effect_class(effect)
            size = effect.size or not_comparable("no unit qualifies")
            row |= {
                "estimate": mean,
                "low": low,
                "high": high,
                "null": effect.null,
                "smallest": effect.smallest,
                "kind": effect.kind,
                "paper": effect.paper,
                "unit": effect.unit,
                "units": len(effect.units),
                "used": ", ".join(effect.units),
                "left out": "; ".join(f"{u}: {why}" for u, why in effect.left_out.items()),
                "interval over": "the measurement (units fixed)"
                if effect.errors is not None
                else "units",
                "across units": (across_low, across_high),
                "effect class": judged,
                "verdict": HEADLINE[judged],
                "size": (size.estimate, size.low, size.high),
                "paper size": size.paper,
                "size class": size_class(effect),
                "size scale": size.what or size.reason,
                "knife-edge": knife_edge(effect),
                "p": p_value(effect),
                "to decide": to_decide(effect) or ("no unit qualifies" if not effect.units else "")
                if judged == UNDECIDED
                else "",
                "per unit": "; ".join(f"{k} {v:.2f}" for k, v in effect.units.items()),
                "per type": by_type(effect, results),
                "rule": rule_text(effect),
            }
        else:
            row |= {
                **dict.fromkeys(("estimate", "low", "high", "null", "paper", "p"), math.nan),
                "smallest": math.nan,
                "kind": "",
                "unit": "",
                "units": 0,
                "used": "",
                "left out": "",
                "interval over": "",
                "across units": (math.nan, math.nan),
                "effect class": NOT_RUN,
                "verdict": NOT_RUN,
                "size": (math.nan, math.nan, math.nan),
                "paper size": None,
                "size class": NOT_COMPARABLE,
                "size scale": "",
                "knife-edge": False,
                "to decide": "",
                "per unit": "",
                "per type": "",
                "rule": "",
            }
        rows.append(
            row | {"effect": claim.effect, "null means": claim.rule, "where": _where(claim)}
        )
    return rows


def by_type(effect: Effect, results: Results) -> str:
    """The effect's mean over the units of each task type (chapter 04's types), in words:
    the paper's effects differ by type, so a row's mean can hide a type that goes the
    other way. Empty where the types are unknown."""
    types = results.get("04_cross_task_similarity", {}).get("types", {})
    groups: dict[str, list[float]] = {}
    for unit, value in effect.units.items():
        if task_of(unit) in types:
            groups.setdefault(types[task_of(unit)], []).append(value)
    return "; ".join(f"{t} {_mean(v):.2f} ({len(v)})" for t, v in groups.items())


def _where(claim: Claim) -> str:
    return f"{claim.chapter}.html#{claim.anchor}"


def stability(
    rows: Sequence[Mapping[str, Any]], replicate: Sequence[Mapping[str, Any]] | None = None
) -> list[str]:
    """Each row's stability: ``unstable`` where the replicate's headline differs,
    ``knife-edge`` where either run's interval ends within a standard error of a
    threshold, ``stable`` otherwise; without a replicate ``knife-edge`` or ``one run``.
    Rows not run in either are ``not run``."""
    found = []
    for i, row in enumerate(rows):
        other = replicate[i] if replicate is not None and i < len(replicate) else None
        if row["verdict"] == NOT_RUN or (other is not None and other["verdict"] == NOT_RUN):
            found.append(NOT_RUN)
        elif other is not None and other["verdict"] != row["verdict"]:
            found.append(UNSTABLE)
        elif row["knife-edge"] or (other is not None and other["knife-edge"]):
            found.append(KNIFE_EDGE)
        else:
            found.append(ONE_RUN if other is None else STABLE)
    return found


def summary(rows: Sequence[Mapping[str, Any]], level: float = 1 - LEVEL) -> dict[str, int]:
    """Counts for the ledger's summary: headlines, and how many effects stay present (and
    equivalences stay shown) after Holm's adjustment over every row with a p-value."""
    rejected = holm([float(r["p"]) for r in rows], level)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (HOLDS, FAILS, UNDECIDED, NOT_RUN)}
    for judged, name in ((PRESENT, "present after Holm"), (EQUIVALENT, "equivalent after Holm")):
        counts[name] = sum(
            r["effect class"] == judged and kept for r, kept in zip(rows, rejected, strict=True)
        )
    counts["claims"] = len(rows)
    return counts


def same_examples(results: Results, other: Results) -> bool:
    """Whether two runs used the same backbone, precision and examples (chapter 00's
    split keys), so that their ledgers can be compared row by row."""
    ours, theirs = (r.get("00_data_and_models", {}) for r in (results, other))
    keys = ("backbone", "split_keys")
    return bool(ours) and all(ours.get(k) == theirs.get(k) for k in keys)


def replicate_rows(
    results: Results, folder: str | Path, *, learnt_margin: float = LEARNT_MARGIN
) -> list[dict[str, Any]] | None:
    """The ledger of the run whose store is ``folder`` (the replicate), or None where it
    has not been built or did not use this run's backbone and examples (another
    profile's store is never compared)."""
    if not str(folder) or not Path(folder).is_dir():
        return None
    other = load_results(ArtefactStore(folder))
    if not same_examples(results, other):
        return None
    return ledger_rows(other, learnt_margin=learnt_margin)


def precision(results: Results) -> dict[str, str]:
    """The backbone and the precision it computed in, from chapter 00's results."""
    backbone = results.get("00_data_and_models", {}).get("backbone", {})
    return {k: str(backbone.get(k, "unknown")) for k in ("backbone", "precision")}


# Chapters whose results the measures read beside the deciding chapter: the split sizes
# (00), the prompts' per-trial accuracies (01) and the permutation null (02).
SUPPORT = ("00_data_and_models", "01_prompt_tuning", "02_neuron_discovery")


def load_results(store: ArtefactStore, claims: tuple[Claim, ...] = CLAIMS) -> dict[str, Any]:
    """Read the results file of every chapter the claims need, and of the `SUPPORT`
    chapters; skip chapters not yet run."""
    found = {}
    for chapter in dict.fromkeys([*SUPPORT, *(claim.chapter for claim in claims)]):
        try:
            found[chapter] = store.read_results(chapter)
        except FileNotFoundError:
            continue
    return found


VERDICT_COLOURS = {HOLDS: "#cdebd4", UNDECIDED: "#fbe8c2", FAILS: "#f6cccc", NOT_RUN: "#e6e6e6"}


def _interval_text(values: tuple[float, float, float], unit: str = "") -> str:
    mean, low, high = values
    if math.isnan(mean):
        return ""
    return f"{_number(mean)} [{_number(low)}, {_number(high)}] {unit}".strip()


def _threshold_text(row: Mapping[str, Any]) -> str:
    if row["kind"] == "equivalence":
        return f"margin {row['null'] - row['smallest']:g}"
    return "" if not row["kind"] else f"{row['null']:g} ± {row['smallest']:g}"


def table(rows: list[dict[str, Any]], stable: Sequence[str] | None = None) -> pd.DataFrame:
    """The ledger as a reader's table, one row per claim: the headline and its effect
    class, the interval against the null and the smallest effect of interest, the size
    against the paper, stability, and the units used and left out."""
    frame = pd.DataFrame(rows)
    frame["this book"] = [
        _interval_text((r["estimate"], r["low"], r["high"]), r["unit"]) for r in rows
    ]
    frame["null ± smallest effect"] = [_threshold_text(r) for r in rows]
    frame["size against the paper"] = [
        f"{r['size class']}: {_interval_text(r['size'])} vs {_number(r['paper size'])}"
        if r["paper size"] is not None and not math.isnan(r["size"][0])
        else f"{r['size class']} ({r['size scale']})"
        for r in rows
    ]
    frame["stability"] = list(stable) if stable is not None else stability(rows)
    frame["across units"] = [
        ""
        if math.isnan(r["across units"][0]) or r["interval over"] == "units"
        else "[{}, {}]".format(*map(_number, r["across units"]))
        for r in rows
    ]
    columns = ["source", "claim", "verdict", "effect class", "this book"]
    columns += ["null ± smallest effect", "size against the paper", "stability", "units"]
    details = ["used", "left out", "to decide", "rule", "interval over", "across units"]
    return frame[[*columns, *details, "effect", "per unit", "per type", "size scale", "where"]]


def styled(rows: list[dict[str, Any]], stable: Sequence[str] | None = None) -> Styler:
    """The ledger table: verdicts coloured, each row linking to its chapter section."""
    return (
        table(rows, stable)
        .style.hide(axis="index")
        .format({"where": lambda href: f'<a href="{href}">{href.split(".html")[0]}</a>'})
        .map(lambda v: f"background-color: {VERDICT_COLOURS.get(v, '')}", subset=["verdict"])
    )


def side_by_side(
    rows: Sequence[Mapping[str, Any]], replicate: Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """The book's and the replicate's headline, effect and interval for every claim, and
    each row's stability."""
    return pd.DataFrame(
        {
            "source": [r["source"] for r in rows],
            "claim": [r["claim"] for r in rows],
            "this book": [
                f"{r['verdict']}: {_interval_text((r['estimate'], r['low'], r['high']))}"
                for r in rows
            ],
            "replicate": [
                f"{r['verdict']}: {_interval_text((r['estimate'], r['low'], r['high']))}"
                for r in replicate
            ],
            "stability": stability(rows, replicate),
        }
    )


def scaled(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """A row's estimate and interval on a common scale: the null at 0 and the smallest
    effect of interest at ±1 (an equivalence row's margin at −1); a row without one is
    scaled so its interval's farther end from the null sits at ±1."""
    null, span = row["null"], row["smallest"]
    values = (row["estimate"], row["low"], row["high"])
    if not span > 0:
        span = max((abs(v - null) for v in values if not math.isnan(v)), default=1.0) or 1.0
    return tuple((v - null) / span for v in values)  # type: ignore[return-value]
