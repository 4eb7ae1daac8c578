"""Numbers reported by the paper (Wang et al., EMNLP 2022), for comparison only.

These are the paper's values on roberta-base with its seven Hub tasks, copied from its
tables and read from its figures (marked where approximate). They are never used as results of this book: every number
the book reports is computed by the book. Tables show them side by side, labelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Tab. 1: accuracy (%) of prompt tuning and of the top skill neuron, mean and std over 5 trials.
TABLE1_PROMPT: dict[str, tuple[float, float]] = {
    "sst2": (91.8, 0.5),
    "imdb": (91.6, 0.5),
    "tweet": (70.0, 0.2),
    "mnli": (76.8, 1.8),
    "qnli": (85.7, 0.7),
    "agnews": (98.8, 0.1),
    "dbpedia": (99.7, 0.1),
}
TABLE1_NEURON: dict[str, tuple[float, float]] = {
    "sst2": (91.6, 0.3),
    "imdb": (92.0, 0.3),
    "tweet": (56.0, 3.2),
    "mnli": (74.7, 2.5),
    "qnli": (86.0, 0.4),
    "agnews": (98.9, 0.1),
    "dbpedia": (99.8, 0.1),
}

# Classes of each of the paper's tasks, for chance levels on scale-free comparisons.
CLASSES: dict[str, int] = {
    "sst2": 2,
    "imdb": 2,
    "tweet": 3,
    "mnli": 3,
    "qnli": 2,
    "agnews": 4,
    "dbpedia": 14,
}

# Which paper task each embedded task stands in for (same type and number of classes).
ANALOGUE: dict[str, str] = {
    "rotten_tomatoes": "sst2",
    "amazon": "imdb",
    "cf_tweets": "tweet",
    "snli": "mnli",
    "bbc": "agnews",
}


def analogue(task: str) -> str:
    """Return the paper task a task stands in for (a Hub task stands for itself)."""
    return ANALOGUE.get(task, task)


def reported(table: Mapping[str, Any], task: str, *where: int) -> float:
    """The paper's number in ``table`` for the task ``task`` stands in for, indexed by
    ``where`` into the table's entry (e.g. ``0`` for a mean of ``(mean, std)``); NaN for
    a task of your own that has no counterpart in the paper."""
    entry = table.get(analogue(task))
    if entry is None:
        return math.nan
    for index in where:
        entry = entry[index]
    return float(entry)


# Tab. 4: prompt tuning, prompt tuning on the pruned model (top 2% per layer kept in the
# top 9 layers; 66.6% of the parameters), accuracy mean and std, and CPU speed-up.
TABLE4: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "sst2": ((91.8, 0.5), (89.3, 2.0), 1.34),
    "imdb": ((91.6, 0.5), (87.6, 3.0), 1.34),
    "tweet": ((70.0, 0.2), (69.0, 0.9), 1.34),
    "mnli": ((76.8, 1.8), (70.0, 1.1), 1.38),
    "qnli": ((85.7, 0.7), (81.0, 1.0), 1.36),
    "agnews": ((98.8, 0.1), (99.8, 0.1), 1.32),
    "dbpedia": ((99.7, 0.1), (99.0, 0.1), 1.33),
}
TABLE4_PARAMETER_SHARE = 66.6

# §6.2: mean Spearman correlation between an indicator and zero-shot prompt transfer.
TRANSFER_SPEARMAN: dict[str, float] = {"ON": 0.53, "skill-neuron ON": 0.71}

# §4.3-4.4, Fig. 5: Spearman correlation of neuron rankings (read from the figure), and the
# mean correlation between rankings found with random and with default label words.
SIMILARITY_FIG5: dict[str, tuple[float, float]] = {
    "same task": (0.50, 0.65),
    "same type": (0.17, 0.42),
    "cross type": (0.02, 0.07),
}
LABEL_WORD_SPEARMAN = 0.87

# Tab. 3: top-neuron accuracy (%) without prompt tuning: random prompt, random model.
TABLE3_RANDOM: dict[str, tuple[float, float]] = {
    "sst2": (78.1, 52.8),
    "imdb": (76.7, 58.0),
    "tweet": (48.2, 48.3),
    "mnli": (39.8, 32.2),
    "qnli": (69.5, 54.3),
    "agnews": (96.0, 62.7),
    "dbpedia": (98.8, 60.9),
}

# Fig. 4 / Fig. 11 (read from the figure): test accuracy (%) at 17% of the neurons
# perturbed with N(0, 0.1²) noise, in the task's own predictivity order and in random order.
FIG4_AT_17: dict[str, tuple[float, float]] = {
    "sst2": (75.0, 84.0),
    "imdb": (72.0, 80.0),
    "tweet": (59.0, 61.7),
    "mnli": (65.7, 67.8),
    "qnli": (75.6, 81.2),
    "agnews": (97.7, 98.3),
    "dbpedia": (98.7, 99.1),
}

# Fig. 7 / Fig. 13 (read from the figure): BitFit-tuned models at 17%, in the prompt-tuning
# skill-neuron order and in random order.
FIG7_BITFIT_AT_17: dict[str, tuple[float, float]] = {
    "imdb": (72.0, 79.0),
    "sst2": (57.0, 90.0),
    "tweet": (54.0, 69.0),
    "mnli": (53.0, 75.0),
    "qnli": (58.5, 86.0),
}
