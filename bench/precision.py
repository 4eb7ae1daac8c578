"""Benchmark: the backbone in float32 against bfloat16, on the work the book does most.

Every chapter's cost is the frozen backbone's matrix products. On a processor with
bfloat16 matrix instructions (AVX512-BF16 or AMX) they run about twice as fast in
bfloat16; elsewhere bfloat16 is emulated. This loads the backbone in both precisions
and times, alternately in one process on the same examples:

- **texts**: a split's texts run into a new cache (`engine.TextCaches`), then evaluated;
- **cached evaluation**: the prompt positions on top of the cached texts;
- **training step**: one prompt-tuning step at batch 8 on cached texts, with gradients;
- **full pass**: text and prompt in one pass (``scope = "all"``, pruned models).

Prints each median time and its ratio to float32, the share of test predictions the two
precisions agree on, the processor and what ``precision = "auto"`` picks on it.

    python bench/precision.py --repeats 3
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from helpers import data, engine, models, prompting
from helpers.runner import bench_parser, processor


def main() -> None:
    parser = bench_parser(__doc__, batch_size=64)
    parser.add_argument("--examples", type=int, default=300, help="test examples evaluated")
    args = parser.parse_args()

    task = data.load_task(args.task, data.SplitSizes(64, 2, args.examples))
    base = prompting.PromptConfig(length=args.prompt_length, init="task")
    work: dict[str, dict[str, Callable[[], object]]] = {}
    predictions = {}
    for precision in ("float32", "bfloat16"):
        backbone = models.load_backbone(args.backbone, precision)
        model = prompting.SoftPromptModel(backbone, prompting.prompt_config_for(task, base))
        caches = engine.TextCaches(8 << 30)
        predictions[precision] = model.evaluate(task.test, args.batch_size, caches=caches)
        train = next(model.batches(task.train, 8))
        cache = model.text_cache(train)
        optimizer = torch.optim.Adam([model.prompt], lr=0.03)

        def step(model=model, train=train, cache=cache, optimizer=optimizer) -> None:
            # A copy of the text's cache, as training gathers one for every step: the
            # forward pass appends the prompt's keys and values, which hold gradients.
            logits = model(train, copy.deepcopy(cache))
            loss = nn.functional.cross_entropy(logits, train.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        work[precision] = {
            "texts": lambda m=model: m.evaluate(
                task.test, args.batch_size, caches=engine.TextCaches(8 << 30)
            ),
            "cached evaluation": lambda m=model, c=caches: m.evaluate(
                task.test, args.batch_size, caches=c
            ),
            "training step": step,
            "full pass": lambda m=model: m.evaluate(task.test, args.batch_size),
        }
    times = {(p, name): [] for p in work for name in work[p]}
    for _ in range(args.repeats):
        for name in work["float32"]:
            for precision in work:
                start = time.perf_counter()
                work[precision][name]()
                times[precision, name].append(time.perf_counter() - start)
    agree = (predictions["float32"].predictions == predictions["bfloat16"].predictions).mean()
    print(
        f"{args.backbone}, {args.task} test, {len(task.test)} examples, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {processor()}, median of {args.repeats}; "
        f'"auto" picks {models.resolve_precision("auto")}'
    )
    print(f"test predictions that agree: {100 * agree:.1f}%")
    for name in work["float32"]:
        full = statistics.median(times["float32", name])
        half = statistics.median(times["bfloat16", name])
        ratio = half / full
        print(f"{name:18s} float32 {full:7.3f} s  bfloat16 {half:7.3f} s  {ratio:.3f}x")


if __name__ == "__main__":
    main()
