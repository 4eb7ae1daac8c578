"""The verbalizer and zero-shot prompts: classify by the label words' logits at the
prediction position.

A hard (text) prompt fills a task's template and reads the label words' logits at the
prediction position (zero-shot accuracy, chapter 00); the soft-prompt model
(`helpers.prompting`) reads its predictions through the same functions. The LM/MLM head
runs only at the prediction position, never over the whole sequence.

Paper: §2.1, eq. 1 (the label word's likelihood at the prediction position).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from helpers.data import TaskData, verbalizer_ids
from helpers.engine import length_order
from helpers.models import Backbone


class PromptError(ValueError):
    """A prompt does not fit the backbone, or a saved prompt belongs to another setup."""


@dataclass(frozen=True)
class Evaluation:
    """Predictions of a classifier on one split, and where it computed them, each
    example's margin: its label's logit minus the largest other label's."""

    labels: np.ndarray
    predictions: np.ndarray
    margins: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions."""
        return float((self.labels == self.predictions).mean())

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in ``labels``."""
        return balanced_accuracy(self.labels, self.predictions)

    @property
    def outcomes(self) -> str:
        """Each example's outcome in split order (`outcome_string`)."""
        return outcome_string(self.labels == self.predictions)


def outcome_string(correct: np.ndarray | Sequence[bool]) -> str:
    """Per-example outcomes as a string of 0s and 1s (1: right), in split order: compact
    in a JSON results file, and read back by `perturbation.correct_matrix` for paired
    comparisons of two classifiers on the same examples."""
    return "".join("1" if bool(c) else "0" for c in np.asarray(correct).reshape(-1))


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
    """Apply the LM/MLM head at one position per example, keeping the label words' logits
    (in float32)."""
    at = hidden[torch.arange(hidden.shape[0]), positions]
    return backbone.head()(at)[:, list(label_ids)].float()


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

    The shared words (negative/positive/neutral) are the paper's verbalizer for every task
    of two or three classes; natural words name the classes and are evaluated where they
    differ, and alone for a task with more classes (`data.TaskSpec.words_style`).
    """
    rows = []
    for task in tasks:
        natural = task.spec.label_words("natural")
        shared = task.spec.label_words() if task.spec.words_style() == "shared" else None
        styles = (["shared"] if shared else []) + (["natural"] if natural != shared else [])
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
