"""Prompt transferability, and the indicators that predict it.

Paper: §6.2. A prompt trained on a source task is applied unchanged
to a target task; how well it does, relative to the target's own prompts, is the
*transfer*. Indicators that might predict it without running it: ON, the overlap of the
neurons two prompts activate (Su et al. 2022), ON restricted to the target's skill neurons
(the paper's proposal), the cosine similarity of the prompt vectors (a naive baseline),
and the largest inner product between a token of one prompt and a token of the other (a
token-wise similarity, which work after the paper finds a strong simple predictor). Each
is scored by the Spearman correlation with measured transfer, per target task over
source tasks, averaged over targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from helpers import data, engine, paper
from helpers.data import TaskData, VerbalizerStyle
from helpers.engine import TextCaches
from helpers.prompt_trials import on_backbone
from helpers.prompting import SoftPromptModel, prefix_cached
from helpers.similarity import spearman
from helpers.store import Artefact, ArtefactStore


class TransferError(ValueError):
    """A transfer between prompts or tasks cannot be measured as asked."""


def transfer_accuracy(
    source: SoftPromptModel,
    target: TaskData,
    batch_size: int = 32,
    caches: TextCaches | None = None,
    words: VerbalizerStyle = "shared",
    size: int | None = None,
) -> float:
    """Accuracy of a source task's prompt on a target task's test split, unchanged.

    The prompt is read through the *target's* label words. Where the target has more
    classes than the source (a binary prompt on a three-class task), the extra words'
    logits were never trained by the source: that is part of what transfer measures, as
    in the paper, where all tasks share the label words (a target with more than three
    classes is read through its natural words, as its own prompts are). ``size`` keeps
    the first that many test examples (None: all).

    Paper: §6.2 ("zero-shot transferability").
    """
    test = data.head(target.test, size)
    reader = on_backbone(
        source, source.backbone, label_words=target.spec.label_words(target.spec.words_style(words))
    )
    return reader.evaluate(test, batch_size, caches=caches).accuracy


@torch.no_grad()
def activation_state(model: SoftPromptModel, threshold: float = 0.0) -> Bool[Tensor, "layer ffn"]:
    """Which neurons a prompt activates at the prediction position, given an empty input.

    "Activated" is activation > ``threshold`` (0, as in Su et al.'s code for GELU; the
    gated MLPs of the embedded backbone take both signs, and 0 still splits them).

    Paper: §6.2; Su et al. 2022 (the [MASK] position with an empty input).
    """
    batch = model.encode([""], [None], [0])
    with prefix_cached(model, False):  # an empty text has no keys and values to cache
        values = engine.prompt_activations(model, batch)
    return values[0, :, model.predict_index] > threshold


def overlap_rate(
    a: Bool[Tensor, "layer ffn"],
    b: Bool[Tensor, "layer ffn"],
    within: Bool[Tensor, "layer ffn"] | None = None,
) -> float:
    """ON: the cosine similarity of two binary activation states, optionally within a set.

    With ``within`` (e.g. the target task's skill neurons) only those neurons count: the
    paper's skill-neuron ON. Two states with no active neuron have ON 0.

    Paper: §6.2; Su et al. 2022.
    """
    if within is not None:
        a, b = a[within], b[within]
    a, b = a.flatten().double(), b.flatten().double()
    norm = float(a.norm() * b.norm())
    return 0.0 if norm == 0 else float(a @ b) / norm


def prompt_cosine(a: SoftPromptModel, b: SoftPromptModel) -> float:
    """Cosine similarity of two prompts' flattened vectors (the naive indicator)."""
    first, second = a.prompt.detach().flatten(), b.prompt.detach().flatten()
    return float(torch.nn.functional.cosine_similarity(first, second, dim=0))


def token_similarity(a: SoftPromptModel, b: SoftPromptModel) -> float:
    """The largest inner product between a soft vector of one prompt and one of the other.

    Unlike the cosine of the flattened prompts, it does not depend on the order of the
    vectors, and one shared vector is enough to make two prompts similar.
    """
    return float((a.prompt.detach() @ b.prompt.detach().T).max())


def prompt_owners(prompts: Mapping[str, Sequence[object]]) -> list[int]:
    """The task (its index in ``prompts``) of each source prompt, in the order of the rows
    of a prompt-level matrix: every trial of the first task, then of the next."""
    return [t for t, runs in enumerate(prompts.values()) for _ in runs]


def task_means(
    per_prompt: Float[Tensor, "prompt target"], owners: Sequence[int]
) -> Float[Tensor, "source target"]:
    """A prompt-level matrix averaged over each source task's prompts (rows of one owner)."""
    index = torch.tensor(list(owners))
    return torch.stack([per_prompt[index == t].mean(dim=0) for t in range(int(index.max()) + 1)])


def prompt_pairwise(
    prompts: Mapping[str, Sequence[object]],
    score: Callable[[str, int, str, int], float],
) -> Float[Tensor, "prompt target"]:
    """A source-prompt × target-task matrix: ``score(source, i, target, j)`` averaged over
    the target's trials ``j``, one row per source prompt (`prompt_owners`).

    ``prompts`` gives each task's trials (prompt models, or their activation states): only
    how many each task has is read here; ``score`` reads the trials themselves."""
    names = list(prompts)
    rows = [
        [
            float(np.mean([score(source, i, target, j) for j in range(len(prompts[target]))]))
            for target in names
        ]
        for source in names
        for i in range(len(prompts[source]))
    ]
    return torch.tensor(rows)


def pairwise(
    prompts: Mapping[str, Sequence[object]],
    score: Callable[[str, int, str, int], float],
) -> Float[Tensor, "source target"]:
    """A source × target matrix: ``score(source, i, target, j)`` averaged over trial pairs
    (`prompt_pairwise` averaged over each source task's prompts)."""
    return task_means(prompt_pairwise(prompts, score), prompt_owners(prompts))


def relative_transfer(
    accuracy: Float[Tensor, "source target"], own: Float[Tensor, " target"]
) -> Float[Tensor, "source target"]:
    """Transfer accuracy relative to the target's own prompt accuracy (Su et al.).

    A display scale only: it divides each target's column by one number, so it cannot
    change a per-target ranking of sources, nor any `target_correlations`. A target whose
    own prompts score 0 (a failed tuning run on one's own data) has no such scale: its
    column is NaN.
    """
    return accuracy / torch.where(own > 0, own, float("nan"))[None, :]


def target_correlations(
    indicator: Float[Tensor, "source target"],
    transfer: Float[Tensor, "source target"],
    owners: Sequence[int] | None = None,
) -> Float[Tensor, " target"]:
    """Spearman correlation of an indicator with transfer, per target over the sources that
    are not the target itself.

    The sources are the rows: source tasks (a task-level matrix, square), or with
    ``owners`` source prompts (a prompt-level matrix, `prompt_owners` giving each row's
    task), where the target's own prompts are left out.

    Paper: §6.2 (the averaged Spearman correlation, 0.53 for ON and 0.71 for skill-neuron
    ON). The paper does not say over what the correlation is taken; per target task over
    its source tasks is this book's reading (the question a user asks: which source
    prompt to start a target from).
    """
    owners = list(range(indicator.shape[0])) if owners is None else list(owners)
    if len(owners) != indicator.shape[0]:
        raise TransferError(f"{len(owners)} owners for {indicator.shape[0]} source rows")
    if len(set(owners)) < 3:
        raise TransferError("correlations over sources need at least three tasks")
    rows = []
    for t in range(indicator.shape[1]):
        sources = [k for k, owner in enumerate(owners) if owner != t]
        rows.append(spearman(indicator[sources, t], transfer[sources, t]))
    return torch.stack(rows)


def bootstrap_interval(
    values: Float[Tensor, " target"], draws: int = 2000, level: float = 0.9, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean over targets, resampling targets with replacement."""
    rng = np.random.default_rng(seed)
    array = values.double().numpy()
    means = array[rng.integers(0, len(array), size=(draws, len(array)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


MIN_TASKS = 4  # leave one out, and each target still has two other sources to rank


def check_task_count(tasks: Sequence[str]) -> None:
    """Raise ``ValueError`` before any work if there are too few tasks to correlate an
    indicator with transfer: per target over its sources, and again with each task left
    out, which needs `MIN_TASKS`."""
    if len(tasks) < MIN_TASKS:
        raise TransferError(
            f"transfer needs at least {MIN_TASKS} tasks (each target ranks its sources, also "
            f"with one task left out); got {len(tasks)}: {list(tasks)}"
        )


def leave_one_out(
    indicator: Float[Tensor, "source target"],
    transfer: Float[Tensor, "source target"],
    owners: Sequence[int] | None = None,
) -> list[float]:
    """Mean correlation with each task removed from both sources and targets in turn (with
    ``owners``, a prompt-level matrix: the task's prompts removed from the sources)."""
    owners = list(range(indicator.shape[0])) if owners is None else list(owners)
    n = indicator.shape[1]
    if n < MIN_TASKS:
        raise TransferError(f"leave-one-out needs at least {MIN_TASKS} tasks, got {n}")
    means = []
    for left in range(n):
        rows = [k for k, owner in enumerate(owners) if owner != left]
        columns = [t for t in range(n) if t != left]
        kept = [owners[k] - (owners[k] > left) for k in rows]
        sub_indicator, sub_transfer = indicator[rows][:, columns], transfer[rows][:, columns]
        means.append(float(target_correlations(sub_indicator, sub_transfer, kept).mean()))
    return means


def prompt_transfer(
    store: ArtefactStore,
    trained: Mapping[str, Sequence[Artefact]],
    prompts: Mapping[str, Sequence[SoftPromptModel]],
    targets: Mapping[str, TaskData],
    batch_size: int = 32,
    caches: TextCaches | None = None,
    words: VerbalizerStyle = "shared",
    size: int | None = None,
) -> Float[Tensor, "prompt target"]:
    """Transfer accuracy of every source prompt (every trial of every task, rows as
    `prompt_owners`) on every target task; `task_means` gives the task-level matrix,
    whose diagonal is each task's own prompts. Each (prompt, target) accuracy
    (`transfer_accuracy`) is computed once and kept in the store (stage ``transfer``),
    keyed by the prompt's artefact, the target's splits, the label words and ``size``.

    Paper: §6.2, Fig. 8 (before the relative scale).
    """

    def accuracy(artefact: Artefact, source: SoftPromptModel, target: TaskData) -> float:
        settings = {"prompt": artefact.key, "target": target.spec.name, "words": words}
        settings["size"] = size

        def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
            found = transfer_accuracy(source, target, batch_size, caches, words, size)
            return {}, {"metrics": {"accuracy": found}}

        stored = store.cached("transfer", settings, compute, upstream=[artefact.key, target.key])
        return float(stored.json("metrics")["accuracy"])

    return torch.tensor(
        [
            [accuracy(a, p, target) for target in targets.values()]
            for source in tqdm(prompts, desc="source tasks")
            for a, p in zip(trained[source], prompts[source], strict=True)
        ],
        dtype=torch.float64,
    )


def _scores(
    prompts: Mapping[str, Sequence[SoftPromptModel]],
    states: Mapping[str, Sequence[Bool[Tensor, "layer ffn"]]],
    skill: Mapping[str, Bool[Tensor, "layer ffn"]],
) -> dict[str, Callable[[str, int, str, int], float]]:
    """Each prompt-pair indicator as ``score(source, i, target, j)``."""
    return {
        "ON": lambda s, i, t, j: overlap_rate(states[s][i], states[t][j]),
        "skill-neuron ON": lambda s, i, t, j: overlap_rate(states[s][i], states[t][j], skill[t]),
        "prompt cosine": lambda s, i, t, j: prompt_cosine(prompts[s][i], prompts[t][j]),
        "token similarity": lambda s, i, t, j: token_similarity(prompts[s][i], prompts[t][j]),
    }


def indicators(
    prompts: Mapping[str, Sequence[SoftPromptModel]],
    states: Mapping[str, Sequence[Bool[Tensor, "layer ffn"]]],
    skill: Mapping[str, Bool[Tensor, "layer ffn"]],
    task_similarity: Float[Tensor, "source target"],
) -> dict[str, Float[Tensor, "source target"]]:
    """The transfer indicators as source × target matrices, averaged over trial pairs: ON,
    ON restricted to the target's skill neurons, prompt cosine, token-wise similarity,
    and the tasks' skill-neuron similarity (chapter 04) as given."""
    found = {
        label: pairwise(prompts, score) for label, score in _scores(prompts, states, skill).items()
    }
    return found | {"task similarity": task_similarity}


def prompt_indicators(
    prompts: Mapping[str, Sequence[SoftPromptModel]],
    states: Mapping[str, Sequence[Bool[Tensor, "layer ffn"]]],
    skill: Mapping[str, Bool[Tensor, "layer ffn"]],
    task_similarity: Float[Tensor, "source target"],
) -> dict[str, Float[Tensor, "prompt target"]]:
    """`indicators` with one row per source prompt (`prompt_pairwise`, averaged over the
    target's trials only); the task similarity, a property of the tasks, is repeated for
    each prompt of a source task."""
    found = {
        label: prompt_pairwise(prompts, score)
        for label, score in _scores(prompts, states, skill).items()
    }
    owners = torch.tensor(prompt_owners(prompts))
    return found | {"task similarity": task_similarity[owners]}


def indicator_rows(found: Mapping[str, Float[Tensor, "source target"]]) -> list[dict[str, object]]:
    """Per indicator: its mean off the diagonal, its min and its max."""
    rows = []
    for label, value in found.items():
        off = ~torch.eye(value.shape[0], dtype=torch.bool)
        rows.append(
            {
                "indicator": label,
                "mean off the diagonal": float(value[off].mean()),
                "min": float(value.min()),
                "max": float(value.max()),
            }
        )
    return rows


def correlation_rows(
    found: Mapping[str, Float[Tensor, "source target"]],
    transfer: Float[Tensor, "source target"],
    draws: int = 2000,
    owners: Sequence[int] | None = None,
) -> tuple[list[dict[str, object]], dict[str, np.ndarray]]:
    """Per indicator: the mean per-target Spearman ρ with transfer (`target_correlations`,
    over source tasks, or with ``owners`` over source prompts), its bootstrap interval
    over targets, its range with one task left out and the paper's value; and each
    indicator's per-target correlations.

    Paper: §6.2 (0.53 for ON, 0.71 for skill-neuron ON).
    """
    rows, per_target = [], {}
    for label, value in found.items():
        correlations = target_correlations(value, transfer, owners)
        per_target[label] = correlations.numpy()
        low, high = bootstrap_interval(correlations, draws)
        left_out = leave_one_out(value, transfer, owners)
        rows.append(
            {
                "indicator": label,
                "mean Spearman ρ": float(correlations.mean()),
                "interval low": low,
                "interval high": high,
                "leave-one-out min": min(left_out),
                "leave-one-out max": max(left_out),
                "paper": paper.TRANSFER_SPEARMAN.get(label, float("nan")),
            }
        )
    return rows, per_target
