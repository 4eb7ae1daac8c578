"""Predictivity of neurons and the selection of skill neurons.

Paper: §3.1, eqs. 5-6 (predictivity: two-sided, max over prompt tokens, mean over
trials), §3.2 (multi-class tasks: equal numbers from each binary subtask). The official
code ranks neurons within each layer (``src/skillneuron.py``); the paper's wording sorts
all neurons of the model. Both are available; per layer is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

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
        raise ValueError(f"no scored position left with positions={positions!r}")
    return mask


def predictivity(
    accuracies: Float[Tensor, "trial layer prompt ffn"],
    mask: Bool[Tensor, " prompt"] | None = None,
) -> Float[Tensor, "layer ffn"]:
    """Return Pred(N): the mean over trials of the max over prompt positions of eq. 5.

    Paper: eq. 6; official code ``finfo`` (mean of per-trial maxima of |acc - 0.5|).
    """
    scores = token_predictivity(accuracies)
    if mask is not None:
        scores = scores[:, :, mask]
    return scores.max(dim=2).values.mean(dim=0)


def select(
    scores: Float[Tensor, "layer ffn"],
    fraction: float | None = None,
    count: int | None = None,
    how: Selection = "per_layer",
) -> Bool[Tensor, "layer ffn"]:
    """Mark the skill neurons: the highest-scoring ones, per layer or over the whole model.

    Give either ``fraction`` (of the neurons in each layer, or of all neurons) or
    ``count`` (per layer, or in total). Ties are broken by position, deterministically.

    Paper: §3.1 ("sort all the neurons"); official code: ``int(p * 3072)`` per layer.
    """
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    n_layers, width = scores.shape
    if how == "per_layer":
        k = count if count is not None else int(fraction * width)  # type: ignore[operator]
        if not 0 <= k <= width:
            raise ValueError(f"cannot select {k} of {width} neurons per layer")
        top = torch.topk(scores, k, dim=1, sorted=False).indices
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask.scatter_(1, top, True)
        return mask
    if how == "global":
        k = count if count is not None else int(fraction * scores.numel())  # type: ignore[operator]
        if not 0 <= k <= scores.numel():
            raise ValueError(f"cannot select {k} of {scores.numel()} neurons")
        flat = torch.zeros(scores.numel(), dtype=torch.bool)
        flat[torch.topk(scores.flatten(), k, sorted=False).indices] = True
        return flat.reshape(n_layers, width)
    raise ValueError(f"unknown selection {how!r}; use 'per_layer' or 'global'")


def select_multiclass(
    subtask_scores: Sequence[Float[Tensor, "layer ffn"]],
    fraction: float | None = None,
    count: int | None = None,
    how: Selection = "per_layer",
) -> Bool[Tensor, "layer ffn"]:
    """Select skill neurons of a multi-class task: equal numbers from each binary subtask.

    The subtasks take turns in their own rank order, skipping neurons already chosen, until
    the total (per layer, or over the model) reaches what ``fraction``/``count`` asks for
    times the number of subtasks (the official code: top-p of subtask 1, then subtask 2's
    neurons in rank order until 2p).

    Paper: §3.2 ("top-100 for MNLI = top-50 unique from each of the 2 subtasks").
    """
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    shape = subtask_scores[0].shape
    groups = 1 if how == "global" else shape[0]
    per_group = shape[1] if how == "per_layer" else shape[0] * shape[1]
    k = count if count is not None else int(fraction * per_group)  # type: ignore[operator]
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
