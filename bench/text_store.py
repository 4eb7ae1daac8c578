"""Benchmark: keep a split's text states on disk for the next chapter, or recompute them?

Each chapter that evaluates or probes a task runs its dev and test texts once
(`engine.TextCaches`). A later chapter could instead load them from the artefact store.
This times, side by side in one process, (a) running a split's texts as the engine does
(evaluation batches, shortest first), (b) writing the same keys and values as
safetensors and (c) reading them back; it prints the ratio (b + c) / a, the bytes per
text token and the file size. Reads come from the page cache when the file was just
written, so (c) is a lower bound of a read by a later process.

    python bench/text_store.py --task amazon --examples 300 --repeats 3
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from helpers import data, engine, models, prompting
from helpers.runner import bench_parser


def main() -> None:
    parser = bench_parser(__doc__, task="amazon", prompt_length=False)
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()

    backbone = models.load_backbone(args.backbone)
    task = data.load_task(args.task, data.SplitSizes(2, args.examples, 2))
    config = prompting.prompt_config_for(task, prompting.PromptConfig(length=8))
    model = prompting.SoftPromptModel(backbone, config)
    times: dict[str, list[float]] = {"run texts": [], "write": [], "read": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "texts.safetensors"
        for _ in range(args.repeats):
            start = time.perf_counter()
            entry = engine.TextCaches().batches(model, task.dev, args.batch_size)
            times["run texts"].append(time.perf_counter() - start)
            tensors = {
                f"{i}/{layer}/{part}": getattr(cache.layers[layer], part).contiguous()
                for i, (_, cache) in enumerate(entry)
                for layer in range(len(cache.layers))
                for part in ("keys", "values")
            }
            start = time.perf_counter()
            save_file(tensors, path)
            times["write"].append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded = load_file(path)
            times["read"].append(time.perf_counter() - start)
            assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
        size = path.stat().st_size
    tokens = sum(int(batch.attention_mask.sum()) for batch, _ in entry)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.backbone}, {args.task} dev, {args.examples} examples, {tokens} text tokens, "
        f"{size / 2**20:.0f} MiB ({size / tokens / 1024:.1f} KiB per token, padding "
        f"included), {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    for name, seconds in median.items():
        print(f"{name:10s} {seconds:7.2f} s")
    ratio = (median["write"] + median["read"]) / median["run texts"]
    print(f"(write + read) / run texts = {ratio:.3f}x")


if __name__ == "__main__":
    main()
