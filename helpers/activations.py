"""Hooks on the neuron site and the streaming statistics engine.

The neuron site of every architecture is the FFN output projection (`models.ARCHITECTURES`);
a forward pre-hook there sees exactly the neuron vector. Hooks are always removed when
the context exits, also on error.

The engine reduces activations to statistics batch by batch (`design.md` §10): one pass
over the training split accumulates each neuron's mean activation at each prompt position
(the baseline, eq. 3); a pass over dev or test counts how often ``activation > baseline``
agrees with the label (eq. 4). Memory does not grow with the number of examples.

Paper: §2.2 (the activation a = f(x Kᵀ + b1)), §3.1 (eqs. 3-4); official code ``probe``
hooks ``intermediate`` of RoBERTa, which is the same tensor.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import torch
from datasets import Dataset
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.models import Backbone

if TYPE_CHECKING:
    from helpers.prompting import PromptBatch, SoftPromptModel, TextCaches


def hook_count(model: nn.Module) -> int:
    """Return how many forward and pre-forward hooks are registered anywhere in a model."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextmanager
def record_neurons(
    backbone: Backbone, layers: Sequence[int] | None = None
) -> Iterator[dict[int, Float[Tensor, "n seq ffn"]]]:
    """Record each chosen layer's neuron activations on the next forward passes.

    Yields a dict that fills as the model runs: layer index -> the activations of the
    latest forward pass, detached, shape ``[n, seq, ffn]``.

    Example:
        >>> with record_neurons(backbone) as acts:
        ...     backbone.model(**batch)
        >>> acts[0].shape[-1] == backbone.ffn_width
        True
    """
    chosen = range(backbone.n_layers) if layers is None else layers
    sites = backbone.neuron_sites()
    recorded: dict[int, Tensor] = {}
    handles = []

    def hook_for(layer: int):  # noqa: ANN202
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            recorded[layer] = args[0].detach()

        return hook

    try:
        for layer in chosen:
            handles.append(sites[layer].register_forward_pre_hook(hook_for(layer)))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def prompt_activations(
    model: SoftPromptModel, batch: PromptBatch, cache: object | None = None
) -> Float[Tensor, "n layer prompt ffn"]:
    """Return every neuron's activation at the scored prompt positions of a batch.

    With a decoder's cached text prefix, the forward pass covers only the prompt
    positions, so every recorded position is scored; otherwise the prompt positions are
    gathered from the full layout.
    """
    backbone = model.backbone
    with record_neurons(backbone) as recorded:
        model.prompt_hidden(batch, cache)  # type: ignore[arg-type]
    stacked = torch.stack([recorded[layer] for layer in range(backbone.n_layers)], dim=1)
    if stacked.shape[2] == model.n_scored and model.prefix_cache:
        return stacked
    positions = model.layout(batch).prompt_positions
    index = positions[:, None, :, None].expand(-1, stacked.shape[1], -1, stacked.shape[3])
    return stacked.gather(2, index)


Pooling = Literal["prompt", "mean", "max"]


@torch.no_grad()
def pooled_activations(
    model: SoftPromptModel, batch: PromptBatch, how: Literal["mean", "max"]
) -> Float[Tensor, "n layer 1 ffn"]:
    """Return each neuron's activation pooled over the input (text) tokens.

    The paper's "Avg." and "Max." baselines (§4.1, Fig. 3; official ``probe_acc_mean`` /
    ``probe_acc_max``): the same threshold procedure on activations pooled over the input
    tokens, the prompt still in place. On a decoder the text precedes the prompt and
    cannot see it, so these activations do not depend on the prompt at all.
    """
    backbone = model.backbone
    layout = model.layout(batch)
    with record_neurons(backbone) as recorded:
        backbone.model.base_model(inputs_embeds=layout.embeds, attention_mask=layout.attention_mask)
    stacked = torch.stack([recorded[layer] for layer in range(backbone.n_layers)], dim=1)
    text = layout.attention_mask.bool().clone()
    text[torch.arange(len(text))[:, None], layout.prompt_positions] = False
    weights = text[:, None, :, None]
    if how == "mean":
        pooled = (stacked * weights).sum(dim=2) / weights.sum(dim=2)
    else:
        pooled = stacked.masked_fill(~weights, float("-inf")).max(dim=2).values
    return pooled[:, :, None, :]


def activations_of(
    model: SoftPromptModel, batch: PromptBatch, cache: object | None, pooling: Pooling
) -> Float[Tensor, "n layer prompt ffn"]:
    """Return the activations a statistic is computed on: at the prompt, or pooled over text."""
    if pooling == "prompt":
        return prompt_activations(model, batch, cache)
    return pooled_activations(model, batch, pooling)


class BaselineAccumulator:
    """Running mean of activations over examples (float64 sums, so order does not matter)."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add(self, activations: Float[Tensor, "n layer prompt ffn"]) -> None:
        """Add a batch."""
        batch_sum = activations.sum(dim=0, dtype=torch.float64)
        self.total = batch_sum if self.total is None else self.total + batch_sum
        self.count += activations.shape[0]

    def mean(self) -> Float[Tensor, "layer prompt ffn"]:
        """Return the mean activation, the baseline a_bsl of eq. 3."""
        if self.total is None or self.count == 0:
            raise ValueError("no examples were added")
        return (self.total / self.count).float()


class AccuracyAccumulator:
    """Counts, per neuron and position, how often ``activation > baseline`` equals the label.

    Labels may be one vector ``[n]`` or several labelings at once ``[k, n]`` (e.g. the
    label-permutation null), which cost one matrix product per batch.
    """

    def __init__(self, baseline: Float[Tensor, "layer prompt ffn"], labelings: int = 1) -> None:
        self.baseline = baseline
        self.labelings = labelings
        self.agree = torch.zeros((labelings, *baseline.shape), dtype=torch.float64)
        self.count = 0

    def add(
        self,
        activations: Float[Tensor, "n layer prompt ffn"],
        labels: Int[Tensor, " n"] | Int[Tensor, "k n"],
    ) -> None:
        """Add a batch with binary labels in {0, 1}."""
        rows = labels if labels.dim() == 2 else labels[None]
        if rows.shape[0] != self.labelings:
            raise ValueError(f"expected {self.labelings} labelings, got {rows.shape[0]}")
        if rows.numel() and not bool(((rows == 0) | (rows == 1)).all()):
            raise ValueError("threshold accuracy needs binary labels 0/1")
        above = (activations > self.baseline).reshape(len(activations), self.baseline.numel())
        above = above.to(torch.float32)
        # agree = #(above & y=1) + #(not above & y=0) = sum((2y-1) * above) + #(y=0)
        signs = (2 * rows - 1).to(torch.float32)
        agree = signs @ above + (rows == 0).sum(dim=1, keepdim=True).to(torch.float32)
        self.agree += agree.reshape(self.agree.shape).double()
        self.count += activations.shape[0]

    def accuracy(self) -> Float[Tensor, "layer prompt ffn"] | Float[Tensor, "k layer prompt ffn"]:
        """Return Acc(N, p) of eq. 4 (one per labeling if there are several)."""
        if self.count == 0:
            raise ValueError("no examples were added")
        accuracy = (self.agree / self.count).float()
        return accuracy[0] if self.labelings == 1 else accuracy


Rows = Int[Tensor, " m"]


def _passes(
    model: SoftPromptModel,
    data: Dataset,
    views: Mapping[str, Rows],
    batch_size: int,
    caches: TextCaches | None,
    progress: bool,
    pooling: Pooling,
    desc: str,
) -> Iterator[tuple[Float[Tensor, "n layer prompt ffn"], dict[str, Rows]]]:
    """One pass over a split, yielding each batch's activations and, per view, the places
    of the batch's rows in that view (-1 for rows the view does not use)."""
    places = {}
    for name, rows in views.items():
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(data)):
            raise IndexError(f"view {name!r} has rows outside the split of {len(data)}")
        if len(torch.unique(rows)) != len(rows):
            raise ValueError(f"view {name!r} repeats a row")
        place = torch.full((len(data),), -1, dtype=torch.long)
        place[rows] = torch.arange(len(rows))
        places[name] = place
    caches = caches if pooling == "prompt" else None
    total = -(-len(data) // batch_size)
    batches = model.eval_batches(data, batch_size, caches)
    for batch, cache in tqdm(batches, total=total, disable=not progress, desc=desc):
        acts = activations_of(model, batch, cache, pooling)
        yield acts, {name: place[batch.rows] for name, place in places.items()}


def _rows_of(acts: Tensor, used: Tensor) -> Tensor:
    """The rows of a batch that a view uses (no copy when it uses them all)."""
    return acts if bool(used.all()) else acts[used]


def baselines(
    model: SoftPromptModel,
    data: Dataset,
    views: Mapping[str, Rows],
    batch_size: int = 32,
    caches: TextCaches | None = None,
    progress: bool = False,
    pooling: Pooling = "prompt",
) -> dict[str, Float[Tensor, "layer prompt ffn"]]:
    """Return the baseline of several views (row subsets) of one split, in one pass.

    A multi-class task's binary subtasks are views of its splits (`data.subtask_rows`):
    each example runs once, whichever views use it.
    """
    accumulators = {name: BaselineAccumulator() for name in views}
    for acts, places in _passes(
        model, data, views, batch_size, caches, progress, pooling, "baseline"
    ):
        for name, place in places.items():
            accumulators[name].add(_rows_of(acts, place >= 0))
    return {name: accumulator.mean() for name, accumulator in accumulators.items()}


def baseline(
    model: SoftPromptModel,
    data: Dataset,
    batch_size: int = 32,
    caches: TextCaches | None = None,
    progress: bool = False,
    pooling: Pooling = "prompt",
) -> Float[Tensor, "layer prompt ffn"]:
    """Return each neuron's mean activation at each prompt position over a split.

    ``pooling="mean"`` or ``"max"`` pools over the text tokens instead (one position).

    Paper: §3.1, eq. 3 (computed on the training split).
    """
    rows = torch.arange(len(data))
    return baselines(model, data, {"all": rows}, batch_size, caches, progress, pooling)["all"]


def threshold_accuracies(
    model: SoftPromptModel,
    data: Dataset,
    views: Mapping[str, tuple[Rows, Int[Tensor, " m"]]],
    baselines_: Mapping[str, Float[Tensor, "layer prompt ffn"]],
    batch_size: int = 32,
    caches: TextCaches | None = None,
    progress: bool = False,
    permutations: int = 0,
    seeds: Mapping[str, int] | None = None,
    pooling: Pooling = "prompt",
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """`threshold_accuracy` of several views of one split, each with its own 0/1 labels
    and baseline, in one pass. Each view's permutations use its own seed."""
    accumulators, labelings = {}, {}
    for name, (rows, labels) in views.items():
        if len(rows) != len(labels):
            raise ValueError(f"view {name!r} has {len(rows)} rows but {len(labels)} labels")
        generator = torch.Generator().manual_seed((seeds or {}).get(name, 0))
        shuffled = [
            labels[torch.randperm(len(labels), generator=generator)] for _ in range(permutations)
        ]
        labelings[name] = torch.stack([labels, *shuffled])
        accumulators[name] = AccuracyAccumulator(baselines_[name], labelings=permutations + 1)
    row_views = {name: rows for name, (rows, _) in views.items()}
    for acts, places in _passes(
        model, data, row_views, batch_size, caches, progress, pooling, "accuracy"
    ):
        for name, place in places.items():
            used = place >= 0
            accumulators[name].add(_rows_of(acts, used), labelings[name][:, place[used]])
    results = {}
    for name, accumulator in accumulators.items():
        accuracy = accumulator.accuracy()
        results[name] = (accuracy, None) if permutations == 0 else (accuracy[0], accuracy[1:])
    return results


def threshold_accuracy(
    model: SoftPromptModel,
    data: Dataset,
    baseline_: Float[Tensor, "layer prompt ffn"],
    batch_size: int = 32,
    caches: TextCaches | None = None,
    progress: bool = False,
    permutations: int = 0,
    seed: int = 0,
    pooling: Pooling = "prompt",
) -> tuple[Float[Tensor, "layer prompt ffn"], Float[Tensor, "perm layer prompt ffn"] | None]:
    """Return, per neuron and prompt position, how often ``a > a_bsl`` equals the label.

    With ``permutations > 0``, the same counts for that many random permutations of the
    labels over the split are returned too, in the same pass: a null distribution for
    how predictive neurons look when activations carry no label information.

    Paper: §3.1, eq. 4 (computed on dev for ranking, on test for reporting).
    """
    view = {"all": (torch.arange(len(data)), torch.tensor(list(data["label"])))}
    return threshold_accuracies(
        model,
        data,
        view,
        {"all": baseline_},
        batch_size,
        caches,
        progress,
        permutations,
        {"all": seed},
        pooling,
    )["all"]
