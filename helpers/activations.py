"""The streaming statistics: baselines and threshold accuracies, batch by batch.

Activations are read at the neuron site by the text-once engine (`engine.prompt_activations`)
and reduced to statistics batch by batch, so memory does not grow with the number of
examples: one pass over the training split accumulates each neuron's mean activation at
each prompt position (the baseline, eq. 3); a pass over dev or test counts how often
``activation > baseline`` agrees with the label (eq. 4).

Paper: §3.1 (eqs. 3-4).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import torch
from datasets import Dataset
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from helpers.engine import Pooling, activations_of

if TYPE_CHECKING:
    from helpers.engine import TextCaches
    from helpers.prompting import SoftPromptModel


class NeuronError(ValueError):
    """A neuron statistic cannot be computed from the data, views or shapes given."""


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
            raise NeuronError("no examples were added")
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
            raise NeuronError(f"expected {self.labelings} labelings, got {rows.shape[0]}")
        if rows.numel() and not bool(((rows == 0) | (rows == 1)).all()):
            raise NeuronError("threshold accuracy needs binary labels 0/1")
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
            raise NeuronError("no examples were added")
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
            raise NeuronError(f"view {name!r} repeats a row")
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
            raise NeuronError(f"view {name!r} has {len(rows)} rows but {len(labels)} labels")
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
