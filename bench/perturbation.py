"""Benchmark: a perturbation sweep reusing the text's key/value cache, against the plain sweep.

When only the prompt positions are perturbed, a decoder's text (which precedes the
prompt) is the same in every condition of a sweep. The plain sweep runs each condition
in full: the text, then the prompt positions with the perturbation hooks. The reusing
sweep computes each example's text cache once and, for every condition, runs only the
prompt positions on top of it. Both give the same accuracies (checked here). A third
variant perturbs every position, text included (``scope="all"``, the official code), so
it runs every condition in full. They run alternately in one process and the ratios of
their median times are printed, with the processor.

    python bench/perturbation.py --examples 100 --conditions 8 --repeats 3
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from helpers import data, engine, models, perturbation, prompting
from helpers.runner import bench_parser, processor


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--examples", type=int, default=100, help="test examples per condition")
    parser.add_argument("--conditions", type=int, default=8, help="perturbed sets per sweep")
    args = parser.parse_args()

    backbone = models.load_backbone(args.backbone)
    task = data.load_task(args.task, data.SplitSizes(8, 8, args.examples))
    config = prompting.prompt_config_for(task, prompting.PromptConfig(length=args.prompt_length))
    model = prompting.SoftPromptModel(backbone, config)
    noise = perturbation.PerturbConfig(sigma=0.1, scope="prompt")
    gen = torch.Generator().manual_seed(0)
    sets = [
        torch.rand(backbone.n_layers, backbone.ffn_width, generator=gen) < (i + 1) / 50
        for i in range(args.conditions)
    ]

    def plain() -> list[float]:
        # A fresh cache per condition: the text is recomputed every time.
        return [
            perturbation.perturbed_evaluation(
                model, task.test, s, noise, i, args.batch_size, engine.TextCaches()
            ).accuracy
            for i, s in enumerate(sets)
        ]

    def reusing() -> list[float]:
        caches = engine.TextCaches()
        return [
            perturbation.perturbed_evaluation(
                model, task.test, s, noise, i, args.batch_size, caches
            ).accuracy
            for i, s in enumerate(sets)
        ]

    everywhere = replace(noise, scope="all")

    def official() -> list[float]:
        return [
            perturbation.perturbed_evaluation(
                model, task.test, s, everywhere, i, args.batch_size
            ).accuracy
            for i, s in enumerate(sets)
        ]

    variants = (("plain sweep", plain), ("text cache reused", reusing), ("all positions", official))
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    results: dict[str, list[float]] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, run in variants:
            start = time.perf_counter()
            results[name] = run()
            if repeat:
                times[name].append(time.perf_counter() - start)
    if results["plain sweep"] != results["text cache reused"]:
        raise SystemExit(f"the two sweeps disagree: {results}")
    median = {name: statistics.median(values) for name, values in times.items()}
    print(processor())
    print(
        f"{args.backbone}, {len(task.test)} examples x {args.conditions} conditions, "
        f"prompt {args.prompt_length}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    for name, value in median.items():
        print(f"  {name:>18}: {value:7.2f} s")
    ratio = median["plain sweep"] / median["text cache reused"]
    print(f"  speed-up from reusing the text cache: {ratio:.2f}x (same accuracies)")
    cost = median["all positions"] / median["text cache reused"]
    print(f"  all positions (scope='all') cost {cost:.2f}x the reused-cache sweep")


if __name__ == "__main__":
    main()
