"""Predictivity of neurons and the selection of skill neurons.

Paper: §3.1, eqs. 5-6 (predictivity: two-sided, max over prompt tokens, mean over
trials), §3.2 (multi-class tasks: equal numbers from each binary subtask). The official
code ranks neurons within each layer (``src/skillneuron.py``); the paper's wording sorts
all neurons of the model. Both are available; per layer is the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
from datasets import Dataset
from jaxtyping import Bool, Float
from torch import Tensor

from helpers import activations, data, engine
from helpers.activations import NeuronError
from helpers.checks import check_choice
from helpers.data import TaskData, stable_seed
from helpers.engine import Pooling, TextCaches
from helpers.models import Backbone
from helpers.prompting import PromptConfig, SoftPromptModel, hand_written_config
from helpers.store import Artefact, ArtefactStore
from helpers.zeroshot import outcome_string

Selection = Literal["per_layer", "global"]
Positions = Literal["prompt", "soft"]


def token_predictivity(
    accuracy: Float[Tensor, "... prompt ffn"],
) -> Float[Tensor, "... prompt ffn"]:
    """Return ``max(acc, 1 - acc)``: a neuron that is reliably below its baseline counts too.

    Paper: eq. 5.
    """
    return torch.maximum(accuracy, 1 - accuracy)


def position_mask(
    n_scored: int, predict_index: int, length: int, kind: str, positions: Positions
) -> Tensor:
    """Return which scored positions take part in the max over prompt tokens.

    ``prompt`` uses every scored position (the official code counts the ``[MASK]``
    position with the soft tokens; the decoder analogue includes the prediction
    position). ``soft`` keeps soft vectors only, never the prediction position.

    Args:
        n_scored: scored positions per example.
        predict_index: index, among the scored positions, of the prediction position.
        length: number of soft vectors.
        kind: ``encoder`` (scored = [MASK] then soft) or ``decoder`` (soft then template).
    """
    mask = torch.ones(n_scored, dtype=torch.bool)
    if positions == "soft":
        soft = torch.zeros(n_scored, dtype=torch.bool)
        if kind == "encoder":
            soft[1 : 1 + length] = True
        else:
            soft[:length] = True
        soft[predict_index] = False
        mask = soft
    if not bool(mask.any()):
        raise NeuronError(f"no scored position left with positions={positions!r}")
    return mask


def predictivity(
    accuracies: Float[Tensor, "trial layer prompt ffn"],
    mask: Bool[Tensor, " prompt"] | None = None,
    examples: int | None = None,
) -> Float[Tensor, "layer ffn"]:
    """Return Pred(N): the mean over trials of the max over prompt positions of eq. 5.

    With ``examples`` (the size of the split the accuracies were counted on), the
    accuracies are turned back into the integer counts they came from and Pred(N) is
    computed from those counts exactly (in float64). Neurons with the same counts then tie
    exactly; in float32, ``1 - acc`` and a mean over trials round differently for the same
    counts (27 of the 301 values of k/300), which orders tied neurons at random.

    Paper: eq. 6; official code ``finfo`` (mean of per-trial maxima of |acc - 0.5|).

    Raises:
        ValueError: ``examples`` is not positive, or an accuracy is not a count out of it.
    """
    if examples is None:
        scores = token_predictivity(accuracies)
        if mask is not None:
            scores = scores[:, :, mask]
        return scores.max(dim=2).values.mean(dim=0)
    if examples <= 0:
        raise NeuronError(f"examples must be positive, got {examples}")
    counts = torch.round(accuracies.double() * examples)
    if float((counts - accuracies.double() * examples).abs().max()) > 1e-3:
        raise NeuronError(f"the accuracies are not counts out of examples={examples}")
    best = torch.maximum(counts, examples - counts).long()
    if mask is not None:
        best = best[:, :, mask]
    return best.max(dim=2).values.sum(dim=0).double() / (examples * len(accuracies))


def share(fraction: float, n: int) -> int:
    """Return how many of ``n`` neurons a fraction selects: ``int(fraction * n)`` as in the
    official code, but at least one for a positive fraction (a narrow model's 2% could
    otherwise be no neuron at all)."""
    return max(1, int(fraction * n)) if fraction > 0 else 0


def select(
    scores: Float[Tensor, "layer ffn"],
    fraction: float | None = None,
    count: int | None = None,
    selection: Selection = "per_layer",
) -> Bool[Tensor, "layer ffn"]:
    """Mark the skill neurons: the highest-scoring ones, per layer or over the whole model.

    Give either ``fraction`` (of the neurons in each layer, or of all neurons) or
    ``count`` (per layer, or in total). Ties are broken by position: of neurons with the
    same score, the one with the lower index (layer first under ``global``) is chosen.

    Paper: §3.1 ("sort all the neurons"); official code: ``int(p * 3072)`` per layer.
    """
    if (fraction is None) == (count is None):
        raise NeuronError("give exactly one of fraction and count")
    check_choice("selection", selection, Selection)
    n_layers, width = scores.shape
    if selection == "per_layer":
        k = count if count is not None else share(fraction, width)  # type: ignore[arg-type]
        if not 0 <= k <= width:
            raise NeuronError(f"cannot select {k} of {width} neurons per layer")
        top = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask.scatter_(1, top, True)
        return mask
    k = count if count is not None else share(fraction, scores.numel())  # type: ignore[arg-type]
    if not 0 <= k <= scores.numel():
        raise NeuronError(f"cannot select {k} of {scores.numel()} neurons")
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[scores.flatten().argsort(descending=True, stable=True)[:k]] = True
    return flat.reshape(n_layers, width)


def select_multiclass(
    subtask_scores: Sequence[Float[Tensor, "layer ffn"]],
    fraction: float | None = None,
    count: int | None = None,
    selection: Selection = "per_layer",
) -> Bool[Tensor, "layer ffn"]:
    """Select skill neurons of a multi-class task: equal numbers from each binary subtask.

    The subtasks take turns in their own rank order, skipping neurons already chosen, until
    the total (per layer, or over the model) reaches what ``fraction``/``count`` asks for
    times the number of subtasks (the official code: top-p of subtask 1, then subtask 2's
    neurons in rank order until 2p).

    Paper: §3.2 ("top-100 for MNLI = top-50 unique from each of the 2 subtasks").
    """
    if (fraction is None) == (count is None):
        raise NeuronError("give exactly one of fraction and count")
    shape = subtask_scores[0].shape
    groups = 1 if selection == "global" else shape[0]
    per_group = shape[1] if selection == "per_layer" else shape[0] * shape[1]
    k = count if count is not None else share(fraction, per_group)  # type: ignore[arg-type]
    total = min(per_group, k * len(subtask_scores))
    orders = [
        s.reshape(groups, per_group).argsort(dim=1, descending=True, stable=True)
        for s in subtask_scores
    ]
    mask = torch.zeros(groups, per_group, dtype=torch.bool)
    for g in range(groups):
        cursors = [0] * len(orders)
        chosen = 0
        while chosen < total:
            for i, order in enumerate(orders):
                if chosen >= total:
                    break
                while cursors[i] < per_group and mask[g, order[g, cursors[i]]]:
                    cursors[i] += 1
                if cursors[i] < per_group:
                    mask[g, order[g, cursors[i]]] = True
                    chosen += 1
    return mask.reshape(shape)


def ranking(scores: Float[Tensor, "layer ffn"]) -> list[tuple[int, int, float]]:
    """Return all neurons as ``(layer, index, score)``, best first."""
    order = scores.flatten().argsort(descending=True, stable=True)
    width = scores.shape[1]
    return [(int(i) // width, int(i) % width, float(scores.flatten()[i])) for i in order]


# ----------------------------------------------------------------------------------
# Probing trained prompts through the artefact store (chapter 02).


@dataclass(frozen=True)
class ProbeConfig:
    """What a probe of one prompt computes.

    Attributes:
        baseline_size: training examples averaged for the baseline (None: the split).
        pooling: ``prompt`` (the paper's method), or ``mean``/``max`` over input tokens
            (the paper's "Avg."/"Max." baselines).
        permutations: label permutations for the null distribution (0: none).
        batch_size: examples per forward pass.
        on_test: score the test split too (Tab. 1 reports the top neuron there); a probe
            that only ranks neurons (e.g. the pooled baselines of Fig. 3) needs dev alone.
        null_seed: mixed into the seed of each view's label permutations (with the task's
            content and the view), so a replicate of the book draws other permutations.
    """

    baseline_size: int | None = 500
    pooling: Pooling = "prompt"
    permutations: int = 0
    batch_size: int = 32
    on_test: bool = True
    null_seed: int = 0


Views = dict[str, tuple[Tensor, Tensor]]  # view name -> (rows of the split, 0/1 labels)


def binary_views(data_: Dataset, n_classes: int) -> Views:
    """The binary (sub)tasks a split is scored on, as rows of the split with 0/1 labels:
    the split itself (``binary``); for three classes of which one is ``neutral``, the
    paper's ``pn`` and ``neu`` subtasks (§3.2); for any other task, one view per class,
    that class against the rest (``<class>_vs_rest``, `data.one_vs_rest_rows`)."""
    if n_classes == 2:
        return {"binary": (torch.arange(len(data_)), torch.tensor(list(data_["label"])))}
    names = list(data_.features["label"].names)
    views = {}
    if n_classes == 3 and "neutral" in names:
        for kind in ("pn", "neu"):
            rows, labels, _ = data.subtask_rows(data_, kind)
            views[kind] = (torch.as_tensor(rows), torch.as_tensor(labels))
        return views
    for label, name in enumerate(names):
        rows, labels = data.one_vs_rest_rows(data_, label)
        views[f"{name}_vs_rest"] = (torch.as_tensor(rows), torch.as_tensor(labels))
    return views


def probe(
    model: SoftPromptModel,
    task: TaskData,
    config: ProbeConfig,
    store: ArtefactStore,
    identity: dict[str, object],
    upstream: Sequence[str] = (),
    progress: bool = False,
    caches: TextCaches | None = None,
) -> Artefact:
    """Compute (or load) one prompt's neuron statistics on a task, stage ``neurons``.

    For each binary (sub)task: the baseline on train (eq. 3), the threshold accuracy on dev
    and (``on_test``) on test (eq. 4), and with permutations the best token predictivity
    under each permutation of the dev labels. Multi-class tasks are scored on their binary subtasks
    with the multi-class prompt (§3.2); the subtasks are views of the task's splits, so
    each example runs once. The baseline uses the first ``baseline_size`` training rows
    (a multi-class task: their subtasks).

    Args:
        identity: what the prompt is (e.g. its artefact key, or "random prompt, seed 3");
            part of the artefact's key.
        caches: text caches shared by every prompt probed on this task and backbone.
    """
    settings = {
        "probe": asdict(config),
        "prompt": identity,
        "task": task.spec.name,
        "subtasks": "views of the baseline rows",
        "dev_examples": "stored",
    }
    n_classes = task.spec.n_classes

    def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
        fit = data.head(task.train, config.baseline_size)
        fit_views = {name: rows for name, (rows, _) in binary_views(fit, n_classes).items()}
        common = (config.batch_size, caches, progress)
        base = activations.baselines(model, fit, fit_views, *common, config.pooling)
        dev_views = binary_views(task.dev, n_classes)
        seeds = {
            view: stable_seed("null", task.spec.seed_name, view, config.null_seed)
            for view in dev_views
        }
        dev = activations.threshold_accuracies(
            model, task.dev, dev_views, base, *common, config.permutations, seeds, config.pooling
        )
        test: dict[str, tuple[Tensor, Tensor | None]] = {}
        if config.on_test:
            test_views = binary_views(task.test, n_classes)
            test = activations.threshold_accuracies(
                model, task.test, test_views, base, *common, pooling=config.pooling
            )
        tensors: dict[str, Tensor] = {}
        for view in dev_views:
            dev_acc, null = dev[view]
            tensors |= {f"{view}/baseline": base[view], f"{view}/dev": dev_acc}
            if view in test:
                tensors[f"{view}/test"] = test[view][0]
            if null is not None:
                tensors[f"{view}/null_top"] = token_predictivity(null).flatten(1).max(dim=1).values
        examples = {view: len(rows) for view, (rows, _) in dev_views.items()}
        return tensors, {"views": list(dev_views), "dev_examples": examples}

    return store.cached("neurons", settings, compute, upstream)


def stacked(artefacts: Sequence[Artefact], name: str) -> Float[Tensor, "trial layer prompt ffn"]:
    """Stack one statistic (e.g. ``binary/dev``) of several probes, one per trial."""
    return torch.stack([artefact.tensors()[name] for artefact in artefacts])


def views(artefact: Artefact) -> list[str]:
    """Return the binary (sub)tasks a probe scored: ``binary``, or ``pn`` and ``neu``."""
    return list(artefact.json("views"))


def dev_predictivity(
    artefacts: Sequence[Artefact], view: str, mask: Bool[Tensor, " prompt"] | None = None
) -> Float[Tensor, "layer ffn"]:
    """Return Pred(N) on dev of one binary (sub)task over the probes' trials, computed
    exactly from the dev counts (`predictivity` with ``examples``)."""
    examples = {int(artefact.json("dev_examples")[view]) for artefact in artefacts}
    if len(examples) != 1:
        raise NeuronError(f"the probes counted {view!r} on dev splits of sizes {sorted(examples)}")
    return predictivity(stacked(artefacts, f"{view}/dev"), mask, examples.pop())


def task_predictivity(
    artefacts: Sequence[Artefact], mask: Bool[Tensor, " prompt"] | None = None
) -> dict[str, Float[Tensor, "layer ffn"]]:
    """Return Pred(N) on dev per binary (sub)task, from one probe per trial."""
    return {v: dev_predictivity(artefacts, v, mask) for v in views(artefacts[0])}


def skill_neurons(
    artefacts: Sequence[Artefact],
    fraction: float | None = None,
    count: int | None = None,
    selection: Selection = "per_layer",
    mask: Bool[Tensor, " prompt"] | None = None,
) -> Bool[Tensor, "layer ffn"]:
    """Select a task's skill neurons from its probes; multi-class tasks share subtasks equally."""
    return select_views(
        list(task_predictivity(artefacts, mask).values()), fraction, count, selection
    )


def select_views(
    scores: Sequence[Float[Tensor, "layer ffn"]],
    fraction: float | None = None,
    count: int | None = None,
    selection: Selection = "per_layer",
) -> Bool[Tensor, "layer ffn"]:
    """Select the top neurons by one score per binary (sub)task: `select` for one, else
    equal shares of ``fraction``/``count`` from each (`select_multiclass`, §3.2)."""
    if len(scores) == 1:
        return select(scores[0], fraction, count, selection)
    share = None if count is None else count // len(scores)
    part = None if fraction is None else fraction / len(scores)
    return select_multiclass(scores, part, share, selection)


def top_neuron(
    artefacts: Sequence[Artefact], view: str, mask: Bool[Tensor, " prompt"] | None = None
) -> list[dict[str, float]]:
    """Report the top skill neuron of a binary (sub)task on test, one row per trial.

    The neuron is the best by Pred(N) on dev; in each trial it is read at the prompt
    position where its dev accuracy is furthest from chance, and oriented by dev (a
    neuron below its baseline for the positive class predicts the negative one). Its
    test accuracy is then a fair held-out number.

    Paper: Tab. 1, "skill neuron" column (binary tasks).
    """
    dev = stacked(artefacts, f"{view}/dev")
    test = stacked(artefacts, f"{view}/test")
    keep = torch.ones(dev.shape[2], dtype=torch.bool) if mask is None else mask
    layer, neuron, score = ranking(dev_predictivity(artefacts, view, keep))[0]
    rows = []
    for trial in range(dev.shape[0]):
        dev_acc = dev[trial, layer, :, neuron].masked_fill(~keep, 0.5)
        position = int((dev_acc - 0.5).abs().argmax())
        positive = bool(dev_acc[position] >= 0.5)
        test_acc = float(test[trial, layer, position, neuron])
        rows.append(
            {
                "trial": trial,
                "layer": layer,
                "neuron": neuron,
                "position": position,
                "dev_predictivity": score,
                "positive": positive,
                "test_accuracy": test_acc if positive else 1 - test_acc,
            }
        )
    return rows


def jaccard(a: Bool[Tensor, "*shape"], b: Bool[Tensor, "*shape"]) -> float:
    """Return |a ∩ b| / |a ∪ b| of two neuron sets (1.0 for two empty sets)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def stability(
    artefacts: Sequence[Artefact],
    view: str,
    count: int,
    selection: Selection = "global",
    mask: Bool[Tensor, " prompt"] | None = None,
) -> float:
    """Mean pairwise Jaccard overlap of the top-``count`` neurons chosen in each trial alone.

    Not in the paper: how reproducible a skill-neuron set is from one prompt to the next.
    """
    sets = [
        select(dev_predictivity([artefact], view, mask), count=count, selection=selection)
        for artefact in artefacts
    ]
    pairs = [(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets))]
    if not pairs:
        raise NeuronError("stability needs at least two trials")
    return sum(jaccard(sets[i], sets[j]) for i, j in pairs) / len(pairs)


@torch.no_grad()
def neuron_values(
    model: SoftPromptModel,
    split: Dataset,
    neurons: Sequence[tuple[int, int, int]],
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> Float[Tensor, "n neuron"]:
    """Return chosen neurons' activations, each ``(layer, position, index)``, per example."""
    values = torch.empty(len(split), len(neurons))
    for batch, cache in model.eval_batches(split, batch_size, caches):
        acts = engine.prompt_activations(model, batch, cache)
        values[batch.rows] = torch.stack(
            [acts[:, layer, pos, idx] for layer, pos, idx in neurons], dim=1
        )
    return values


def logistic_accuracy(
    train_x: Float[Tensor, "n feature"],
    train_y: Tensor,
    test_x: Float[Tensor, "m feature"],
    test_y: Tensor,
    steps: int = 200,
) -> float:
    """Fit a multinomial logistic regression on train, return its accuracy on test
    (`logistic_outcomes`)."""
    return float(logistic_outcomes(train_x, train_y, test_x, test_y, steps).float().mean())


def logistic_outcomes(
    train_x: Float[Tensor, "n feature"],
    train_y: Tensor,
    test_x: Float[Tensor, "m feature"],
    test_y: Tensor,
    steps: int = 200,
) -> Bool[Tensor, " m"]:
    """Fit a multinomial logistic regression on train, return whether it is right on each
    test example.

    Features are standardised with the training mean and std. Used for the multi-class
    "skill neuron" accuracy of Tab. 1: the top neuron of each binary subtask as features.
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    x, x_test = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    linear = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(linear.weight)  # a convex fit: a fixed start makes it repeatable
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), train_y)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return linear(x_test).argmax(1) == test_y


def multiclass_top_neurons(
    artefacts: Sequence[Artefact],
    models_: Sequence[SoftPromptModel],
    train: Dataset,
    test: Dataset,
    mask: Bool[Tensor, " prompt"] | None = None,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> list[dict[str, float]]:
    """Tab. 1 for a multi-class task: logistic regression on each subtask's top neuron.

    Per trial, the features are the activations of the ``pn`` and ``neu`` top neurons
    (chosen and positioned on dev, as in `top_neuron`), fitted on ``train`` (e.g. the
    baseline subset) and scored on ``test`` over all classes.
    """
    picks = {view: top_neuron(artefacts, view, mask) for view in views(artefacts[0])}
    rows = []
    for trial, model in enumerate(models_):
        neurons = [
            (p[trial]["layer"], p[trial]["position"], p[trial]["neuron"]) for p in picks.values()
        ]
        train_x = neuron_values(model, train, neurons, batch_size, caches)
        test_x = neuron_values(model, test, neurons, batch_size, caches)
        train_y = torch.tensor(list(train["label"]))
        test_y = torch.tensor(list(test["label"]))
        right = logistic_outcomes(train_x, train_y, test_x, test_y)
        rows.append(
            {
                "trial": trial,
                "test_accuracy": float(right.float().mean()),
                "test_correct": outcome_string(right.numpy()),
            }
        )
    return rows


def top_accuracy(
    artefacts: Sequence[Artefact],
    models_: Sequence[SoftPromptModel],
    fit: Dataset,
    test: Dataset,
    mask: Bool[Tensor, " prompt"] | None = None,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> list[float]:
    """Return the top skill neuron's test accuracy per trial, the paper's Tab. 1 and 3 number.

    Binary tasks: the top neuron alone (`top_neuron`). Multi-class tasks: a logistic
    regression on the top neuron of each binary subtask, fitted on ``fit``
    (`multiclass_top_neurons`).
    """
    names = views(artefacts[0])
    if names == ["binary"]:
        return [row["test_accuracy"] for row in top_neuron(artefacts, "binary", mask)]
    rows = multiclass_top_neurons(artefacts, models_, fit, test, mask, batch_size, caches)
    return [row["test_accuracy"] for row in rows]


def top_outcomes(
    artefacts: Sequence[Artefact],
    models_: Sequence[SoftPromptModel],
    fit: Dataset,
    test: Dataset,
    mask: Bool[Tensor, " prompt"] | None = None,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> list[str]:
    """Return the top skill neuron's outcome on every test example per trial
    (`zeroshot.outcome_string`), the per-example form of `top_accuracy`, for a comparison
    with the prompt paired on the same examples.

    Binary tasks: the neuron's activation at its dev-chosen position against its
    baseline (eq. 4), oriented by dev (`top_neuron`). Multi-class tasks: the logistic
    regression of `multiclass_top_neurons`.

    Paper: Tab. 1.
    """
    if views(artefacts[0]) != ["binary"]:
        rows = multiclass_top_neurons(artefacts, models_, fit, test, mask, batch_size, caches)
        return [str(row["test_correct"]) for row in rows]
    labels = torch.tensor(list(test["label"])).bool()
    outcomes = []
    picks = top_neuron(artefacts, "binary", mask)
    for pick, artefact, model in zip(picks, artefacts, models_, strict=True):
        neuron = (int(pick["layer"]), int(pick["position"]), int(pick["neuron"]))
        baseline = artefact.tensors()["binary/baseline"][neuron[0], neuron[1], neuron[2]]
        above = neuron_values(model, test, [neuron], batch_size, caches)[:, 0] > baseline
        predicted = above if pick["positive"] else ~above
        outcomes.append(outcome_string((predicted == labels).numpy()))
    return outcomes


def scored_mask(model: SoftPromptModel, positions: Positions = "prompt") -> Bool[Tensor, " prompt"]:
    """Return `position_mask` for a prompt model's own layout."""
    return position_mask(
        model.n_scored, model.predict_index, model.config.length, model.backbone.kind, positions
    )


def probe_trials(
    models_: Sequence[SoftPromptModel],
    prompts: Sequence[Artefact],
    task: TaskData,
    config: ProbeConfig,
    store: ArtefactStore,
    caches: TextCaches | None = None,
) -> list[Artefact]:
    """Probe each trial's trained prompt (`probe`), keyed by the prompt's artefact."""
    return [
        probe(
            model,
            task,
            config,
            store,
            {"prompt": prompt.key},
            [prompt.key, task.key],
            caches=caches,
        )
        for model, prompt in zip(models_, prompts, strict=True)
    ]


def control_prompts(
    backbone: Backbone,
    random_backbone: Backbone,
    config: PromptConfig,
    hand_text: str,
    seed: int = 0,
) -> dict[str, SoftPromptModel]:
    """The paper's untuned controls (Tab. 3), laid out like the trained prompts.

    ``random prompt``: an untrained prompt drawn like the trained ones' initialisation;
    ``hand-written prompt``: the embeddings of ``hand_text``; ``random model``: a random
    prompt on a randomly initialised backbone of the same architecture.
    """
    untrained = replace(config, init="vocab" if config.init == "text" else config.init)
    return {
        "random prompt": SoftPromptModel(backbone, untrained, seed=seed),
        "hand-written prompt": SoftPromptModel(
            backbone, hand_written_config(backbone, hand_text, config)
        ),
        "random model": SoftPromptModel(random_backbone, untrained, seed=seed),
    }


def view_label(task: str, view: str) -> str:
    """A binary (sub)task's name in tables: the task for ``binary``, else ``task:view``."""
    return task if view == "binary" else f"{task}:{view}"


def view_scores(
    probes: Mapping[str, Sequence[Artefact]], mask: Bool[Tensor, " prompt"] | None = None
) -> dict[str, Float[Tensor, "layer ffn"]]:
    """Pred(N) on dev of every task's binary (sub)tasks, named by `view_label`."""
    return {
        view_label(name, view): value
        for name, runs in probes.items()
        for view, value in task_predictivity(runs, mask).items()
    }


def score_rows(scores: Mapping[str, Float[Tensor, "layer ffn"]]) -> list[dict[str, object]]:
    """One summary row per view: neuron count, best predictivity and counts above 70/80% (%)."""
    return [
        {
            "view": key,
            "neurons": value.numel(),
            "max": 100 * float(value.max()),
            ">= 70%": int((value >= 0.7).sum()),
            ">= 80%": int((value >= 0.8).sum()),
        }
        for key, value in scores.items()
    ]


def pooled_comparison(
    probe_: Artefact, pooled: Mapping[str, Artefact], mask: Bool[Tensor, " prompt"]
) -> dict[str, Float[Tensor, "layer ffn"]]:
    """Pred(N) at the prompt positions beside Pred(N) of activations pooled over the input
    (the paper's "Avg." and "Max." baselines, Fig. 3), for the pooled probes' first view."""
    view = views(pooled["mean"])[0]
    found = {"prompt (ours)": dev_predictivity([probe_], view, mask)}
    return found | {f"{how} over input": dev_predictivity([a], view) for how, a in pooled.items()}


def control_accuracies(
    prompt: SoftPromptModel,
    random_backbone: Backbone,
    task: TaskData,
    fit: Dataset,
    config: ProbeConfig,
    store: ArtefactStore,
    positions: Positions,
    caches: TextCaches,
    random_caches: TextCaches,
    seed: int = 0,
) -> dict[str, float]:
    """Tab. 3 for one task: the top neuron's test accuracy (%) under each untuned control
    (`control_prompts`, laid out like ``prompt``), probed without permutations.

    ``caches`` holds the texts on the trained prompt's backbone, ``random_caches`` those on
    the random one (a text's states differ between the two backbones).
    """
    backbone = prompt.backbone
    controls = control_prompts(
        backbone, random_backbone, prompt.config, task.spec.hand_prompt, seed
    )
    found = {}
    for label, control in controls.items():
        texts = caches if control.backbone is backbone else random_caches
        identity = {"control": label, "backbone": control.backbone.name}
        stats = probe(control, task, replace(config, permutations=0), store, identity, caches=texts)
        mask = scored_mask(control, positions)
        accuracy = top_accuracy([stats], [control], fit, task.test, mask, config.batch_size, texts)
        found[label] = 100 * accuracy[0]
    return found
