"""How task-specific skill neurons are: rank similarity, overlaps, label words, word selectivity.

Paper: §4.3 (Fig. 5: Spearman correlation of neuron predictivity between tasks, per layer
and averaged over layers; App. E, Fig. 14: per layer), §4.4 (robustness to label words;
Tab. 2: words aligned with the top skill neuron). The paper does not say how its diagonal
(0.50-0.65, not 1) was computed; here every similarity is taken between rankings of
*different* trials, so the diagonal measures trial-to-trial agreement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import combinations

import numpy as np
import torch
from jaxtyping import Bool, Float
from scipy import stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform
from scipy.stats import rankdata
from torch import Tensor

from helpers import data, prompt_trials
from helpers.data import TaskData, verbalizer_ids
from helpers.engine import TextCaches
from helpers.models import Backbone
from helpers.predictivity import (
    ProbeConfig,
    dev_predictivity,
    neuron_values,
    probe_trials,
    top_neuron,
    view_label,
    views,
)
from helpers.prompting import PromptError, SoftPromptModel
from helpers.store import Artefact, ArtefactStore


class SimilarityError(ValueError):
    """A similarity of rankings or tasks cannot be computed from the inputs."""


def trial_predictivity(
    artefacts: Sequence[Artefact], view: str, mask: Bool[Tensor, " prompt"] | None = None
) -> Float[Tensor, "trial layer ffn"]:
    """Return each trial's own Pred(N) on dev (eq. 6 with a single trial), one per probe."""
    return torch.stack([dev_predictivity([artefact], view, mask) for artefact in artefacts])


def spearman(a: Float[Tensor, "... n"], b: Float[Tensor, "... n"]) -> Float[Tensor, ...]:
    """Spearman's rank correlation along the last dimension, ties given their mean rank.

    Returns 0 where one side is constant (no ranking to compare).
    """
    if a.shape != b.shape:
        raise SimilarityError(f"rankings differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    ra = torch.from_numpy(rankdata(a.double().numpy(), axis=-1))
    rb = torch.from_numpy(rankdata(b.double().numpy(), axis=-1))
    ra = ra - ra.mean(dim=-1, keepdim=True)
    rb = rb - rb.mean(dim=-1, keepdim=True)
    norm = ra.norm(dim=-1) * rb.norm(dim=-1)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.where(norm > 0, (ra * rb).sum(dim=-1) / safe, torch.zeros_like(norm)).float()


def layer_similarity(
    a: Float[Tensor, "trial layer ffn"], b: Float[Tensor, "trial layer ffn"], same: bool
) -> Float[Tensor, " layer"]:
    """Per-layer Spearman correlation of two tasks' rankings, averaged over trial pairs.

    With ``same=True`` (a task against itself) only pairs of different trials count, so
    the result measures how well one trial's ranking predicts another's.

    Paper: §4.3, Fig. 5 (before averaging over layers) and Fig. 14.

    Raises:
        ValueError: ``same`` with fewer than two trials.
    """
    pairs = [(i, j) for i in range(len(a)) for j in range(len(b)) if not (same and i == j)]
    if not pairs:
        raise SimilarityError("a task's similarity with itself needs at least two trials")
    return torch.stack([spearman(a[i], b[j]) for i, j in pairs]).mean(dim=0)


def similarity_matrix(
    rankings: Mapping[str, Float[Tensor, "trial layer ffn"]],
) -> Float[Tensor, "task task layer"]:
    """Return the per-layer similarity of every pair of tasks (symmetric; diagonal across trials).

    Average over the last dimension for the paper's Fig. 5.
    """
    names = list(rankings)
    n_layers = next(iter(rankings.values())).shape[1]
    out = torch.zeros(len(names), len(names), n_layers)
    for i, first in enumerate(names):
        for j in range(i, len(names)):
            value = layer_similarity(rankings[first], rankings[names[j]], same=i == j)
            out[i, j] = out[j, i] = value
    return out


def pair_group(first: str, second: str, types: Mapping[str, str]) -> str:
    """Name the group of a pair of views: ``same task``, ``same type`` or ``cross type``.

    Views are task names, or ``task:subtask`` for the binary subtasks of a multi-class
    task; two subtasks of one task are the ``same task``.
    """
    task_a, task_b = first.split(":")[0], second.split(":")[0]
    if task_a == task_b:
        return "same task"
    return "same type" if types[task_a] == types[task_b] else "cross type"


def type_summary(
    matrix: Float[Tensor, "task task"], names: Sequence[str], types: Mapping[str, str]
) -> dict[str, float]:
    """Mean similarity of the pairs in each `pair_group`, the diagonal counted as ``same task``.

    Paper: §4.3 (similarity is higher within a task type).
    """
    groups: dict[str, list[float]] = {"same task": [], "same type": [], "cross type": []}
    for i in range(len(names)):
        for j in range(i, len(names)):
            groups[pair_group(names[i], names[j], types)].append(float(matrix[i, j]))
    return {key: float(np.mean(v)) if v else float("nan") for key, v in groups.items()}


def group_curves(
    by_layer: Float[Tensor, "task task layer"], names: Sequence[str], types: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """The mean per-layer similarity of the pairs in each `pair_group`; a group without
    pairs (e.g. no two tasks of one type) is left out rather than averaged over nothing.

    Paper: App. E, Fig. 14 (task-specificity layer by layer).
    """
    groups: dict[str, list[np.ndarray]] = {"same task": [], "same type": [], "cross type": []}
    for i in range(len(names)):
        for j in range(i, len(names)):
            groups[pair_group(names[i], names[j], types)].append(by_layer[i, j].numpy())
    return {group: np.mean(curves, axis=0) for group, curves in groups.items() if curves}


def by_task(matrix: Float[Tensor, "view view"], names: Sequence[str]) -> tuple[list[str], Tensor]:
    """Average a matrix over views (``task:subtask``) into one row and column per task."""
    tasks = list(dict.fromkeys(name.split(":")[0] for name in names))
    groups = [[i for i, n in enumerate(names) if n.split(":")[0] == task] for task in tasks]
    out = torch.tensor(
        [[float(matrix[a][:, b].mean()) for b in groups] for a in groups], dtype=matrix.dtype
    )
    return tasks, out


def task_similarity(
    matrix: Float[Tensor, "view view"], names: Sequence[str], tasks: Sequence[str]
) -> Float[Tensor, "task task"]:
    """The tasks' skill-neuron similarity (`by_task` of a view × view matrix, as chapter
    04 writes it), in the order of ``tasks``.

    Raises:
        SimilarityError: a task has no view in ``names``.
    """
    found, by = by_task(matrix, names)
    missing = [t for t in tasks if t not in found]
    if missing:
        raise SimilarityError(f"no similarity for tasks {missing}; the matrix has {found}")
    order = [found.index(t) for t in tasks]
    return by[order][:, order].float()


def hypergeometric_pvalue(overlap: int, total: int, size_a: int, size_b: int) -> float:
    """P(|A ∩ B| >= overlap) for a random ``size_b``-set drawn from ``total`` items.

    The chance that two unrelated top sets share at least ``overlap`` neurons: the
    hypergeometric tail, ``scipy.stats.hypergeom.sf(overlap - 1, total, size_a, size_b)``.
    """
    if not (0 <= size_a <= total and 0 <= size_b <= total):
        raise SimilarityError(f"set sizes {size_a}, {size_b} must lie in [0, {total}]")
    return float(stats.hypergeom.sf(overlap - 1, total, size_a, size_b))


def overlap_rows(sets: Mapping[str, Bool[Tensor, "layer ffn"]]) -> list[dict[str, object]]:
    """Overlap of every pair of skill-neuron sets: count, Jaccard, chance, p-value."""
    rows = []
    for first, second in combinations(sets, 2):
        a, b = sets[first], sets[second]
        total, size_a, size_b = a.numel(), int(a.sum()), int(b.sum())
        shared = int((a & b).sum())
        union = int((a | b).sum())
        rows.append(
            {
                "first": first,
                "second": second,
                "shared": shared,
                "expected by chance": size_a * size_b / total,
                "jaccard": shared / union if union else 1.0,
                "p_value": hypergeometric_pvalue(shared, total, size_a, size_b),
            }
        )
    return rows


def task_tree(matrix: Float[Tensor, "task task"]) -> np.ndarray:
    """Average-linkage clustering of tasks on the distance ``1 - similarity`` (scipy linkage).

    Not in the paper: which tasks group together when the similarities are read as a tree.
    """
    similarity = matrix.double().numpy()
    distance = 1 - (similarity + similarity.T) / 2
    np.fill_diagonal(distance, 0.0)
    return hierarchy.linkage(squareform(distance.clip(min=0), checks=False), method="average")


_WORD = re.compile(r"[a-z]{3,}")


def vocabulary_words(backbone: Backbone) -> list[tuple[int, str]]:
    """Return the vocabulary's whole-word tokens as ``(id, word)``, lowercase letters only.

    A token is a whole word when it spells 3+ lowercase letters and the word encodes back
    to that one token in the form a label word takes: after a space on a decoder, bare
    on an encoder (as `data.verbalizer_ids` encodes label words).
    """
    tokenizer = backbone.tokenizer
    lead = " " if backbone.kind == "decoder" else ""
    candidates = []
    for index in range(len(tokenizer)):
        word = tokenizer.decode([index]).strip()
        if _WORD.fullmatch(word):
            candidates.append((index, word))
    if not candidates:
        return []
    encoded = tokenizer([lead + w for _, w in candidates], add_special_tokens=False)["input_ids"]
    return [(i, w) for (i, w), ids in zip(candidates, encoded, strict=True) if ids == [i]]


def random_label_words(backbone: Backbone, n_classes: int, seed: int) -> tuple[str, ...]:
    """Draw ``n_classes`` different whole-word tokens of the vocabulary as label words.

    Paper: §4.4 (skill neurons found with random label words).

    Raises:
        PromptError: the vocabulary has too few whole-word tokens.
    """
    words = [w for _, w in vocabulary_words(backbone)]
    if len(words) < n_classes:
        raise PromptError(f"the vocabulary has only {len(words)} whole-word tokens")
    rng = np.random.default_rng(seed)
    chosen = tuple(words[i] for i in rng.choice(len(words), n_classes, replace=False))
    verbalizer_ids(backbone.tokenizer, chosen, leading_space=backbone.kind == "decoder")
    return chosen


def label_word_robustness(
    backbone: Backbone,
    task: TaskData,
    trained: Sequence[Artefact],
    probes: Sequence[Artefact],
    seeds: Sequence[int],
    store: ArtefactStore,
    max_steps: int | None = None,
    mask: Bool[Tensor, " prompt"] | None = None,
    caches: TextCaches | None = None,
) -> list[dict[str, object]]:
    """Retrain a task's prompts with random label words and compare their neuron rankings
    with those of the default words.

    Each seed draws its own label words (`random_label_words`) and trains one prompt
    exactly like the stored default trials (their configuration, with ``max_steps``
    if given), which is then probed like them. The seeds must differ from the default
    trials' seeds: a trial's seed fixes its initial prompt and its batch order, so a
    random-word trial with a default trial's seed would share both with it, and its ρ
    with the default words would compare matched pairs against a yardstick (``ρ default
    vs default``, pairs of different default trials) of unmatched ones. With disjoint
    seeds both numbers compare trials of different seeds.

    Paper: §4.4 (random label words; mean ρ 0.87).

    Returns:
        one row per seed and binary (sub)task: the words, the seed, the random-word
        prompt's dev and test accuracy (%), the default trials' mean dev accuracy (%),
        ``ρ with default words`` and ``ρ default vs default``.

    Raises:
        ValueError: a seed is one of the default trials' seeds, or a seed repeats.
    """
    prompt_config, train_config, _ = prompt_trials.trial_setup(trained[0])
    default_seeds = {prompt_trials.trial_setup(artefact)[2] for artefact in trained}
    shared = sorted(default_seeds & set(seeds))
    if shared:
        raise SimilarityError(
            f"seeds {shared} are also default trials' seeds {sorted(default_seeds)}: "
            "use seeds the default trials do not use"
        )
    if len(set(seeds)) != len(seeds):
        raise SimilarityError(f"seeds repeat: {list(seeds)}")
    if max_steps is not None:
        train_config = replace(train_config, max_steps=max_steps)
    probe_config = ProbeConfig(**probes[0].meta["config"]["probe"])
    default_dev = 100 * float(np.mean([a.json("metrics")["dev_accuracy"] for a in trained]))
    ours = {view: trial_predictivity(probes, view, mask) for view in views(probes[0])}
    agreement = {v: float(layer_similarity(o, o, True).mean()) for v, o in ours.items()}
    rows, random_probes = [], []
    for seed in seeds:
        words = random_label_words(backbone, task.spec.n_classes, seed=seed)
        (run,) = prompt_trials.run_trials(
            backbone,
            task,
            replace(prompt_config, label_words=words),
            train_config,
            [seed],
            store,
            caches=caches,
        )
        model = prompt_trials.load_prompt(run, backbone)
        (probe,) = probe_trials([model], [run], task, probe_config, store, caches)
        random_probes.append(probe)
        metrics = run.json("metrics")
        for view in views(probe):
            theirs = trial_predictivity([probe], view, mask)
            rows.append(
                {
                    "task": task.spec.name,
                    "label words": "/".join(words),
                    "seed": seed,
                    "view": view,
                    "dev accuracy": 100 * metrics["dev_accuracy"],
                    "test accuracy": 100 * metrics["test_accuracy"],
                    "default dev accuracy": default_dev,
                    "ρ with default words": float(
                        layer_similarity(theirs, ours[view], False).mean()
                    ),
                    "ρ default vs default": agreement[view],
                }
            )
    for view in views(random_probes[0]) if random_probes else []:
        theirs = trial_predictivity(random_probes, view, mask)
        rho, se = averaged_similarity(ours[view], theirs)
        for row in rows:
            if row["view"] == view:
                row |= {"ρ averaged rankings": rho, "ρ averaged rankings se": se}
    return rows


def averaged_similarity(
    ours: Float[Tensor, "trial layer ffn"], theirs: Float[Tensor, "trial layer ffn"]
) -> tuple[float, float]:
    """Mean per-layer Spearman ρ between the trial-averaged rankings of two sets of
    trials, and its jackknife standard error over the trials of ``theirs`` (NaN with
    one): the paper's own §4.4 comparison (0.87), which averages before it ranks.

    Paper: §4.4.
    """

    def rho(chosen: Float[Tensor, "trial layer ffn"]) -> float:
        return float(layer_similarity(ours.mean(0)[None], chosen.mean(0)[None], False).mean())

    k = theirs.shape[0]
    if k < 2:
        return rho(theirs), math.nan
    left = np.array([rho(torch.cat([theirs[:i], theirs[i + 1 :]])) for i in range(k)])
    return rho(theirs), float(np.sqrt((k - 1) / k * ((left - left.mean()) ** 2).sum()))


def weight_selectivity(
    backbone: Backbone, layer: int, neuron: int, k: int = 10, projection: int = 0
) -> dict[str, list[str]]:
    """Vocabulary words whose input embedding is most and least aligned with a neuron.

    Cosine similarity between each whole-word token's input embedding and the neuron's
    input weight vector (Dai et al.). Gated MLPs have two input projections; ``projection``
    picks one (0: the gate, whose activation function decides when the neuron fires).

    Paper: §4.4, Tab. 2 ("cosine similarity" rows).
    """
    module = backbone.ffn_inputs(layer)[projection]
    weight = module.weight.detach()
    vector = weight[neuron] if isinstance(module, torch.nn.Linear) else weight[:, neuron]
    words = vocabulary_words(backbone)
    ids = torch.tensor([i for i, _ in words])
    embeddings = backbone.model.get_input_embeddings().weight.detach()[ids]
    cosine = torch.nn.functional.cosine_similarity(embeddings, vector[None, :], dim=1)
    order = cosine.argsort(descending=True, stable=True)
    return {
        "top": [words[int(i)][1] for i in order[:k]],
        "bottom": [words[int(i)][1] for i in order.flip(0)[:k]],
    }


def activation_selectivity(
    model: SoftPromptModel,
    neuron: tuple[int, int, int],
    k: int = 10,
    sample: int | None = 2000,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, list[str]]:
    """Words that drive a neuron highest and lowest when each word alone is the input text.

    The neuron ``(layer, position, index)`` is read at its scored prompt position, the
    place where its predictivity was measured, with the trained prompt after the word.
    ``sample`` whole-word tokens are drawn (None: all of them).

    Paper: §4.4, Tab. 2 ("average activation" rows, after Suau et al.). The paper reads
    activations without saying where; here they are read where skill neurons live.
    """
    words = [w for _, w in vocabulary_words(model.backbone)]
    if sample is not None and sample < len(words):
        rng = np.random.default_rng(seed)
        words = [words[i] for i in sorted(rng.choice(len(words), sample, replace=False))]
    names = model.config.label_words
    split = data.dataset(words, [0] * len(words), names)
    values = neuron_values(model, split, [neuron], batch_size)[:, 0]
    order = values.argsort(descending=True, stable=True)
    return {
        "top": [words[int(i)] for i in order[:k]],
        "bottom": [words[int(i)] for i in order.flip(0)[:k]],
    }


def word_rows(
    model: SoftPromptModel,
    probe: Artefact,
    task: str,
    mask: Bool[Tensor, " prompt"] | None,
    k: int = 10,
    activation_words: int | None = None,
    batch_size: int = 32,
) -> list[dict[str, str]]:
    """The words each binary (sub)task's top neuron is most and least selective for, by
    weight alignment (`weight_selectivity`) and by activation (`activation_selectivity`):
    one row per (view, measure, end) with the words joined by commas.

    Paper: §4.4 (what the top skill neurons respond to).
    """
    rows = []
    for view in views(probe):
        best = top_neuron([probe], view, mask)[0]
        layer, neuron, position = best["layer"], best["neuron"], best["position"]
        found = {
            "cosine": weight_selectivity(model.backbone, layer, neuron, k),
            "activation": activation_selectivity(
                model, (layer, position, neuron), k, activation_words, 0, batch_size
            ),
        }
        rows += [
            {
                "task": view_label(task, view),
                "neuron": f"L{layer}.{neuron}",
                "measure": f"{how} {end}",
                "words": ", ".join(words[end]),
            }
            for how, words in found.items()
            for end in ("top", "bottom")
        ]
    return rows
