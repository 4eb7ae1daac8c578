"""Benchmark: a prompt-tuning step amortised over an epoch and several trials.

Four ways to take one training step at batch 8, side by side on the same batches of a
real training split (drawn as training draws them, `engine.bucketed_order`), run
alternately in one process:

- **cached text** (the default): each example's text states come from
  `engine.TextCaches`; a step runs only the prompt positions, with gradients. Filling
  the cache (running each example's text once) is timed on its own and amortised: in
  one epoch of ``--train-examples`` examples and ``--trials`` trials, every example's
  text runs once and is reused by the other trials, so the amortised step is
  ``cached step + fill per batch / trials``;
- **trials together**: ``--trials`` trials trained with `tuning.train_prompts`, their
  steps in one forward pass (time per trial-step), beside one trial through the same
  function (``--pool`` training examples, texts cached, so both are steps on cached text);
- **per-step text** (before the engine): the same, but the step runs its batch's text
  anew, without gradients;
- **full sequence**: text and prompt in one pass with gradients (no text cache);
- **official approach** (``src/trainer.py``): full sequence, backbone parameters left
  with ``requires_grad=True`` (only left out of the optimiser), the head over the full
  sequence, clipping over every parameter.

Prints the median time per step of each and its ratio to the per-step text, with the
processor and threads.

    python bench/prompt_step.py --steps 6 --repeats 3
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from helpers import data, engine, models, prompting, tuning
from helpers.runner import bench_parser, processor


def step(
    model: prompting.SoftPromptModel,
    batch: prompting.PromptBatch,
    optimizer: torch.optim.Optimizer,
    cache: object | None = None,
) -> None:
    loss = nn.functional.cross_entropy(model(batch, cache), batch.labels)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_([model.prompt], 1.0)
    optimizer.step()


def step_official(
    model: prompting.SoftPromptModel,
    batch: prompting.PromptBatch,
    optimizer: torch.optim.Optimizer,
) -> None:
    layout = model.layout(batch)
    full = model.backbone.model(inputs_embeds=layout.embeds, attention_mask=layout.attention_mask)
    logits = full.logits[torch.arange(len(batch.labels)), layout.predict][:, model.label_ids]
    loss = nn.functional.cross_entropy(logits, batch.labels)
    model.backbone.model.zero_grad(set_to_none=True)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(list(model.backbone.model.parameters()) + [model.prompt], 1.0)
    optimizer.step()


def main() -> None:
    parser = bench_parser(__doc__, batch_size=8)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=3, help="trials sharing the texts")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed block")
    parser.add_argument("--pool", type=int, default=200, help="examples trained on together")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = models.load_backbone(args.backbone)
    task = data.load_task(args.task, data.SplitSizes(args.train_examples, 2, 2))
    config = prompting.PromptConfig(length=args.prompt_length, init="task")
    model = prompting.SoftPromptModel(backbone, prompting.prompt_config_for(task, config))
    labels = np.asarray(task.train["label"])
    order = engine.bucketed_order(
        model.text_lengths(task.train), args.batch_size, np.random.default_rng(0), 16, labels
    )
    # Batches spread over the epoch, so their lengths are the epoch's.
    every = max(1, len(order) // args.batch_size // args.steps)
    batches = list(model.batches(task.train, args.batch_size, order))[::every][: args.steps]
    optimizer = torch.optim.Adam([model.prompt], lr=1e-3)
    caches = engine.TextCaches()

    def fill() -> None:
        for batch in batches:
            model.text_cache(batch)

    def cached() -> None:
        for batch in batches:
            step(model, batch, optimizer, caches.batch_cache(model, task.train, batch))

    pool = task.train.select(range(min(len(task.train), args.pool)))
    tiny_dev = task.dev.select(range(1))
    short = tuning.TrainConfig(
        learning_rate=1e-3, batch_size=args.batch_size, max_steps=args.steps, eval_every=10**6
    )

    def together(count: int) -> Callable[[], None]:
        def run() -> None:
            seeds = list(range(count))
            models_ = [prompting.SoftPromptModel(backbone, model.config, s) for s in seeds]
            tuning.train_prompts(models_, pool, tiny_dev, short, seeds, False, caches)

        return run

    def per_step() -> None:
        for batch in batches:
            step(model, batch, optimizer)

    def full_sequence() -> None:
        with prompting.prefix_cached(model, False):
            per_step()

    def official() -> None:
        backbone.model.requires_grad_(True)
        try:
            for batch in batches:
                step_official(model, batch, optimizer)
        finally:
            backbone.model.requires_grad_(False)

    variants = {
        "text fill (no grad)": fill,
        "cached text": cached,
        "cached, 1 trial (train)": together(1),
        f"cached, {args.trials} together": together(args.trials),
        "per-step text": per_step,
        "full sequence": full_sequence,
        "official approach": official,
    }
    if backbone.kind == "encoder":
        variants = {k: v for k, v in variants.items() if "cached" not in k and "fill" not in k}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up and fills the cache
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            if repeat:
                steps = args.steps * args.trials if "together" in name else len(batches)
                times[name].append((time.perf_counter() - start) / steps)
    median = {name: statistics.median(values) for name, values in times.items()}
    tokens = np.mean([int(b.attention_mask.sum()) for b in batches])
    print(
        f"{args.backbone}, {args.task}, prompt {args.prompt_length}, batch {args.batch_size}, "
        f"{tokens:.0f} text tokens per batch, {args.threads} threads, {processor()}, "
        f"median of {args.repeats} blocks of {len(batches)} steps"
    )
    if "cached text" in median:
        steps_per_epoch = -(-args.train_examples // args.batch_size)
        fill_share = median["text fill (no grad)"] / args.trials
        median["cached text, amortised"] = median["cached text"] + fill_share
        joint = f"cached, {args.trials} together"
        median[f"{joint}, amortised"] = median[joint] + fill_share
        print(
            f"amortised over one epoch of {args.train_examples} examples "
            f"({steps_per_epoch} steps) and {args.trials} trials: each text runs once"
        )
    base = median["per-step text"]
    for name, seconds in median.items():
        print(f"{name:24s} {1000 * seconds:8.1f} ms/step   {seconds / base:5.2f}x per-step text")


if __name__ == "__main__":
    main()
