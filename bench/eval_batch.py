"""Benchmark: how many examples should one forward pass of the prompt positions hold?

On the decoder every evaluation, probe and prompt-scoped perturbation runs only the
prompt positions on top of the texts' cached keys and values (`engine.TextCaches`), a
few tokens per example, so the matrix products are small and their size sets the
speed. This evaluates one split with its texts cached at several batch sizes, in turn
in one process, and prints each median time as a ratio to the smallest batch, with the
processor; the accuracies must agree. It also times one full pass (texts included, as
``scope = "all"`` runs) at the smallest and largest size.

    python bench/eval_batch.py --sizes 16 32 64 128 --repeats 3
"""

from __future__ import annotations

import statistics
import time

import torch

from helpers import data, engine, models, prompting
from helpers.runner import bench_parser, processor


def main() -> None:
    parser = bench_parser(__doc__, batch_size=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--examples", type=int, default=450, help="test examples evaluated")
    args = parser.parse_args()

    backbone = models.load_backbone(args.backbone)
    task = data.load_task(args.task, data.SplitSizes(2, 2, args.examples))
    base = prompting.PromptConfig(length=args.prompt_length, init="task")
    model = prompting.SoftPromptModel(backbone, prompting.prompt_config_for(task, base))
    caches = engine.TextCaches(8 << 30)
    first = {size: model.evaluate(task.test, size, caches=caches) for size in args.sizes}
    for size, found in first.items():  # texts are cached now; the same predictions
        agree = (found.predictions == first[args.sizes[0]].predictions).mean()
        assert agree > 0.99, f"batch {size}: {agree:.3f} of predictions agree"
    times: dict[int, list[float]] = {size: [] for size in args.sizes}
    for _ in range(args.repeats):
        for size in args.sizes:
            start = time.perf_counter()
            model.evaluate(task.test, size, caches=caches)
            times[size].append(time.perf_counter() - start)
    full = {}
    for size in (min(args.sizes), max(args.sizes)):
        start = time.perf_counter()
        model.evaluate(task.test, size)
        full[size] = time.perf_counter() - start
    print(
        f"{args.backbone}, {args.task} test, {len(task.test)} examples, prompt "
        f"{args.prompt_length}, {torch.get_num_threads()} threads, {processor()}, "
        f"median of {args.repeats}"
    )
    smallest = statistics.median(times[min(args.sizes)])
    for size in args.sizes:
        seconds = statistics.median(times[size])
        print(f"cached texts, batch {size:4d} {seconds:7.2f} s  {seconds / smallest:.3f}x")
    for size, seconds in full.items():
        print(f"full pass,    batch {size:4d} {seconds:7.2f} s  {seconds / full[min(full)]:.3f}x")


if __name__ == "__main__":
    main()
