"""The reproduction ledger: each headline claim of the paper as an effect with an interval.

Every row is computed from the chapters' results files (``results/<chapter>.json`` in the
artefact store), never typed by hand. A claim is stated as an *effect*, one number per
unit (a task, a method and task, or a random label-word choice), oriented so that the
paper claims it is above the row's *null*. This book's estimate is the mean over the
units; its 95% interval is Student's t over them (the units are the population the
paper's claim is about: tasks, not examples). Every row is then judged by one rule:

- ``holds``: the interval lies above the null (the effect is there, in the paper's
  direction);
- ``fails``: the interval lies below the paper's effect (an effect as large as the
  paper's is excluded), or wholly below the null where the paper gives no number;
- ``undecided``: neither. The row then says how many units would decide it if the
  estimate and the spread stayed as they are;
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

from helpers import paper
from helpers.store import ArtefactStore

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
    """

    units: Mapping[str, float]
    null: float
    paper: float | None
    unit: str

    def interval(self, level: float = LEVEL) -> tuple[float, float, float]:
        """Return the mean over units and its Student-t interval (NaN below two units)."""
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


def units_to_decide(effect: Effect, level: float = LEVEL) -> int | None:
    """How many units would make the interval exclude the null or the paper's effect (the
    nearer decision), at today's estimate and spread; None if no number of units would
    (the estimate sits on the null) or the spread is unknown (fewer than two units)."""
    mean, low, high = effect.interval(level)
    n = len(effect.units)
    if math.isnan(low) or high == low:
        return None
    half = (high - low) / 2
    if effect.paper is None:
        distance = abs(mean - effect.null)
    else:  # the nearer of "above the null" and "below the paper's effect"
        distance = max(mean - effect.null, effect.paper - mean)
    if distance <= 0:
        return None
    return max(n + 1, math.ceil(n * (half / distance) ** 2))


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


def _tab1(results: Results) -> Effect:
    rows = results["02_neuron_discovery"]["table1"]
    units = {r["task"]: r["top soft neuron"] - r["prompt tuning"] for r in rows}
    paper_gap = _mean(
        [paper.TABLE1_NEURON[t][0] - paper.TABLE1_PROMPT[t][0] for t in paper.TABLE1_PROMPT]
    )
    return Effect(units, -3.0, paper_gap, "points")


def _tab3(results: Results) -> Effect:
    rows = results["02_neuron_discovery"]["table3"]
    units = {r["task"]: r["random prompt"] - r["random model"] for r in rows}
    paper_gap = _mean([prompt - model for prompt, model in paper.TABLE3_RANDOM.values()])
    return Effect(units, 0.0, paper_gap, "points")


def _at_largest(
    rows: Sequence[Mapping[str, Any]], own: Callable[[Mapping[str, Any]], bool]
) -> dict[str, float]:
    """Per task: random order's mean accuracy minus the own order's, in points, at the
    largest fraction swept (means over trials and random draws)."""
    table = pd.DataFrame(list(rows))
    top = table[table["fraction"] == table["fraction"].max()]
    units = {}
    for task, part in top.groupby("task", sort=False):
        mine = part[part.apply(own, axis=1)]["accuracy"].mean()
        random = part[part["order"] == "random"]["accuracy"].mean()
        units[str(task)] = 100 * float(random - mine)
    return units


def _fig4(results: Results) -> Effect:
    rows = results["03_perturbation"]["sweeps"]
    units = _at_largest(rows, lambda r: r["order"] == r["task"])
    return Effect(units, 0.0, _paper_mean(paper.FIG4_AT_17), "points")


def _fig6(results: Results) -> Effect:
    z = results["03_perturbation"]["importance_z"]  # {source: {evaluated: z}}
    tasks = list(z)
    units = {
        t: z[t][t] - _mean([z[s][t] for s in tasks if s != t]) for t in tasks if len(tasks) > 1
    }
    return Effect(units, 0.0, None, "z")


def _fig15(results: Results) -> Effect:
    rows = results["03_perturbation"]["selectivity"]
    units = {r["task"]: 100 * (r["predictivity"] - r["selectivity index"]) for r in rows}
    return Effect(units, 0.0, None, "points × fraction")


def _fig7(results: Results) -> Effect:
    rows = results["03_perturbation"]["method_sweeps"]
    units = _at_largest(rows, lambda r: r["order"] != "random") if rows else {}
    return Effect(units, 0.0, _paper_mean(paper.FIG7_BITFIT_AT_17), "points")


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
    rows = results["05_pruning"]["table4"]
    units = {r["task"]: r["pruned + prompt tuning"] - r["prompt tuning"] for r in rows}
    paper_gap = _mean([after[0] - before[0] for before, after, _ in paper.TABLE4.values()])
    return Effect(units, -3.0, paper_gap, "points")


def _tab4_speed(results: Results) -> Effect:
    units = {r["task"]: r["speed-up"] for r in results["05_pruning"]["table4"]}
    return Effect(units, 1.0, _mean([v[2] for v in paper.TABLE4.values()]), "×")


def _transfer(results: Results) -> Effect:
    found = results["06_transferability"]
    skill, on = found["per_target"]["skill-neuron ON"], found["per_target"]["ON"]
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
        "importance (area below the random curve) of the predictivity order minus the "
        "selectivity-index order, per task",
        "null: no difference; the paper gives no number",
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
        "§6.2",
        "Overlap of activated skill neurons predicts prompt transfer better than ON.",
        "Spearman ρ of skill-neuron ON with transfer minus ρ of ON, per target task",
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
            judged = verdict(effect)
            needed = units_to_decide(effect) if judged == UNDECIDED else None
            row |= {
                "estimate": mean,
                "low": low,
                "high": high,
                "null": effect.null,
                "paper": effect.paper,
                "unit": effect.unit,
                "units": len(effect.units),
                "verdict": judged,
                "units to decide": needed,
                "per unit": "; ".join(f"{k} {v:.2f}" for k, v in effect.units.items()),
            }
        else:
            row |= {
                **dict.fromkeys(("estimate", "low", "high", "null", "paper"), math.nan),
                "unit": "",
                "units": 0,
                "verdict": NOT_RUN,
                "units to decide": None,
                "per unit": "",
            }
        rows.append(row | {"effect": claim.effect, "rule": claim.rule, "where": _where(claim)})
    return rows


def _where(claim: Claim) -> str:
    return f"{claim.chapter}.html#{claim.anchor}"


def load_results(store: ArtefactStore, claims: tuple[Claim, ...] = CLAIMS) -> dict[str, Any]:
    """Read the results file of every chapter the claims need; skip chapters not yet run."""
    found = {}
    for chapter in dict.fromkeys(claim.chapter for claim in claims):
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
    frame["units to decide"] = [
        "" if r["units to decide"] is None else str(r["units to decide"]) for r in rows
    ]
    columns = ["source", "claim", "this book", "null", "paper", "verdict", "units"]
    return frame[[*columns, "units to decide", "effect", "rule", "per unit", "where"]]


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
