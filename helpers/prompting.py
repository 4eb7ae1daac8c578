"""The soft-prompt model: a frozen backbone, trainable vectors, and the verbalizer.

`SoftPromptModel` lays out the text, the soft prompt and the template (decoders) or the
``[MASK]``, the soft prompt and the text (encoders), computes the text once where the
layout allows it (`helpers.engine`), and reads the label words' logits at the prediction
position (`helpers.zeroshot`). Training it is `helpers.tuning`; trials kept in the
artefact store are `helpers.prompt_trials`.

Paper: §2.1 (prompt tuning, eq. 1), App. B (the prompt's length and initialisation).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from datasets import Dataset
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from helpers.checks import check_choice
from helpers.data import TaskData, verbalizer_ids
from helpers.engine import TextCaches, length_order
from helpers.models import Backbone
from helpers.zeroshot import Evaluation, PromptError, truncate

Init = Literal["normal", "vocab", "text", "task"]


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
        return self.label_logits(hidden[:, 0] if self.backbone.kind == "encoder" else hidden[:, -1])

    def label_logits(self, at: Float[Tensor, "n d"]) -> Float[Tensor, "n label"]:
        """Return the label words' logits of final hidden states at the prediction position,
        in float32 whatever the backbone's precision (the loss and every comparison of
        logits read them)."""
        return self.backbone.head()(at)[:, self.label_ids].float()

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


def hand_written_config(backbone: Backbone, text: str, base: PromptConfig) -> PromptConfig:
    """Return ``base`` turned into a hand-written (hard) prompt: ``text``'s own embeddings.

    The paper's "hard prompt" control (Tab. 3) in the same machinery as soft prompts.
    """
    length = len(backbone.tokenizer(text, add_special_tokens=False)["input_ids"])
    return replace(base, init="text", init_text=text, length=length)


def prompt_config_for(
    task: TaskData, base: PromptConfig, words: Literal["shared", "natural"] = "shared"
) -> PromptConfig:
    """Return ``base`` with the task's label words, and its hand-written words for ``task`` init.

    A task whose classes the shared words do not cover (more than three) gets its natural
    words, with a warning that says so (`data.TaskSpec.words_style`).
    """
    style = task.spec.words_style(words)
    if style != words:
        warnings.warn(
            f"task {task.spec.name!r} has {task.spec.n_classes} classes and the shared label "
            f"words cover two or three: it uses its natural words "
            f"{'/'.join(task.spec.label_words(style))}",
            stacklevel=2,
        )
    config = replace(base, label_words=task.spec.label_words(style))
    if config.init == "task":
        config = replace(config, init="text", init_text=task.spec.hand_prompt)
    return config
