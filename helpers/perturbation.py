"""Perturbing chosen neurons: noise, zero or a fixed value in place of their activations.

A forward pre-hook on each layer's neuron site (the FFN output projection) rewrites the
chosen entries of the neuron vector before the projection reads it, at every position
the forward pass computes. Hooks are always removed when the context exits, also on
error.

Paper: §4.2 (Gaussian noise, σ = 0.1); official code ``src/mask.py``: ``gaussian``
(noise drawn once per example and broadcast to every position), ``zero`` and ``mean``
(a constant per neuron). §6.1 fixes the pruned neurons at their baseline the same way.

On top of the hooks (chapter 03): sweeps of test accuracy as a growing fraction of
neurons is perturbed in a task's predictivity order or at random (§4.2, Fig. 4), the
neuronal importance read from them (§4.3, Fig. 6), and the selectivity index of Morcos
et al. as another ranking (App. H, Fig. 15).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from helpers import activations, engine
from helpers.checks import check_choice
from helpers.data import split_digest, stable_seed
from helpers.engine import TextCaches
from helpers.models import Backbone
from helpers.prompting import SoftPromptModel, prefix_cached
from helpers.store import ArtefactStore
from helpers.zeroshot import Evaluation


class PerturbationError(ValueError):
    """A perturbation or sweep got neurons, orders or settings it cannot use."""


How = Literal["gaussian", "zero", "value"]
Noise = Literal["gaussian", "zero", "value", "swap"]
Swap = Literal["other", "same"]
Per = Literal["example", "token"]
Scale = Literal["absolute", "spread"]


def _check(backbone: Backbone, mask: Tensor, name: str) -> None:
    expected = (backbone.n_layers, backbone.ffn_width)
    if tuple(mask.shape) != expected:
        raise PerturbationError(
            f"{name} must have shape {expected} (layer, ffn), got {tuple(mask.shape)}"
        )


@contextmanager
def perturbed(
    backbone: Backbone,
    neurons: Bool[Tensor, "layer ffn"],
    how: How = "gaussian",
    values: Float[Tensor, "layer ffn"] | None = None,
    sigma: float | Float[Tensor, "layer ffn"] = 0.1,
    seed: int = 0,
    per: Per = "example",
    first: int | None = None,
) -> Iterator[None]:
    """Perturb the chosen neurons on every forward pass inside the context.

    Args:
        neurons: which neurons to perturb, one row per layer.
        how: ``gaussian`` adds N(0, σ²) noise drawn once per example and shared by every
            position (the official code); ``zero`` sets them to 0; ``value`` sets them to
            ``values`` (e.g. their baselines, as pruning does).
        values: the replacement per neuron, for ``how="value"``.
        sigma: the noise's standard deviation, for ``how="gaussian"``: one for all
            neurons, or one per neuron (e.g. a multiple of each neuron's own spread).
        seed: seed of the noise. Each layer draws from its own generator, seeded by
            ``seed`` and the layer, for every neuron of the layer: the same seed gives the
            same noise at a layer for the same batches, whichever neurons and other
            layers are perturbed (so every set of neurons sees the same noise).
        per: ``example`` draws one noise vector per example, shared by its positions (the
            official code); ``token`` draws it per position.
        first: perturb only the first ``first`` positions of each forward pass (the
            prompt of the encoder layout); None perturbs every position computed.
    """
    _check(backbone, neurons, "neurons")
    if isinstance(sigma, Tensor):
        _check(backbone, sigma, "sigma")
    check_choice("how", how, How)
    check_choice("per", per, Per)
    if how == "value":
        if values is None:
            raise PerturbationError("how='value' needs values, one per neuron")
        _check(backbone, values, "values")

    def hook_for(layer: int) -> Callable[[Tensor], Tensor]:
        chosen = neurons[layer].bool()
        generator = torch.Generator().manual_seed(stable_seed("noise", seed, layer))
        scale = sigma[layer] if isinstance(sigma, Tensor) else torch.tensor(sigma)

        def hook(x: Tensor) -> Tensor:
            where = chosen[None, None, :].expand(1, x.shape[1], -1)
            if first is not None:
                where = where & (torch.arange(x.shape[1]) < first)[None, :, None]
            if how == "gaussian":
                steps = 1 if per == "example" else x.shape[1]
                noise = torch.randn(x.shape[0], steps, x.shape[-1], generator=generator) * scale
                # Summed in float32 (or wider) and rounded once: in bfloat16 the noise
                # itself would be rounded first (spacing 0.125 above |x| = 16).
                wide = torch.promote_types(x.dtype, torch.float32)
                x = (x.to(wide) + noise.to(wide) * where.to(wide)).to(x.dtype)
            else:
                fill = torch.zeros(()) if how == "zero" else values[layer].to(x.dtype)
                x = torch.where(where, fill, x)
            return x

        return hook

    chosen = [layer for layer in range(backbone.n_layers) if neurons[layer].any()]
    with engine.site_hooks(backbone, {layer: hook_for(layer) for layer in chosen}):
        yield


# ----------------------------------------------------------------------------------
# Sweeps: accuracy as more neurons are perturbed (chapter 03).

Scope = Literal["prompt", "all"]
Order = Callable[[float], Bool[Tensor, "layer ffn"]]  # the neurons to perturb at a fraction


@dataclass(frozen=True)
class PerturbConfig:
    """How a sweep perturbs its neurons.

    The fields are chapter 03's parameters of the same names.

    Attributes:
        noise: ``gaussian``, ``zero``, ``value`` (the baseline, for sweeps) or ``swap``
            (each example's neurons set to their mean over the other classes' examples,
            at the scored prompt positions: `class_swapped`).
        sigma: noise standard deviation (the paper: 0.1).
        noise_scale: ``absolute`` (σ as given, the paper) or ``spread`` (σ times each
            neuron's own standard deviation at the prompt positions on training data).
        scope: ``all`` perturbs every position, text included (the official code);
            ``prompt`` only the scored prompt positions, where skill neurons are defined.
        noise_per: noise drawn per ``example`` (the official code) or per ``token``.
    """

    noise: Noise = "gaussian"
    sigma: float = 0.1
    noise_scale: Scale = "absolute"
    scope: Scope = "all"
    noise_per: Per = "example"

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise PerturbationError(f"sigma must be >= 0, got {self.sigma}")
        check_choice("noise", self.noise, Noise)
        check_choice("noise_scale", self.noise_scale, Scale)
        check_choice("scope", self.scope, Scope)
        check_choice("noise_per", self.noise_per, Per)
        if self.noise == "swap" and self.scope != "prompt":
            raise PerturbationError(
                "noise='swap' patches the scored prompt positions: it needs scope='prompt', "
                f"got scope={self.scope!r}"
            )


def random_counterpart(
    neurons: Bool[Tensor, "layer ffn"],
    seed: int,
    scale: Float[Tensor, "layer ffn"] | None = None,
    strata: Sequence[float] = (0.5, 0.9, 0.99),
) -> Bool[Tensor, "layer ffn"]:
    """Random neurons with the same count in every layer (the official ``--cmp`` control).

    With ``scale`` (each neuron's activation spread, `neuron_spread`), the draw is also
    stratified by scale: each layer's neurons are cut into strata at the ``strata``
    quantiles of that layer's spreads, the `massive` neurons forming one more stratum,
    and the random set takes as many neurons from each stratum as ``neurons`` has there.
    A few neurons of a backbone can have spreads hundreds of times the median; a plain
    draw that hits one of them is dominated by it, a stratified draw holds exactly as
    many of them, in every layer, as the chosen set does.
    """
    generator = torch.Generator().manual_seed(seed)
    out = torch.zeros_like(neurons, dtype=torch.bool)
    width = neurons.shape[1]
    large = None if scale is None else massive(scale)
    for layer in range(neurons.shape[0]):
        if scale is None:
            count = int(neurons[layer].sum())
            out[layer, torch.randperm(width, generator=generator)[:count]] = True
            continue
        cuts = torch.quantile(scale[layer].double(), torch.tensor(list(strata)).double())
        stratum = torch.bucketize(scale[layer].double(), cuts)
        stratum[large[layer]] = len(strata) + 1  # the massive neurons: a stratum of their own
        for level in range(len(strata) + 2):
            members = (stratum == level).nonzero().flatten()
            count = int((neurons[layer] & (stratum == level)).sum())
            out[layer, members[torch.randperm(len(members), generator=generator)[:count]]] = True
    return out


def massive(scale: Float[Tensor, "layer ffn"], factor: float = 20.0) -> Bool[Tensor, "layer ffn"]:
    """The neurons whose spread exceeds ``factor`` times the median spread of the model
    (the "massive activations" a few neurons of many Transformers have)."""
    return scale > factor * scale.median()


@torch.no_grad()
def neuron_spread(
    model: SoftPromptModel, split: Dataset, batch_size: int = 32, caches: TextCaches | None = None
) -> Float[Tensor, "layer ffn"]:
    """Each neuron's standard deviation over examples and scored prompt positions."""
    total = torch.zeros(model.backbone.n_layers, model.backbone.ffn_width, dtype=torch.float64)
    square, count = torch.zeros_like(total), 0
    for batch, cache in model.eval_batches(split, batch_size, caches):
        acts = engine.prompt_activations(model, batch, cache).double()
        total += acts.sum(dim=(0, 2))
        square += (acts**2).sum(dim=(0, 2))
        count += acts.shape[0] * acts.shape[2]
    mean = total / count
    return (square / count - mean**2).clamp(min=0).sqrt().float()


def perturbation_values(
    model: SoftPromptModel, fit: Dataset, config: PerturbConfig, batch_size: int = 32
) -> Float[Tensor, "layer ffn"] | None:
    """The per-neuron values a perturbation needs, from training examples ``fit``: the
    baselines (mean over prompt positions) for ``noise="value"``, each class's means per
    scored position (`class_means`) for ``noise="swap"``, the spreads for
    ``noise_scale="spread"``, otherwise None."""
    if config.noise == "value":
        return activations.baseline(model, fit, batch_size).mean(dim=1)
    if config.noise == "swap":
        return class_means(model, fit, len(model.label_ids), batch_size)
    if config.noise == "gaussian" and config.noise_scale == "spread":
        return neuron_spread(model, fit, batch_size)
    return None


def perturbed_evaluation(
    model: SoftPromptModel,
    split: Dataset,
    neurons: Bool[Tensor, "layer ffn"],
    config: PerturbConfig,
    seed: int = 0,
    batch_size: int = 32,
    caches: TextCaches | None = None,
    values: Float[Tensor, "layer ffn"] | None = None,
) -> Evaluation:
    """Predictions of a prompt model on a split with the chosen neurons perturbed.

    With ``scope="prompt"`` on a decoder the text runs once, unperturbed, from the text
    cache (whether or not the model keeps one itself): every batch's text is run before
    the hooks go on, and only the prompt positions run under them. So the text is never
    perturbed, also when a split does not fit in the caches' budget, and sweeps are
    affordable (`bench/perturbation.py`). On an encoder the hooks keep to the first
    positions, the prompt. ``scope="all"`` perturbs every position on the full layout.

    Args:
        values: per-neuron replacement (``noise="value"``), per-neuron spread
            (``noise_scale="spread"``, see `neuron_spread`), or each class's means
            (``noise="swap"``, see `class_swapped`).
    """
    if config.noise == "swap":
        if values is None:
            raise PerturbationError("noise='swap' needs each class's means as values")
        return class_swapped(model, split, neurons, values, "other", batch_size, caches)
    sigma: float | Tensor = config.sigma
    if config.noise == "gaussian" and config.noise_scale == "spread":
        if values is None:
            raise PerturbationError("noise_scale='spread' needs each neuron's spread as values")
        sigma, values = config.sigma * values, None
    decoder = model.backbone.kind == "decoder"
    first = model.n_scored if (config.scope == "prompt" and not decoder) else None
    hooks = dict(
        how=config.noise, values=values, sigma=sigma, seed=seed, per=config.noise_per, first=first
    )
    if decoder and config.scope == "prompt":
        caches = caches if caches is not None else TextCaches()
        with prefix_cached(model):
            batches = caches.batches(model, split, batch_size)  # the text, without the hooks
            with perturbed(model.backbone, neurons, **hooks):
                return model.evaluate(split, batch_size, batches=batches)
    with prefix_cached(model, False), perturbed(model.backbone, neurons, **hooks):
        return model.evaluate(split, batch_size)


def sweep(
    model: SoftPromptModel,
    split: Dataset,
    orders: Mapping[str, Order],
    fractions: Sequence[float],
    config: PerturbConfig,
    own: str,
    random_draws: int = 3,
    seed: int = 0,
    batch_size: int = 32,
    caches: TextCaches | None = None,
    values: Float[Tensor, "layer ffn"] | None = None,
    progress: bool = False,
    scale: Float[Tensor, "layer ffn"] | None = None,
) -> list[dict[str, object]]:
    """Accuracy as a growing fraction of neurons is perturbed, in several orders.

    For each fraction, the set each order gives for it (e.g. a source task's skill neurons
    at that fraction, `predictivity.skill_neurons`) is perturbed, and ``random_draws`` random sets with the same count in
    every layer as order ``own`` at that fraction. Fraction 0 is the unperturbed model.
    Noise seeds depend on the fraction only, never on the order or the draw, so every set
    of neurons sees the same noise (common random numbers: a difference between two
    orders is not a difference of noise). With ``scale`` the random sets are stratified
    by it (`random_counterpart`), and every row counts the `massive` neurons it perturbs.

    Paper: §4.2, Fig. 4 (0-17% of the neurons; random order as the control).

    Returns:
        rows with ``order`` (a name of ``orders`` or ``random``), ``draw``, ``fraction``,
        ``accuracy``, ``correct`` (each example's outcome in split order, as a string of
        0s and 1s, for paired comparisons on the same examples: `correct_matrix`) and,
        with ``scale``, ``massive``.
    """
    if own not in orders:
        raise PerturbationError(f"own order {own!r} is not among the orders {list(orders)}")
    caches = caches if caches is not None else TextCaches()
    if config.noise == "swap":  # the clean model's margins too
        nothing = torch.zeros(model.backbone.n_layers, model.backbone.ffn_width, dtype=torch.bool)
        clean = perturbed_evaluation(model, split, nothing, config, 0, batch_size, caches, values)
    else:
        clean = model.evaluate(split, batch_size, caches=caches)
    large = None if scale is None else massive(scale)

    def row(
        name: str, draw: int, fraction: float, scored: Evaluation, chosen: Tensor | None
    ) -> dict[str, object]:
        found: dict[str, object] = {
            "order": name,
            "draw": draw,
            "fraction": fraction,
            "accuracy": scored.accuracy,
            "correct": scored.outcomes,
        }
        if large is not None:
            found["massive"] = 0 if chosen is None else int((chosen & large).sum())
        if scored.margins is not None:
            found["margin"] = float(scored.margins.mean())
        return found

    rows = [row(name, 0, 0.0, clean, None) for name in orders]
    rows += [row("random", d, 0.0, clean, None) for d in range(random_draws)]
    steps = [
        (f, name) for f in fractions if f > 0 for name in [*orders, *["random"] * random_draws]
    ]
    bar = tqdm(total=len(steps), disable=not progress, desc="sweep")
    for f_index, fraction in enumerate(f for f in fractions if f > 0):
        noise_seed = stable_seed("sweep", seed, f_index)
        for name, order in orders.items():
            chosen = order(fraction)
            scored = perturbed_evaluation(
                model, split, chosen, config, noise_seed, batch_size, caches, values
            )
            rows.append(row(name, 0, fraction, scored, chosen))
            bar.update()
        own_set = orders[own](fraction)
        for draw in range(random_draws):
            draw_seed = stable_seed("random", seed, draw, f_index)
            chosen = random_counterpart(own_set, draw_seed, scale)
            scored = perturbed_evaluation(
                model, split, chosen, config, noise_seed, batch_size, caches, values
            )
            rows.append(row("random", draw, fraction, scored, chosen))
            bar.update()
    bar.close()
    return rows


@dataclass(frozen=True)
class SweepPlan:
    """What every sweep of a chapter shares, and where the sweeps are kept.

    `run` is `sweep` computed once and kept in the artefact store (stage ``sweeps``),
    with the per-neuron values its perturbation needs computed from training examples.

    Attributes:
        store: the artefact store.
        fractions: perturbed shares of the neurons (0 is the unperturbed model).
        config: the perturbation.
        random_draws: random sets per fraction, as `sweep`.
        batch_size: examples per forward pass.
        caches: the texts' states shared across sweeps (None: one per sweep).
        seed: base seed of the noise and the random draws.
    """

    store: ArtefactStore
    fractions: Sequence[float]
    config: PerturbConfig
    random_draws: int = 3
    batch_size: int = 32
    caches: TextCaches | None = None
    seed: int = 0

    def run(
        self,
        model: SoftPromptModel,
        split: Dataset,
        orders: Mapping[str, Order],
        own: str,
        identity: Mapping[str, object],
        upstream: Sequence[str],
        fit: Dataset | None = None,
        scale: Float[Tensor, "layer ffn"] | None = None,
    ) -> list[dict[str, object]]:
        """Sweep ``model`` on ``split`` in ``orders`` (own order ``own``); see `sweep`.

        Args:
            identity: what the model and the orders are (e.g. the prompt's and the
                probes' keys, the selection); part of the key, with every setting.
            upstream: keys of the artefacts the model and the orders come from.
            fit: training examples for the perturbation's per-neuron values
                (`perturbation_values`); needed only by ``noise="value"`` and
                ``noise_scale="spread"``.
            scale: per-neuron activation scale for stratified random draws.
        """
        config = self.config
        if fit is None and (config.noise in ("value", "swap") or config.noise_scale == "spread"):
            raise PerturbationError(
                f"noise={config.noise!r} with noise_scale={config.noise_scale!r} needs training examples (fit)"
            )
        settings = {
            "sweep": dict(identity),
            "orders": list(orders),
            "fractions": list(self.fractions),
            "config": asdict(config),
            "own": own,
            "random_draws": self.random_draws,
            "seed": self.seed,
            "n": len(split),
            "fit": None if fit is None else split_digest(fit),  # the per-neuron values' source
            "rows": "per example",
            "stratified": None
            if scale is None
            else hashlib.sha256(scale.float().contiguous().numpy().tobytes()).hexdigest()[:16],
        }

        def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
            values = (
                None if fit is None else perturbation_values(model, fit, config, self.batch_size)
            )
            rows = sweep(
                model,
                split,
                orders,
                self.fractions,
                config,
                own,
                self.random_draws,
                self.seed,
                self.batch_size,
                self.caches,
                values,
                scale=scale,
            )
            return {}, {"rows": rows}

        return self.store.cached("sweeps", settings, compute, upstream).json("rows")


def curve_area(fractions: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under an accuracy curve over the perturbed fraction (trapezoid rule)."""
    x, y = np.asarray(fractions, dtype=float), np.asarray(accuracies, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


def importance(rows: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Neuronal importance of each order for one evaluated task: the area between the
    random curve (mean over draws) and the order's curve. Positive when perturbing in
    that order hurts more than random.

    Paper: §4.3, Fig. 6 (before the z-score over source tasks).
    """
    table = pd.DataFrame(list(rows))
    random = table[table["order"] == "random"].groupby("fraction")["accuracy"].mean()
    area_random = curve_area(random.index, random.to_numpy())
    out = {}
    for name, part in table[table["order"] != "random"].groupby("order", sort=False):
        curve = part.groupby("fraction")["accuracy"].mean()
        out[str(name)] = area_random - curve_area(curve.index, curve.to_numpy())
    return out


def at_largest(sweeps: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Fig. 4 at the largest fraction swept, one row per evaluated task (accuracies in %):
    unperturbed, own order, the random draws' mean, min and max, the mean count of massive
    neurons in the own and the random sets, and whether the own order hurts more than
    every random draw.

    Args:
        sweeps: `sweep` rows with ``task`` (the evaluated task, whose name is also its own
            order) and ``trial`` columns added.
    """
    largest = sweeps[sweeps["fraction"] == sweeps["fraction"].max()]
    own = largest[largest["order"] == largest["task"]].groupby("task")
    random = largest[largest["order"] == "random"].groupby("task")
    table = pd.DataFrame(
        {
            "unperturbed": 100 * sweeps[sweeps["fraction"] == 0].groupby("task")["accuracy"].mean(),
            "own order": 100 * own["accuracy"].mean(),
            "random mean": 100 * random["accuracy"].mean(),
            "random min": 100 * random["accuracy"].min(),
            "random max": 100 * random["accuracy"].max(),
            "massive, own": own["massive"].mean(),
            "massive, random": random["massive"].mean(),
        }
    ).reindex(list(tasks))
    table["own hurts more"] = table["own order"] < table["random min"]
    return table


def with_predictivity(
    sweeps: pd.DataFrame, other: Sequence[Mapping[str, object]], name: str = "predictivity"
) -> pd.DataFrame:
    """The own-order and random rows of ``sweeps`` for the trials another ranking was
    swept in (``other``'s ``trial``), the own order renamed ``name``, stacked with that
    ranking's rows (App. H, Fig. 15)."""
    own_or_random = (sweeps["order"] == sweeps["task"]) | (sweeps["order"] == "random")
    trials = {row["trial"] for row in other}
    kept = sweeps[sweeps["trial"].isin(trials) & own_or_random]
    renamed = kept.assign(order=kept["order"].where(kept["order"] == "random", name))
    return pd.concat([renamed, pd.DataFrame(list(other))])


def correct_matrix(rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """Each row's per-example outcomes (``correct``, from `sweep`) as a 0/1 matrix
    ``[rows, examples]``, for paired comparisons of conditions on the same examples."""
    strings = [str(row["correct"]) for row in rows]
    if len({len(s) for s in strings}) > 1:
        raise PerturbationError("the rows were scored on different numbers of examples")
    return np.array([[c == "1" for c in s] for s in strings], dtype=float).reshape(len(strings), -1)


def zscored(matrix: pd.DataFrame) -> pd.DataFrame:
    """Z-score each row (an evaluated task) over its columns (source tasks), as Fig. 6."""
    centred = matrix.sub(matrix.mean(axis=1), axis=0)
    spread = matrix.std(axis=1, ddof=0).replace(0, np.nan)
    return centred.div(spread, axis=0).fillna(0.0)


# ----------------------------------------------------------------------------------
# The selectivity index of Morcos et al. (2018), an alternative ranking (App. H).


@torch.no_grad()
def class_means(
    model: SoftPromptModel,
    split: Dataset,
    n_classes: int,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> Float[Tensor, "label layer prompt ffn"]:
    """Each neuron's mean activation at each scored prompt position, per class."""
    shape = (n_classes, model.backbone.n_layers, model.n_scored, model.backbone.ffn_width)
    total = torch.zeros(shape, dtype=torch.float64)
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for batch, cache in model.eval_batches(split, batch_size, caches):
        acts = engine.prompt_activations(model, batch, cache).double()
        total.index_add_(0, batch.labels, acts)
        counts += torch.bincount(batch.labels, minlength=n_classes).double()
    if bool((counts == 0).any()):
        raise PerturbationError(f"every class needs examples; counts per class {counts.tolist()}")
    return (total / counts[:, None, None, None]).float()


@torch.no_grad()
def class_swapped(
    model: SoftPromptModel,
    split: Dataset,
    neurons: Bool[Tensor, "layer ffn"],
    means: Float[Tensor, "label layer prompt ffn"],
    swap: Swap = "other",
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> Evaluation:
    """Class-swap activation patching: predictions of a prompt model with the chosen
    neurons, at every scored prompt position, set to the mean they take there on
    examples of another class, the text left as it runs.

    Each example gets its ``other`` classes' means (the mean of their ``means``, e.g.
    from `class_means` on training examples), or with ``same`` its own class's (a
    control: where each class's mean is its one example's activation, nothing changes).
    Where mean ablation removes what the neurons say, this makes them say the other
    class: a neuron the model reads for the label turns its predictions over. Not in
    the paper (§4.2 perturbs with noise); chapter 07.

    Returns:
        the predictions, with each example's margin (its label's logit minus the
        largest other label's) under the patch.
    """
    backbone, k = model.backbone, model.n_scored
    _check(backbone, neurons, "neurons")
    check_choice("swap", swap, Swap)
    expected = (len(model.label_ids), backbone.n_layers, k, backbone.ffn_width)
    if tuple(means.shape) != expected or expected[0] < 2:
        raise PerturbationError(
            f"means must have shape {expected} (label, layer, prompt, ffn) with two classes "
            f"or more, got {tuple(means.shape)}"
        )
    others = (means.sum(dim=0, keepdim=True) - means) / (means.shape[0] - 1)
    targets = means if swap == "same" else others
    current: dict[str, Tensor] = {}

    def hook_for(layer: int) -> Callable[[Tensor], Tensor]:
        chosen = neurons[layer].bool()

        def hook(x: Tensor) -> Tensor:
            # The scored positions are the first k: all of a decoder's prompt pass on
            # its cached text, the [MASK] and soft tokens of an encoder's layout.
            x = x.clone()
            x[:, :k, chosen] = current["values"][:, layer][:, :, chosen].to(x.dtype)
            return x

        return hook

    labels = np.asarray(list(split["label"]))
    predictions = np.full(len(split), -1, dtype=np.int64)
    margins = np.zeros(len(split))
    hooks = {layer: hook_for(layer) for layer in range(backbone.n_layers) if neurons[layer].any()}
    with prefix_cached(model):
        caches = caches if caches is not None else TextCaches()
        batches = caches.batches(model, split, batch_size)  # the text, before the hooks
        with engine.site_hooks(backbone, hooks):
            for batch, cache in batches:
                current["values"] = targets[batch.labels]
                logits = model(batch, cache)
                rows, own = batch.rows.numpy(), logits.gather(1, batch.labels[:, None])[:, 0]
                rest = logits.scatter(1, batch.labels[:, None], float("-inf")).max(dim=1).values
                predictions[rows] = logits.argmax(dim=1).numpy()
                margins[rows] = (own - rest).numpy()
    return Evaluation(labels, predictions, margins)


def selectivity_index(
    means: Float[Tensor, "label layer prompt ffn"],
    mask: Bool[Tensor, " prompt"] | None = None,
    eps: float = 1e-8,
) -> Float[Tensor, "layer ffn"]:
    """Morcos et al.'s class selectivity, ``(μ_max − μ_rest) / (μ_max + μ_rest)``, maxed over
    prompt positions like predictivity.

    ``μ_max`` is the largest class mean, ``μ_rest`` the mean of the other class means. The
    index was defined for non-negative (ReLU) activations; gated MLPs also produce negative
    values, so the denominator uses magnitudes, ``|μ_max| + |μ_rest|``, which equals the
    original wherever activations are non-negative.

    Paper: App. H, Fig. 15 (an alternative ranking, no better than random there).
    """
    top = means.max(dim=0).values
    rest = (means.sum(dim=0) - top) / (means.shape[0] - 1)
    index = (top - rest) / (top.abs() + rest.abs() + eps)
    if mask is not None:
        index = index[:, mask]
    return index.max(dim=1).values
