"""Other ways to score neurons than predictivity, and diagnostics of a selected set.

Not in the paper; its critics and later work ask for them. Each score ranks the same
neurons at the same scored prompt positions as predictivity (§3.1), so rankings can be
compared one to one:

- ``auroc``: threshold-free. Predictivity thresholds each neuron at its training mean
  (eq. 4); the area under the ROC curve scores every threshold at once. Two-sided like
  eq. 5, ``max(AUC, 1 - AUC)``, and the maximum over the scored positions like eq. 6.
- ``l1_probe``: one sparse logistic probe over every neuron at once (sparse probing,
  Gurnee et al. 2023), the sparsest that keeps a given number of neurons; a neuron
  scores its weight's magnitude on standardised inputs.
  Unlike the univariate scores it gives redundant neurons little weight.
- ``confidence``: a neuron's |Pearson correlation| with the prompt's own confidence
  (its label-logit difference) rather than with the label: what the model uses, not
  what the data says.
- ``attribution``: gradient times activation (the attribution-patching family): the
  first-order change of the prompt's log-odds if the neuron were set to its mean at the
  scored positions, in magnitude, averaged over the examples. It needs a backward pass,
  not labels.

Diagnostics of a selected set: how redundant its neurons are with the unselected rest
(`redundancy`), how stable it is when the examples are resampled (`bootstrap_stability`),
and how two rankings agree (`agreement`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Literal

import numpy as np
import torch
from datasets import Dataset
from jaxtyping import Bool, Float
from scipy import stats
from torch import Tensor

from helpers import engine, predictivity
from helpers.activations import AccuracyAccumulator, NeuronError
from helpers.checks import check_choice
from helpers.data import TaskData
from helpers.engine import TextCaches
from helpers.prompting import SoftPromptModel
from helpers.store import Artefact

Score = Literal["auroc", "l1_probe", "confidence", "attribution"]
SCORES: tuple[Score, ...] = ("auroc", "l1_probe", "confidence", "attribution")
PREDICTIVITY = "predictivity"  # the paper's score, beside them in every table


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


def _average_ranks(values: Float[Tensor, "column n"]) -> Float[Tensor, "column n"]:
    """Rank each row from 1, tied values taking the mean of their ranks (as
    ``scipy.stats.rankdata``), for all rows at once."""
    ordered, order = values.sort(dim=1)
    below = torch.searchsorted(ordered, ordered, side="left")  # values smaller than each
    up_to = torch.searchsorted(ordered, ordered, side="right")  # values at most each
    ranks = torch.empty_like(ordered, dtype=torch.float64)
    ranks.scatter_(1, order, (below + up_to).double() / 2 + 0.5)
    return ranks


def auroc(
    acts: Float[Tensor, "n ..."], labels: Tensor, chunk: int = 1 << 15
) -> Float[Tensor, " ..."]:
    """Return each neuron's two-sided area under the ROC curve, ``max(AUC, 1 - AUC)``.

    AUC is the Mann-Whitney statistic (ties count one half): the chance that a random
    positive example activates the neuron more than a random negative one.
    """
    positive = torch.as_tensor(_binary(labels))
    flat = acts.reshape(len(acts), -1)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    area = torch.empty(flat.shape[1], dtype=torch.float64)
    for start in range(0, flat.shape[1], chunk):
        ranks = _average_ranks(flat[:, start : start + chunk].T.contiguous())
        rank_sum = ranks[:, positive].sum(dim=1)
        area[start : start + chunk] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.maximum(area, 1 - area).float().reshape(acts.shape[1:])


def _unit_columns(x: Float[Tensor, "n column"]) -> Float[Tensor, "n column"]:
    """Centre each column and scale it to unit length (a constant column stays 0): the
    inner product of two such columns is their Pearson correlation."""
    x = x.double() - x.double().mean(0)
    return x / x.norm(dim=0).clamp_min(1e-12)


def correlation(acts: Float[Tensor, "n ..."], target: Float[Tensor, " n"]) -> Float[Tensor, " ..."]:
    """Return each neuron's |Pearson correlation| with ``target`` (0 for a constant neuron)."""
    r = _unit_columns(acts.reshape(len(acts), -1)).T @ _unit_columns(target[:, None])
    return r.abs().float().reshape(acts.shape[1:])


def l1_probe(
    acts: Float[Tensor, "n ..."], labels: Tensor, keep: int = 100, steps: int = 10
) -> Float[Tensor, " ..."]:
    """Return each neuron's |weight| in the sparsest L1-regularised logistic probe (on
    standardised activations) that keeps at least ``keep`` neurons.

    The strength ``C`` starts at the smallest value that keeps any neuron
    (`sklearn.svm.l1_min_c`) and doubles, at most ``steps`` times, until ``keep``
    weights are non-zero (the last, densest fit if none does): a fixed ``C`` keeps no
    neuron on few examples and hundreds on many.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import l1_min_c

    if keep < 1:
        raise NeuronError(f"keep must be >= 1, got {keep}")
    y = _binary(labels)
    x = acts.reshape(len(acts), -1).double()
    x = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6)).numpy()
    strength = float(l1_min_c(x, y, loss="log"))
    for _ in range(steps):
        strength *= 2
        fit = LogisticRegression(
            C=strength, l1_ratio=1.0, solver="liblinear", max_iter=1000, random_state=0
        )
        weights = np.abs(fit.fit(x, y).coef_[0])
        if int((weights > 0).sum()) >= keep:
            break
    return torch.from_numpy(weights).float().reshape(acts.shape[1:])


def attribution(
    acts: Float[Tensor, "n layer prompt ffn"], gradient: Float[Tensor, "n layer prompt ffn"]
) -> Float[Tensor, "layer ffn"]:
    """Return each neuron's mean over examples of |Σ_positions g · (a − ā)|: the
    first-order change of the output that ``gradient`` differentiates if the neuron were
    set to its mean ā (over these examples) at every scored position."""
    shifted = acts - acts.mean(dim=0)
    return (gradient * shifted).sum(dim=2).abs().mean(dim=0)


def _leaf(leaves: dict[int, Tensor], layer: int) -> Callable[[Tensor], Tensor]:
    """A site hook that puts a leaf tensor (kept in ``leaves``) in place of a layer's
    activations, for gradients with respect to them."""

    def replace(x: Tensor) -> Tensor:
        leaves[layer] = x.detach().requires_grad_(True)
        return leaves[layer]

    return replace


def log_odds_gradients(
    model: SoftPromptModel,
    split: Dataset,
    views: predictivity.Views,
    names: Sequence[str],
    mask: Bool[Tensor, " prompt"],
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> dict[str, Float[Tensor, "n layer prompt ffn"]]:
    """Return, per view, the gradient of the prompt's log-odds between the view's two
    sides (`log_odds`) with respect to every neuron's activation at the scored
    positions ``mask`` keeps, for every example of the split (in its row order).

    Each layer's activations are replaced by a leaf tensor during the forward pass, so
    a gradient covers every path from that layer to the output.
    """
    backbone = model.backbone
    shape = (len(split), backbone.n_layers, int(mask.sum()), backbone.ffn_width)
    out = {view: torch.empty(shape) for view in views}
    for batch, cache in model.eval_batches(split, batch_size, caches):
        leaves: dict[int, Tensor] = {}
        with (
            torch.enable_grad(),
            engine.site_hooks(
                backbone, {layer: _leaf(leaves, layer) for layer in range(backbone.n_layers)}
            ),
        ):
            logits = model(batch, cache)
            inputs = [leaves[layer] for layer in range(backbone.n_layers)]
            for i, view in enumerate(views):
                odds = log_odds(logits, view, names).sum()  # examples are independent
                grads = torch.autograd.grad(odds, inputs, retain_graph=i < len(views) - 1)
                scored = engine.at_scored(model, batch, torch.stack(grads, 1))
                out[view][batch.rows] = scored[:, :, mask].float()
    return out


def over_positions(score: Float[Tensor, "layer prompt ffn"]) -> Float[Tensor, "layer ffn"]:
    """Return each neuron's best score over the scored positions (as eq. 6 does)."""
    return score.max(dim=1).values


def score_neurons(
    score: Score,
    acts: Float[Tensor, "n layer prompt ffn"],
    labels: Tensor,
    confidence: Float[Tensor, " n"] | None = None,
    keep: int = 100,
    gradient: Float[Tensor, "n layer prompt ffn"] | None = None,
) -> Float[Tensor, "layer ffn"]:
    """Return one score per neuron, its best over the scored positions where it is
    scored per position (`auroc`, `correlation` with ``confidence``).

    ``l1_probe`` fits one probe on each neuron's mean over the scored positions (one
    feature per neuron; the positions of one neuron are near copies of each other) that
    keeps at least ``keep`` neurons.
    Predictivity itself comes from `helpers.predictivity`, thresholded at the training
    mean as the paper does.
    """
    check_choice("score", score, Score)
    if score == "attribution":
        if gradient is None:
            raise NeuronError("the attribution score needs the log-odds gradients per example")
        return attribution(acts, gradient)
    if score == "l1_probe":
        return l1_probe(acts.mean(dim=2), labels, keep)
    if score == "confidence":
        if confidence is None:
            raise NeuronError("the confidence score needs the prompt's confidence per example")
        return over_positions(correlation(acts, confidence))
    return over_positions(auroc(acts, labels))


def _top(score: Float[Tensor, "layer ffn"], count: int) -> Bool[Tensor, "layer ffn"]:
    return predictivity.select(score, count=count, selection="global")


def agreement(
    a: Float[Tensor, "layer ffn"], b: Float[Tensor, "layer ffn"], count: int
) -> dict[str, float]:
    """Return how two rankings of the same neurons agree: Spearman's ρ over every neuron and
    the share of the top ``count`` they have in common."""
    rho = stats.spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic
    shared = int((_top(a, count) & _top(b, count)).sum()) / count
    return {"spearman": float(rho), "top_overlap": shared}


def redundancy(
    acts: Float[Tensor, "n neuron"], selected: Bool[Tensor, " neuron"], chunk: int = 4096
) -> Float[Tensor, " chosen"]:
    """Return, for each selected neuron, its largest |correlation| with any unselected one.

    Near 1, the neuron has a stand-in outside the set: the set is not the only place the
    model keeps what the neuron carries (the critique of sparse "X neurons" claims).
    """
    x = _unit_columns(acts)
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
    whole = _top(rank(torch.arange(n)), count)
    generator = torch.Generator().manual_seed(seed)
    overlaps = []
    for _ in range(draws):
        rows = torch.randint(n, (n,), generator=generator)
        resampled = _top(rank(rows), count)
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


@torch.no_grad()
def label_logits(
    model: SoftPromptModel,
    split: Dataset,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> Float[Tensor, "n label"]:
    """Return the prompt's label-word logits per example (in the split's row order)."""
    out = torch.empty(len(split), len(model.label_ids))
    for batch, cache in model.eval_batches(split, batch_size, caches):
        out[batch.rows] = model(batch, cache)
    return out


def view_sides(view: str, names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Return the classes on side 0 and side 1 of a binary (sub)task view
    (`predictivity.binary_views`): ``binary``, the paper's ``pn`` and ``neu``, or
    ``<class>_vs_rest``."""
    classes = list(range(len(names)))
    if view == "binary" and len(names) == 2:
        return [0], [1]
    if view in ("pn", "neu") and "neutral" in names:
        neutral = names.index("neutral")
        others = [c for c in classes if c != neutral]
        return ([others[0]], [others[1]]) if view == "pn" else (others, [neutral])
    if view.endswith("_vs_rest") and view.removesuffix("_vs_rest") in names:
        one = names.index(view.removesuffix("_vs_rest"))
        return [c for c in classes if c != one], [one]
    raise NeuronError(f"view {view!r} is not a binary view of the classes {list(names)}")


def log_odds(
    logits: Float[Tensor, "n label"], view: str, names: Sequence[str]
) -> Float[Tensor, " n"]:
    """Return the prompt's confidence in a view's side 1: the log-sum-exp of its classes'
    label logits minus that of side 0's (for a two-class task, the logit difference)."""
    zero, one = view_sides(view, names)
    return logits[:, one].logsumexp(dim=1) - logits[:, zero].logsumexp(dim=1)


def threshold_predictivity(
    acts: Float[Tensor, "n layer prompt ffn"],
    labels: Tensor,
    baseline: Float[Tensor, "layer prompt ffn"],
) -> Float[Tensor, "layer ffn"]:
    """Return Pred(N) of one prompt from an activation matrix: eqs. 4-6 with the baseline
    the probe measured on training examples (the same counts as `helpers.predictivity`)."""
    accumulator = AccuracyAccumulator(baseline)
    accumulator.add(acts, torch.as_tensor(_binary(labels)).long())
    return over_positions(predictivity.token_predictivity(accumulator.accuracy()))


def view_scores(
    acts: Float[Tensor, "n layer prompt ffn"],
    logits: Float[Tensor, "n label"],
    views: predictivity.Views,
    names: Sequence[str],
    keep: int = 100,
    gradients: Mapping[str, Float[Tensor, "n layer prompt ffn"]] | None = None,
) -> dict[str, list[Float[Tensor, "layer ffn"]]]:
    """Return every score of `SCORES` for each binary (sub)task view of a split, in the
    views' order: ``{score: [one per view]}`` (what `predictivity.select_views` takes);
    ``attribution`` only with the views' ``gradients`` (`log_odds_gradients`)."""
    chosen = [s for s in SCORES if s != "attribution" or gradients is not None]
    found: dict[str, list[Tensor]] = {score: [] for score in chosen}
    for view, (rows, labels) in views.items():
        confidence = log_odds(logits[rows], view, names)
        gradient = None if gradients is None else gradients[view][rows]
        for score in chosen:
            found[score].append(
                score_neurons(score, acts[rows], labels, confidence, keep, gradient)
            )
    return found


def diagnose(
    acts: Float[Tensor, "n layer prompt ffn"],
    labels: Tensor,
    baseline: Float[Tensor, "layer prompt ffn"],
    ranked: Mapping[str, Float[Tensor, "layer ffn"]],
    count: int,
    draws: int,
    bar: float = 0.7,
    seed: int = 0,
    confidence: Float[Tensor, " n"] | None = None,
    gradient: Float[Tensor, "n layer prompt ffn"] | None = None,
) -> list[dict[str, object]]:
    """Diagnose each score's top ``count`` neurons (over the model) on one binary view.

    Returns:
        per score: ``closest |r|``, the median over the top neurons of each one's largest
        |correlation| with a neuron outside the set (`redundancy`, on each neuron's mean
        over the scored positions); ``redundant``, the share of them above ``bar``; and
        ``stability``, the mean Jaccard overlap over ``draws`` bootstrap resamples of the
        examples (`bootstrap_stability`), each score recomputed on each resample:
        predictivity with ``baseline`` (the training means stay fixed), AUROC,
        confidence with the examples' ``confidence`` and attribution with their
        ``gradient``. NaN for the L1 probe, whose refit would cost seconds to minutes
        per resample, and for a score whose inputs are not given.
    """
    flat = acts.mean(dim=2).flatten(1)
    inputs = {"confidence": confidence, "attribution": gradient}
    again: dict[str, Callable[[Tensor], Tensor]] = {
        PREDICTIVITY: lambda r: threshold_predictivity(acts[r], labels[r], baseline),
    }
    for score in SCORES:
        if score == "l1_probe" or (score in inputs and inputs[score] is None):
            continue
        again[score] = lambda r, score=score: score_neurons(
            score,
            acts[r],
            labels[r],
            None if confidence is None else confidence[r],
            count,
            None if gradient is None else gradient[r],
        )
    rows: list[dict[str, object]] = []
    for score, value in ranked.items():
        closest = redundancy(
            flat, predictivity.select(value, count=count, selection="global").flatten()
        )
        stable = (
            bootstrap_stability(again[score], len(acts), count, draws, seed)
            if score in again
            else []
        )
        rows.append(
            {
                "score": score,
                "closest |r|": float(closest.median()),
                "redundant": float((closest > bar).float().mean()),
                "stability": float(np.mean(stable)) if stable else math.nan,
            }
        )
    return rows


def carry_over(
    prompt: SoftPromptModel,
    split: Dataset,
    views: predictivity.Views,
    own: Sequence[Float[Tensor, "layer ffn"]],
    target_own: Sequence[Float[Tensor, "layer ffn"]],
    mask: Bool[Tensor, " prompt"],
    count: int,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> list[dict[str, object]]:
    """Rank a prompt's neurons by AUROC on another task's split (its ``views``, which must
    be the prompt's own task's views), and compare with its ranking on its own data
    (``own``) and with the other task's own prompt's ranking there (``target_own``).

    Returns:
        per view, two rows (``versus`` ``own data`` and ``target's prompt``), each with
        `agreement`'s Spearman ρ and top-``count`` overlap.
    """
    if not len(own) == len(target_own) == len(views):
        raise NeuronError(
            f"carry-over needs one ranking per view of the split: {len(views)} views, "
            f"{len(own)} and {len(target_own)} rankings"
        )
    acts = neuron_matrix(prompt, split, mask, batch_size, caches)
    rows: list[dict[str, object]] = []
    for i, (view, (picked, labels)) in enumerate(views.items()):
        there = over_positions(auroc(acts[picked], labels))
        for versus, other in (("own data", own[i]), ("target's prompt", target_own[i])):
            rows.append({"view": view, "versus": versus, **agreement(other, there, count)})
    return rows


def summary_rows(
    scored: Mapping[str, Mapping[str, Sequence[Float[Tensor, "layer ffn"]]]],
    views: Mapping[str, predictivity.Views],
) -> list[dict[str, object]]:
    """One row per task, view and score (``scored[task][score][view index]``): the best
    value and how many neurons score above 0."""
    return [
        {
            "task": task,
            "view": view,
            "score": score,
            "max": float(values[i].max()),
            "neurons above 0": int((values[i] > 0).sum()),
        }
        for task, by_score in scored.items()
        for score, values in by_score.items()
        for i, view in enumerate(views[task])
    ]


def digest(scored: Mapping[str, Sequence[Float[Tensor, "layer ffn"]]]) -> str:
    """Return a short sha256 of every score's values (part of a cached ablation's key, so
    that scores computed differently are never ablated from an old cache)."""
    hasher = hashlib.sha256()
    for name, values in sorted(scored.items()):
        hasher.update(name.encode())
        for value in values:
            hasher.update(value.float().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def own_predictivity(
    probe: Artefact, views: Sequence[str], mask: Bool[Tensor, " prompt"] | None = None
) -> dict[str, list[Float[Tensor, "layer ffn"]]]:
    """One prompt's predictivity per view (chapter 02's score of that prompt alone), as the
    ``ranked`` of `sweep_inputs`."""
    return {PREDICTIVITY: [predictivity.dev_predictivity([probe], view, mask) for view in views]}


def sweep_inputs(
    prompt: SoftPromptModel,
    prompt_key: str,
    probe: Artefact,
    task: TaskData,
    fit: Dataset,
    ranked: Mapping[str, Sequence[Float[Tensor, "layer ffn"]]],
) -> dict[str, object]:
    """The arguments of `perturbation.SweepPlan.run` for a causal test on ``task``'s test
    split: each score's top sets (`predictivity.select_views`), the random sets matched
    to predictivity's, keyed by the prompt, its probe and the scores' values."""
    return {
        "model": prompt,
        "split": task.test,
        "own": PREDICTIVITY,
        "fit": fit,
        "orders": {s: partial(predictivity.select_views, v) for s, v in ranked.items()},
        "identity": {"prompt": prompt_key, "probe": probe.key, "scores": digest(ranked)},
        "upstream": [prompt_key, probe.key, task.key],
    }


def standing(
    means: Mapping[str, float], highs: Mapping[str, float], score: str = PREDICTIVITY
) -> dict[str, object]:
    """Where one score's causal gap (random minus its top set, `ledger.order_effect`)
    stands among all the scores': the ``best`` score (the largest mean gap), ``score``'s
    ``rank`` (1: the best), and whether it is ``among`` the best or ``not among`` them.
    The rule: among the best where its 95% interval reaches up to the best score's mean.
    """
    means, highs = dict(means), dict(highs)  # e.g. pandas Series, which iterate values
    if score not in means or score not in highs:
        raise NeuronError(f"score {score!r} has no gap; the scores are {sorted(means)}")
    best = max(means, key=lambda s: means[s])
    rank = 1 + sum(bool(means[s] > means[score]) for s in means)
    among = bool(highs[score] >= means[best])
    return {"best": best, "rank": rank, "among_best": "among" if among else "not among"}
