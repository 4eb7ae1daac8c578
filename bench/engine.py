"""Benchmark: the streaming statistics engine against a bare forward pass, and its memory.

Time: the same batches through (a) a bare forward pass of the prompted backbone and (b)
the engine (hooks on every layer, baseline and threshold-accuracy accumulation), run
alternately in one process; the ratio is the engine's overhead. Memory: the peak
resident memory of the engine on a split, then on a split ten times larger, in fresh
processes; the growth should be small because nothing per example is kept.

    python bench/engine.py --examples 64 --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch

from helpers import activations, data, engine, models, prompting
from helpers.runner import bench_parser


def setup(backbone_name: str, task_name: str, examples: int, length: int):
    backbone = models.load_backbone(backbone_name)
    task = data.load_task(task_name, data.SplitSizes(examples, examples, 2))
    config = prompting.prompt_config_for(task, prompting.PromptConfig(length=length))
    return prompting.SoftPromptModel(backbone, config), task


def memory_run(args: argparse.Namespace, examples: int) -> int:
    """Run the engine once on ``examples`` dev examples; return peak RSS in KiB."""
    model, task = setup(args.backbone, args.task, examples, args.prompt_length)
    base = activations.baseline(model, task.train.select(range(32)), args.batch_size)
    activations.threshold_accuracy(model, task.dev, base, args.batch_size)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--examples", type=int, default=64, help="examples per timed block")
    parser.add_argument("--memory-examples", type=int, default=50)
    parser.add_argument("--memory-only", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        print(memory_run(args, args.memory_only))
        return

    model, task = setup(args.backbone, args.task, args.examples, args.prompt_length)
    batches = list(model.batches(task.dev, args.batch_size))
    base = activations.baseline(model, task.train.select(range(32)), args.batch_size)

    @torch.no_grad()
    def bare() -> None:
        for batch in batches:
            model.prompt_hidden(batch)

    def probe() -> None:
        accumulator = activations.AccuracyAccumulator(base)
        for batch in batches:
            accumulator.add(engine.prompt_activations(model, batch), batch.labels)
        accumulator.accuracy()

    times: dict[str, list[float]] = {"bare forward": [], "engine": []}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, run in (("bare forward", bare), ("engine", probe)):
            start = time.perf_counter()
            run()
            if repeat:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.backbone}, {len(task.dev)} examples, prompt {args.prompt_length}, median of {args.repeats}"
    )
    for name, seconds in median.items():
        print(f"{name:14s} {seconds:7.2f} s")
    print(f"engine / bare forward = {median['engine'] / median['bare forward']:.3f}x")

    peaks = []
    for n in (args.memory_examples, 10 * args.memory_examples):
        command = [sys.executable, __file__, "--memory-only", str(n), "--backbone", args.backbone]
        command += ["--task", args.task, "--prompt-length", str(args.prompt_length)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        peaks.append(int(out.strip().splitlines()[-1]))
        print(f"peak RSS with {n:5d} dev examples: {peaks[-1] / 1024:8.1f} MiB")
    print(f"peak memory growth for 10x the data: {100 * (peaks[1] / peaks[0] - 1):.1f}%")


if __name__ == "__main__":
    main()
