"""Other ways to score neurons than predictivity, and diagnostics of a selected set.

Not in the paper; its critics and later work ask for them. Each score ranks the same
neurons at the same scored prompt positions as predictivity (§3.1), so rankings can be
compared one to one:

- ``auroc``: threshold-free. Predictivity thresholds each neuron at its training mean
  (eq. 4); the area under the ROC curve scores every threshold at once. Two-sided like
  eq. 5, ``max(AUC, 1 - AUC)``, and the maximum over the scored positions like eq. 6.
- ``l1_probe``: one sparse logistic probe over every neuron at once (sparse probing,
  Gurnee et al. 2023); a neuron scores its weight's magnitude on standardised inputs.
  Unlike the univariate scores it gives redundant neurons little weight.
- ``confidence``: a neuron's |Pearson correlation| with the prompt's own confidence
  (its label-logit difference) rather than with the label: what the model uses, not
  what the data says.

Diagnostics of a selected set: how redundant its neurons are with the unselected rest
(`redundancy`), how stable it is when the examples are resampled (`bootstrap_stability`),
and how two rankings agree (`agreement`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from datasets import Dataset
from jaxtyping import Bool, Float
from scipy import stats
from torch import Tensor

from helpers import engine
from helpers.activations import NeuronError
from helpers.checks import check_choice
from helpers.engine import TextCaches
from helpers.prompting import SoftPromptModel

Score = Literal["auroc", "l1_probe", "confidence"]
SCORES: tuple[Score, ...] = ("auroc", "l1_probe", "confidence")


@torch.no_grad()
def neuron_matrix(
    model: SoftPromptModel,
    split: Dataset,
    mask: Bool[Tensor, " prompt"],
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> Float[Tensor, "n layer prompt ffn"]:
    """Return every neuron's activation at the scored positions ``mask`` keeps, per example
    (in the split's row order)."""
    out: Tensor | None = None
    for batch, cache in model.eval_batches(split, batch_size, caches):
        acts = engine.prompt_activations(model, batch, cache)[:, :, mask]
        if out is None:
            out = torch.empty(len(split), *acts.shape[1:])
        out[batch.rows] = acts
    if out is None:
        raise NeuronError("neuron_matrix needs a split with at least one example")
    return out


def _binary(labels: Tensor) -> np.ndarray:
    values = np.asarray(labels).astype(int)
    if set(np.unique(values)) != {0, 1}:
        raise NeuronError(f"labels must hold both 0 and 1, got {sorted(set(values.tolist()))}")
    return values.astype(bool)


def auroc(
    acts: Float[Tensor, "n ..."], labels: Tensor, chunk: int = 1 << 16
) -> Float[Tensor, " ..."]:
    """Return each neuron's two-sided area under the ROC curve, ``max(AUC, 1 - AUC)``.

    AUC is the Mann-Whitney statistic (ties count one half): the chance that a random
    positive example activates the neuron more than a random negative one.
    """
    positive = _binary(labels)
    flat = acts.reshape(len(acts), -1).double().numpy()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    area = np.empty(flat.shape[1])
    for start in range(0, flat.shape[1], chunk):
        ranks = stats.rankdata(flat[:, start : start + chunk], axis=0)
        rank_sum = ranks[positive].sum(axis=0)
        area[start : start + chunk] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    area = np.maximum(area, 1 - area)
    return torch.from_numpy(area).float().reshape(acts.shape[1:])


def correlation(acts: Float[Tensor, "n ..."], target: Float[Tensor, " n"]) -> Float[Tensor, " ..."]:
    """Return each neuron's |Pearson correlation| with ``target`` (0 for a constant neuron)."""
    x = acts.reshape(len(acts), -1).double()
    x = x - x.mean(0)
    y = target.double() - target.double().mean()
    denominator = x.norm(dim=0) * y.norm()
    r = (x * y[:, None]).sum(0) / denominator.clamp_min(1e-12)
    return r.abs().float().reshape(acts.shape[1:])


def l1_probe(
    acts: Float[Tensor, "n ..."], labels: Tensor, strength: float = 0.05
) -> Float[Tensor, " ..."]:
    """Return each neuron's |weight| in an L1-regularised logistic probe on standardised
    activations (scikit-learn, liblinear; ``strength`` is its ``C``: smaller is sparser)."""
    from sklearn.linear_model import LogisticRegression

    if strength <= 0:
        raise NeuronError(f"strength must be > 0, got {strength}")
    y = _binary(labels)
    x = acts.reshape(len(acts), -1).double()
    x = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6)).numpy()
    fit = LogisticRegression(C=strength, l1_ratio=1.0, solver="liblinear", max_iter=1000)
    fit.fit(x, y)
    return torch.from_numpy(np.abs(fit.coef_[0])).float().reshape(acts.shape[1:])


def over_positions(score: Float[Tensor, "layer prompt ffn"]) -> Float[Tensor, "layer ffn"]:
    """Return each neuron's best score over the scored positions (as eq. 6 does)."""
    return score.max(dim=1).values


def score_neurons(
    score: Score,
    acts: Float[Tensor, "n layer prompt ffn"],
    labels: Tensor,
    confidence: Float[Tensor, " n"] | None = None,
    strength: float = 0.05,
) -> Float[Tensor, "layer ffn"]:
    """Return one score per neuron, its best over the scored positions where it is
    scored per position (`auroc`, `correlation` with ``confidence``).

    ``l1_probe`` fits one probe on each neuron's mean over the scored positions (one
    feature per neuron; the positions of one neuron are near copies of each other).
    Predictivity itself comes from `helpers.predictivity`, thresholded at the training
    mean as the paper does.
    """
    check_choice("score", score, Score)
    if score == "l1_probe":
        return l1_probe(acts.mean(dim=2), labels, strength)
    if score == "confidence":
        if confidence is None:
            raise NeuronError("the confidence score needs the prompt's confidence per example")
        return over_positions(correlation(acts, confidence))
    return over_positions(auroc(acts, labels))


def top(score: Float[Tensor, "layer ffn"], count: int) -> Bool[Tensor, "layer ffn"]:
    """Return the ``count`` best-scored neurons of the model (a stable sort: ties go to the
    lower index)."""
    if not 0 < count <= score.numel():
        raise NeuronError(f"count must be in 1..{score.numel()}, got {count}")
    order = torch.sort(score.flatten(), descending=True, stable=True).indices[:count]
    chosen = torch.zeros(score.numel(), dtype=torch.bool)
    chosen[order] = True
    return chosen.reshape(score.shape)


def agreement(
    a: Float[Tensor, "layer ffn"], b: Float[Tensor, "layer ffn"], count: int
) -> dict[str, float]:
    """Return how two rankings of the same neurons agree: Spearman's ρ over every neuron and
    the share of the top ``count`` they have in common."""
    rho = stats.spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic
    shared = int((top(a, count) & top(b, count)).sum()) / count
    return {"spearman": float(rho), "top_overlap": shared}


def redundancy(
    acts: Float[Tensor, "n neuron"], selected: Bool[Tensor, " neuron"], chunk: int = 4096
) -> Float[Tensor, " chosen"]:
    """Return, for each selected neuron, its largest |correlation| with any unselected one.

    Near 1, the neuron has a stand-in outside the set: the set is not the only place the
    model keeps what the neuron carries (the critique of sparse "X neurons" claims).
    """
    x = acts.double()
    x = x - x.mean(0)
    x = x / x.norm(dim=0).clamp_min(1e-12)
    chosen, rest = x[:, selected], x[:, ~selected]
    best = torch.zeros(chosen.shape[1], dtype=torch.float64)
    for start in range(0, rest.shape[1], chunk):
        block = (chosen.T @ rest[:, start : start + chunk]).abs()
        best = torch.maximum(best, block.max(dim=1).values)
    return best.float()


def bootstrap_stability(
    rank: Callable[[Tensor], Float[Tensor, "layer ffn"]],
    n: int,
    count: int,
    draws: int = 20,
    seed: int = 0,
) -> list[float]:
    """Return the Jaccard overlap between the top ``count`` neurons ranked on all ``n``
    examples and on each of ``draws`` bootstrap resamples of them.

    Args:
        rank: scores every neuron from the example rows it is given (a row index tensor).
    """
    whole = top(rank(torch.arange(n)), count)
    generator = torch.Generator().manual_seed(seed)
    overlaps = []
    for _ in range(draws):
        rows = torch.randint(n, (n,), generator=generator)
        resampled = top(rank(rows), count)
        overlaps.append(int((whole & resampled).sum()) / int((whole | resampled).sum()))
    return overlaps


def agreement_rows(
    scores: dict[str, Float[Tensor, "layer ffn"]], count: int
) -> list[dict[str, object]]:
    """One row per pair of scores: Spearman's ρ and top-``count`` overlap (`agreement`)."""
    names: Sequence[str] = list(scores)
    return [
        {"score": a, "other": b, **agreement(scores[a], scores[b], count)}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
