"""Benchmark: one prompt-tuning step, this implementation vs the official code's approach.

Ours: backbone parameters frozen (no weight gradients), LM head only at the prediction
position, gradient clipping over the prompt; on a decoder the text runs once without
gradients and only the prompt positions with them (``prefix_cache``). "Ours, full
sequence" is the same without the text cache, to show what each part buys. Official approach (``src/trainer.py``):
backbone parameters left with ``requires_grad=True`` (only left out of the optimiser),
the head over the full sequence, clipping over every parameter. Both run on the same
batches in one process, alternately, and the script prints the median time per step and
the ratio.

    python bench/prompt_step.py --prompt-length 16 --batch-size 8 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from helpers import data, models, prompting


def step_ours(model: prompting.SoftPromptModel, batch: prompting.PromptBatch, optimizer) -> None:
    loss = nn.functional.cross_entropy(model(batch), batch.labels)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_([model.prompt], 1.0)
    optimizer.step()


def step_official(
    model: prompting.SoftPromptModel, batch: prompting.PromptBatch, optimizer
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--task", default="rotten_tomatoes")
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="alternating timed blocks")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = models.load_backbone(args.backbone)
    task = data.load_task(args.task, data.SplitSizes(args.batch_size * args.steps, 2, 2))
    config = prompting.PromptConfig(length=args.prompt_length)
    model = prompting.SoftPromptModel(backbone, prompting.prompt_config_for(task, config))
    rows = [
        task.train.select(range(i, i + args.batch_size))
        for i in range(0, len(task.train), args.batch_size)
    ]
    inputs = [(list(r["text"]), list(r["text_pair"]), list(r["label"])) for r in rows]
    optimizer = torch.optim.Adam([model.prompt], lr=1e-3)

    def block(step) -> float:
        start = time.perf_counter()
        for texts, pairs, labels in inputs:
            # Each step lays out the batch around the current prompt, as training does.
            step(model, model.encode(texts, pairs, labels), optimizer)
        return (time.perf_counter() - start) / len(inputs)

    def full_sequence(model_, batch, optimizer_) -> None:
        model_.prefix_cache = False
        try:
            step_ours(model_, batch, optimizer_)
        finally:
            model_.prefix_cache = backbone.kind == "decoder"

    variants = {"ours": step_ours, "ours, full sequence": full_sequence, "official": step_official}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, step in variants.items():
            backbone.model.requires_grad_(name == "official")
            elapsed = block(step)
            if repeat:
                times[name].append(elapsed)
    backbone.model.requires_grad_(False)
    tokens = sum(float(model.layout(model.encode(*x)).attention_mask.sum()) for x in inputs)
    tokens /= len(inputs)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"backbone {args.backbone}, prompt {args.prompt_length}, batch {args.batch_size}, "
        f"{tokens:.0f} tokens per batch, {args.threads} threads, median of {args.repeats}"
    )
    for name, seconds in median.items():
        ratio = median["official"] / seconds
        print(f"{name:22s} {1000 * seconds:8.1f} ms/step   official / this = {ratio:.2f}x")


if __name__ == "__main__":
    main()
