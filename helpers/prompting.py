"""Prompts and the verbalizer: classify by the label words' logits at the prediction position.

Hard (text) prompts give zero-shot accuracy (chapter 00); soft prompts, trained on a
frozen backbone, build on the same prediction code (chapter 01). The LM/MLM head runs only at the
prediction position, never over the whole sequence.

Paper: §2.1, eq. 1 (the label word's likelihood at the prediction position).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from helpers import paper
from helpers.checks import check_choice
from helpers.data import TaskData, stable_seed, verbalizer_ids
from helpers.engine import TextCaches, active_dropout, bucketed_order, length_order
from helpers.models import Backbone
from helpers.store import Artefact, ArtefactStore


@dataclass(frozen=True)
class Evaluation:
    """Predictions of a classifier on one split."""

    labels: np.ndarray
    predictions: np.ndarray

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions."""
        return float((self.labels == self.predictions).mean())

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in ``labels``."""
        return balanced_accuracy(self.labels, self.predictions)


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Return the mean per-class recall (chance is 1 / classes whatever the balance)."""
    recalls = [(predictions[labels == c] == c).mean() for c in np.unique(labels)]
    return float(np.mean(recalls))


def truncate(tokenizer: object, text: str, max_tokens: int) -> str:
    """Cut a text to its first ``max_tokens`` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens])  # type: ignore[attr-defined]


def fill_template(
    backbone: Backbone, template: str, text: str, text_pair: str | None, max_text_tokens: int
) -> str:
    """Fill a hard prompt; an encoder gets its mask token where the label word goes."""
    filled = template.format(
        text=truncate(backbone.tokenizer, text, max_text_tokens),
        text_pair=truncate(backbone.tokenizer, text_pair or "", max_text_tokens),
    )
    if backbone.kind == "encoder":
        filled = f"{filled} {backbone.tokenizer.mask_token}"
    return filled


def prediction_positions(
    backbone: Backbone, input_ids: Int[Tensor, "n seq"], attention_mask: Int[Tensor, "n seq"]
) -> Int[Tensor, " n"]:
    """Return where each example is classified: its mask token, or its last real token."""
    if backbone.kind == "encoder":
        return (input_ids == backbone.tokenizer.mask_token_id).int().argmax(dim=1)
    return attention_mask.sum(dim=1) - 1


def label_logits(
    backbone: Backbone,
    hidden: Float[Tensor, "n seq d"],
    positions: Int[Tensor, " n"],
    label_ids: Sequence[int],
) -> Float[Tensor, "n label"]:
    """Apply the LM/MLM head at one position per example, keeping the label words' logits."""
    at = hidden[torch.arange(hidden.shape[0]), positions]
    return backbone.head()(at)[:, list(label_ids)]


def hard_prompt_batches(
    backbone: Backbone,
    data: Dataset,
    template: str,
    batch_size: int,
    max_text_tokens: int,
) -> Iterator[tuple[dict[str, Tensor], Int[Tensor, " n"]]]:
    """Yield tokenised batches of filled templates, shortest texts first, with their rows.

    Sorting by length wastes less compute on padding; ``rows`` say where each batch's
    examples sit in ``data``.
    """
    pairs = [p or "" for p in data["text_pair"]]
    order = length_order(
        np.array([len(t) + len(p) for t, p in zip(data["text"], pairs, strict=True)])
    )
    for start in range(0, len(data), batch_size):
        rows = order[start : start + batch_size]
        chosen = data.select(rows.tolist())
        texts = [
            fill_template(backbone, template, text, pair, max_text_tokens)
            for text, pair in zip(chosen["text"], chosen["text_pair"], strict=True)
        ]
        encoded = backbone.tokenizer(texts, padding=True, return_tensors="pt")
        yield dict(encoded), torch.as_tensor(rows)


@torch.no_grad()
def zero_shot_verbalizers(
    backbone: Backbone,
    data: Dataset,
    template: str,
    verbalizers: Mapping[str, Sequence[str]],
    batch_size: int = 32,
    max_text_tokens: int = 128,
    progress: bool = True,
) -> dict[str, Evaluation]:
    """`zero_shot` with several sets of label words, read from one forward pass."""
    if len(data) == 0:
        raise PromptError("cannot evaluate on an empty split")
    ids = {
        name: verbalizer_ids(backbone.tokenizer, words, leading_space=True)
        for name, words in verbalizers.items()
    }
    predictions = {name: np.empty(len(data), dtype=np.int64) for name in verbalizers}
    batches = hard_prompt_batches(backbone, data, template, batch_size, max_text_tokens)
    total = -(-len(data) // batch_size)
    for encoded, rows in tqdm(batches, total=total, disable=not progress, desc="zero-shot"):
        hidden = backbone.model.base_model(**encoded).last_hidden_state
        positions = prediction_positions(backbone, encoded["input_ids"], encoded["attention_mask"])
        logits = label_logits(backbone, hidden, positions, [i for v in ids.values() for i in v])
        offset = 0
        for name, label_ids in ids.items():
            chosen = logits[:, offset : offset + len(label_ids)]
            predictions[name][rows.numpy()] = chosen.argmax(dim=1).numpy()
            offset += len(label_ids)
    labels = np.asarray(data["label"])
    return {name: Evaluation(labels, predicted) for name, predicted in predictions.items()}


def zero_shot(
    backbone: Backbone,
    data: Dataset,
    template: str,
    label_words: Sequence[str],
    batch_size: int = 32,
    max_text_tokens: int = 128,
    progress: bool = True,
) -> Evaluation:
    """Classify a split with a hard prompt and the verbalizer, no training.

    Args:
        template: with ``{text}`` (and ``{text_pair}``); the label word follows it.
        label_words: one word per class, each a single token after a space.
    """
    verbalizer = {"words": label_words}
    return zero_shot_verbalizers(
        backbone, data, template, verbalizer, batch_size, max_text_tokens, progress
    )["words"]


def zero_shot_table(
    backbone: Backbone,
    tasks: Sequence[TaskData],
    split: str = "test",
    batch_size: int = 32,
    max_text_tokens: int = 128,
) -> list[dict[str, object]]:
    """Zero-shot accuracy of each task's hard prompt, with shared and natural label words.

    The shared words (negative/positive/neutral) are the paper's verbalizer for every task;
    natural words name the classes and are evaluated where they differ.
    """
    rows = []
    for task in tasks:
        styles = ["shared"] + (
            ["natural"] if task.spec.label_words("natural") != task.spec.label_words() else []
        )
        verbalizers = {style: task.spec.label_words(style) for style in styles}  # type: ignore[arg-type]
        results = zero_shot_verbalizers(
            backbone,
            task.split(split),
            task.spec.template,
            verbalizers,
            batch_size,
            max_text_tokens,
        )
        for style, result in results.items():
            rows.append(
                {
                    "task": task.spec.name,
                    "words": style,
                    "label_words": "/".join(verbalizers[style]),
                    "n": len(result.labels),
                    "accuracy": 100 * result.accuracy,
                    "balanced_accuracy": 100 * result.balanced_accuracy,
                    "chance": 100 / task.spec.n_classes,
                }
            )
    return rows


# ----------------------------------------------------------------------------------
# Soft prompts (chapter 01).

Init = Literal["normal", "vocab", "text", "task"]


class PromptError(ValueError):
    """A prompt does not fit the backbone, or a saved prompt belongs to another setup."""


@dataclass(frozen=True)
class PromptConfig:
    """How a soft prompt is laid out and read; saved with every trained prompt.

    Attributes:
        length: trainable soft vectors. The encoder layout adds the frozen ``[MASK]``
            before them (the paper's l = 127 soft tokens is ``length=127``).
        init: ``normal`` (N(0, init_std²), the paper's), ``vocab`` (embeddings of
            tokens drawn uniformly from the vocabulary), ``text`` (the embeddings of
            ``init_text``'s tokens, a hand-written prompt, as the prompt's last vectors;
            any vectors before them are drawn as for ``vocab``) or ``task`` (``text``
            with the task's own hand-written words, e.g. `` Sentiment:``; resolved by
            `prompt_config_for`).
        init_std: standard deviation of the ``normal`` initialisation (paper: 0.03).
        label_words: one per class, each a single token.
        template: decoder only: words after the soft prompt, before the label word.
        separator: decoder only: joins a text pair (encoders use the tokenizer's own
            pair encoding; the official code concatenated pairs with nothing between).
        max_text_tokens: each text (and text pair) is cut to this many tokens.
    """

    length: int = 16
    init: Init = "vocab"
    init_std: float = 0.03
    init_text: str = ""
    label_words: tuple[str, ...] = ("negative", "positive")
    template: str = ""
    separator: str = "\n"
    max_text_tokens: int = 96

    def __post_init__(self) -> None:
        if self.length < 1:
            raise PromptError(f"prompt length must be >= 1, got {self.length}")
        check_choice("init", self.init, Init, PromptError)
        if self.init == "text" and not self.init_text:
            raise PromptError("init='text' needs init_text, the hand-written prompt")
        if self.max_text_tokens < 1:
            raise PromptError(f"max_text_tokens must be >= 1, got {self.max_text_tokens}")


@dataclass
class PromptBatch:
    """A batch of texts, tokenised, waiting to be laid out around the current prompt.

    Attributes:
        input_ids: the text tokens, right-padded, ``[n, text]``: with the tokenizer's
            special tokens for encoders, without for decoders.
        attention_mask: 1 for real text tokens, ``[n, text]``.
        labels: class indices, ``[n]``.
        rows: each example's row in its split, ``[n]`` (batches may be sorted by length).
    """

    input_ids: Int[Tensor, "n text"]
    attention_mask: Int[Tensor, "n text"]
    labels: Int[Tensor, " n"]
    rows: Int[Tensor, " n"] | None = None

    @property
    def lengths(self) -> Int[Tensor, " n"]:
        """Real text tokens per example."""
        return self.attention_mask.sum(dim=1)


@dataclass
class Layout:
    """A batch laid out in full: embeddings with the prompt in place, and where to look.

    Attributes:
        embeds: input embeddings, soft prompt included, ``[n, seq, d]``.
        attention_mask: 1 for real positions, ``[n, seq]``.
        predict: the position whose head output is classified, ``[n]``.
        prompt_positions: the positions at which neurons are scored, ``[n, prompt]``:
            the ``[MASK]`` and soft tokens (encoder), or the soft and template tokens up
            to the prediction position (decoder).
    """

    embeds: Float[Tensor, "n seq d"]
    attention_mask: Int[Tensor, "n seq"]
    predict: Int[Tensor, " n"]
    prompt_positions: Int[Tensor, "n prompt"]


class SoftPromptModel(nn.Module):
    """A frozen backbone with a trainable soft prompt and a verbalizer.

    Encoder (the paper's layout, eq. 1): ``[MASK] p1 … p_l <s> text </s>``, classified by
    the MLM head at ``[MASK]``. Decoder: ``text p1 … p_l template``, classified by the
    next-token logits at the last position, because a causal model's positions before
    the text cannot see it. Only ``prompt`` has ``requires_grad``.

    On a decoder the text comes first and never attends to the prompt, so its keys and
    values do not depend on the prompt: with ``prefix_cache=True`` (the default) the text
    runs once without gradients and only the prompt positions run with them, attending
    to the cached text. Outputs equal the full layout's (a test checks this).

    Paper: §2.1, eq. 1; App. B.
    """

    def __init__(
        self, backbone: Backbone, config: PromptConfig, seed: int = 0, prefix_cache: bool = True
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.prefix_cache = prefix_cache and backbone.kind == "decoder"
        self.label_ids = verbalizer_ids(
            backbone.tokenizer, config.label_words, leading_space=backbone.kind == "decoder"
        )
        embedding = backbone.model.get_input_embeddings()
        generator = torch.Generator().manual_seed(seed)
        d_model = embedding.weight.shape[1]
        if config.init == "task":
            raise PromptError("init='task' needs the task: build the config with prompt_config_for")
        if config.init == "normal":
            initial = torch.randn(config.length, d_model, generator=generator) * config.init_std
        else:
            words = (
                backbone.tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
                if config.init == "text"
                else []
            )
            if len(words) > config.length:
                raise PromptError(
                    f"init_text {config.init_text!r} is {len(words)} tokens, more than the "
                    f"prompt's length {config.length}"
                )
            n_vocab = embedding.weight.shape[0]
            drawn = torch.randint(0, n_vocab, (config.length - len(words),), generator=generator)
            ids = torch.cat([drawn, torch.tensor(words, dtype=torch.long)])
            initial = embedding.weight[ids].detach().clone()
        self.prompt = nn.Parameter(initial.to(embedding.weight.dtype))
        template = config.template if backbone.kind == "decoder" else ""
        self.template_ids = (
            backbone.tokenizer(template, add_special_tokens=False)["input_ids"] if template else []
        )
        longest = self.n_scored + 2 * config.max_text_tokens + 4
        if longest > backbone.max_length:
            raise PromptError(
                f"a prompt of {self.n_scored} positions plus up to "
                f"{2 * config.max_text_tokens} text tokens exceeds the model's maximum length "
                f"{backbone.max_length}; shorten the prompt or max_text_tokens"
            )

    @property
    def n_scored(self) -> int:
        """Number of prompt positions at which neurons are scored."""
        if self.backbone.kind == "encoder":
            return 1 + self.config.length
        return self.config.length + len(self.template_ids)

    @property
    def predict_index(self) -> int:
        """Index, among the scored positions, of the position the verbalizer reads: the
        ``[MASK]`` first on an encoder, the last template position on a decoder."""
        return 0 if self.backbone.kind == "encoder" else self.n_scored - 1

    def encode(
        self,
        texts: Sequence[str],
        pairs: Sequence[str | None],
        labels: Sequence[int],
        rows: Sequence[int] | None = None,
    ) -> PromptBatch:
        """Tokenise a batch of texts (and pairs), each cut to ``max_text_tokens``."""
        tokenizer, limit = self.backbone.tokenizer, self.config.max_text_tokens
        index = None if rows is None else torch.tensor(list(rows))
        if self.backbone.kind == "encoder":
            cut = [truncate(tokenizer, t, limit) for t in texts]
            cut_pairs = [truncate(tokenizer, p, limit) if p else None for p in pairs]
            has_pairs = any(p is not None for p in cut_pairs)
            encoded = tokenizer(
                cut, cut_pairs if has_pairs else None, padding=True, return_tensors="pt"
            )
            return PromptBatch(
                encoded["input_ids"], encoded["attention_mask"], torch.tensor(list(labels)), index
            )
        sep = tokenizer(self.config.separator, add_special_tokens=False)["input_ids"]
        sequences = []
        for text, pair in zip(texts, pairs, strict=True):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
            if pair:
                ids = ids + sep + tokenizer(pair, add_special_tokens=False)["input_ids"][:limit]
            sequences.append(torch.tensor(ids, dtype=torch.long))
        input_ids = nn.utils.rnn.pad_sequence(
            sequences, batch_first=True, padding_value=tokenizer.pad_token_id
        )
        lengths = torch.tensor([len(s) for s in sequences])
        attention = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
        return PromptBatch(input_ids, attention, torch.tensor(list(labels)), index)

    def _suffix(self) -> Float[Tensor, "prompt d"]:
        """The decoder's prompt positions: soft vectors, then the template's embeddings."""
        embedding = self.backbone.model.get_input_embeddings()
        template = embedding(torch.tensor(self.template_ids, dtype=torch.long))
        return torch.cat([self.prompt, template])

    def layout(self, batch: PromptBatch) -> Layout:
        """Lay out a batch in full, the prompt in place, as one sequence per example."""
        embedding = self.backbone.model.get_input_embeddings()
        n = len(batch.labels)
        if self.backbone.kind == "encoder":
            mask_vector = embedding.weight[self.backbone.tokenizer.mask_token_id].detach()
            prefix = torch.cat([mask_vector[None], self.prompt]).expand(n, -1, -1)
            embeds = torch.cat([prefix, embedding(batch.input_ids)], dim=1)
            ones = torch.ones(n, prefix.shape[1], dtype=batch.attention_mask.dtype)
            attention = torch.cat([ones, batch.attention_mask], dim=1)
            positions = torch.arange(self.n_scored).expand(n, -1)
            return Layout(embeds, attention, torch.zeros(n, dtype=torch.long), positions)
        suffix, lengths = self._suffix(), batch.lengths
        text = embedding(batch.input_ids)
        pieces = [torch.cat([text[i, : lengths[i]], suffix]) for i in range(n)]
        embeds = nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        sizes = lengths + len(suffix)
        attention = (torch.arange(embeds.shape[1])[None] < sizes[:, None]).long()
        positions = lengths[:, None] + torch.arange(self.n_scored)[None]
        return Layout(embeds, attention, sizes - 1, positions)

    def text_cache(self, batch: PromptBatch) -> DynamicCache:
        """Run the text part of a decoder batch once, without gradients; return its cache."""
        with torch.no_grad():
            out = self.backbone.model.base_model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=True
            )
        return out.cache

    def prompt_hidden(
        self,
        batch: PromptBatch,
        cache: DynamicCache | None = None,
        suffix: Float[Tensor, "n prompt d"] | None = None,
    ) -> Float[Tensor, "n prompt d"]:
        """Return the final hidden states at the scored prompt positions.

        Decoders with ``prefix_cache`` run only the prompt positions on top of the text's
        cache (``cache`` if given, which is left as it was); otherwise the full layout runs.

        Args:
            suffix: the prompt positions' input embeddings, one row per example (e.g.
                each its own trial's prompt); this model's prompt if None. Decoders
                with ``prefix_cache`` only.
        """
        if suffix is not None and not self.prefix_cache:
            raise PromptError("a suffix per example needs a decoder with prefix_cache")
        if not self.prefix_cache:
            layout = self.layout(batch)
            hidden = self.backbone.model.base_model(
                inputs_embeds=layout.embeds, attention_mask=layout.attention_mask
            ).last_hidden_state
            return hidden[torch.arange(len(batch.labels))[:, None], layout.prompt_positions]
        cache = self.text_cache(batch) if cache is None else cache
        n, k = len(batch.labels), self.n_scored
        suffix = self._suffix().expand(n, -1, -1) if suffix is None else suffix
        attention = torch.cat([batch.attention_mask, torch.ones(n, k, dtype=torch.long)], dim=1)
        try:
            hidden = self.backbone.model.base_model(
                inputs_embeds=suffix,
                attention_mask=attention,
                position_ids=batch.lengths[:, None] + torch.arange(k)[None],
                cache=cache,
                use_cache=True,
            ).last_hidden_state
        finally:
            # The forward appended the prompt's keys and values; drop them so the cache
            # holds the text alone again and can be reused.
            cache.crop(-k)
        return hidden

    def forward(
        self, batch: PromptBatch, cache: DynamicCache | None = None
    ) -> Float[Tensor, "n label"]:
        """Return the label words' logits at the prediction position."""
        hidden = self.prompt_hidden(batch, cache)
        # The prediction position is the last scored one (decoder) or the [MASK] (encoder).
        at = hidden[:, 0] if self.backbone.kind == "encoder" else hidden[:, -1]
        return self.backbone.head()(at)[:, self.label_ids]

    def text_lengths(self, data: Dataset) -> np.ndarray:
        """Return each example's text tokens as ``encode`` cuts them (pair and separator in)."""
        tokenizer, limit = self.backbone.tokenizer, self.config.max_text_tokens
        sep = len(tokenizer(self.config.separator, add_special_tokens=False)["input_ids"])
        texts = tokenizer(list(data["text"]), add_special_tokens=False)["input_ids"]
        pairs = list(data["text_pair"])
        present = [p for p in pairs if p]
        pair_ids = iter(
            tokenizer(present, add_special_tokens=False)["input_ids"] if present else []
        )
        lengths = [
            min(len(t), limit) + (sep + min(len(next(pair_ids)), limit) if p else 0)
            for t, p in zip(texts, pairs, strict=True)
        ]
        return np.array(lengths, dtype=np.int64)

    def batches(
        self, data: Dataset, batch_size: int, order: np.ndarray | None = None
    ) -> Iterator[PromptBatch]:
        """Yield laid-out batches of a split, in ``order`` if given."""
        indices = np.arange(len(data)) if order is None else np.asarray(order)
        for start in range(0, len(indices), batch_size):
            chosen = indices[start : start + batch_size].tolist()
            rows = data.select(chosen)
            yield self.encode(
                list(rows["text"]), list(rows["text_pair"]), list(rows["label"]), chosen
            )

    def eval_batches(
        self, data: Dataset, batch_size: int, caches: TextCaches | None = None
    ) -> Iterator[tuple[PromptBatch, DynamicCache | None]]:
        """Yield a split's batches, shortest texts first, with their text caches where kept.

        Sorting by length wastes less compute on padding; each batch's ``rows`` say
        where its examples sit in ``data``.
        """
        if caches is not None:
            yield from caches.batches(self, data, batch_size)
            return
        for batch in self.batches(data, batch_size, length_order(self.text_lengths(data))):
            yield batch, None

    @torch.no_grad()
    def evaluate(
        self,
        data: Dataset,
        batch_size: int = 32,
        progress: bool = False,
        caches: TextCaches | None = None,
        batches: Sequence[tuple[PromptBatch, DynamicCache | None]] | None = None,
    ) -> Evaluation:
        """Classify a split with the current prompt.

        With ``caches``, the text part of each batch is computed once and reused by every
        later evaluation of the same split, whatever the prompt. ``batches`` are the
        split's batches with their text caches, prepared beforehand (`TextCaches.batches`),
        e.g. before hooks that must not touch the text go on; they cover every row once.
        """
        if len(data) == 0:
            raise PromptError("cannot evaluate on an empty split")
        labels = np.asarray(list(data["label"]))
        predictions = np.full(len(data), -1, dtype=np.int64)
        total = -(-len(data) // batch_size)
        batches = self.eval_batches(data, batch_size, caches) if batches is None else batches
        for batch, cache in tqdm(batches, total=total, disable=not progress):
            predictions[batch.rows.numpy()] = self(batch, cache).argmax(dim=1).numpy()
        if bool((predictions < 0).any()):
            raise PromptError("the batches do not cover every example of the split")
        return Evaluation(labels, predictions)


@contextmanager
def prefix_cached(model: SoftPromptModel, on: bool = True) -> Iterator[SoftPromptModel]:
    """Run a decoder prompt model with its text cached (``on``) or on the full layout
    (text and prompt in one forward pass) inside the context: the full layout e.g. to
    perturb the text positions too, or for an empty text; the cache e.g. to perturb the
    prompt positions alone. Both give the same outputs. Encoders have no text cache."""
    cached = model.prefix_cache
    model.prefix_cache = on and model.backbone.kind == "decoder"
    try:
        yield model
    finally:
        model.prefix_cache = cached


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of a soft prompt.

    The paper's values (App. B; official code): Adam lr 1e-3, betas (0.9, 0.98), eps 1e-6,
    batch 8, linear warm-up over 0.6% of the steps then linear decay, gradient clipping
    at norm 1, dev evaluation every 2,000 steps, early stop after 6 evaluations without
    improvement. The official code leaves the backbone's ``requires_grad`` on, so its
    clipping norm includes the backbone's gradients; here only the prompt has gradients.

    The fields are chapter 01's parameters of the same names.

    Attributes:
        learning_rate: Adam's learning rate.
        eval_every: steps between dev evaluations (and one at the end).
        patience: evaluations without a better dev accuracy before stopping.
        dev_eval_size: dev examples used for these evaluations; None uses the whole split.
        mode: ``train`` keeps dropout on, as the official code does; ``eval`` turns it off.
        reuse_text_cache: keep the texts' keys and values (`engine.TextCaches`) across
            training steps, epochs, evaluations and trials (decoders; costs memory, saves
            most of the time). Training batches reuse them only where that is exact:
            ``mode="eval"``, or a backbone without dropout.
        length_window: training batches are drawn from windows of this many batches sorted
            by text length within each class, which cuts padding and keeps the classes
            mixed (`bucketed_order`); 1 is a plain shuffle, as in the official code.
    """

    learning_rate: float = 1e-2
    batch_size: int = 8
    max_steps: int = 100
    eval_every: int = 25
    patience: int = 3
    warmup_fraction: float = 0.006
    clip_norm: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    dev_eval_size: int | None = None
    eval_batch_size: int = 32
    mode: Literal["train", "eval"] = "train"
    reuse_text_cache: bool = True
    length_window: int = 16

    def __post_init__(self) -> None:
        for name in (
            "learning_rate",
            "batch_size",
            "max_steps",
            "eval_every",
            "patience",
            "length_window",
        ):
            if getattr(self, name) <= 0:
                raise PromptError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class TrainResult:
    """A trained prompt, its best dev accuracy and the training curve."""

    prompt: Float[Tensor, "prompt d"]
    best_step: int
    best_dev: float
    history: list[dict[str, float]]


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    warmup = max(1, int(np.ceil(config.warmup_fraction * config.max_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (config.max_steps - step) / max(1, config.max_steps - warmup))

    return factor


def train_prompt(
    model: SoftPromptModel,
    train: Dataset,
    dev: Dataset,
    config: TrainConfig,
    seed: int = 0,
    progress: bool = True,
    caches: TextCaches | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
) -> TrainResult:
    """Train the soft prompt of ``model`` with early stopping; keep the best dev prompt.

    Data order comes from ``seed`` (a trial differs in order and initialisation, §4.1).
    On return ``model.prompt`` holds the best prompt.

    Args:
        caches: the text-once engine's caches: each training example's text runs once
            and is reused by every later step, epoch and trial that draws it (where
            exact: ``mode="eval"`` or a backbone without dropout), and each dev split's
            batches once for every evaluation.
        parameters: train these instead of the prompt (e.g. LoRA or bias parameters of
            the backbone, §5); they must be exactly the parameters that require grad.
            The text then depends on trained weights: training steps run the full layout,
            ``caches`` is ignored, and the best parameters are restored on return.

    Raises:
        ValueError: an empty train or dev split.
        PromptError: other parameters than the trained ones require grad.
    """
    return train_prompts([model], train, dev, config, [seed], progress, caches, parameters)[0]


@dataclass
class _Run:
    """One trial's optimisation state while it trains beside others."""

    model: SoftPromptModel
    trained: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Iterator[PromptBatch]
    best: tuple[float, int, list[Tensor]]
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    since_best: int = 0


def _epochs(
    model: SoftPromptModel,
    train: Dataset,
    config: TrainConfig,
    rng: np.random.Generator,
    lengths: np.ndarray,
    labels: np.ndarray,
) -> Iterator[PromptBatch]:
    """Yield training batches epoch after epoch, each epoch in a new seeded order."""
    while True:
        order = bucketed_order(lengths, config.batch_size, rng, config.length_window, labels)
        yield from model.batches(train, config.batch_size, order)


def _joined(batches: Sequence[PromptBatch], pad_id: int) -> PromptBatch:
    """Stack several batches of one split into one, right-padded to the longest text."""
    width = max(b.input_ids.shape[1] for b in batches)

    def pad(t: Tensor, value: int) -> Tensor:
        return nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    rows = [b.rows for b in batches]
    return PromptBatch(
        torch.cat([pad(b.input_ids, pad_id) for b in batches]),
        torch.cat([pad(b.attention_mask, 0) for b in batches]),
        torch.cat([b.labels for b in batches]),
        None if any(r is None for r in rows) else torch.cat(rows),  # type: ignore[arg-type]
    )


def _step_logits(
    runs: Sequence[_Run],
    batches: Sequence[PromptBatch],
    train: Dataset,
    texts: TextCaches | None,
    full_layout: bool,
) -> list[Tensor]:
    """Each run's label logits on its batch. Decoders with a text cache run all the
    runs' prompt positions in one forward pass: each example carries its own run's
    prompt, and its attention never reaches another example, so each prompt's gradient
    is its own run's."""
    first = runs[0].model
    if len(runs) == 1 or not first.prefix_cache or full_layout:
        logits = []
        for run, batch in zip(runs, batches, strict=True):
            text = None if texts is None else texts.batch_cache(run.model, train, batch)
            with prefix_cached(run.model, False) if full_layout else nullcontext():
                logits.append(run.model(batch, text))
        return logits
    joint = _joined(batches, first.backbone.tokenizer.pad_token_id)
    text = None if texts is None else texts.batch_cache(first, train, joint)
    suffix = torch.cat(
        [
            r.model._suffix().expand(len(b.labels), -1, -1)
            for r, b in zip(runs, batches, strict=True)
        ]
    )
    hidden = first.prompt_hidden(joint, text, suffix)
    joint_logits = first.backbone.head()(hidden[:, -1])[:, first.label_ids]
    return list(joint_logits.split([len(b.labels) for b in batches]))


def train_prompts(
    models: Sequence[SoftPromptModel],
    train: Dataset,
    dev: Dataset,
    config: TrainConfig,
    seeds: Sequence[int],
    progress: bool = True,
    caches: TextCaches | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
) -> list[TrainResult]:
    """Train several trials' prompts side by side, each as `train_prompt` would alone.

    Every trial keeps its own seed (data order), optimiser, schedule, early stopping and
    best prompt; on a decoder their steps share one forward pass over the prompt
    positions, which keeps the matrix products larger (`bench/prompt_step.py`). A trial
    that stops early leaves the others to go on.

    Args:
        models: prompt models of one backbone and one prompt layout.
        seeds: one per model.
        parameters: as in `train_prompt`; only with a single model.

    Raises:
        ValueError: an empty split, or models and seeds that do not pair up.
        PromptError: other parameters than the trained ones require grad, or the models
            do not share one backbone and layout.
    """
    if len(train) == 0 or len(dev) == 0:
        raise PromptError(f"cannot train on an empty split (train {len(train)}, dev {len(dev)})")
    if len(models) != len(seeds) or not models:
        raise PromptError(f"need one seed per model, got {len(models)} models, {len(seeds)} seeds")
    if parameters is not None and len(models) > 1:
        raise PromptError("backbone parameters can be trained for one model at a time")
    first = models[0]
    if any(m.backbone is not first.backbone or m.config != first.config for m in models):
        raise PromptError("prompts trained together need one backbone and one prompt config")
    trained_sets = [[m.prompt] for m in models] if parameters is None else [list(parameters)]
    ids = {id(p) for trained in trained_sets for p in trained}
    everything = [*(m.prompt for m in models), *first.backbone.model.parameters()]
    stray = [p for p in everything if p.requires_grad and id(p) not in ids]
    if parameters is None and stray:
        raise PromptError(
            f"{len(stray)} backbone parameters require grad; the backbone must be frozen"
        )
    if stray or not all(p.requires_grad for t in trained_sets for p in t):
        raise PromptError("the trained parameters must be exactly those that require grad")
    # Trained backbone weights change the text's keys and values: no text cache then.
    full_layout = parameters is not None
    if full_layout:
        caches = None
    # A cached text carries no fresh dropout mask per step, so training reuses it only
    # where the per-step text would be the same.
    exact = config.mode == "eval" or not active_dropout(first.backbone.model)
    texts = caches if exact else None
    eval_dev = (
        dev
        if config.dev_eval_size is None
        else dev.select(range(min(config.dev_eval_size, len(dev))))
    )
    lengths, labels = first.text_lengths(train), np.asarray(list(train["label"]))
    runs = []
    for model, trained, seed in zip(models, trained_sets, seeds, strict=False):
        optimizer = torch.optim.Adam(
            trained, lr=config.learning_rate, betas=config.betas, eps=config.eps
        )
        rng = np.random.default_rng(seed)
        runs.append(
            _Run(
                model,
                trained,
                optimizer,
                torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config)),
                _epochs(model, train, config, rng, lengths, labels),
                (-1.0, 0, [p.detach().clone() for p in trained]),
            )
        )
    active, step = list(runs), 0
    bar = tqdm(total=config.max_steps, disable=not progress, desc="tuning", leave=False)
    try:
        while active and step < config.max_steps:
            batches = [next(run.batches) for run in active]
            first.backbone.model.train(config.mode == "train")
            logits = _step_logits(active, batches, train, texts, full_layout)
            losses = [
                nn.functional.cross_entropy(out, batch.labels)
                for out, batch in zip(logits, batches, strict=True)
            ]
            for run in active:
                run.optimizer.zero_grad()
            torch.stack(losses).sum().backward()
            for run, loss in zip(active, losses, strict=True):
                nn.utils.clip_grad_norm_(run.trained, config.clip_norm)
                run.optimizer.step()
                run.scheduler.step()
                run.losses.append(float(loss.detach()))
            first.backbone.model.eval()
            step += 1
            bar.update()
            if step % config.eval_every == 0 or step == config.max_steps:
                for run in active:
                    accuracy = run.model.evaluate(eval_dev, config.eval_batch_size, caches=caches)
                    loss = float(np.mean(run.losses))
                    run.history.append(
                        {"step": step, "loss": loss, "dev_accuracy": accuracy.accuracy}
                    )
                    run.losses = []
                    # A tie counts as an improvement, as in the official code.
                    if accuracy.accuracy >= run.best[0]:
                        run.best = (
                            accuracy.accuracy,
                            step,
                            [p.detach().clone() for p in run.trained],
                        )
                        run.since_best = 0
                    else:
                        run.since_best += 1
                bar.set_postfix(dev=f"{max(r.best[0] for r in active):.3f}")
                active = [run for run in active if run.since_best < config.patience]
    finally:
        bar.close()
    results = []
    for run in runs:
        with torch.no_grad():
            for parameter, value in zip(run.trained, run.best[2], strict=True):
                parameter.copy_(value)
        prompt = run.model.prompt.detach().clone()
        results.append(TrainResult(prompt, run.best[1], run.best[0], run.history))
    return results


# ----------------------------------------------------------------------------------
# Trials, saving and loading through the artefact store.


def hand_written_config(backbone: Backbone, text: str, base: PromptConfig) -> PromptConfig:
    """Return ``base`` turned into a hand-written (hard) prompt: ``text``'s own embeddings.

    The paper's "hard prompt" control (Tab. 3) in the same machinery as soft prompts.
    """
    length = len(backbone.tokenizer(text, add_special_tokens=False)["input_ids"])
    return replace(base, init="text", init_text=text, length=length)


def prompt_config_for(
    task: TaskData, base: PromptConfig, words: Literal["shared", "natural"] = "shared"
) -> PromptConfig:
    """Return ``base`` with the task's label words, and its hand-written words for ``task`` init."""
    config = replace(base, label_words=task.spec.label_words(words))
    if config.init == "task":
        config = replace(config, init="text", init_text=task.spec.hand_prompt)
    return config


def _trial_config(
    backbone: Backbone, task: TaskData, prompt: PromptConfig, train: TrainConfig, seed: int
) -> dict[str, object]:
    return {
        "backbone": backbone.name,
        "d_model": backbone.model.get_input_embeddings().weight.shape[1],
        "task": task.spec.name,
        "layout": backbone.kind,
        "prompt": asdict(prompt),
        "train": asdict(train),
        "seed": seed,
    }


def _trial_key(
    backbone: Backbone,
    task: TaskData,
    prompt: PromptConfig,
    train: TrainConfig,
    seed: int,
    start: Artefact | None,
) -> tuple[dict[str, object], list[str]]:
    """A trial's config and upstream keys, as its ``prompts`` artefact is keyed."""
    config = _trial_config(backbone, task, prompt, train, seed)
    upstream = [task.key]
    if start is not None:
        started = start.json("config")
        if started["d_model"] != config["d_model"] or started["prompt"]["length"] != prompt.length:
            raise PromptError(
                f"cannot start from prompt {start.key}: it has {started['prompt']['length']} "
                f"vectors of size {started['d_model']}, this trial needs {prompt.length} of "
                f"size {config['d_model']}"
            )
        config["start"] = start.key
        upstream.append(start.key)
    return config, upstream


def _trial_model(
    backbone: Backbone, task: TaskData, prompt: PromptConfig, seed: int, start: Artefact | None
) -> tuple[SoftPromptModel, int]:
    """A trial's prompt model, initialised from its seed or from ``start``."""
    trial_seed = stable_seed("trial", task.spec.name, seed)
    model = SoftPromptModel(backbone, prompt, seed=trial_seed)
    if start is not None:
        with torch.no_grad():
            model.prompt.copy_(start.tensors()["prompt"])
    return model, trial_seed


def _trial_outputs(
    model: SoftPromptModel,
    result: TrainResult,
    task: TaskData,
    train: TrainConfig,
    config: dict[str, object],
    caches: TextCaches | None,
) -> tuple[dict[str, Tensor], dict[str, object]]:
    """A trained trial's artefact contents: its prompt, config, curve and test metrics."""
    test = model.evaluate(task.test, train.eval_batch_size, caches=caches)
    metrics = {
        "best_step": result.best_step,
        "dev_accuracy": result.best_dev,
        "test_accuracy": test.accuracy,
        "test_balanced_accuracy": test.balanced_accuracy,
    }
    payloads = {"config": config, "history": result.history, "metrics": metrics}
    return {"prompt": result.prompt}, payloads


def run_trial(
    backbone: Backbone,
    task: TaskData,
    prompt: PromptConfig,
    train: TrainConfig,
    seed: int,
    store: ArtefactStore,
    progress: bool = True,
    caches: TextCaches | None = None,
    start: Artefact | None = None,
) -> Artefact:
    """Train one trial's prompt and score it on test, or load it if already stored.

    The artefact (stage ``prompts``) holds ``tensors.safetensors`` with the prompt and
    ``config.json``, ``history.json`` and ``metrics.json``.

    Args:
        start: a stored prompt to start from instead of ``prompt.init`` (e.g. to
            retrain a prompt on a pruned backbone); it must have the same embedding size.

    Raises:
        PromptError: ``start`` has another embedding size or length.
    """
    config, upstream = _trial_key(backbone, task, prompt, train, seed, start)

    def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
        model, trial_seed = _trial_model(backbone, task, prompt, seed, start)
        result = train_prompt(model, task.train, task.dev, train, trial_seed, progress, caches)
        return _trial_outputs(model, result, task, train, config, caches)

    return store.cached("prompts", config, compute, upstream=upstream)


def run_trials(
    backbone: Backbone,
    task: TaskData,
    prompt: PromptConfig,
    train: TrainConfig,
    seeds: Sequence[int],
    store: ArtefactStore,
    progress: bool = True,
    caches: TextCaches | None = None,
    joint_trials: int = 1,
) -> list[Artefact]:
    """Run (or load) one trial per seed, sharing the texts' caches (train, dev and test).

    Args:
        caches: where the texts are kept; a fresh `engine.TextCaches` with its default
            budget if None (and ``train.reuse_text_cache``).
        joint_trials: trials not yet stored are trained this many at a time with
            `train_prompts` (one forward pass for their steps); each gives the prompt it
            would give alone, up to rounding, and is stored as its own artefact.
    """
    if joint_trials < 1:
        raise PromptError(f"joint_trials must be >= 1, got {joint_trials}")
    if caches is None and train.reuse_text_cache:
        caches = TextCaches()
    keys = {s: _trial_key(backbone, task, prompt, train, s, None) for s in seeds}
    pending = [
        s
        for s in dict.fromkeys(seeds)
        if store.find("prompts", store.key("prompts", *keys[s])) is None
    ]
    for start in range(0, len(pending) if joint_trials > 1 else 0, joint_trials):
        group = pending[start : start + joint_trials]
        begun = time.perf_counter()
        built = [_trial_model(backbone, task, prompt, s, None) for s in group]
        models = [model for model, _ in built]
        results = train_prompts(
            models, task.train, task.dev, train, [s for _, s in built], progress, caches
        )
        seconds = (time.perf_counter() - begun) / len(group)
        for seed, model, result in zip(group, models, results, strict=True):
            config, upstream = keys[seed]
            tensors, payloads = _trial_outputs(model, result, task, train, config, caches)
            store.save("prompts", config, upstream, tensors, payloads, seconds)
    return [run_trial(backbone, task, prompt, train, s, store, progress, caches) for s in seeds]


def on_backbone(
    model: SoftPromptModel, backbone: Backbone, label_words: Sequence[str] | None = None
) -> SoftPromptModel:
    """Return the same prompt on another backbone with the same embeddings (e.g. pruned),
    optionally read through other label words (e.g. a target task's, for transfer).

    Raises:
        PromptError: the other backbone's embedding size differs.
        LabelWordError: a label word is not one token of ``backbone``.
    """
    d_model = backbone.model.get_input_embeddings().weight.shape[1]
    if model.prompt.shape[1] != d_model:
        raise PromptError(
            f"a prompt of size {model.prompt.shape[1]} cannot run on {backbone.name!r} "
            f"(d_model {d_model})"
        )
    config = model.config
    if label_words is not None:
        config = replace(config, label_words=tuple(label_words))
    other = SoftPromptModel(backbone, config, prefix_cache=model.prefix_cache)
    with torch.no_grad():
        other.prompt.copy_(model.prompt)
    return other


def trial_setup(artefact: Artefact) -> tuple[PromptConfig, TrainConfig, int]:
    """Return the prompt config, training config and seed a stored trial was run with.

    Lets a later chapter train more prompts exactly like chapter 01's (e.g. with other
    label words) without repeating its parameters.
    """
    config = artefact.json("config")
    prompt = dict(config["prompt"])
    prompt["label_words"] = tuple(prompt["label_words"])
    train = dict(config["train"])
    train["betas"] = tuple(train["betas"])
    return PromptConfig(**prompt), TrainConfig(**train), int(config["seed"])


def load_prompt(artefact: Artefact, backbone: Backbone) -> SoftPromptModel:
    """Rebuild a trained prompt model from its artefact on ``backbone``.

    Raises:
        PromptError: the prompt was trained for another backbone or embedding size.
    """
    config = artefact.json("config")
    d_model = backbone.model.get_input_embeddings().weight.shape[1]
    if config["backbone"] != backbone.name or config["d_model"] != d_model:
        raise PromptError(
            f"prompt {artefact.key} was trained on {config['backbone']!r} "
            f"(d_model {config['d_model']}); cannot load it on {backbone.name!r} "
            f"(d_model {d_model})"
        )
    model = SoftPromptModel(backbone, trial_setup(artefact)[0])
    with torch.no_grad():
        model.prompt.copy_(artefact.tensors()["prompt"])
    return model


def layout_table(
    model: SoftPromptModel, text: str, text_pair: str | None = None
) -> list[dict[str, object]]:
    """Show where each position of one laid-out example comes from: text, soft prompt, template.

    Returns one row per position: position, token (or ``<soft i>``), role and whether
    neurons are scored there and whether the label is read there.
    """
    batch = model.encode([text], [text_pair], [0])
    layout = model.layout(batch)
    tokens = model.backbone.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    scored = layout.prompt_positions[0].tolist()
    rows = []
    for position in range(int(layout.attention_mask[0].sum())):
        if model.backbone.kind == "encoder":
            role = (
                "mask" if position == 0 else "soft" if position <= model.config.length else "text"
            )
            token = (
                model.backbone.tokenizer.mask_token
                if role == "mask"
                else f"<soft {position}>"
                if role == "soft"
                else tokens[position - model.n_scored]
            )
        else:
            offset = position - int(batch.lengths[0])
            role = "text" if offset < 0 else "soft" if offset < model.config.length else "template"
            template = model.backbone.tokenizer.convert_ids_to_tokens(model.template_ids)
            token = (
                tokens[position]
                if role == "text"
                else f"<soft {offset + 1}>"
                if role == "soft"
                else template[offset - model.config.length]
            )
        rows.append(
            {
                "position": position,
                "token": token,
                "role": role,
                "scored": position in scored,
                "prediction": position == int(layout.predict[0]),
            }
        )
    return rows


def trial_rows(artefacts: Sequence[Artefact]) -> list[dict[str, object]]:
    """Return one row per trial: task, seed, best step, dev and test accuracy (%)."""
    rows = []
    for artefact in artefacts:
        config, metrics = artefact.json("config"), artefact.json("metrics")
        rows.append(
            {
                "task": config["task"],
                "seed": config["seed"],
                "best_step": metrics["best_step"],
                "dev_accuracy": 100 * metrics["dev_accuracy"],
                "test_accuracy": 100 * metrics["test_accuracy"],
                "test_balanced_accuracy": 100 * metrics["test_balanced_accuracy"],
            }
        )
    return rows


def history_rows(artefacts: Sequence[Artefact]) -> list[dict[str, object]]:
    """Return the training curves: one row per task, seed and evaluation."""
    rows = []
    for artefact in artefacts:
        config = artefact.json("config")
        for point in artefact.json("history"):
            rows.append({"task": config["task"], "seed": config["seed"], **point})
    return rows


def accuracy_table(
    trials: Sequence[dict[str, object]], zero_shot: Sequence[dict[str, object]]
) -> pd.DataFrame:
    """Tab. 1 (first column) form: per task, zero-shot and prompt-tuning test accuracy (%).

    Prompt tuning is mean ± std over trials; zero-shot uses the same (shared) label words.
    The paper's prompt-tuning accuracy on the task this one stands in for is shown beside,
    from `helpers.paper` (roberta-base, other data: a reference, not a target).
    """
    frame = pd.DataFrame(list(trials))
    shots = {
        row["task"]: row["accuracy"] for row in zero_shot if row.get("words", "shared") == "shared"
    }
    rows = []
    for task, group in frame.groupby("task", sort=False):
        paper_mean, paper_std = paper.TABLE1_PROMPT.get(paper.analogue(str(task)), (np.nan, np.nan))
        rows.append(
            {
                "task": task,
                "trials": len(group),
                "zero_shot": shots.get(task, np.nan),
                "prompt_mean": group["test_accuracy"].mean(),
                "prompt_std": group["test_accuracy"].std(ddof=1) if len(group) > 1 else 0.0,
                "paper_task": paper.analogue(str(task)),
                "paper_prompt": f"{paper_mean:.1f} ± {paper_std:.1f}",
            }
        )
    return pd.DataFrame(rows).set_index("task")
