"""Every figure of the book: one style, data in, figure out, never ``show()``.

Each function takes data and an optional ``ax`` and returns the figure. Captions live in
the notebooks' markdown, not in titles. The statistical figures (histograms, heatmaps,
curves with interval bands) are drawn with seaborn, in one colour-blind-safe palette.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Okabe-Ito: distinguishable under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def use_style() -> None:
    """Apply the book's plot style (call once per notebook): seaborn's white grid in the
    Okabe-Ito palette."""
    sns.set_theme(style="whitegrid", palette=list(PALETTE))
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 110,
            "axes.prop_cycle": mpl.cycler(color=PALETTE),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 10,
            "legend.frameon": False,
        }
    )


def _axes(ax: Axes | None, figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax  # type: ignore[return-value]


def class_balance(summary: pd.DataFrame) -> Figure:
    """One panel per task: examples per split, stacked by class.

    Args:
        summary: rows with columns ``task``, ``split``, ``n`` and one count column per
            class (classes a task lacks are 0 or NaN).
    """
    tasks = list(dict.fromkeys(summary["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.0 * len(tasks), 3.0), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, task in zip(axes, tasks, strict=True):
        rows = summary[summary["task"] == task].set_index("split").drop(columns=["task", "n"])
        rows = rows.fillna(0).loc[:, lambda frame: frame.sum() > 0]
        bottom = np.zeros(len(rows))
        for i, column in enumerate(rows.columns):
            values = rows[column].to_numpy(dtype=float)
            ax.bar(rows.index, values, bottom=bottom, label=column, color=PALETTE[i])
            bottom += values
        ax.set_xlabel(task, fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1)
    axes[0].set_ylabel("examples")
    fig.tight_layout()
    return fig


def length_distribution(lengths: Mapping[str, Sequence[int]], ax: Axes | None = None) -> Figure:
    """Box plot of text length in tokens per task."""
    fig, ax = _axes(ax, (6.4, 3.0))
    names = list(lengths)
    ax.boxplot([list(lengths[n]) for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set_ylabel("text length (tokens)")
    fig.tight_layout()
    return fig


def accuracy_bars(
    table: pd.DataFrame, chance: Mapping[str, float] | None = None, ax: Axes | None = None
) -> Figure:
    """Grouped bars of accuracy (%) per task, one bar per column of ``table``.

    Args:
        table: index = task, columns = methods, values = accuracy in %.
        chance: per task chance level in %, drawn as a short black line.
    """
    fig, ax = _axes(ax, (6.4, 3.2))
    n_methods = len(table.columns)
    width = 0.8 / n_methods
    x = np.arange(len(table))
    for i, column in enumerate(table.columns):
        ax.bar(x + (i - (n_methods - 1) / 2) * width, table[column], width, label=column)
    if chance:
        for j, task in enumerate(table.index):
            ax.hlines(chance[task], j - 0.45, j + 0.45, colors="black", linewidth=1)
    ax.set_xticks(x, table.index, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=n_methods)
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame, metric: str = "dev_accuracy") -> Figure:
    """One panel per task: a metric against training step, one line per trial.

    Args:
        history: rows with columns ``task``, ``seed``, ``step`` and ``metric``.
    """
    tasks = list(dict.fromkeys(history["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.2 * len(tasks), 2.8), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, task in zip(axes, tasks, strict=True):
        for i, (seed, rows) in enumerate(history[history["task"] == task].groupby("seed")):
            scale = 100 if metric.endswith("accuracy") else 1
            ax.plot(
                rows["step"],
                scale * rows[metric],
                marker="o",
                color=PALETTE[i % len(PALETTE)],
                label=f"trial {seed}",
            )
        ax.set_xlabel(f"{task}\nstep", fontsize=9)
    axes[0].set_ylabel(metric.replace("_", " ") + (" (%)" if metric.endswith("accuracy") else ""))
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def predictivity_histogram(
    scores: Mapping[str, np.ndarray], bins: Sequence[float] | None = None, ax: Axes | None = None
) -> Figure:
    """Number of neurons per predictivity bin, one bar group per method (Fig. 3).

    Args:
        scores: method name -> predictivity of every neuron (any shape), in [0.5, 1].
    """
    fig, ax = _axes(ax, (6.4, 3.2))
    edges = 100 * np.asarray(bins if bins is not None else np.arange(0.5, 1.0001, 0.05))
    long = pd.DataFrame(
        [
            {"method": name, "predictivity (%)": 100 * float(value)}
            for name, values in scores.items()
            for value in np.asarray(values).ravel()
        ]
    )
    sns.histplot(
        long,
        x="predictivity (%)",
        hue="method",
        bins=edges,
        multiple="dodge",
        shrink=0.85,
        log_scale=(False, True),
        ax=ax,
    )
    ax.set_ylabel("neurons")
    fig.tight_layout()
    return fig


def layer_profile(scores: Mapping[str, np.ndarray], ax: Axes | None = None) -> Figure:
    """Per layer, the median and the maximum predictivity of its neurons, one line per task.

    Args:
        scores: task -> predictivity ``[layer, ffn]``.
    """
    fig, ax = _axes(ax, (6.4, 3.2))
    for i, (name, values) in enumerate(scores.items()):
        values = np.asarray(values)
        layers = np.arange(values.shape[0])
        color = PALETTE[i % len(PALETTE)]
        ax.plot(layers, 100 * values.max(axis=1), color=color, label=f"{name} (max)")
        ax.plot(
            layers,
            100 * np.median(values, axis=1),
            color=color,
            linestyle=":",
            label=f"{name} (median)",
        )
    ax.set_xlabel("layer")
    ax.set_ylabel("predictivity (%)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def null_distribution(
    observed: Mapping[str, float], null: Mapping[str, np.ndarray], ax: Axes | None = None
) -> Figure:
    """Per task, the best neuron's predictivity against its label-permutation null.

    Args:
        observed: task -> top predictivity with the real labels.
        null: task -> top predictivity under each label permutation.
    """
    fig, ax = _axes(ax, (6.4, 3.0))
    names = list(observed)
    for j, name in enumerate(names):
        values = 100 * np.asarray(null[name])
        ax.scatter(
            np.full(len(values), j) + np.linspace(-0.15, 0.15, len(values)),
            values,
            s=8,
            color=PALETTE[5],
            label="shuffled labels" if j == 0 else None,
        )
        ax.scatter(
            [j],
            [100 * observed[name]],
            marker="D",
            color=PALETTE[3],
            label="real labels" if j == 0 else None,
        )
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("top neuron predictivity (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pruning_tradeoff(sweep: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Accuracy against speed-up as the kept fraction varies (one point per fraction).

    ``sweep`` has columns ``kept_fraction``, ``accuracy``, ``speedup`` (measured) and
    ``flop_limit``; the unpruned model is the point at speed-up 1 if present.
    """
    fig, ax = _axes(ax)
    ax.plot(sweep["speedup"], sweep["accuracy"], marker="o", label="measured")
    ax.plot(sweep["flop_limit"], sweep["accuracy"], marker="x", linestyle=":", label="FLOP limit")
    for _, row in sweep.iterrows():
        ax.annotate(
            f"{100 * row['kept_fraction']:g}%",
            (row["speedup"], row["accuracy"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.set_xlabel("speed-up over the original (×)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return fig


def pruning_front(
    front: pd.DataFrame, reference: Mapping[str, float], ax: Axes | None = None
) -> Figure:
    """Each task's candidate pruned models: test accuracy against measured speed-up,
    after the recovery chosen on dev (joined; a dot for prompt retraining, a triangle for
    a LoRA) and with the prompt moved unchanged (hollow); the point chosen on dev ringed,
    the paper's recipe crossed, and a dashed line at each task's unpruned test accuracy
    (``reference``).

    ``front`` has columns ``task``, ``speedup``, ``test_recovered``, ``test_fold_only``,
    ``chosen`` and ``recipe`` (booleans), and optionally ``recovery`` (``"lora"`` or
    the prompt retrained, as `pruning.lora_front` writes it).
    """
    fig, ax = _axes(ax)
    for i, (task, rows) in enumerate(front.groupby("task", sort=False)):
        rows, colour = rows.sort_values("speedup"), PALETTE[i % len(PALETTE)]
        ax.plot(rows["speedup"], rows["test_recovered"], color=colour, label=task)
        by_lora = rows.get("recovery", pd.Series("", index=rows.index)) == "lora"
        for recovered, marker in ((rows[~by_lora], "o"), (rows[by_lora], "^")):
            ax.scatter(
                recovered["speedup"], recovered["test_recovered"], marker=marker, color=colour
            )
        ax.scatter(rows["speedup"], rows["test_fold_only"], facecolors="none", edgecolors=colour)
        ax.axhline(reference[task], color=colour, linestyle="--", linewidth=0.8)
        for flag, style in (("chosen", {"s": 220, "facecolors": "none"}), ("recipe", {"s": 90})):
            marked = rows[rows[flag].astype(bool)]
            marker = "o" if flag == "chosen" else "x"
            ax.scatter(
                marked["speedup"], marked["test_recovered"], marker=marker, color="black", **style
            )
    ax.set_xlabel("measured speed-up over the original (×)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(title="task (triangles: LoRA)")
    return fig


def similarity_heatmap(
    matrix: np.ndarray,
    names: Sequence[str],
    ax: Axes | None = None,
    label: str = "Spearman ρ",
    columns: Sequence[str] | None = None,
    diverging: bool = True,
) -> Figure:
    """A matrix with its values written in the cells: task × task similarity (Fig. 5), or
    source × target transfer (rows ``names``, columns ``columns``, sequential colours)."""
    columns = names if columns is None else columns
    fig, ax = _axes(ax, figsize=(1.0 + 0.75 * len(columns), 0.6 + 0.65 * len(names)))
    bound = max(float(np.abs(matrix).max()), 1e-6)
    colours = (
        {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound} if diverging else {"cmap": "viridis"}
    )
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".2f",
        annot_kws={"fontsize": 8},
        xticklabels=list(columns),
        yticklabels=list(names),
        cbar_kws={"label": label, "shrink": 0.8},
        square=False,
        ax=ax,
        **colours,
    )
    ax.set_xticklabels(ax.get_xticklabels(), rotation=45, ha="right")
    ax.tick_params(axis="y", rotation=0)
    return fig


def similarity_by_layer(curves: Mapping[str, np.ndarray], ax: Axes | None = None) -> Figure:
    """Mean similarity per layer for groups of task pairs (a summary of Fig. 14)."""
    fig, ax = _axes(ax)
    for name, values in curves.items():
        ax.plot(np.arange(len(values)), values, marker=".", label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("Spearman ρ of predictivity")
    ax.legend()
    return fig


def similarity_clustermap(matrix: np.ndarray, names: Sequence[str], tree: np.ndarray) -> Figure:
    """The task × task similarity with its values, rows and columns in the order of the
    clustering ``tree`` (a scipy linkage, e.g. average linkage on ``1 - similarity``),
    whose dendrogram is drawn along both sides (seaborn's clustermap)."""
    size = 2.0 + 0.8 * len(names)
    bound = max(float(np.abs(matrix).max()), 1e-6)
    grid = sns.clustermap(
        pd.DataFrame(matrix, index=list(names), columns=list(names)),
        row_linkage=tree,
        col_linkage=tree,
        annot=True,
        fmt=".2f",
        cmap="RdBu_r",
        vmin=-bound,
        vmax=bound,
        figsize=(size, size),
        dendrogram_ratio=0.15,
        cbar_kws={"label": "Spearman ρ"},
    )
    grid.ax_heatmap.set_xlabel("")
    grid.ax_heatmap.set_ylabel("")
    return grid.figure


def indicator_scatter(
    indicators: Mapping[str, np.ndarray], transfer: np.ndarray, names: Sequence[str]
) -> Figure:
    """One panel per indicator: its value against relative transfer, one point per
    source-target pair (the diagonal left out), coloured by target task."""
    fig, axes = plt.subplots(
        1, len(indicators), figsize=(2.6 * len(indicators), 2.8), sharey=True, squeeze=False
    )
    off = ~np.eye(len(names), dtype=bool)
    for ax, (label, values) in zip(axes[0], indicators.items(), strict=True):
        for t, target in enumerate(names):
            rows = off[:, t]
            ax.scatter(values[rows, t], transfer[rows, t], s=18, label=target)
        ax.set_xlabel(label)
    axes[0, 0].set_ylabel("relative transfer")
    axes[0, -1].legend(title="target", fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def perturbation_curves(
    rows: pd.DataFrame, own: Mapping[str, str] | None = None, ncols: int = 3
) -> Figure:
    """Accuracy against the perturbed fraction, one panel per evaluated task (Fig. 4).

    Args:
        rows: columns ``task`` (evaluated), ``order``, ``draw``, ``fraction`` and
            ``accuracy`` (a 0-1 fraction), trials already averaged or not.
        own: the order to draw boldly in each task's panel (default: the task itself);
            other orders are thin means. The bold order and ``random`` are means with a
            band over their range across trials and random draws.
    """
    tasks = list(dict.fromkeys(rows["task"]))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(
        nrows,
        min(ncols, len(tasks)),
        figsize=(3.2 * min(ncols, len(tasks)), 2.6 * nrows),
        squeeze=False,
        sharex=True,
    )
    for ax, task in zip(axes.flat, tasks, strict=False):
        part = rows[rows["task"] == task].assign(accuracy=lambda f: 100 * f["accuracy"])
        bold = (own or {}).get(task, task)
        for _, curve in part[~part["order"].isin([bold, "random"])].groupby("order"):
            mean = curve.groupby("fraction")["accuracy"].mean()
            ax.plot(mean.index, mean, color="grey", lw=0.8, alpha=0.6)
        for order, colour, label in (
            (bold, PALETTE[3], f"{bold} order"),
            ("random", PALETTE[0], "random"),
        ):
            curve = part[part["order"] == order]
            if len(curve):  # the band: the range over trials and random draws
                sns.lineplot(
                    curve,
                    x="fraction",
                    y="accuracy",
                    errorbar=("pi", 100),
                    color=colour,
                    lw=2,
                    label=label,
                    ax=ax,
                )
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("perturbed fraction")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def bars(
    values: Mapping[str, float],
    xlabel: str,
    colours: Mapping[str, str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Horizontal bars, one per label, in the given order (e.g. chapter times, verdicts)."""
    labels = list(values)
    fig, ax = _axes(ax, figsize=(6.0, 0.5 + 0.35 * len(labels)))
    colour = [(colours or {}).get(label, PALETTE[0]) for label in labels]
    ax.barh(
        range(len(labels)),
        [values[k] for k in labels],
        color=colour,
        edgecolor="black",
        linewidth=0.4,
    )
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    return fig


def ledger_forest(
    rows: Sequence[Mapping[str, object]],
    scaled: Sequence[tuple[float, float, float]],
    colours: Mapping[str, str],
    clip: float = 4.0,
    ax: Axes | None = None,
) -> Figure:
    """One row per claim: the estimate and its interval on a common scale, null at 0 and
    the smallest effect of interest at ±1 (an equivalence row's margin at −1), each
    coloured by its headline.

    Args:
        rows: ledger rows with ``source``, ``claim`` and ``verdict``.
        scaled: (estimate, low, high) per row on the common scale (`ledger.scaled`).
        clip: the axis runs from -clip to clip; intervals beyond it end in an arrow.
    """
    fig, ax = _axes(ax, figsize=(8.0, 0.8 + 0.55 * len(rows)))
    labels = [textwrap.shorten(f"{r['source']}: {r['claim']}", 100, placeholder="…") for r in rows]
    labels = [textwrap.fill(label, 52) for label in labels]
    for i, (row, (mean, low, high)) in enumerate(zip(rows, scaled, strict=True)):
        colour = colours.get(str(row["verdict"]), PALETTE[7])
        if not np.isnan(low):
            ax.plot([max(low, -clip), min(high, clip)], [i, i], color="black", lw=1.2, zorder=1)
            for end, marker in ((low, "<"), (high, ">")):
                if abs(end) > clip:  # an interval beyond the axis: an arrow at its edge
                    ax.scatter([np.sign(end) * clip], [i], marker=marker, color="black", s=25)
        if not np.isnan(mean):
            shown = float(np.clip(mean, -clip, clip))
            ax.scatter([shown], [i], s=60, color=colour, edgecolor="black", zorder=2)
    ax.axvspan(-1, 1, color=PALETTE[7], alpha=0.15, label="within the smallest effect")
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--", label="null")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-clip - 0.3, clip + 0.3)
    ax.set_xlabel("effect in units of its smallest effect of interest (95% interval)")
    handles = [
        mpl.lines.Line2D([], [], marker="o", linestyle="", color=c, markeredgecolor="black")
        for c in colours.values()
    ]
    lines = ax.get_legend_handles_labels()
    ax.legend(
        [*lines[0], *handles],
        [*lines[1], *colours],
        fontsize=7,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=3,
    )
    fig.tight_layout()
    return fig


def interval_points(
    frame: pd.DataFrame, xlabel: str, null: float = 0.0, ax: Axes | None = None
) -> Figure:
    """One row per index label: its ``mean`` as a dot and its ``low``-``high`` interval as
    a bar, with the null marked (e.g. each score's accuracy cost against random neurons)."""
    labels = [str(label) for label in frame.index]
    fig, ax = _axes(ax, figsize=(6.0, 0.8 + 0.45 * len(labels)))
    y = np.arange(len(labels))
    ax.hlines(y, frame["low"], frame["high"], color="black", lw=1.2)
    ax.scatter(frame["mean"], y, s=50, color=PALETTE[3], edgecolor="black", zorder=2)
    ax.axvline(null, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig
