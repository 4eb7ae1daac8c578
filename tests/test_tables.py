"""Tab. 1, 3 and 4 built from chapter rows, with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from helpers import tables


def test_table1_means_and_stds_over_trials_in_percent() -> None:
    trials = [
        {"task": "rotten_tomatoes", "test_accuracy": 80.0},
        {"task": "rotten_tomatoes", "test_accuracy": 84.0},
        {"task": "mine", "test_accuracy": 70.0},
    ]
    top = {"rotten_tomatoes": [0.70, 0.74], "mine": [0.60]}
    soft = {"rotten_tomatoes": [0.60, 0.62], "mine": [0.50]}
    table = tables.table1(trials, top, soft)
    assert list(table.index) == ["rotten_tomatoes", "mine"]
    row = table.loc["rotten_tomatoes"]
    assert row[tables.PROMPT] == pytest.approx(82.0)
    assert row[tables.PROMPT_STD] == pytest.approx(math.sqrt(8))
    assert row[tables.TOP_NEURON] == pytest.approx(72.0)
    assert row[tables.TOP_NEURON_STD] == pytest.approx(100 * math.sqrt(0.0008))
    assert row[tables.TOP_SOFT_NEURON] == pytest.approx(61.0)
    assert row[tables.PAPER_TASK] == "sst2" and row[tables.PAPER_PROMPT] > 80
    assert table.loc["mine", tables.TOP_NEURON_STD] == 0.0  # one trial: no spread
    assert math.isnan(table.loc["mine", tables.PAPER_PROMPT])  # no counterpart in the paper


def test_table3_pivots_the_controls_and_adds_chance_and_the_tuned_neuron() -> None:
    rows = [
        {"task": t, "control": c, tables.TOP_NEURON: v}
        for t, c, v in [
            ("b", tables.RANDOM_PROMPT, 60.0),
            ("b", tables.RANDOM_MODEL, 52.0),
            ("a", tables.RANDOM_PROMPT, 70.0),
            ("a", tables.RANDOM_MODEL, 50.0),
        ]
    ]
    table = tables.table3(rows, {"a": 50.0, "b": 100 / 3}, pd.Series({"a": 80.0, "b": 65.0}))
    assert list(table.index) == ["a", "b"]  # the order of chance, not of the rows
    assert table.columns[0] == tables.RANDOM_GUESS
    assert table.loc["a", tables.RANDOM_PROMPT] - table.loc["a", tables.RANDOM_MODEL] == 20.0
    assert table.loc["b", tables.TUNED_TOP_NEURON] == 65.0


def test_table4_means_over_trials_and_the_speed_up_per_task() -> None:
    trials = pd.DataFrame(
        {
            "task": ["a", "a", "b"],
            tables.PROMPT: [80.0, 82.0, 90.0],
            tables.PRUNED: [50.0, 52.0, 60.0],
            tables.RETRAINED: [70.0, float("nan"), 85.0],
        }
    )
    table = tables.table4(trials, pd.Series({"a": 1.5, "b": 1.4}), ["b", "a"])
    assert list(table.index) == ["b", "a"]
    assert table.loc["a", tables.PROMPT] == 81.0 and table.loc["a", tables.RETRAINED] == 70.0
    assert table.loc["a", f"{tables.PRUNED} std"] == pytest.approx(math.sqrt(2))
    assert table.loc["b", tables.SPEED_UP] == 1.4
    assert math.isnan(table.loc["a", tables.PAPER_SPEED_UP])  # "a" stands for no paper task


def test_agreement_splits_the_examples_by_who_is_right() -> None:
    found = tables.agreement({"a": ["1100", "1111"]}, {"a": ["1010", "0000"]}, ("x", "y"))
    # trial 0: both 1, x only 1, y only 1, neither 1; trial 1: x only 4 (of 4)
    assert found.loc["a"].tolist() == pytest.approx([12.5, 62.5, 12.5, 12.5])
    assert list(found.columns) == ["both right", "x only", "y only", "both wrong"]
