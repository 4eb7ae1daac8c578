"""Benchmark: CPU latency of the pruned embedded backbone against the original.

The paper's recipe (§6.1): the top ``kept_fraction`` neurons per layer kept in the upper
``layer_share`` of the layers, every other FFN unit removed. Which neurons are kept does
not change the cost, so the ranking here is random; chapter 05 prunes by real
predictivity. Original and pruned run alternately in one process on the same inputs
(`pruning.latency`); the printed ratios are the measured speed-up and the FLOP limit
(`pruning.flops_per_token`), and the share of the limit that is reached.

    python bench/pruning.py --threads 2 --repeats 7
"""

from __future__ import annotations

import torch

from helpers import models, predictivity, pruning
from helpers.runner import bench_parser


def main() -> None:
    parser = bench_parser(__doc__, task=None, batch_size=None, prompt_length=False)
    parser.set_defaults(repeats=7)
    parser.add_argument("--kept-fraction", type=float, default=0.02)
    parser.add_argument("--layer-share", type=float, default=0.75)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    backbone = models.load_backbone(args.backbone)
    scores = torch.rand(
        backbone.n_layers, backbone.ffn_width, generator=torch.Generator().manual_seed(0)
    )
    config = pruning.PruneConfig(args.kept_fraction, args.layer_share)
    kept = pruning.kept_neurons(predictivity.select(scores, fraction=args.kept_fraction), config)
    baselines = torch.zeros(backbone.n_layers, backbone.ffn_width)
    pruned = pruning.prune(backbone, kept, baselines)
    share = pruning.parameter_count(pruned) / pruning.parameter_count(backbone)
    print(
        f"{backbone.name}: {len(kept)} of {backbone.n_layers} layers keep "
        f"{len(next(iter(kept.values())))} of {backbone.ffn_width} neurons; "
        f"parameters {100 * share:.1f}% of the original; {args.threads} threads"
    )
    rows = pruning.latency(
        {"original": backbone, "pruned": pruned},
        args.batch_sizes,
        args.seq_lens,
        repeats=args.repeats,
        threads=args.threads,
    )
    timing = {(r["model"], r["batch"], r["seq_len"]): r["ms"] for r in rows}
    print(
        f"{'batch':>5} {'seq':>5} {'orig ms':>9} {'pruned ms':>10} {'speed-up':>9} {'FLOP limit':>11} {'share':>6}"
    )
    for batch in args.batch_sizes:
        for length in args.seq_lens:
            original, fast = timing["original", batch, length], timing["pruned", batch, length]
            limit = pruning.flops_per_token(backbone, length) / pruning.flops_per_token(
                pruned, length
            )
            measured = original / fast
            print(
                f"{batch:>5} {length:>5} {original:>9.1f} {fast:>10.1f} {measured:>8.2f}x "
                f"{limit:>10.2f}x {100 * measured / limit:>5.0f}%"
            )


if __name__ == "__main__":
    main()
