"""The paper's tables as data frames, with every column name defined once.

Chapters 02 and 05 build Tab. 1, Tab. 3 and Tab. 4 with these functions and write them
to their results; the reproduction ledger (`helpers.ledger`) reads the same columns
through the same constants, so a renamed column cannot silently break a verdict.

Paper: §4.2 Tab. 1 (top neuron vs prompt tuning), §5 Tab. 3 (untuned controls),
§6.1 Tab. 4 (pruning).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from helpers import paper

# Tab. 1: the prompt's test accuracy and its top neuron's, means and stds over trials (%).
PROMPT = "prompt tuning"
PROMPT_STD = "prompt std"
TOP_NEURON = "top neuron"
TOP_NEURON_STD = "top neuron std"
TOP_SOFT_NEURON = "top soft neuron"
PAPER_TASK = "paper task"
PAPER_PROMPT = "paper prompt"
PAPER_NEURON = "paper neuron"
# Tab. 3: the top neuron's test accuracy without prompt tuning, per control (%).
RANDOM_GUESS = "random guess"
RANDOM_PROMPT = "random prompt"
RANDOM_MODEL = "random model"
TUNED_TOP_NEURON = "prompt tuning (top neuron)"
# Tab. 4: prompt accuracy on the original, the pruned and the retrained pruned model (%).
PRUNED = "pruned"
RETRAINED = "pruned + prompt tuning"
SPEED_UP = "speed-up"
PAPER_RETRAINED = "paper pruned + PT"
PAPER_SPEED_UP = "paper speed-up"


def _mean_std(values: Mapping[str, Sequence[float]]) -> tuple[pd.Series, pd.Series]:
    """Means and sample stds in percent of per-task fractions (std 0 for one value)."""
    mean = pd.Series({n: 100 * float(np.mean(v)) for n, v in values.items()})
    std = pd.Series(
        {n: 100 * float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for n, v in values.items()}
    )
    return mean, std


def table1(
    trials: Sequence[Mapping[str, Any]],
    top: Mapping[str, Sequence[float]],
    top_soft: Mapping[str, Sequence[float]],
) -> pd.DataFrame:
    """Tab. 1: prompt tuning against its single best neuron, one row per task.

    Args:
        trials: chapter 01's trial rows (``task``, ``test_accuracy`` in %).
        top: per task, the top neuron's test accuracy per trial (fractions), at the
            scored positions.
        top_soft: the same at the soft-prompt positions only.
    """
    tasks = list(top)
    prompt = pd.DataFrame(list(trials)).groupby("task")["test_accuracy"]
    neuron, neuron_std = _mean_std(top)
    return pd.DataFrame(
        {
            PROMPT: prompt.mean().reindex(tasks),
            PROMPT_STD: prompt.std().reindex(tasks),
            TOP_NEURON: neuron,
            TOP_NEURON_STD: neuron_std,
            TOP_SOFT_NEURON: _mean_std(top_soft)[0],
            PAPER_TASK: pd.Series({n: paper.analogue(n) for n in tasks}),
            PAPER_PROMPT: pd.Series({n: paper.reported(paper.TABLE1_PROMPT, n, 0) for n in tasks}),
            PAPER_NEURON: pd.Series({n: paper.reported(paper.TABLE1_NEURON, n, 0) for n in tasks}),
        }
    )


def agreement(
    first: Mapping[str, Sequence[str]], second: Mapping[str, Sequence[str]], names: tuple[str, str]
) -> pd.DataFrame:
    """How two classifiers' outcomes on the same test examples split, one row per task: the
    share (%) of examples both get right, only one of them, or neither, mean over trials.

    Args:
        first, second: per task, each trial's per-example outcomes (strings of 0s and 1s,
            `zeroshot.outcome_string`), trials in the same order on both sides.
        names: the two classifiers' names, for the columns.
    """
    rows = {}
    for task, outcomes in first.items():
        shares = np.zeros(4)
        for a, b in zip(outcomes, second[task], strict=True):
            x = np.frombuffer(a.encode(), np.uint8) == ord("1")
            y = np.frombuffer(b.encode(), np.uint8) == ord("1")
            shares += [np.mean(x & y), np.mean(x & ~y), np.mean(~x & y), np.mean(~x & ~y)]
        rows[task] = 100 * shares / len(outcomes)
    columns = ["both right", f"{names[0]} only", f"{names[1]} only", "both wrong"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def table3(
    rows: Sequence[Mapping[str, Any]], chance: Mapping[str, float], tuned: pd.Series
) -> pd.DataFrame:
    """Tab. 3: the top neuron's accuracy under each untuned control, one row per task.

    Args:
        rows: one per (task, control) with ``task``, ``control`` and ``top neuron`` (%).
        chance: each task's random-guess accuracy (%), in row order.
        tuned: the trained prompt's top-neuron accuracy per task (Tab. 1).
    """
    table = (
        pd.DataFrame(list(rows))
        .pivot(index="task", columns="control", values=TOP_NEURON)
        .reindex(list(chance))
    )
    table.insert(0, RANDOM_GUESS, list(chance.values()))
    table[TUNED_TOP_NEURON] = tuned
    return table


def table4(trials: pd.DataFrame, speed_up: pd.Series, tasks: Sequence[str]) -> pd.DataFrame:
    """Tab. 4: accuracy before and after pruning (means and stds over trials), the
    measured speed-up and the paper's numbers, one row per task.

    Args:
        trials: one row per trial with ``task`` and the `PROMPT`, `PRUNED` and `RETRAINED`
            accuracies (%).
        speed_up: measured speed-up per task.
    """
    grouped = trials.groupby("task")[[PROMPT, PRUNED, RETRAINED]]
    table = grouped.mean().reindex(tasks).join(grouped.std().reindex(tasks).add_suffix(" std"))
    table[SPEED_UP] = speed_up.reindex(tasks)
    table[PAPER_TASK] = [paper.analogue(n) for n in tasks]
    table[PAPER_RETRAINED] = [paper.reported(paper.TABLE4, n, 1, 0) for n in tasks]
    table[PAPER_SPEED_UP] = [paper.reported(paper.TABLE4, n, 2) for n in tasks]
    return table
