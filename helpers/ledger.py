"""The reproduction ledger: each headline claim of the paper beside this book's number.

Every row's number and verdict are computed from the chapters' results files
(``results/<chapter>.json`` in the artefact store), never typed by hand. A verdict is
``holds``, ``partly`` or ``does not hold`` by the rule stated in the row, or ``not run``
when the chapter's results are missing. The paper's numbers come from `helpers.paper`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from helpers import paper
from helpers.store import ArtefactStore

Results = Mapping[str, Mapping[str, Any]]
HOLDS, PARTLY, FAILS, NOT_RUN = "holds", "partly", "does not hold", "not run"


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and how this book checks it.

    Attributes:
        source: where the paper makes it (section, table or figure).
        claim: the claim in a sentence.
        paper: the paper's number(s), as text.
        rule: when the verdict is ``holds`` / ``partly``, in words.
        chapter: the notebook whose results decide it (its results file's name).
        anchor: the section of that chapter's page holding the computing cell.
        measure: results -> (this book's number as text, verdict).
    """

    source: str
    claim: str
    paper: str
    rule: str
    chapter: str
    anchor: str
    measure: Callable[[Results], tuple[str, str]]


def grade(passed: int, total: int) -> str:
    """``holds`` if every case passes, ``partly`` if some do, else ``does not hold``."""
    if total and passed == total:
        return HOLDS
    return PARTLY if passed else FAILS


def _tab1(results: Results) -> tuple[str, str]:
    rows = results["02_neuron_discovery"]["table1"]
    close = [r for r in rows if r["top soft neuron"] >= r["prompt tuning"] - 3]
    text = "; ".join(
        f"{r['task']} {r['prompt tuning']:.1f}/{r['top soft neuron']:.1f} ({r['top neuron']:.1f})"
        for r in rows
    )
    return f"prompt/soft neuron (neuron with the prediction position): {text}", grade(
        len(close), len(rows)
    )


def _tab3(results: Results) -> tuple[str, str]:
    rows = results["02_neuron_discovery"]["table3"]
    above = [
        r
        for r in rows
        if r["random prompt"] >= r["random guess"] + 10
        and r["random prompt"] >= r["random model"] + 10
    ]
    text = "; ".join(
        f"{r['task']} {r['random prompt']:.1f} vs model {r['random model']:.1f}" for r in rows
    )
    return text, grade(len(above), len(rows))


def _fig4(results: Results) -> tuple[str, str]:
    rows = results["03_perturbation"]["at_largest"]
    hurt = [r for r in rows if r["own order"] < r["random min"]]
    text = "; ".join(f"{r['task']} {r['own order']:.1f} vs {r['random mean']:.1f}" for r in rows)
    return f"own vs random: {text}", grade(len(hurt), len(rows))


def _fig6(results: Results) -> tuple[str, str]:
    z = results["03_perturbation"]["importance_z"]  # {source: {evaluated: z}}
    tasks = list(z)
    top = [t for t in tasks if max(tasks, key=lambda s: z[s][t]) == t]
    return f"own order most important for {len(top)} of {len(tasks)} tasks", grade(
        len(top), len(tasks)
    )


def _fig15(results: Results) -> tuple[str, str]:
    rows = results["03_perturbation"]["selectivity"]
    better = [r for r in rows if r["predictivity"] > r["selectivity index"]]
    text = f"predictivity order hurts more than selectivity order on {len(better)} of {len(rows)}"
    return text, grade(len(better), len(rows))


def _fig7(results: Results) -> tuple[str, str]:
    rows = results["03_perturbation"]["method_sweeps"]
    if not rows:
        return "no other method run", NOT_RUN
    largest = max(r["fraction"] for r in rows)
    by_task: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["fraction"] == largest:
            kind = "random" if r["order"] == "random" else "own"
            by_task.setdefault(r["task"], {"own": [], "random": []})[kind].append(r["accuracy"])
    hurt = [t for t, v in by_task.items() if max(v["own"]) < min(v["random"])]
    text = "; ".join(
        f"{t} {100 * np.mean(v['own']):.1f} vs {100 * np.mean(v['random']):.1f}"
        for t, v in by_task.items()
    )
    return text, grade(len(hurt), len(by_task))


def _fig5(results: Results) -> tuple[str, str]:
    summary = results["04_cross_task_similarity"]["type_summary"]
    same, cross = summary["same type"], summary["cross type"]
    verdict = HOLDS if same >= cross + 0.05 else (PARTLY if same > cross else FAILS)
    return (
        f"same type {same:.3f}, cross type {cross:.3f}, same task {summary['same task']:.3f}",
        verdict,
    )


def _label_words(results: Results) -> tuple[str, str]:
    rows = results["04_cross_task_similarity"]["label_word_robustness"]
    ours = float(np.mean([r["ρ with default words"] for r in rows]))
    trials = float(np.mean([r["ρ default vs default"] for r in rows]))
    verdict = HOLDS if ours >= 0.7 else (PARTLY if ours >= 0.8 * trials else FAILS)
    return f"ρ {ours:.2f} (default words across trials: {trials:.2f})", verdict


def _tab4_accuracy(results: Results) -> tuple[str, str]:
    rows = results["05_pruning"]["table4"]
    close = [r for r in rows if r["pruned + prompt tuning"] >= r["prompt tuning"] - 3]
    text = "; ".join(
        f"{r['task']} {r['prompt tuning']:.1f}→{r['pruned + prompt tuning']:.1f}" for r in rows
    )
    return text, grade(len(close), len(rows))


def _tab4_speed(results: Results) -> tuple[str, str]:
    speed = [r["speedup"] for r in results["05_pruning"]["speed"]]
    share = [
        r["parameter_share"] for r in results["05_pruning"]["size"] if r["model"] != "original"
    ]
    low, high = min(speed), max(speed)
    verdict = HOLDS if low >= 1.3 else (PARTLY if high >= 1.3 else FAILS)
    return f"{low:.2f}-{high:.2f}× measured, {np.mean(share):.1f}% of parameters", verdict


def _transfer(results: Results) -> tuple[str, str]:
    rows = {
        r["indicator"]: r["mean Spearman ρ"] for r in results["06_transferability"]["correlations"]
    }
    on, skill = rows["ON"], rows["skill-neuron ON"]
    verdict = HOLDS if skill > on and skill >= 0.5 else (PARTLY if skill > on else FAILS)
    return f"ON {on:.2f}, skill-neuron ON {skill:.2f}", verdict


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "§4.1, Tab. 1",
        "A single skill neuron classifies about as well as the whole prompt-tuned model.",
        "prompt/neuron: "
        + "; ".join(
            f"{t} {paper.TABLE1_PROMPT[t][0]}/{paper.TABLE1_NEURON[t][0]}"
            for t in paper.TABLE1_PROMPT
        ),
        "holds: the top soft-position neuron within 3 points of the prompt on every task;"
        " partly: on some",
        "02_neuron_discovery",
        "the-top-neuron-against-the-whole-prompt-tab-1",
        _tab1,
    ),
    Claim(
        "§5, Tab. 3",
        "Untuned random prompts already have skill neurons; a random backbone has none.",
        "random prompt/random model: "
        + "; ".join(f"{t} {v[0]}/{v[1]}" for t, v in paper.TABLE3_RANDOM.items()),
        "holds: random prompt ≥ chance + 10 and ≥ random model + 10 on every task",
        "02_neuron_discovery",
        "without-prompt-tuning-tab-3",
        _tab3,
    ),
    Claim(
        "§4.2, Fig. 4",
        "Perturbing neurons in the task's predictivity order hurts more than random neurons.",
        "at 17%: SST-2 ≈ 75 vs 84; IMDB ≈ 72 vs 80; QNLI ≈ 75.6 vs 81.2",
        "holds: own order below every random draw at the largest fraction, on every task",
        "03_perturbation",
        "perturbing-in-predictivity-order-and-at-random",
        _fig4,
    ),
    Claim(
        "§4.3, Fig. 6",
        "Skill neurons are task-specific: a task's own order matters most for it.",
        "the diagonal stands out; same-type tasks light up each other",
        "holds: the own order has the highest z-scored importance for every task",
        "03_perturbation",
        "neuronal-importance",
        _fig6,
    ),
    Claim(
        "App. H, Fig. 15",
        "Ranking by the selectivity index is no better than random; predictivity is better.",
        "predictivity order clearly better on all 7 tasks",
        "holds: the predictivity order hurts more than the selectivity order on every task",
        "03_perturbation",
        "selectivity-index-instead-of-predictivity",
        _fig15,
    ),
    Claim(
        "§5, Fig. 7",
        "Models tuned by other methods depend on the prompt-tuning skill neurons.",
        "BitFit at 17%: SST-2 ≈ 57 vs 90; IMDB ≈ 72 vs 79",
        "holds: prompt-order perturbation below every random draw for every method and task",
        "03_perturbation",
        "other-tuning-methods",
        _fig7,
    ),
    Claim(
        "§4.3, Fig. 5",
        "Tasks of one type rank neurons alike; tasks of different types do not.",
        ", ".join(f"{k} {lo:.2f}-{hi:.2f}" for k, (lo, hi) in paper.SIMILARITY_FIG5.items()),
        "holds: same-type mean ρ ≥ cross-type mean + 0.05; partly: above it",
        "04_cross_task_similarity",
        "similarity-of-neuron-rankings",
        _fig5,
    ),
    Claim(
        "§4.4",
        "Skill neurons do not depend on the label words.",
        f"mean Spearman ρ {paper.LABEL_WORD_SPEARMAN}",
        "holds: ρ ≥ 0.7; partly: at least 80% of the trial-to-trial ρ",
        "04_cross_task_similarity",
        "robustness-to-label-words",
        _label_words,
    ),
    Claim(
        "§6.1, Tab. 4",
        "Pruning all but the skill neurons keeps accuracy after prompt retraining.",
        "; ".join(f"{t} {v[0][0]}→{v[1][0]}" for t, v in paper.TABLE4.items()),
        "holds: pruned + prompt tuning within 3 points of prompt tuning on every task",
        "05_pruning",
        "accuracy-before-and-after-pruning-tab-4",
        _tab4_accuracy,
    ),
    Claim(
        "§6.1, Tab. 4",
        "The pruned model is faster on a CPU.",
        f"1.32-1.38×, {paper.TABLE4_PARAMETER_SHARE}% of parameters",
        "holds: every measured speed-up ≥ 1.3×; partly: some",
        "05_pruning",
        "speed",
        _tab4_speed,
    ),
    Claim(
        "§6.2",
        "Overlap of activated skill neurons predicts prompt transfer better than ON.",
        f"Spearman ρ: ON {paper.TRANSFER_SPEARMAN['ON']}, "
        f"skill-neuron ON {paper.TRANSFER_SPEARMAN['skill-neuron ON']}",
        "holds: skill-neuron ON above ON and ≥ 0.5; partly: above ON",
        "06_transferability",
        "which-indicator-predicts-transfer",
        _transfer,
    ),
)


def ledger_rows(results: Results, claims: tuple[Claim, ...] = CLAIMS) -> list[dict[str, str]]:
    """One row per claim: the paper's number, ours, the verdict, and where it was computed.

    A claim whose chapter has no results (not run yet) gets the verdict ``not run``.
    """
    rows = []
    for claim in claims:
        if claim.chapter in results:
            ours, verdict = claim.measure(results)
        else:
            ours, verdict = "", NOT_RUN
        rows.append(
            {
                "source": claim.source,
                "claim": claim.claim,
                "paper": claim.paper,
                "this book": ours,
                "verdict": verdict,
                "rule": claim.rule,
                "where": f"{claim.chapter}.html#{claim.anchor}",
            }
        )
    return rows


def load_results(store: ArtefactStore, claims: tuple[Claim, ...] = CLAIMS) -> dict[str, Any]:
    """Read the results file of every chapter the claims need; skip chapters not yet run."""
    found = {}
    for chapter in dict.fromkeys(claim.chapter for claim in claims):
        try:
            found[chapter] = store.read_results(chapter)
        except FileNotFoundError:
            continue
    return found


VERDICT_COLOURS = {HOLDS: "#cdebd4", PARTLY: "#fbe8c2", FAILS: "#f6cccc", NOT_RUN: "#e6e6e6"}


def styled(rows: list[dict[str, str]]) -> Styler:
    """The ledger as a table: verdicts coloured, each row linking to its chapter section."""
    table = pd.DataFrame(rows)
    return (
        table.style.hide(axis="index")
        .format({"where": lambda href: f'<a href="{href}">{href.split(".html")[0]}</a>'})
        .map(lambda v: f"background-color: {VERDICT_COLOURS.get(v, '')}", subset=["verdict"])
    )
