"""The text-once engine: run each text once, run prompts on top, read the neurons.

On a decoder the text comes before the soft prompt and never attends to it, and the
backbone is frozen, so a text's keys and values are the same for every prompt, trial,
training step, epoch and perturbed condition that leaves the text alone (chapter 01
shows the layout). This module keeps them and runs everything else on top:

- `TextCaches` holds, under one memory budget, a split's evaluation batches (shortest
  texts first) with their text caches, and each training example's own text states,
  gathered into a batch cache for whatever batch a training step draws;
- `record_neurons` and `prompt_activations` read the neurons at the prompt positions
  (forward pre-hooks on the FFN output projection, always removed);
- `length_order` and `bucketed_order` choose the batches.

Training (`tuning.train_prompt`), evaluation, probing (`activations`), perturbation
of the prompt positions, transfer and the untuned controls all go through these.

Paper: §2.1 (prompt tuning on a frozen backbone), §2.2 (the activation
a = f(x Kᵀ + b1)), §3.1 (activations at the prompt positions); the official code
``probe`` hooks ``intermediate`` of RoBERTa, which is the same tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from datasets import Dataset
from jaxtyping import Bool, Float, Int
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import DynamicCache

from helpers.models import Backbone
from helpers.store import artefact_key, versions

if TYPE_CHECKING:
    from helpers.prompting import PromptBatch, SoftPromptModel


class EngineError(ValueError):
    """The text-once engine got batches, caches or a budget it cannot use."""


def hook_count(model: nn.Module) -> int:
    """Return how many forward and pre-forward hooks are registered anywhere in a model."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def weights_digest(model: nn.Module) -> str:
    """Return the sha256 of a model's parameters and buffers: names, dtypes, shapes, bytes.

    What a text's keys and values depend on besides the text, read from the weights
    themselves, so a pruned, rebuilt or re-initialised model never shares another's.
    About half a second for SmolLM2-135M.
    """
    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        flat = tensor.detach().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


@contextmanager
def record_neurons(
    backbone: Backbone, layers: Sequence[int] | None = None
) -> Iterator[dict[int, Float[Tensor, "n seq ffn"]]]:
    """Record each chosen layer's neuron activations on the next forward passes.

    Yields a dict that fills as the model runs: layer index -> the activations of the
    latest forward pass, detached, in float32 whatever the backbone's precision (the
    statistics that read them add up many), shape ``[n, seq, ffn]``.

    Example:
        >>> with record_neurons(backbone) as acts:
        ...     backbone.model(**batch)
        >>> acts[0].shape[-1] == backbone.ffn_width
        True
    """
    chosen = range(backbone.n_layers) if layers is None else layers
    recorded: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[[Tensor], None]:
        return lambda x: recorded.__setitem__(layer, x.detach().float())

    with site_hooks(backbone, {layer: keep(layer) for layer in chosen}):
        yield recorded


@contextmanager
def site_hooks(
    backbone: Backbone, hooks: Mapping[int, Callable[[Tensor], Tensor | None]]
) -> Iterator[None]:
    """Call ``hooks[layer]`` on that layer's neuron activations ``[n, seq, ffn]`` (the
    input of the FFN output projection) on every forward pass inside the context; a hook
    that returns a tensor replaces the activations with it.

    Where the FFN runs on flattened hidden states (``arch.flat_ffn``, OPT), the
    activations arrive as ``[n * seq, ffn]``: they are viewed as ``[n, seq, ffn]`` from
    the shape of the block's input, recorded by a hook on the block, and a replacement is
    flattened back. Every hook is removed when the context exits, also on error.
    """
    sites, blocks = backbone.neuron_sites(), backbone.layers()
    shapes: dict[int, tuple[int, int]] = {}
    handles = []

    def shape_of(layer: int):  # noqa: ANN202
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            shapes[layer] = (hidden.shape[0], hidden.shape[1])

        return hook

    def site_of(layer: int, call: Callable[[Tensor], Tensor | None]):  # noqa: ANN202
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
            x, flat = args[0], args[0].dim() == 2
            out = call(x.view(*shapes[layer], x.shape[-1]) if flat else x)
            if out is None:
                return None
            return (out.reshape(x.shape) if flat else out, *args[1:])

        return hook

    try:
        for layer, call in hooks.items():
            if backbone.arch.flat_ffn:
                block = blocks[layer]
                handles.append(block.register_forward_pre_hook(shape_of(layer), with_kwargs=True))
            handles.append(sites[layer].register_forward_pre_hook(site_of(layer, call)))
        yield
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
    return at_scored(model, batch, stacked)


def at_scored(
    model: SoftPromptModel, batch: PromptBatch, stacked: Float[Tensor, "n layer seq ffn"]
) -> Float[Tensor, "n layer prompt ffn"]:
    """Keep the scored prompt positions of per-position neuron values of one forward
    pass (all of them where a decoder ran the prompt positions alone on cached text)."""
    if stacked.shape[2] == model.n_scored and model.prefix_cache:
        return stacked
    positions = model.layout(batch).prompt_positions
    index = positions[:, None, :, None].expand(-1, stacked.shape[1], -1, stacked.shape[3])
    return stacked.gather(2, index)


Pooling = Literal["prompt", "mean", "max"]


@torch.no_grad()
def layout_neurons(
    model: SoftPromptModel, batch: PromptBatch
) -> tuple[Float[Tensor, "n layer seq ffn"], Bool[Tensor, "n seq"], Bool[Tensor, "n seq"]]:
    """Every neuron's activation at every position of a batch's full layout (text and
    prompt in one pass), with the real positions (padding left out) and, among them, the
    text positions (those that are not scored prompt positions)."""
    backbone = model.backbone
    layout = model.layout(batch)
    with record_neurons(backbone) as recorded:
        backbone.model.base_model(inputs_embeds=layout.embeds, attention_mask=layout.attention_mask)
    stacked = torch.stack([recorded[layer] for layer in range(backbone.n_layers)], dim=1)
    real = layout.attention_mask.bool()
    text = real.clone()
    text[torch.arange(len(text))[:, None], layout.prompt_positions] = False
    return stacked, real, text


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
    stacked, _, text = layout_neurons(model, batch)
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


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Return the indices of ``lengths`` from shortest to longest (stable)."""
    return np.argsort(lengths, kind="stable")


def bucketed_order(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    window: int,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Return a random order whose batches hold examples of similar length.

    The examples are shuffled, cut into windows of ``window`` batches, each window sorted
    by length and cut into batches, and the batches shuffled. Padding shrinks while every
    example is still seen once per epoch in a seed-dependent order; ``window=1`` keeps
    the batches of a plain shuffle.

    With ``labels``, each class of a window is sorted by length on its own and the classes
    are interleaved by rank, so a batch mixes the classes as the window does: sorting by
    length alone would put same-class examples together wherever length and label are
    correlated, and a few dozen steps of such batches train worse prompts.
    """
    order = rng.permutation(len(lengths))
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        if labels is None:
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        else:
            groups = [chunk[labels[chunk] == k] for k in np.unique(labels[chunk])]
            groups = [g[np.argsort(lengths[g], kind="stable")] for g in groups]
            ranks = np.concatenate([(np.arange(len(g)) + 0.5) / len(g) for g in groups])
            chunk = np.concatenate(groups)[np.argsort(ranks, kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def active_dropout(module: nn.Module) -> bool:
    """Return whether a model drops anything out in training mode.

    Cached text states are computed once, so they cannot carry a fresh dropout mask per
    step: training on cached text is exact only for a model without dropout, or in
    ``eval`` mode.
    """
    config = getattr(module, "config", None)
    rates = [getattr(config, name, 0.0) or 0.0 for name in ("attention_dropout", "attn_pdrop")]
    dropouts = [m.p for m in module.modules() if isinstance(m, nn.Dropout)]
    return any(float(r) > 0 for r in rates + dropouts)


@dataclass
class _Examples:
    """One split's per-example text states: per layer, every example's keys and values
    laid end to end (``[tokens, heads, head_dim]``), filled the first time a batch needs
    them. The tensors are allocated for the whole split but only filled rows take
    memory; ``nbytes`` counts those."""

    offsets: Int[Tensor, " n"]
    lengths: Int[Tensor, " n"]
    done: Tensor
    keys: list[Tensor]
    values: list[Tensor]
    token_bytes: int

    @property
    def nbytes(self) -> int:
        return int(self.lengths[self.done].sum()) * self.token_bytes


class TextCaches:
    """Decoder text states kept across prompts, trials, steps and epochs, under a budget.

    A split's text does not depend on the prompt, so every trial, every training step
    and every evaluation of one task can share its keys and values. Two kinds of entry
    share one budget of ``max_bytes``:

    - `batches`: a split's evaluation batches, shortest texts first, each with its text
      cache (for evaluation, probing and perturbation of the prompt positions);
    - `batch_cache`: each training example's own states, computed the first time a
      training batch holds it and gathered into a cache for any batch of the split, so
      every trial keeps its own random batches and data order.

    They cost memory (about 46 KB per text token for SmolLM2-135M in float32): the least
    recently used entry is dropped first and recomputed if it is needed again. Once the
    budget holds nothing else, a split's training examples that do not fit any more are
    not stored: their batches run their text at every step, as without a cache.
    ``computed`` and ``reused`` count the texts run and the texts served from the cache;
    `report` gives them with the bytes held.

    With a ``folder``, a split's evaluation batches outlive the process: the first
    chapter that runs them writes their keys and values there as safetensors, and any
    later chapter (or rerun) that asks for the same split on the same weights reads
    them back instead of running the text (``loaded`` counts those texts). A file is
    keyed by the weights' own digest (`weights_digest`), the backbone's name and dtype,
    the attention implementation, the package versions, the texts, how they are cut
    and joined, and the batch size; and it holds its batches' token ids and masks,
    which must equal the ones tokenised now. Anything else (another tokenizer, a file
    that does not match, a model with hooks on) runs the text; a model with hooks on
    keeps nothing on disk. Files are written up to ``max_folder_bytes`` in all; a
    damaged one is run anew and replaced.
    """

    def __init__(
        self,
        max_bytes: int = 4 << 30,
        folder: str | os.PathLike[str] | None = None,
        max_folder_bytes: int = 16 << 30,
    ) -> None:
        if max_bytes < 0:
            raise EngineError(f"max_bytes must be >= 0, got {max_bytes}")
        if max_folder_bytes < 0:
            raise EngineError(f"max_folder_bytes must be >= 0, got {max_folder_bytes}")
        self.max_bytes = max_bytes
        self.folder = None if folder is None else Path(folder)
        self.max_folder_bytes = max_folder_bytes
        self._items: OrderedDict[tuple[object, ...], object] = OrderedDict()
        self._sizes: dict[tuple[object, ...], int] = {}
        self._full: set[tuple[object, ...]] = set()
        self.computed = 0
        self.reused = 0
        self.loaded = 0
        self.written = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept caches."""
        return sum(self._sizes.values())

    def report(self) -> dict[str, object]:
        """Return the budget, the bytes held and how many texts were computed and reused."""
        return {
            "max_gb": self.max_bytes / 2**30,
            "held_gb": self.nbytes / 2**30,
            "entries": len(self._items),
            "splits_beyond_budget": len(self._full),
            "texts_computed": self.computed,
            "texts_reused": self.reused,
            "texts_loaded": self.loaded,
            "texts_written": self.written,
            "folder_gb": self.folder_bytes() / 2**30,
        }

    def folder_bytes(self) -> int:
        """Bytes of the text states kept in ``folder`` (0 without one)."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        return sum(f.stat().st_size for f in self.folder.glob("*.safetensors"))

    @staticmethod
    def _bytes(entry: list[tuple[PromptBatch, DynamicCache | None]]) -> int:
        total = 0
        for batch, cache in entry:
            total += batch.input_ids.nbytes + batch.attention_mask.nbytes
            for layer in cache.layers if cache is not None else []:
                total += layer.keys.nbytes + layer.values.nbytes
        return total

    @staticmethod
    def _key(model: SoftPromptModel, data: Dataset, *rest: object) -> tuple[object, ...]:
        # Everything a text's states depend on: the backbone (name and object, so a
        # pruned or rebuilt model never shares), its dtype, the split's content and how
        # the text is cut and joined.
        backbone, config = model.backbone, model.config
        dtype = backbone.model.get_input_embeddings().weight.dtype
        return (
            backbone.name,
            id(backbone.model),
            str(dtype),
            data._fingerprint,
            config.max_text_tokens,
            config.separator,
            *rest,
        )

    def _keep(self, key: tuple[object, ...], entry: object, size: int) -> None:
        """Keep an entry, dropping the least recently used ones; not if it cannot fit."""
        if self._make_room(key, size):
            self._items[key], self._sizes[key] = entry, size

    def batches(
        self, model: SoftPromptModel, data: Dataset, batch_size: int
    ) -> list[tuple[PromptBatch, DynamicCache | None]]:
        """Return the split's batches with their caches, computing them on first use."""
        key = self._key(model, data, "batches", batch_size, model.prefix_cache)
        if key in self._items:
            self._items.move_to_end(key)
            self.reused += len(data)
            return self._items[key]  # type: ignore[return-value]
        order = length_order(model.text_lengths(data))
        batches = list(model.batches(data, batch_size, order))
        file = self._file(model, data, batch_size)
        entry = self._read(file, batches)
        if entry is not None:
            self.loaded += len(data)
        else:
            entry = [
                (batch, model.text_cache(batch) if model.prefix_cache else None)
                for batch in batches
            ]
            self.computed += len(data)
            self._write(file, entry)
        self._keep(key, entry, self._bytes(entry))
        return entry

    def _file(self, model: SoftPromptModel, data: Dataset, batch_size: int) -> Path | None:
        """Where a split's evaluation batches are kept on disk; None where they are not."""
        backbone = model.backbone.model
        if self.folder is None or not model.prefix_cache or hook_count(backbone) > 0:
            return None
        texts = hashlib.sha256()
        for column in ("text", "text_pair"):
            if column in data.column_names:
                texts.update(json.dumps(list(data[column])).encode())
        config = {
            "backbone": model.backbone.name,
            "weights": weights_digest(backbone),
            "dtype": str(backbone.get_input_embeddings().weight.dtype),
            "attention": str(getattr(backbone.config, "_attn_implementation", None)),
            "texts": texts.hexdigest(),
            "max_text_tokens": model.config.max_text_tokens,
            "separator": model.config.separator,
            "batch_size": batch_size,
            "versions": {k: v for k, v in versions().items() if k in ("torch", "transformers")},
        }
        return self.folder / f"{artefact_key('texts', config)}.safetensors"

    def _read(
        self, file: Path | None, batches: list[PromptBatch]
    ) -> list[tuple[PromptBatch, DynamicCache | None]] | None:
        """The stored caches of these batches, or None if there are none that fit them."""
        if file is None or not file.exists():
            return None
        try:
            tensors = load_file(file)
        except (SafetensorError, OSError):
            return None
        entry = []
        for i, batch in enumerate(batches):
            ids, mask = tensors.get(f"{i}/input_ids"), tensors.get(f"{i}/attention_mask")
            if ids is None or mask is None:
                return None
            if not (torch.equal(ids, batch.input_ids) and torch.equal(mask, batch.attention_mask)):
                return None
            layers, pairs = 0, []
            while f"{i}/{layers}/keys" in tensors:
                pairs.append((tensors[f"{i}/{layers}/keys"], tensors[f"{i}/{layers}/values"]))
                layers += 1
            entry.append((batch, DynamicCache(ddp_cache_data=pairs)))
        return entry if f"{len(batches)}/input_ids" not in tensors else None

    def _write(
        self, file: Path | None, entry: list[tuple[PromptBatch, DynamicCache | None]]
    ) -> None:
        """Keep a split's caches on disk for later chapters, if the folder has room."""
        if file is None or self._bytes(entry) + self.folder_bytes() > self.max_folder_bytes:
            return
        tensors = {}
        for i, (batch, cache) in enumerate(entry):
            tensors[f"{i}/input_ids"] = batch.input_ids.contiguous()
            tensors[f"{i}/attention_mask"] = batch.attention_mask.contiguous()
            for layer, states in enumerate(cache.layers if cache is not None else []):
                tensors[f"{i}/{layer}/keys"] = states.keys.contiguous()
                tensors[f"{i}/{layer}/values"] = states.values.contiguous()
        file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=file.parent, suffix=".part")
        os.close(handle)
        try:
            save_file(tensors, temporary)
            os.replace(temporary, file)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        self.written += sum(len(batch.labels) for batch, _ in entry)

    def batch_cache(
        self, model: SoftPromptModel, data: Dataset, batch: PromptBatch
    ) -> DynamicCache | None:
        """Return the text cache of a batch of ``data`` (its ``rows``), built from each
        example's stored states; run only the examples not seen before.

        Once the budget is full (after dropping the least recently used other entries),
        new examples are no longer stored: their batches run their text anew. Returns
        None (the caller runs the full layout) for an encoder or a model without
        ``prefix_cache``.
        """
        if not model.prefix_cache or batch.rows is None:
            return None
        key = self._key(model, data, "examples")
        rows, lengths = batch.rows, batch.lengths
        examples = self._items.get(key)
        if examples is None:
            cache = model.text_cache(batch)
            self.computed += len(rows)
            self._store(key, self._allocate(model, data, cache), rows, lengths, cache)
            return cache
        assert isinstance(examples, _Examples)
        self._items.move_to_end(key)
        missing = ~examples.done[rows]
        if bool(missing.any()):
            needed = int(lengths[missing].sum()) * examples.token_bytes
            if not self._make_room(key, needed):
                self._full.add(key)
                self.computed += len(rows)
                return model.text_cache(batch)
            width = int(lengths[missing].max())
            fresh = model.text_cache(_subset(batch, missing, width))
            self._store(key, examples, rows[missing], lengths[missing], fresh)
            self.computed += int(missing.sum())
        self.reused += int((~missing).sum())
        return self._gather(examples, rows, batch.input_ids.shape[1])

    def _make_room(self, key: tuple[object, ...], needed: int) -> bool:
        """Drop the least recently used other entries until ``needed`` more bytes fit."""
        others = [k for k in self._items if k != key]
        while others and self.nbytes + needed > self.max_bytes:
            oldest = others.pop(0)
            del self._items[oldest], self._sizes[oldest]
        return self.nbytes + needed <= self.max_bytes

    @staticmethod
    def _allocate(model: SoftPromptModel, data: Dataset, cache: DynamicCache) -> _Examples:
        lengths = torch.as_tensor(model.text_lengths(data))
        tokens = int(lengths.sum())
        shapes = [(lay.keys.shape[1], lay.keys.shape[3], lay.keys.dtype) for lay in cache.layers]
        return _Examples(
            offsets=torch.cumsum(lengths, 0) - lengths,
            lengths=lengths,
            done=torch.zeros(len(lengths), dtype=torch.bool),
            keys=[torch.empty(tokens, h, d, dtype=t) for h, d, t in shapes],
            values=[torch.empty(tokens, h, d, dtype=t) for h, d, t in shapes],
            token_bytes=sum(2 * h * d * torch.finfo(t).bits // 8 for h, d, t in shapes),
        )

    def _store(
        self,
        key: tuple[object, ...],
        examples: _Examples,
        rows: Tensor,
        lengths: Tensor,
        cache: DynamicCache,
    ) -> None:
        """Copy a batch's text states into the split's entry, if the budget has room."""
        if key not in self._items:
            if not self._make_room(key, int(lengths.sum()) * examples.token_bytes):
                self._full.add(key)
                return
            self._items[key], self._sizes[key] = examples, 0
        for i, (row, length) in enumerate(zip(rows.tolist(), lengths.tolist(), strict=True)):
            if int(examples.lengths[row]) != length:
                raise EngineError(
                    f"row {row} has {length} text tokens here but {int(examples.lengths[row])} "
                    "in the split it was cached for"
                )
            start = int(examples.offsets[row])
            for layer, keys, values in zip(
                cache.layers, examples.keys, examples.values, strict=True
            ):
                keys[start : start + length] = layer.keys[i, :, :length].transpose(0, 1)
                values[start : start + length] = layer.values[i, :, :length].transpose(0, 1)
            examples.done[row] = True
        self._sizes[key] = examples.nbytes

    @staticmethod
    def _gather(examples: _Examples, rows: Tensor, width: int) -> DynamicCache:
        # Positions past an example's length point at its first token: they are padding,
        # masked out by the batch's attention mask, as the pad tokens' states are.
        steps = torch.arange(width)[None]
        inside = steps < examples.lengths[rows][:, None]
        index = examples.offsets[rows][:, None] + torch.where(inside, steps, 0)
        pairs = [
            (keys[index].transpose(1, 2), values[index].transpose(1, 2))
            for keys, values in zip(examples.keys, examples.values, strict=True)
        ]
        return DynamicCache(ddp_cache_data=pairs)


def _subset(batch: PromptBatch, chosen: Tensor, width: int) -> PromptBatch:
    """Return the chosen examples of a batch, cut to ``width`` text tokens."""
    return type(batch)(
        batch.input_ids[chosen, :width],
        batch.attention_mask[chosen, :width],
        batch.labels[chosen],
        None if batch.rows is None else batch.rows[chosen],
    )
