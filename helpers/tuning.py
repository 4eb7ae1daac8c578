"""Training soft prompts on a frozen backbone: the optimiser, the schedule, early stopping,
and several trials trained side by side on the texts computed once.

Paper: App. B (Adam, warm-up then linear decay, clipping, dev evaluation and early
stopping); chapter 01.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from datasets import Dataset
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers import data
from helpers.engine import TextCaches, active_dropout, bucketed_order
from helpers.prompting import PromptBatch, PromptError, SoftPromptModel, prefix_cached


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
    history: list[dict[str, float | int]]  # step (int), loss and dev accuracy per evaluation


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
    joint_logits = first.label_logits(hidden[:, -1])
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
    eval_dev = data.head(dev, config.dev_eval_size)
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
