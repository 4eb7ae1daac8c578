"""Benchmark: keep a split's text states on disk for the next chapter, or recompute them?

Each chapter that evaluates or probes a task runs its dev and test texts once
(`engine.TextCaches`); with a folder (the store's ``texts``), the first chapter writes
them and later chapters read them back. This times, side by side in one process, the
three things `TextCaches.batches` does for one split: (a) run the texts (no folder),
(b) run them and write them to a folder (the first chapter), (c) read them back in a
fresh `TextCaches` (every later chapter; the weights' digest is included). It checks
that (c) serves the same caches as (a), then prints the ratios (b) / (a) and (c) / (a),
the file size and the bytes per text token. Reads come from the page cache when the
file was just written, so (c) is a lower bound of a read by a later process.

    python bench/text_store.py --task amazon --examples 300 --repeats 3
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from helpers import data, engine, models, prompting
from helpers.runner import bench_parser, processor


def main() -> None:
    parser = bench_parser(__doc__, task="amazon", prompt_length=False)
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()

    backbone = models.load_backbone(args.backbone)
    task = data.load_task(args.task, data.SplitSizes(2, args.examples, 2))
    config = prompting.prompt_config_for(task, prompting.PromptConfig(length=8))
    model = prompting.SoftPromptModel(backbone, config)
    times: dict[str, list[float]] = {"run texts": [], "run and write": [], "read back": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            start = time.perf_counter()
            computed = engine.TextCaches().batches(model, task.dev, args.batch_size)
            times["run texts"].append(time.perf_counter() - start)
            here = Path(folder) / str(repeat)
            start = time.perf_counter()
            engine.TextCaches(folder=here).batches(model, task.dev, args.batch_size)
            times["run and write"].append(time.perf_counter() - start)
            start = time.perf_counter()
            reader = engine.TextCaches(folder=here)
            loaded = reader.batches(model, task.dev, args.batch_size)
            times["read back"].append(time.perf_counter() - start)
            assert reader.loaded == len(task.dev) and reader.computed == 0
            for (_, a), (_, b) in zip(computed, loaded, strict=True):
                assert all(
                    torch.equal(x.keys, y.keys) for x, y in zip(a.layers, b.layers, strict=True)
                )
        size = reader.folder_bytes()
    tokens = sum(int(batch.attention_mask.sum()) for batch, _ in computed)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.backbone}, {args.task} dev, {args.examples} examples, {tokens} text tokens, "
        f"{size / 2**20:.0f} MiB ({size / tokens / 1024:.1f} KiB per token, padding "
        f"included), {torch.get_num_threads()} threads, {processor()}, "
        f"median of {args.repeats}"
    )
    for name, seconds in median.items():
        print(f"{name:14s} {seconds:7.2f} s  {seconds / median['run texts']:.3f}x")


if __name__ == "__main__":
    main()
