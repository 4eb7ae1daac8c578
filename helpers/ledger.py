"""The reproduction ledger: each headline claim of the paper as an effect with an interval.

Every row is computed from the chapters' results files (``results/<chapter>.json`` in the
artefact store), never typed by hand. A claim is stated as an *effect*, one number per
unit (a task, a method and task, or a random label-word choice), oriented so that the
paper claims it is above the row's *null*. This book's estimate is the mean over the
units. Its 95% interval depends on what the row's numbers are:

- where each unit's effect is measured on examples (accuracies on a test split, or
  Fig. 6's z-scores of them, by a bootstrap over the examples: `importance_errors`), the
  units are the book's tasks, taken as fixed, as the paper's claims are about its own
  tasks; the interval covers the measurement: which examples were drawn, which trials
  and which random draws (a normal interval from each unit's standard error,
  `Effect.errors`). Paired comparisons on the same examples use each example's outcome
  (Tab. 1 from chapters 01 and 02, the sweeps of chapter 03, the pruned model chosen on
  dev and the pruning criteria of chapter 05, the ablations of chapter 07), with the spread over
  trials or random draws added; comparisons whose per-example outcomes are not kept count
  the two accuracies as independent, which can only widen the interval. The table also
  shows Student's t over the units ("across units"), which asks instead whether the
  effect would generalise to other tasks like these;
- otherwise (similarities, correlations, timings), Student's t over the units.

Every row is then judged by one rule:

- ``holds``: the interval lies above the null (the effect is there, in the paper's
  direction);
- ``fails``: the interval lies below the paper's effect (an effect as large as the
  paper's is excluded), or wholly below the null where the paper gives no number;
- ``undecided``: neither. The row then says what would decide it if the estimate and
  the spread stayed as they are: so many units, or so many times the examples;
- ``not run``: the chapter's results are missing.

Claims of equivalence ("about as well", "keeps accuracy", "does not depend") take a
margin as their null: the effect is a difference, and the null is the largest loss that
still counts as "as well". The paper's effect is put on the same scale from
`helpers.paper`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
HOLDS, FAILS, UNDECIDED, NOT_RUN = "holds", "fails", "undecided", "not run"
LEVEL = 0.95


@dataclass(frozen=True)
class Effect:
    """One claim's effect in one run: its value per unit, the null and the paper's value.

    Attributes:
        units: unit name -> effect (e.g. task -> accuracy points).
        null: the value under "no effect" (or the equivalence margin).
        paper: the paper's effect on the same scale, or None where it gives no number.
        unit: what the numbers are (e.g. "points").
        errors: unit name -> standard error of that unit's effect from its measurement
            (examples, trials, random draws); with it the units are fixed and the
            interval covers the measurement alone. None: Student's t over the units.
    """

    units: Mapping[str, float]
    null: float
    paper: float | None
    unit: str
    errors: Mapping[str, float] | None = None

    def interval(self, level: float = LEVEL) -> tuple[float, float, float]:
        """Return the mean over units and its interval: from the units' standard errors
        where there are ``errors``, else Student's t over the units (NaN below two)."""
        if self.errors is None:
            return self.across_units(level)
        values = np.asarray(list(self.units.values()), dtype=float)
        mean = float(values.mean()) if len(values) else math.nan
        errors = np.asarray([self.errors[name] for name in self.units], dtype=float)
        half = stats.norm.ppf((1 + level) / 2) * math.sqrt(float((errors**2).sum()))
        half /= max(len(values), 1)
        return mean, mean - half, mean + half

    def across_units(self, level: float = LEVEL) -> tuple[float, float, float]:
        """Return the mean over units and its Student-t interval over them (NaN below two
        units): whether the effect generalises to other units like these."""
        values = np.asarray(list(self.units.values()), dtype=float)
        mean = float(values.mean()) if len(values) else math.nan
        if len(values) < 2:
            return mean, math.nan, math.nan
        half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1)
        half /= math.sqrt(len(values))
        return mean, mean - half, mean + half


def verdict(effect: Effect, level: float = LEVEL) -> str:
    """``holds``, ``fails`` or ``undecided`` by the module's rule."""
    _, low, high = effect.interval(level)
    if math.isnan(low):
        return UNDECIDED
    if low > effect.null:
        return HOLDS
    bar = effect.null if effect.paper is None else effect.paper
    return FAILS if high < bar else UNDECIDED


def _distance(effect: Effect, mean: float) -> float:
    """How far the estimate is from the nearer decision: above the null, or below the
    paper's effect (or below the null where the paper gives no number)."""
    if effect.paper is None:
        return abs(mean - effect.null)
    return max(mean - effect.null, effect.paper - mean)


def units_to_decide(effect: Effect, level: float = LEVEL) -> int | None:
    """How many units would make the Student-t interval exclude the null or the paper's
    effect (the nearer decision), at today's estimate and spread; None if no number of
    units would (the estimate sits on the null) or the spread is unknown (fewer than two
    units)."""
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
    grow for the interval to exclude the null or the paper's effect (standard errors
    shrink with the square root of the examples), at today's estimate; None if none
    would (the estimate sits on the null) or the interval is empty."""
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
        rule: what the null is, in words (the verdict rule is the module's, for all rows).
        chapter: the notebook whose results decide it (its results file's name).
        anchor: the section of that chapter's page holding the computing cell.
        measure: results -> the effect.
    """

    source: str
    claim: str
    effect: str
    rule: str
    chapter: str
    anchor: str
    measure: Callable[[Results], Effect]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def _paper_mean(pairs: Mapping[str, tuple[float, float]]) -> float:
    """Mean over the paper's tasks of random order's accuracy minus the own order's, from
    ``(own, random)`` pairs."""
    return _mean([random - own for own, random in pairs.values()])


def _test_sizes(results: Results) -> dict[str, int]:
    """Each task's test examples, from chapter 00's split table (empty if not run)."""
    splits = results.get("00_data_and_models", {}).get("splits", [])
    return {r["task"]: int(r["n"]) for r in splits if r["split"] == "test"}


def _tab1(results: Results) -> Effect:
    found = results["02_neuron_discovery"]
    units = {r["task"]: r[tables.TOP_SOFT_NEURON] - r[tables.PROMPT] for r in found["table1"]}
    paper_gap = _mean(
        [paper.TABLE1_NEURON[t][0] - paper.TABLE1_PROMPT[t][0] for t in paper.TABLE1_PROMPT]
    )
    prompt_correct = results.get("01_prompt_tuning", {}).get("test_correct", {})
    neuron_correct = found.get("top_neuron_correct", {}).get(tables.TOP_SOFT_NEURON, {})
    if units and all(task in prompt_correct and task in neuron_correct for task in units):
        errors = {}
        for task in units:  # trials in seed order in both chapters, paired on the examples
            neuron = correct_matrix([{"correct": c} for c in neuron_correct[task]])
            prompt = correct_matrix([{"correct": c} for c in prompt_correct[task]])
            differences = neuron - prompt  # [trial, example]
            errors[task] = 100 * paired_error(differences.mean(axis=0), differences.mean(axis=1))
        return Effect(units, -3.0, paper_gap, "points", errors)
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
    return Effect(units, -3.0, paper_gap, "points", errors)


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
    return Effect(units, 0.0, paper_gap, "points", errors)


def _at_largest(
    rows: Sequence[Mapping[str, Any]], own: Callable[[Mapping[str, Any]], bool]
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Per task: random order's mean accuracy minus the own order's, in points, at the
    largest fraction swept (means over trials and random draws), and its standard error
    from the per-example outcomes, paired on the same examples (None where the rows
    have no outcomes)."""
    table = pd.DataFrame(list(rows))
    top = table[table["fraction"] == table["fraction"].max()]
    units: dict[str, float] = {}
    errors: dict[str, float] | None = {} if "correct" in table else None
    for task, part in top.groupby("task", sort=False):
        mine = part[part.apply(own, axis=1)]
        random = part[part["order"] == "random"]
        units[str(task)] = 100 * float(random["accuracy"].mean() - mine["accuracy"].mean())
        if errors is None:
            continue
        effects, within = [], []
        for trial, mine_trial in mine.groupby("trial"):
            drawn = correct_matrix(random[random["trial"] == trial].to_dict(orient="records"))
            differences = drawn.mean(axis=0) - correct_matrix(
                mine_trial.to_dict(orient="records")
            ).mean(axis=0)
            effects.append(float(differences.mean()))
            within.append(paired_error(differences, drawn.mean(axis=1)))
        errors[str(task)] = 100 * trial_error(within, effects)
    return units, errors


def order_effect(
    rows: Sequence[Mapping[str, Any]], order: str, paper_effect: float | None = None
) -> Effect:
    """Random order's test accuracy minus order ``order``'s at the largest fraction swept,
    per task, in points, paired on the examples (rows as `perturbation.sweep` writes them,
    with ``task`` and ``trial``)."""
    units, errors = _at_largest(rows, lambda r: r["order"] == order)
    return Effect(units, 0.0, paper_effect, "points", errors)


def _ablation(results: Results) -> Effect:
    return order_effect(results["07_beyond_the_paper"]["ablation_sweeps"], "predictivity")


def _swap(results: Results) -> Effect:
    return order_effect(results["07_beyond_the_paper"]["swap_sweeps"], "predictivity")


def _fig4(results: Results) -> Effect:
    rows = results["03_perturbation"]["sweeps"]
    units, errors = _at_largest(rows, lambda r: r["order"] == r["task"])
    return Effect(units, 0.0, _paper_mean(paper.FIG4_AT_17), "points", errors)


def _fig6(results: Results) -> Effect:
    found = results["03_perturbation"]
    z = found["importance_z"]  # {source: {evaluated: z}}
    tasks = list(z)
    units = {
        t: z[t][t] - _mean([z[s][t] for s in tasks if s != t]) for t in tasks if len(tasks) > 1
    }
    rows = found.get("importance_sweeps")
    if not rows or "correct" not in rows[0] or len(tasks) < 2:
        return Effect(units, 0.0, None, "z")
    return Effect(units, 0.0, None, "z", importance_errors(rows, list(units)))


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
    in the predictivity order (trial 0's, the trial the selectivity order is swept for),
    paired on the examples. The paper finds the selectivity order no better than random,
    so its effect on this scale is Fig. 4's: random order minus own order."""
    found = results["03_perturbation"]
    chosen = pd.DataFrame(found["selectivity_sweeps"])
    top = chosen["fraction"].max()
    sweeps = pd.DataFrame(found["sweeps"])
    own = sweeps[(sweeps["trial"] == 0) & (sweeps["order"] == sweeps["task"])]
    own = own[own["fraction"] == top]
    units: dict[str, float] = {}
    errors: dict[str, float] | None = {} if "correct" in chosen else None
    for task, part in chosen[chosen["fraction"] == top].groupby("task", sort=False):
        mine = own[own["task"] == task]
        if mine.empty:
            raise LedgerError(f"{task}: the predictivity order was not swept at {top:g}")
        units[str(task)] = 100 * float(part["accuracy"].mean() - mine["accuracy"].mean())
        if errors is not None:
            differences = correct_matrix(part.to_dict(orient="records")).mean(axis=0)
            differences -= correct_matrix(mine.to_dict(orient="records")).mean(axis=0)
            errors[str(task)] = 100 * paired_error(differences)
    return Effect(units, 0.0, _paper_mean(paper.FIG4_AT_17), "points", errors)


def _fig7(results: Results) -> Effect:
    rows = results["03_perturbation"]["method_sweeps"]
    units, errors = _at_largest(rows, lambda r: r["order"] != "random") if rows else ({}, None)
    return Effect(units, 0.0, _paper_mean(paper.FIG7_BITFIT_AT_17), "points", errors)


def _fig5(results: Results) -> Effect:
    found = results["04_cross_task_similarity"]
    names, types, matrix = found["names"], found["types"], np.asarray(found["similarity"])
    task_of = [name.split(":")[0] for name in names]
    units = {}
    for i, name in enumerate(names):
        same = [
            matrix[i, j]
            for j in range(len(names))
            if task_of[j] != task_of[i] and types[task_of[j]] == types[task_of[i]]
        ]
        cross = [matrix[i, j] for j in range(len(names)) if types[task_of[j]] != types[task_of[i]]]
        if same and cross:
            units[name] = _mean(same) - _mean(cross)
    (same_lo, same_hi), (cross_lo, cross_hi) = (
        paper.SIMILARITY_FIG5["same type"],
        paper.SIMILARITY_FIG5["cross type"],
    )
    return Effect(units, 0.0, (same_lo + same_hi) / 2 - (cross_lo + cross_hi) / 2, "ρ")


def _label_words(results: Results) -> Effect:
    rows = results["04_cross_task_similarity"]["label_word_robustness"]
    units = {
        f"{r['label words']} ({r['view']})": r["ρ with default words"] - r["ρ default vs default"]
        for r in rows
    }
    same_task = _mean(paper.SIMILARITY_FIG5["same task"])
    return Effect(units, -0.1, paper.LABEL_WORD_SPEARMAN - same_task, "ρ")


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
    paper_gap = _mean([after[0] - before[0] for before, after, _ in paper.TABLE4.values()])
    return Effect(units, -3.0, paper_gap, "points", errors if len(errors) == len(units) else None)


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
    paper_gap = _mean([after[0] - before[0] for before, after, _ in paper.TABLE4.values()])
    return Effect(units, -3.0, paper_gap, "points", errors if len(errors) == len(units) else None)


def _criteria(results: Results) -> Effect:
    rows = [r for r in results["05_pruning"]["criteria"] if r["criterion"] == "magnitude"]
    z = stats.norm.ppf((1 + LEVEL) / 2)  # the comparison's own 95% normal interval
    units = {str(r["task"]): float(r["difference"]) for r in rows}
    errors = {str(r["task"]): (r["high"] - r["low"]) / (2 * z) for r in rows}
    return Effect(units, 0.0, None, "points", errors)


def _tab4_speed(results: Results) -> Effect:
    units = {r["task"]: r[tables.SPEED_UP] for r in results["05_pruning"]["table4"]}
    return Effect(units, 1.0, _mean([v[2] for v in paper.TABLE4.values()]), "×")


def _transfer(results: Results) -> Effect:
    found = results["06_transferability"]
    per_target = found.get("per_target_by_prompt", found["per_target"])  # sources: prompts
    skill, on = per_target["skill-neuron ON"], per_target["ON"]
    units = {t: a - b for t, a, b in zip(found["tasks"], skill, on, strict=True)}
    return Effect(
        units,
        0.0,
        paper.TRANSFER_SPEARMAN["skill-neuron ON"] - paper.TRANSFER_SPEARMAN["ON"],
        "Spearman ρ",
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "§4.1, Tab. 1",
        "A single skill neuron classifies about as well as the whole prompt-tuned model.",
        "top soft-position neuron's test accuracy minus the prompt's, per task (the neuron "
        "read at soft vectors only, never the prediction position)",
        "null: 3 points worse than the prompt (the margin of 'about as well')",
        "02_neuron_discovery",
        "the-top-neuron-against-the-whole-prompt-tab-1",
        _tab1,
    ),
    Claim(
        "§5, Tab. 3",
        "Untuned random prompts already have skill neurons; a random backbone has none.",
        "top-neuron accuracy with a random prompt minus with a random backbone, per task",
        "null: no difference",
        "02_neuron_discovery",
        "without-prompt-tuning-tab-3",
        _tab3,
    ),
    Claim(
        "§4.2, Fig. 4",
        "Perturbing neurons in the task's predictivity order hurts more than random neurons.",
        "accuracy in random order minus in the task's own order at the largest fraction, per task",
        "null: no difference",
        "03_perturbation",
        "perturbing-in-predictivity-order-and-at-random",
        _fig4,
    ),
    Claim(
        "§4.3, Fig. 6",
        "Skill neurons are task-specific: a task's own order matters most for it.",
        "z-scored importance of the task's own order minus the mean of the other tasks' "
        "orders, per evaluated task",
        "null: no difference; the paper gives no number",
        "03_perturbation",
        "neuronal-importance",
        _fig6,
    ),
    Claim(
        "App. H, Fig. 15",
        "Ranking by the selectivity index is no better than random; predictivity is better.",
        "accuracy in the selectivity-index order minus in the predictivity order at the "
        "largest fraction, per task (trial 0)",
        "null: no difference; the paper's selectivity curves lie on its random ones, so its "
        "effect is Fig. 4's (random minus own order)",
        "03_perturbation",
        "selectivity-index-instead-of-predictivity",
        _fig15,
    ),
    Claim(
        "§5, Fig. 7",
        "Models tuned by other methods depend on the prompt-tuning skill neurons.",
        "accuracy in random order minus in the prompt-tuning skill-neuron order at the "
        "largest fraction, per method and task (the paper's number: BitFit)",
        "null: no difference",
        "03_perturbation",
        "other-tuning-methods",
        _fig7,
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
    ),
    Claim(
        "§4.4",
        "Skill neurons do not depend on the label words.",
        "ρ of random-word rankings with the default words' minus ρ among the default "
        "words' trials, per random-word choice",
        "null: 0.1 lower (the margin of 'do not depend')",
        "04_cross_task_similarity",
        "robustness-to-label-words",
        _label_words,
    ),
    Claim(
        "§6.1, Tab. 4",
        "Pruning all but the skill neurons keeps accuracy after prompt retraining.",
        "test accuracy of the pruned model after prompt retraining minus prompt tuning's, per task",
        "null: 3 points lower (the margin of 'keeps accuracy')",
        "05_pruning",
        "accuracy-before-and-after-pruning-tab-4",
        _tab4_accuracy,
    ),
    Claim(
        "§6.1, Tab. 4",
        "The pruned model is faster on a CPU.",
        "measured speed-up of each task's pruned model (chapter 05's Tab. 4 batch shape)",
        "null: 1× (no speed-up)",
        "05_pruning",
        "speed",
        _tab4_speed,
    ),
    Claim(
        "§6.1, Tab. 4 (size chosen on dev)",
        "Skill neurons alone keep accuracy at a pruned size chosen on dev, after recovery.",
        "test accuracy of the pruned model chosen on dev, after its recovery chosen on dev "
        "(the prompt retrained, or a LoRA), minus the unpruned prompt's, per search task",
        "null: 3 points lower (the margin of 'keeps accuracy')",
        "05_pruning",
        "a-pruned-model-chosen-on-dev",
        _chosen_accuracy,
    ),
    Claim(
        "not in the paper (§6.1)",
        "At equal size, skill neurons are a better thing to keep than the neurons of largest "
        "magnitude.",
        "test accuracy with the skill neurons kept minus with the magnitude criterion's "
        "(fold only, at the chosen point's layers and size), per search task",
        "null: no difference; the paper gives no number",
        "05_pruning",
        "skill-neurons-against-other-criteria-at-equal-size",
        _criteria,
    ),
    Claim(
        "not in the paper (§4.2)",
        "Setting the top predictivity neurons to their mean hurts more than setting "
        "scale-matched random neurons to theirs.",
        "test accuracy with random neurons mean-ablated minus with the top predictivity "
        "neurons mean-ablated (the largest share, at the scored positions), per scored task",
        "null: no difference; the paper gives no number",
        "07_beyond_the_paper",
        "causal-tests-mean-ablation",
        _ablation,
    ),
    Claim(
        "not in the paper (§4.2)",
        "Setting the top predictivity neurons to the other class's mean hurts more than "
        "doing so to scale-matched random neurons.",
        "test accuracy with random neurons class-swapped minus with the top predictivity "
        "neurons class-swapped (the largest share, at the scored positions), per scored task",
        "null: no difference; the paper gives no number",
        "07_beyond_the_paper",
        "causal-tests-class-swap-patching",
        _swap,
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
    ),
)


def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def ledger_rows(results: Results, claims: tuple[Claim, ...] = CLAIMS) -> list[dict[str, Any]]:
    """One row per claim: estimate, interval, null, the paper's effect and the verdict.

    A claim whose chapter has no results (not run yet) gets the verdict ``not run``.
    """
    rows = []
    for claim in claims:
        row: dict[str, Any] = {"source": claim.source, "claim": claim.claim}
        if claim.chapter in results:
            effect = claim.measure(results)
            mean, low, high = effect.interval()
            _, across_low, across_high = effect.across_units()
            judged = verdict(effect)
            row |= {
                "estimate": mean,
                "low": low,
                "high": high,
                "null": effect.null,
                "paper": effect.paper,
                "unit": effect.unit,
                "units": len(effect.units),
                "interval over": "the measurement (units fixed)"
                if effect.errors is not None
                else "units",
                "across units": (across_low, across_high),
                "verdict": judged,
                "to decide": to_decide(effect) if judged == UNDECIDED else "",
                "per unit": "; ".join(f"{k} {v:.2f}" for k, v in effect.units.items()),
            }
        else:
            row |= {
                **dict.fromkeys(("estimate", "low", "high", "null", "paper"), math.nan),
                "unit": "",
                "units": 0,
                "interval over": "",
                "across units": (math.nan, math.nan),
                "verdict": NOT_RUN,
                "to decide": "",
                "per unit": "",
            }
        rows.append(row | {"effect": claim.effect, "rule": claim.rule, "where": _where(claim)})
    return rows


def _where(claim: Claim) -> str:
    return f"{claim.chapter}.html#{claim.anchor}"


# Chapters whose results the measures read beside the deciding chapter: the split sizes
# (00) and the prompts' per-trial accuracies (01).
SUPPORT = ("00_data_and_models", "01_prompt_tuning")


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


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The ledger as a reader's table: the interval as text, one row per claim."""
    frame = pd.DataFrame(rows)
    frame["this book"] = [
        ""
        if math.isnan(r["estimate"])
        else f"{_number(r['estimate'])} [{_number(r['low'])}, {_number(r['high'])}] {r['unit']}"
        for r in rows
    ]
    frame["null"] = [_number(r["null"]) for r in rows]
    frame["paper"] = [_number(r["paper"]) if r["paper"] is not None else "no number" for r in rows]
    frame["across units"] = [
        ""
        if math.isnan(r["across units"][0]) or r["interval over"] == "units"
        else "[{}, {}]".format(*map(_number, r["across units"]))
        for r in rows
    ]
    columns = ["source", "claim", "this book", "null", "paper", "verdict", "units"]
    details = ["interval over", "across units", "effect", "rule", "per unit", "where"]
    return frame[[*columns, "to decide", *details]]


def styled(rows: list[dict[str, Any]]) -> Styler:
    """The ledger table: verdicts coloured, each row linking to its chapter section."""
    return (
        table(rows)
        .style.hide(axis="index")
        .format({"where": lambda href: f'<a href="{href}">{href.split(".html")[0]}</a>'})
        .map(lambda v: f"background-color: {VERDICT_COLOURS.get(v, '')}", subset=["verdict"])
    )


def scaled(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """A row's estimate and interval on a common scale: the null at 0 and the paper's
    effect at 1; a row without a paper number is scaled so its interval's farther end
    from the null sits at ±1."""
    null, paper_value = row["null"], row["paper"]
    values = (row["estimate"], row["low"], row["high"])
    if paper_value is not None and paper_value != null:
        span = paper_value - null
    else:
        span = max(abs(v - null) for v in values if not math.isnan(v)) or 1.0
    return tuple((v - null) / span for v in values)  # type: ignore[return-value]
