"""The seaborn figures show the numbers they are given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection

from helpers import plots


def test_heatmap_writes_every_value_in_its_cell() -> None:
    plots.use_style()
    matrix = np.array([[1.0, -0.25], [0.5, 0.125]])
    fig = plots.similarity_heatmap(matrix, ["a", "b"], columns=["x", "y"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(["1.00", "-0.25", "0.50", "0.12"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["x", "y"]


def test_histogram_counts_neurons_per_bin_and_method() -> None:
    scores = {"ours": np.array([0.52, 0.53, 0.91]), "pooled": np.array([0.6])}
    fig = plots.predictivity_histogram(scores, bins=[0.5, 0.75, 1.0])
    heights = sorted(round(p.get_height()) for p in fig.axes[0].patches if p.get_height() > 0)
    assert heights == [1, 1, 2]  # ours: 2 low and 1 high; pooled: 1 low


def test_perturbation_curves_band_the_random_draws() -> None:
    rows = pd.DataFrame(
        [
            {"task": "t", "order": order, "draw": d, "fraction": f, "accuracy": acc}
            for order, d, f, acc in [
                ("t", 0, 0.0, 0.9),
                ("t", 0, 0.2, 0.5),
                ("random", 0, 0.0, 0.9),
                ("random", 1, 0.0, 0.9),
                ("random", 0, 0.2, 0.7),
                ("random", 1, 0.2, 0.8),
            ]
        ]
    )
    ax = plots.perturbation_curves(rows).axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) >= 1
    random_line = next(line for line in ax.get_lines() if line.get_label() == "random")
    assert np.allclose(random_line.get_ydata(), [90.0, 75.0])  # the mean of the draws, in %
    ys = [{round(float(v[1]), 6) for p in b.get_paths() for v in p.vertices} for b in bands]
    assert any({70.0, 80.0} <= y for y in ys)  # the draws' range at fraction 0.2


def test_pruning_front_marks_the_chosen_point_and_the_recipe() -> None:
    front = pd.DataFrame(
        [
            {
                "task": "a",
                "speedup": s,
                "test_recovered": r,
                "test_fold_only": f,
                "chosen": c,
                "recipe": p,
                "recovery": how,
            }
            for s, r, f, c, p, how in [
                (1.2, 80.0, 79.0, False, False, "prompt_retrained"),
                (1.6, 78.0, 60.0, True, False, "lora"),
                (1.9, 55.0, 50.0, False, True, "prompt_retrained"),
            ]
        ]
    )
    fig = plots.pruning_front(front, {"a": 81.0})
    ax = fig.axes[0]
    (line,) = [line for line in ax.get_lines() if line.get_label() == "a"]
    assert list(line.get_xdata()) == [1.2, 1.6, 1.9] and list(line.get_ydata()) == [80, 78, 55]
    offsets = [c.get_offsets().tolist() for c in ax.collections]
    assert [[1.6, 78.0]] in offsets and [[1.9, 55.0]] in offsets  # chosen, recipe
    assert [[1.2, 80.0], [1.9, 55.0]] in offsets  # recovered by the prompt: dots
    assert offsets.count([[1.6, 78.0]]) == 2  # recovered by a LoRA: a triangle, and ringed
    assert [[1.2, 79.0], [1.6, 60.0], [1.9, 50.0]] in offsets  # fold only
    assert any(list(line.get_ydata()) == [81.0, 81.0] for line in ax.get_lines())


def test_clustermap_orders_the_tasks_by_the_tree_and_writes_the_values() -> None:
    from scipy.cluster import hierarchy

    matrix = np.array([[1.0, 0.1, 0.8], [0.1, 1.0, 0.2], [0.8, 0.2, 1.0]])
    tree = hierarchy.linkage([0.9, 0.2, 0.8], method="average")  # a and c join first
    fig = plots.similarity_clustermap(matrix, ["a", "b", "c"], tree)
    heatmap = max(fig.axes, key=lambda ax: len(ax.texts))
    order = [t.get_text() for t in heatmap.get_xticklabels()]
    assert order.index("b") in (0, 2)  # a and c side by side
    assert sorted(t.get_text() for t in heatmap.texts) == sorted(f"{v:.2f}" for v in matrix.ravel())


def test_interval_points_put_each_mean_and_interval_on_its_row() -> None:
    frame = pd.DataFrame(
        {"mean": [8.0, -1.0], "low": [5.0, -3.0], "high": [11.0, 1.0]}, index=["a", "b"]
    )
    fig = plots.interval_points(frame, "points")
    ax = fig.axes[0]
    assert ax.collections[1].get_offsets().tolist() == [[8.0, 0.0], [-1.0, 1.0]]
    segments = ax.collections[0].get_segments()
    assert [s.tolist() for s in segments] == [[[5.0, 0.0], [11.0, 0.0]], [[-3.0, 1.0], [1.0, 1.0]]]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
