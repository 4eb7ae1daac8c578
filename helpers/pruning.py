"""Structured pruning: keep only the skill neurons of the upper layers, fold the rest.

For each pruned layer, the FFN keeps the rows of its input projections (gate and up for
gated MLPs) and the columns of its output projection that belong to the kept neurons.
Every removed neuron is fixed at its baseline activation, a constant, so its
contribution ``a_bsl,i · V_i`` is added to the output projection's bias (created where the
projection had none). Only removed neurons are folded: the official code folds the
kept ones too, counting their baseline twice.

The pruned model computes exactly what the original computes with the removed neurons
fixed at their baselines (`perturbation.perturbed(..., how="value")`), at every position.

Paper: §6.1, Tab. 4; official code ``src/prune.py``, ``src/helper/getprunestructure.py``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from datasets import Dataset
from jaxtyping import Bool, Float
from scipy.stats import norm
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from helpers import activations, engine, tables
from helpers.checks import check_choice
from helpers.data import TaskData
from helpers.engine import TextCaches
from helpers.ledger import paired_error
from helpers.methods import MethodConfig, add_lora, trainable_state
from helpers.models import Backbone
from helpers.perturbation import random_counterpart
from helpers.prompt_trials import on_backbone, run_trial, trial_metrics
from helpers.prompting import SoftPromptModel
from helpers.store import Artefact, ArtefactStore
from helpers.tuning import TrainConfig, train_prompt


class PruningError(ValueError):
    """A pruning recipe, its constants or a stored pruned model do not fit the backbone."""


Constant = Literal["prompt", "text", "all"]


@dataclass(frozen=True)
class PruneConfig:
    """Which neurons a pruned model keeps.

    Attributes:
        kept_fraction: share of each pruned layer's neurons kept, the top ones by
            predictivity (the paper: 0.02, i.e. 61 of 3,072 in roberta-base).
        layer_share: share of the layers pruned, counted from the top (the paper: 0.75,
            layers 4-12 of 12); the lower layers keep their whole FFN.
        constant: where the removed neurons' fixed values are measured
            (`removed_constants`): ``prompt`` (the official code), ``text`` or ``all``.
    """

    kept_fraction: float = 0.02
    layer_share: float = 0.75
    constant: Constant = "prompt"

    def __post_init__(self) -> None:
        check_choice("constant", self.constant, Constant)
        if not 0 < self.kept_fraction <= 1:
            raise PruningError(f"kept_fraction must be in (0, 1], got {self.kept_fraction}")
        if not 0 <= self.layer_share <= 1:
            raise PruningError(f"layer_share must be in [0, 1], got {self.layer_share}")


def pruned_layers(n_layers: int, layer_share: float) -> list[int]:
    """Return the upper ``int(layer_share * n_layers)`` layer indices (0-based)."""
    count = int(layer_share * n_layers)
    return list(range(n_layers - count, n_layers))


def kept_neurons(skill: Bool[Tensor, "layer ffn"], config: PruneConfig) -> dict[int, list[int]]:
    """Return, per pruned layer, the neurons kept: the skill neurons of that layer.

    A layer with fewer than ``int(kept_fraction * width)`` skill neurons (possible with
    global selection) is padded with the lowest-index other neurons, as the official code
    does; at least one neuron is kept.
    """
    n_layers, width = skill.shape
    count = max(1, int(config.kept_fraction * width))
    kept = {}
    for layer in pruned_layers(n_layers, config.layer_share):
        chosen = skill[layer].nonzero().flatten().tolist()
        others = (~skill[layer]).nonzero().flatten().tolist()
        kept[layer] = sorted(chosen + others[: max(0, count - len(chosen))])
    return kept


def prompt_baselines(
    model: SoftPromptModel,
    data: Dataset,
    mask: Bool[Tensor, " prompt"] | None = None,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> Float[Tensor, "layer ffn"]:
    """Return the constants removed neurons are fixed at: the baseline (eq. 3) on ``data``,
    averaged over the scored prompt positions (``mask``), as the official code does."""
    base = activations.baseline(model, data, batch_size, caches)
    keep = torch.ones(base.shape[1], dtype=torch.bool) if mask is None else mask
    return base[:, keep].mean(dim=1)


@torch.no_grad()
def position_means(
    model: SoftPromptModel, data: Dataset, batch_size: int = 16
) -> dict[str, Float[Tensor, "layer ffn"]]:
    """Each neuron's mean activation over the text positions (``text``) and over every
    position the FFN runs at, text, soft prompt and template (``all``), weighted by token,
    and its mean absolute activation over every position (``absolute``): the full layout
    of every example of ``data``, padding left out."""
    sums: dict[str, Tensor] = {}
    counts = {"text": 0, "all": 0, "absolute": 0}
    for batch in model.batches(data, batch_size):
        stacked, real, text = engine.layout_neurons(model, batch)
        for name, where in (("text", text), ("all", real), ("absolute", real)):
            values = stacked.abs() if name == "absolute" else stacked
            total = (values * where[:, None, :, None].to(stacked.dtype)).sum(dim=(0, 2))
            sums[name] = sums[name] + total if name in sums else total
            counts[name] += int(where.sum())
    return {name: sums[name] / counts[name] for name in sums}


def output_norms(backbone: Backbone) -> Float[Tensor, "layer ffn"]:
    """The L2 norm of each neuron's output weights (its column of the FFN output
    projection, the vector ``V_i`` it writes into the residual stream)."""
    norms = []
    for site in backbone.neuron_sites():
        weight = site.weight.detach()
        norms.append(weight.norm(dim=0) if isinstance(site, nn.Linear) else weight.norm(dim=1))
    return torch.stack(norms)


def magnitude_scores(
    model: SoftPromptModel, data: Dataset, batch_size: int = 16
) -> Float[Tensor, "layer ffn"]:
    """A task-agnostic importance of every neuron: its mean absolute activation over every
    position of ``data`` times the norm of its output weights, the structured form of the
    Wanda (|W| times the input norm) and FLAP (activation times weight) criteria, which
    ask how much a neuron writes into the residual stream, not what it predicts.

    Not in the paper: the generic criterion skill neurons are compared with at equal size.
    """
    return position_means(model, data, batch_size)["absolute"] * output_norms(model.backbone)


def removed_constants(
    model: SoftPromptModel,
    data: Dataset,
    constant: Constant = "prompt",
    mask: Bool[Tensor, " prompt"] | None = None,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> Float[Tensor, "layer ffn"]:
    """Return the values removed neurons are fixed at, measured on ``data``.

    The folded bias adds a removed neuron's constant at *every* position, text included.
    ``prompt`` is the official code's constant, the baseline (eq. 3) at the scored prompt
    positions (`prompt_baselines`); on a decoder whose text never sees the prompt, that
    value lands mostly on text tokens, where the neuron's activation can be far from it.
    ``text`` is the mean over the text positions, ``all`` the mean over every position
    weighted by token (`position_means`); they fit the positions they replace.

    Paper: §6.1 (the paper's constant is the prompt-position baseline).
    """
    check_choice("constant", constant, Constant)
    if constant == "prompt":
        return prompt_baselines(model, data, mask, batch_size, caches)
    return position_means(model, data, min(batch_size, 16))[constant]


def constant_accuracies(
    model: SoftPromptModel,
    fit: Dataset,
    data: Dataset,
    kept: Mapping[int, Sequence[int]],
    mask: Bool[Tensor, " prompt"] | None = None,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> dict[str, float]:
    """Accuracy on ``data`` of a prompt moved unchanged to the model pruned with ``kept``,
    for each `Constant` (measured on ``fit``): which constant disturbs the task least
    before any retraining. Choose on dev."""
    means = position_means(model, fit, min(batch_size, 16))  # one pass for "text" and "all"
    found = {}
    for how in get_args(Constant):
        values = (
            prompt_baselines(model, fit, mask, batch_size, caches)
            if how == "prompt"
            else means[how]
        )
        small = prune(model.backbone, kept, values, name=f"{model.backbone.name}-{how}")
        found[how] = on_backbone(model, small).evaluate(data, batch_size).accuracy
    return found


def _slice_input(module: nn.Module, kept: Tensor) -> nn.Module:
    """An FFN input projection keeping only the kept neurons' output units."""
    if isinstance(module, nn.Linear):
        new = nn.Linear(module.in_features, len(kept), bias=module.bias is not None)
        new.weight = nn.Parameter(module.weight.detach()[kept].clone(), requires_grad=False)
    elif isinstance(module, Conv1D):
        new = Conv1D(len(kept), module.weight.shape[0])
        new.weight = nn.Parameter(module.weight.detach()[:, kept].clone(), requires_grad=False)
    else:
        raise TypeError(f"cannot prune an FFN projection of type {type(module).__name__}")
    if module.bias is not None:
        new.bias = nn.Parameter(module.bias.detach()[kept].clone(), requires_grad=False)
    return new.to(module.weight.dtype)


def _slice_output(module: nn.Module, kept: Tensor, removed: Tensor, baseline: Tensor) -> nn.Module:
    """An FFN output projection reading only the kept neurons, the removed ones folded in."""
    weight = module.weight.detach()
    # The fold is summed in float32 (then stored in the backbone's precision), so a
    # bfloat16 backbone's bias is rounded once, not at every step of the sum.
    full, base = weight.float(), baseline.float()
    if isinstance(module, nn.Linear):
        new = nn.Linear(len(kept), module.out_features, bias=True)
        new.weight = nn.Parameter(weight[:, kept].clone(), requires_grad=False)
        fold = full[:, removed] @ base[removed]
    elif isinstance(module, Conv1D):
        new = Conv1D(weight.shape[1], len(kept))
        new.weight = nn.Parameter(weight[kept].clone(), requires_grad=False)
        fold = base[removed] @ full[removed]
    else:
        raise TypeError(f"cannot prune an FFN projection of type {type(module).__name__}")
    bias = module.bias.detach().float() if module.bias is not None else torch.zeros_like(fold)
    new.bias = nn.Parameter(bias + fold, requires_grad=False)
    return new.to(weight.dtype)


def prune(
    backbone: Backbone,
    kept: Mapping[int, Sequence[int]],
    baselines: Float[Tensor, "layer ffn"],
    name: str | None = None,
) -> Backbone:
    """Return a pruned copy of ``backbone``; the original is left untouched.

    Args:
        kept: per pruned layer, the neurons that stay (all others are removed).
        baselines: each neuron's baseline activation (eq. 3, averaged over the prompt
            positions), the constant that a removed neuron is fixed at.
        name: the pruned backbone's name (defaults to ``<name>-pruned``).
    """
    expected = (backbone.n_layers, backbone.ffn_width)
    if tuple(baselines.shape) != expected:
        raise PruningError(f"baselines must have shape {expected}, got {tuple(baselines.shape)}")
    model = copy.deepcopy(backbone.model)
    pruned = Backbone(name or f"{backbone.name}-pruned", model, backbone.tokenizer, backbone.arch)
    blocks = pruned.layers()
    for layer, indices in kept.items():
        if not 0 <= layer < backbone.n_layers:
            raise PruningError(f"layer {layer} does not exist (the model has {backbone.n_layers})")
        keep = torch.tensor(sorted(set(indices)), dtype=torch.long)
        if len(keep) == 0 or keep.min() < 0 or keep.max() >= backbone.ffn_width:
            raise PruningError(
                f"layer {layer}: kept neurons must be 1 to {backbone.ffn_width} indices"
            )
        removed = torch.ones(backbone.ffn_width, dtype=torch.bool)
        removed[keep] = False
        block = blocks[layer]
        for path in backbone.arch.ffn_in:
            block.set_submodule(path, _slice_input(block.get_submodule(path), keep))
        out = block.get_submodule(backbone.arch.ffn_out)
        block.set_submodule(
            backbone.arch.ffn_out,
            _slice_output(out, keep, removed.nonzero().flatten(), baselines[layer]),
        )
    model.requires_grad_(False)
    return pruned


def fold_tolerance(logits: Tensor, dtype: torch.dtype) -> float:
    """How far a pruned model's logits may lie from the masked original's (`prune` keeps
    them equal up to rounding): a few rounding steps of ``dtype`` at the largest logit,
    and at least 0.001. The two sum the same terms in another order; in bfloat16 one step
    of a logit near 10 is 0.06."""
    return max(1e-3, 4 * torch.finfo(dtype).eps * float(logits.abs().max()))


def removed_mask(
    backbone: Backbone, kept: Mapping[int, Sequence[int]]
) -> Bool[Tensor, "layer ffn"]:
    """Return the neurons that pruning with ``kept`` removes (False in unpruned layers)."""
    mask = torch.zeros(backbone.n_layers, backbone.ffn_width, dtype=torch.bool)
    for layer, indices in kept.items():
        mask[layer] = True
        mask[layer, list(indices)] = False
    return mask


# ----------------------------------------------------------------------------------
# Size and cost.


def parameter_count(backbone: Backbone) -> int:
    """Return the model's parameters, tied embeddings counted once."""
    return sum(p.numel() for p in backbone.model.parameters())


def _linear_macs(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, Conv1D)))


def flops_per_token(backbone: Backbone, seq_len: int) -> float:
    """Return the forward FLOPs per token of a sequence of ``seq_len`` tokens.

    Counted: every matrix multiplication of the transformer blocks (2 FLOPs per weight per
    token), the attention scores and their weighted sum (``4 · seq_len · d`` per token and
    layer), and the LM/MLM head at one position per sequence. Norms, activations and
    embeddings lookups are left out.
    """
    blocks = sum(_linear_macs(block) for block in backbone.layers())
    d_model = backbone.model.config.hidden_size
    attention = 2 * seq_len * d_model * backbone.n_layers
    head = _linear_macs(backbone.head()) / seq_len
    return 2.0 * (blocks + attention + head)


def size_rows(backbones: Mapping[str, Backbone], seq_len: int) -> list[dict[str, object]]:
    """Parameters and FLOPs per token of each backbone, relative to the first one."""
    reference = next(iter(backbones.values()))
    params, flops = parameter_count(reference), flops_per_token(reference, seq_len)
    return [
        {
            "model": name,
            "parameters": parameter_count(b),
            "parameter_share": 100 * parameter_count(b) / params,
            "gflops_per_token": flops_per_token(b, seq_len) / 1e9,
            "flop_limit": flops / flops_per_token(b, seq_len),
        }
        for name, b in backbones.items()
    ]


# ----------------------------------------------------------------------------------
# Saving and loading.


def _ffn_tensors(pruned: Backbone, layers: Sequence[int]) -> dict[str, Tensor]:
    """The pruned layers' FFN weights and biases, named ``<layer>.<path>.<weight|bias>``."""
    blocks, tensors = pruned.layers(), {}
    for layer in layers:
        for path in (*pruned.arch.ffn_in, pruned.arch.ffn_out):
            module = blocks[layer].get_submodule(path)
            tensors[f"{layer}.{path}.weight"] = module.weight.detach()
            if module.bias is not None:
                tensors[f"{layer}.{path}.bias"] = module.bias.detach()
    return tensors


def pruned_model(
    backbone: Backbone,
    skill: Bool[Tensor, "layer ffn"],
    baselines: Float[Tensor, "layer ffn"],
    config: PruneConfig,
    store: ArtefactStore,
    upstream: Sequence[str] = (),
) -> tuple[Backbone, Artefact]:
    """Prune ``backbone`` by ``scores`` (or load the stored result), stage ``pruned``.

    The artefact holds the pruned layers' FFN weights as safetensors and, as JSON, the
    base model's name and the kept neurons per layer; the rest of the model is the base
    model's, unchanged, so it is not copied.

    Args:
        skill: the skill neurons kept in the pruned layers (`predictivity.skill_neurons`
            with ``fraction=config.kept_fraction``).
        baselines: the constants removed neurons are fixed at.
        upstream: keys of the artefacts ``skill`` and ``baselines`` come from.
    """
    settings = {"backbone": backbone.name, "prune": asdict(config)}

    def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
        kept = kept_neurons(skill, config)
        pruned = prune(backbone, kept, baselines)
        structure = {"base": backbone.name, "kept": {str(k): v for k, v in kept.items()}}
        return _ffn_tensors(pruned, list(kept)), {"structure": structure}

    artefact = store.cached("pruned", settings, compute, upstream)
    return load_pruned(artefact, backbone), artefact


def load_pruned(artefact: Artefact, backbone: Backbone) -> Backbone:
    """Rebuild a stored pruned model on its base ``backbone`` (which is left untouched)."""
    structure = artefact.json("structure")
    if structure["base"] != backbone.name:
        raise PruningError(
            f"pruned model {artefact.key} was pruned from {structure['base']!r}, "
            f"not {backbone.name!r}"
        )
    kept = {int(k): v for k, v in structure["kept"].items()}
    zeros = torch.zeros(backbone.n_layers, backbone.ffn_width)
    pruned = prune(backbone, kept, zeros, name=f"{backbone.name}-pruned-{artefact.key}")
    blocks = pruned.layers()
    for name, tensor in artefact.tensors().items():
        layer, rest = name.split(".", 1)
        path, attribute = rest.rsplit(".", 1)
        getattr(blocks[int(layer)].get_submodule(path), attribute).data.copy_(tensor)
    return pruned


# ----------------------------------------------------------------------------------
# Latency.


@torch.inference_mode()
def latency(
    backbones: Mapping[str, Backbone],
    batch_sizes: Sequence[int] = (1, 8),
    seq_lens: Sequence[int] = (32, 128),
    repeats: int = 7,
    warmup: int = 2,
    threads: int | None = None,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Time a forward pass of each backbone on the same random inputs, alternating them.

    For each batch size and sequence length: ``warmup`` untimed runs of every backbone,
    then ``repeats`` rounds in which each backbone runs once, in turn, so that drifts of
    the machine hit all of them alike, under ``torch.inference_mode`` (no autograd
    bookkeeping). The forward pass is the backbone's blocks over the
    whole sequence and its head at the last position, as in classification.

    Returns:
        one row per backbone, batch size and sequence length, with the median and the
        spread (min, max) of the timings in milliseconds.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    try:
        for batch in batch_sizes:
            for length in seq_lens:
                first = next(iter(backbones.values()))
                ids = torch.randint(0, len(first.tokenizer), (batch, length), generator=generator)
                timings: dict[str, list[float]] = {name: [] for name in backbones}
                for round_ in range(warmup + repeats):
                    for name, backbone in backbones.items():
                        start = time.perf_counter()
                        hidden = backbone.model.base_model(input_ids=ids).last_hidden_state
                        backbone.head()(hidden[:, -1])
                        if round_ >= warmup:
                            timings[name].append(1000 * (time.perf_counter() - start))
                for name, values in timings.items():
                    rows.append(
                        {
                            "model": name,
                            "batch": batch,
                            "seq_len": length,
                            "ms": statistics.median(values),
                            "ms_min": min(values),
                            "ms_max": max(values),
                        }
                    )
    finally:
        torch.set_num_threads(previous)
    return rows


def recovery_row(
    prompt: SoftPromptModel,
    artefact: Artefact,
    pruned: Backbone,
    task: TaskData,
    train: TrainConfig | None,
    store: ArtefactStore,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> dict[str, object]:
    """One trial of Tab. 4 (test accuracy, %): the prompt on the original model (from its
    artefact), moved as it is onto the pruned model, and retrained there from where it
    was (`prompt_trials.run_trial` with ``start``, the same seed), the paper's "pruned +
    prompt tuning". ``train=None`` skips the retraining (NaN, no ``retrained_key``).

    Paper: §6.1, Tab. 4.
    """
    as_is = on_backbone(prompt, pruned).evaluate(task.test, batch_size, caches=caches)
    again = None
    if train is not None:
        seed = artefact.json("config")["seed"]
        again = run_trial(pruned, task, prompt.config, train, seed, store, False, caches, artefact)
    return {
        tables.PROMPT: 100 * artefact.json("metrics")["test_accuracy"],
        tables.PRUNED: 100 * as_is.accuracy,
        tables.RETRAINED: float("nan")
        if again is None
        else 100 * again.json("metrics")["test_accuracy"],
        "retrained_key": None if again is None else again.key,
    }


def kept_fraction_rows(
    model: Backbone,
    prompt: SoftPromptModel,
    skill_for: Callable[[float], Bool[Tensor, "layer ffn"]],
    baselines: Float[Tensor, "layer ffn"],
    split: Dataset,
    fractions: Sequence[float],
    layer_share: float,
    timed: tuple[int, int],
    batch_size: int = 32,
) -> list[dict[str, float]]:
    """Accuracy, speed-up, FLOP limit and parameter share as the kept fraction varies,
    one pruned model at a time (Fig. 7 of §6.1's trade-off, without retraining).

    Args:
        skill_for: the skill neurons at a kept fraction (e.g. a partial of
            `predictivity.skill_neurons`).
        baselines: the removed neurons' constants (`removed_constants`).
        timed: the (batch size, sequence length) the speed is measured at.
    """
    rows = []
    for fraction in tqdm(fractions, desc="kept fraction"):
        config = PruneConfig(fraction, layer_share)
        small, row = _fold_only(
            model, prompt, skill_for(fraction), baselines, config, split, timed[1], batch_size
        )
        pair = {"original": model, "pruned": small}
        times = {r["model"]: r["ms"] for r in latency(pair, [timed[0]], [timed[1]], repeats=3)}
        accuracy = row.pop("accuracy")
        rows.append(
            {
                "kept_fraction": fraction,
                "accuracy": accuracy,
                "speedup": times["original"] / times["pruned"],
                **row,
            }
        )
        del small
    return rows


def _fold_only(
    model: Backbone,
    prompt: SoftPromptModel,
    skill: Bool[Tensor, "layer ffn"],
    baselines: Float[Tensor, "layer ffn"],
    config: PruneConfig,
    split: Dataset,
    seq_len: int,
    batch_size: int,
) -> tuple[Backbone, dict[str, float]]:
    """A candidate pruned model and, with the prompt moved onto it unchanged, its accuracy
    on ``split`` (%), FLOP limit at ``seq_len`` and parameter share (%)."""
    small = prune(model, kept_neurons(skill, config), baselines, name=f"{model.name}-candidate")
    accuracy = on_backbone(prompt, small).evaluate(split, batch_size).accuracy
    return small, {
        "accuracy": 100 * accuracy,
        "flop_limit": flops_per_token(model, seq_len) / flops_per_token(small, seq_len),
        "parameter_share": 100 * parameter_count(small) / parameter_count(model),
    }


# ----------------------------------------------------------------------------------
# A pruned model chosen on dev, and other criteria at equal size.


def search_rows(
    model: Backbone,
    prompt: SoftPromptModel,
    skill_for: Callable[[float], Bool[Tensor, "layer ffn"]],
    baselines: Float[Tensor, "layer ffn"],
    dev: Dataset,
    fractions: Sequence[float],
    layer_shares: Sequence[float],
    seq_len: int,
    batch_size: int = 32,
) -> list[dict[str, float]]:
    """Every candidate pruned model of a grid, the prompt moved onto it unchanged: its dev
    accuracy (%), FLOP limit at ``seq_len`` and parameter share (%), fold only.

    The grid: each kept fraction of ``fractions`` (the top skill neurons of each pruned
    layer, ``skill_for(fraction)``) times each share of the layers pruned from the top of
    ``layer_shares``. The cheap first stage of choosing a pruned model on dev; the front
    of it (`pareto_front`) is then recovered and measured (`front_rows`).
    """
    rows = []
    for fraction in tqdm(fractions, desc="kept fraction"):
        skill = skill_for(fraction)
        for share in layer_shares:
            config = PruneConfig(fraction, share)
            small, row = _fold_only(
                model, prompt, skill, baselines, config, dev, seq_len, batch_size
            )
            layers = len(pruned_layers(model.n_layers, share))
            rows.append(
                {
                    "kept_fraction": fraction,
                    "layer_share": share,
                    "pruned_layers": layers,
                    "dev_accuracy": row.pop("accuracy"),
                    **row,
                }
            )
            del small
    return rows


def pareto_front(
    rows: Sequence[Mapping[str, float]], accuracy: str = "dev_accuracy", speed: str = "flop_limit"
) -> list[dict[str, float]]:
    """The rows that no other row beats on both ``speed`` and ``accuracy`` (higher is
    better for both), fastest first; of rows equal on both, the first is kept."""
    ordered = sorted(rows, key=lambda r: (-r[speed], -r[accuracy]))
    front: list[dict[str, float]] = []
    for row in ordered:
        if not front or row[accuracy] > front[-1][accuracy]:
            front.append(dict(row))
    return front


RECOVERIES = ("prompt_retrained", "lora")  # the paper's recovery first: it wins ties


def front_rows(
    model: Backbone,
    prompt: SoftPromptModel,
    artefact: Artefact,
    task: TaskData,
    front: Sequence[Mapping[str, float]],
    skill_for: Callable[[float], Bool[Tensor, "layer ffn"]],
    baselines: Float[Tensor, "layer ffn"],
    constant: Constant,
    train: TrainConfig,
    store: ArtefactStore,
    upstream: Sequence[str],
    batch_size: int = 32,
    reference: float | None = None,
    max_drop: float = 0.0,
    always: Sequence[Mapping[str, float]] = (),
) -> tuple[list[dict[str, object]], dict[str, Backbone]]:
    """Each front point recovered as the paper recovers its pruned model: the pruned
    model stored (`pruned_model`), the prompt retrained on it from where it was (the
    trial's seed, ``train``'s steps and early stopping), and its dev and test accuracy
    (%) before and after. Also returns the pruned models, by point label, for timing; a
    point listed twice (e.g. the paper's recipe on the front) is recovered once.

    Points are recovered fastest (highest ``flop_limit``) first. Given the unpruned
    prompt's dev accuracy (``reference``), a point slower than one already retrained to
    within ``max_drop`` of it is left out: `chosen_point`, which takes the fastest point
    within the drop, can no longer fall on it, nor can `lora_front` train it. Its
    row keeps NaN accuracies, ``recovery`` ``"none"`` and no pruned model. The points of
    ``always`` (e.g. the paper's recipe) are recovered whatever the others give; they
    follow ``front`` in the rows. Each point's fold-only test score and its retraining
    share one `engine.TextCaches`, so its texts run once on the pruned model where
    ``batch_size`` is ``train.eval_batch_size`` (as chapter 05 sets it).

    Each row's ``recovery``, ``dev_recovered``, ``test_recovered`` and ``test_correct``
    (each test example's outcome) are those of its best recovery on dev so far: here
    prompt retraining (``*_prompt_retrained``); `lora_front` may add a LoRA.

    Args:
        artefact: the prompt's own trial, whose seed the retraining keeps.
        upstream: the keys ``skill_for`` and ``baselines`` come from (probes, prompt).
    """
    points = [(dict(p), False) for p in front] + [(dict(p), True) for p in always]
    found: dict[str, dict[str, object]] = {}
    models: dict[str, Backbone] = {}
    seed, bar = artefact.json("config")["seed"], -math.inf
    ordered = sorted(points, key=lambda p: -float(p[0]["flop_limit"]))
    for point, required in tqdm(ordered, desc="front"):
        config = PruneConfig(point["kept_fraction"], point["layer_share"], constant)
        label = _label(point)
        if label in models or (label in found and not required):
            continue  # the same pruned model listed twice
        if not required and float(point["flop_limit"]) < bar:
            found[label] = {"point": label, **point, **_LEFT_OUT}
            continue
        skill = skill_for(config.kept_fraction)
        small, stored = pruned_model(model, skill, baselines, config, store, upstream)
        texts = TextCaches()  # the pruned model's texts, shared by both scores below
        as_is = on_backbone(prompt, small).evaluate(task.test, batch_size, caches=texts)
        again = run_trial(small, task, prompt.config, train, seed, store, False, texts, artefact)
        models[label] = small
        metrics = again.json("metrics")
        row = {
            "point": label,
            **point,
            "test_fold_only": 100 * as_is.accuracy,
            "dev_prompt_retrained": 100 * metrics["dev_accuracy"],
            "test_prompt_retrained": 100 * metrics["test_accuracy"],
            "pruned_key": stored.key,
        }
        found[label] = row | _recovered(RECOVERIES[0], metrics)
        if reference is not None and _within(100 * metrics["dev_accuracy"], reference, max_drop):
            bar = max(bar, float(point["flop_limit"]))
    rows = [found[label] for label in dict.fromkeys(_label(p) for p, _ in points)]
    return rows, models


def _within(dev: float, reference: float, max_drop: float) -> bool:
    """Whether a dev accuracy is at most ``max_drop`` points below ``reference``: the
    rule a pruned model is chosen by (`chosen_point`); NaN (not recovered) is not."""
    return dev >= reference - max_drop


def _label(point: Mapping[str, float]) -> str:
    """A front point's name: its kept fraction and how many layers it prunes."""
    return f"{point['kept_fraction']:g} of {point['pruned_layers']:g} layers"


# A front point that `front_rows` leaves out: a faster one is already within the drop.
_LEFT_OUT: dict[str, object] = {
    "test_fold_only": math.nan,
    "dev_prompt_retrained": math.nan,
    "test_prompt_retrained": math.nan,
    "pruned_key": None,
    "recovery": "none",
    "dev_recovered": math.nan,
    "test_recovered": math.nan,
    "test_correct": None,
}


def _recovered(recovery: str, metrics: Mapping[str, object]) -> dict[str, object]:
    """A front row's fields for its chosen recovery, from that recovery's metrics."""
    return {
        "recovery": recovery,
        "dev_recovered": 100 * float(metrics["dev_accuracy"]),  # type: ignore[arg-type]
        "test_recovered": 100 * float(metrics["test_accuracy"]),  # type: ignore[arg-type]
        "test_correct": metrics["test_correct"],
    }


def lora_front(
    backbone: Backbone,
    rows: Sequence[Mapping[str, object]],
    prompt: SoftPromptModel,
    artefact: Artefact,
    task: TaskData,
    method: MethodConfig,
    train: TrainConfig,
    store: ArtefactStore,
    reference: float,
    max_drop: float,
) -> list[dict[str, object]]:
    """Recover front points (`front_rows`) by a LoRA too (`lora_recovery`), and keep, per
    point, the recovery more accurate on dev (prompt retraining on a tie).

    Only the points that could still be chosen (`chosen_point`, the fastest point within
    ``max_drop`` of ``reference`` on dev) are trained, fastest (highest FLOP limit) first:
    none slower than the point prompt retraining alone gives, when that one is within
    the drop, and none slower than a point a LoRA has already brought within it. So the
    choice is the one training every point would give, and the point chosen always has
    its LoRA. The others get NaN for ``dev_lora`` and ``test_lora``. A LoRA's update can
    be folded into the weights it adapts (W + BA), so the recovered model keeps the
    pruned model's shape and speed.
    """
    alone = chosen_point(rows, reference, max_drop)
    within = _within(float(alone["dev_recovered"]), reference, max_drop)  # type: ignore[arg-type]
    bar = float(alone["flop_limit"]) if within else -math.inf  # type: ignore[arg-type]
    found = [{**row, "dev_lora": math.nan, "test_lora": math.nan} for row in rows]
    fastest_first = sorted(found, key=lambda r: -float(r["flop_limit"]))  # type: ignore[arg-type]
    for row in tqdm(fastest_first, desc="LoRA on the front"):
        if float(row["flop_limit"]) < bar:  # type: ignore[arg-type]
            continue
        pruned = store.load("pruned", str(row["pruned_key"]))
        metrics = lora_recovery(backbone, pruned, prompt, artefact, task, method, train, store)
        row |= {"dev_lora": 100 * metrics["dev_accuracy"]}
        row |= {"test_lora": 100 * metrics["test_accuracy"]}
        if row["dev_lora"] > float(row["dev_recovered"]):  # type: ignore[arg-type]
            row |= _recovered(RECOVERIES[1], metrics)
        if _within(float(row["dev_recovered"]), reference, max_drop):  # type: ignore[arg-type]
            bar = max(bar, float(row["flop_limit"]))  # type: ignore[arg-type]
    return found


def lora_recovery(
    backbone: Backbone,
    pruned: Artefact,
    prompt: SoftPromptModel,
    artefact: Artefact,
    task: TaskData,
    method: MethodConfig,
    train: TrainConfig,
    store: ArtefactStore,
) -> dict[str, Any]:
    """Recover a stored pruned model by a short LoRA instead of prompt retraining, and
    return its metrics as a prompt trial reports them (dev and test accuracy, each test
    example's outcome).

    §6.1 recovers the pruned model by retraining the prompt; on a text-first decoder the
    prompt cannot reach the text's representations, which the removed neurons' constants
    change too, so this third recovery adapts the pruned backbone itself: the trained
    prompt is kept as it is, and a LoRA of the attention projections (`methods.add_lora`)
    is trained with ``train`` from the trial's seed (stage ``pruned_lora``).

    Args:
        backbone: the original backbone the pruned model was made from (left untouched).
        pruned: the stored pruned model (`pruned_model`).
        artefact: the prompt's own trial, whose seed the LoRA keeps.
    """
    seed = artefact.json("config")["seed"]
    settings = {"method": asdict(method), "train": asdict(train), "seed": seed}

    def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
        small = load_pruned(pruned, backbone)
        model = on_backbone(prompt, small)
        model.prompt.requires_grad_(False)
        parameters = add_lora(small, method.rank, method.alpha, seed)
        result = train_prompt(
            model, task.train, task.dev, train, seed, False, parameters=parameters
        )
        metrics = trial_metrics(model, result, task.test, train.eval_batch_size)
        return trainable_state(model), {"history": result.history, "metrics": metrics}

    upstream = [pruned.key, artefact.key, task.key]
    return dict(store.cached("pruned_lora", settings, compute, upstream).json("metrics"))


def chosen_point(
    rows: Sequence[Mapping[str, object]], reference: float, max_drop: float
) -> dict[str, object]:
    """The point chosen on dev: the fastest (highest FLOP limit) whose recovered dev
    accuracy (``dev_recovered``: its best recovery's, `lora_front`) is at most
    ``max_drop`` points below ``reference`` (the unpruned prompt's dev accuracy on the
    same dev examples); if none is, the most accurate one on dev."""
    within = [r for r in rows if _within(float(r["dev_recovered"]), reference, max_drop)]  # type: ignore[arg-type]
    if within:
        return dict(max(within, key=lambda r: float(r["flop_limit"])))
    return dict(max(rows, key=lambda r: float(r["dev_recovered"])))


def criterion_neurons(
    skill: Bool[Tensor, "layer ffn"],
    magnitude: Float[Tensor, "layer ffn"],
    draws: int,
    seed: int = 0,
) -> dict[str, Bool[Tensor, "layer ffn"]]:
    """The neurons each criterion keeps, as many per layer as ``skill`` holds there:
    ``skill``, the top ones by ``magnitude`` (`magnitude_scores`), and ``draws`` random
    sets matched to ``skill`` layer by layer, named ``random 0``, ``random 1``, ..."""
    top = torch.zeros_like(skill)
    order = magnitude.argsort(dim=1, descending=True, stable=True)
    for layer, count in enumerate(skill.sum(dim=1).tolist()):
        top[layer, order[layer, :count]] = True
    randoms = {f"random {i}": random_counterpart(skill, seed + i) for i in range(draws)}
    return {"skill": skill, "magnitude": top, **randoms}


def criteria_rows(
    model: Backbone,
    prompt: SoftPromptModel,
    neurons: Mapping[str, Bool[Tensor, "layer ffn"]],
    baselines: Float[Tensor, "layer ffn"],
    split: Dataset,
    config: PruneConfig,
    batch_size: int = 32,
) -> list[dict[str, object]]:
    """Accuracy (%) of the prompt moved unchanged onto the model pruned with each
    criterion's neurons (`criterion_neurons`), same layers and counts, with every
    example's outcome (1 right, 0 wrong) for paired intervals."""
    rows = []
    for name, chosen in tqdm(neurons.items(), desc="criteria"):
        small = prune(model, kept_neurons(chosen, config), baselines, name=f"{model.name}-c")
        scored = on_backbone(prompt, small).evaluate(split, batch_size)
        correct = (scored.labels == scored.predictions).astype(int)
        rows.append(
            {
                "criterion": name.split(" ")[0],
                "set": name,
                "accuracy": 100 * float(correct.mean()),
                "correct": correct.tolist(),
            }
        )
        del small
    return rows


def criteria_comparison(
    rows: Sequence[Mapping[str, object]], level: float = 0.95
) -> list[dict[str, object]]:
    """Skill neurons against each other criterion at equal size: the mean paired accuracy
    difference (points, skill minus other) over the same examples with its ``level``
    normal interval, the random criterion taken as the mean over its draws with their
    spread added (`ledger.paired_error`). *better* / *worse*: the interval excludes 0 on
    that side; else *undecided*."""
    sets: dict[str, list[np.ndarray]] = {}
    for row in rows:
        sets.setdefault(str(row["criterion"]), []).append(np.asarray(row["correct"], float))
    if "skill" not in sets:
        raise PruningError(f"no skill-neuron row among the criteria {sorted(sets)}")
    skill, z = 100 * sets["skill"][0], float(norm.ppf(0.5 + level / 2))
    found = []
    for name, outcomes in sets.items():
        if name == "skill":
            continue
        other = 100 * np.mean(outcomes, axis=0)
        draws = np.array([100 * o.mean() for o in outcomes]) if len(outcomes) > 1 else None
        difference = skill - other
        mean, error = float(difference.mean()), paired_error(difference, draws)
        low, high = mean - z * error, mean + z * error
        verdict = "better" if low > 0 else "worse" if high < 0 else "undecided"
        found.append(
            {
                "criterion": name,
                "sets": len(outcomes),
                "skill": float(skill.mean()),
                "other": float(other.mean()),
                "difference": mean,
                "low": low,
                "high": high,
                "skill neurons are": verdict,
            }
        )
    return found
