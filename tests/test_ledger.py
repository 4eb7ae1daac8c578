"""The reproduction ledger computes its verdicts from results files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from helpers import ledger, paper


def _results() -> dict[str, dict]:
    return {
        "02_neuron_discovery": {
            "table1": [
                # the neuron is close only with the prediction position: the effect uses the
                # soft-only number
                {"task": "a", "prompt tuning": 80.0, "top neuron": 79.0, "top soft neuron": 79.0},
                {"task": "b", "prompt tuning": 90.0, "top neuron": 89.0, "top soft neuron": 70.0},
            ],
            "table3": [
                {"task": "a", "random guess": 50.0, "random prompt": 75.0, "random model": 51.0},
                {"task": "b", "random guess": 50.0, "random prompt": 80.0, "random model": 55.0},
                {"task": "c", "random guess": 50.0, "random prompt": 70.0, "random model": 48.0},
            ],
        },
        "04_cross_task_similarity": {
            "names": ["a", "b", "c", "d"],
            "types": {"a": "sentiment", "b": "sentiment", "c": "topic", "d": "topic"},
            "similarity": [
                [0.5, 0.3, 0.0, 0.1],
                [0.3, 0.5, 0.1, 0.0],
                [0.0, 0.1, 0.5, 0.4],
                [0.1, 0.0, 0.4, 0.5],
            ],
            "label_word_robustness": [
                {
                    "label words": "x/y",
                    "view": "binary",
                    "ρ with default words": 0.2,
                    "ρ default vs default": 0.3,
                },
                {
                    "label words": "u/v",
                    "view": "binary",
                    "ρ with default words": 0.5,
                    "ρ default vs default": 0.3,
                },
            ],
        },
        "00_data_and_models": {
            "splits": [{"task": t, "split": "test", "n": 5000} for t in "abc"]
            + [{"task": t, "split": "dev", "n": 10} for t in "abc"]
        },
        "05_pruning": {
            "trials": [
                {"task": "a", "trial": 0, "prompt tuning": 80.0, "pruned + prompt tuning": 79.5},
                {"task": "a", "trial": 1, "prompt tuning": 81.0, "pruned + prompt tuning": None},
                {"task": "b", "trial": 0, "prompt tuning": 90.0, "pruned + prompt tuning": 89.0},
                {"task": "c", "trial": 0, "prompt tuning": 70.0, "pruned + prompt tuning": 69.5},
            ],
            "table4": [
                {
                    "task": "a",
                    "prompt tuning": 80.0,
                    "pruned + prompt tuning": 79.5,
                    "speed-up": 1.8,
                },
                {
                    "task": "b",
                    "prompt tuning": 90.0,
                    "pruned + prompt tuning": 89.0,
                    "speed-up": 1.9,
                },
                {
                    "task": "c",
                    "prompt tuning": 70.0,
                    "pruned + prompt tuning": 69.5,
                    "speed-up": 1.7,
                },
            ],
            "chosen": [
                {"task": "a", "test_recovered": 79.0, "unpruned_test": 80.0},
                {"task": "b", "test_recovered": 86.0, "unpruned_test": 90.0},
            ],
            "criteria": [
                {"task": "a", "criterion": "magnitude", "difference": 4.0, "low": 2.0, "high": 6.0},
                {"task": "a", "criterion": "random", "difference": 9.0, "low": 1.0, "high": 17.0},
                {
                    "task": "b",
                    "criterion": "magnitude",
                    "difference": 2.0,
                    "low": -1.0,
                    "high": 5.0,
                },
            ],
        },
        "06_transferability": {
            "tasks": ["a", "b", "c"],
            "per_target": {"ON": [0.6, 0.7, 0.5], "skill-neuron ON": [0.4, 0.5, 0.2]},
        },
    }


def test_interval_is_student_t_over_units() -> None:
    effect = ledger.Effect({"a": 1.0, "b": 2.0, "c": 4.0}, 0.0, 5.0, "points")
    mean, low, high = effect.interval()
    expected = stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem([1.0, 2.0, 4.0]))
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx(expected)
    single = ledger.Effect({"a": 1.0}, 0.0, None, "z")
    assert math.isnan(single.interval()[1]) and ledger.verdict(single) == "undecided"
    assert ledger.units_to_decide(single) is None


def _effect(mean: float, se: float, **kinds) -> ledger.Effect:
    """A one-unit effect with a normal interval mean ± 1.96 se."""
    return ledger.Effect({"a": mean}, 0.0, None, "points", {"a": se}, **kinds)


@pytest.mark.parametrize(
    ("mean", "se", "kinds", "effect_class", "headline"),
    [
        (5.0, 1.0, {"smallest": 1.0}, "present", "holds"),  # [3.04, 6.96]: above 0
        (0.1, 0.2, {"smallest": 1.0}, "absent", "fails"),  # [-0.29, 0.49]: inside ±1
        (0.6, 0.2, {"smallest": 1.0}, "absent", "fails"),  # above 0, yet inside ±1: absent
        (-5.0, 1.0, {"smallest": 1.0}, "reversed", "fails"),  # below 0
        (0.5, 1.0, {"smallest": 1.0}, "undecided", "undecided"),  # [-1.46, 2.46]
        (0.6, 0.2, {"smallest": 0.0}, "present", "holds"),  # no smallest effect: present
        # equivalence with margin 3: the interval's lower end against -3
        (-1.0, 0.5, {"kind": "equivalence", "smallest": 3.0}, "equivalent", "holds"),
        (-6.0, 0.5, {"kind": "equivalence", "smallest": 3.0}, "not equivalent", "fails"),
        (-3.0, 0.5, {"kind": "equivalence", "smallest": 3.0}, "undecided", "undecided"),
    ],
)
def test_each_verdict_class_on_hand_made_effects(mean, se, kinds, effect_class, headline) -> None:
    effect = _effect(mean, se, **kinds)
    assert ledger.effect_class(effect) == effect_class
    assert ledger.verdict(effect) == headline


def test_a_headline_never_fails_only_because_the_size_differs_from_the_papers() -> None:
    # present at a tenth of the paper's size: holds, and the size says "smaller"
    effect = ledger.Effect({"a": 1.0}, 0.0, 10.0, "points", {"a": 0.1}, smallest=0.5)
    sized = ledger.replace(effect, size=ledger.Size(0.1, 0.08, 0.12, 1.0, "share"))
    assert ledger.verdict(sized) == "holds" and ledger.size_class(sized) == "smaller"
    compatible = ledger.replace(effect, size=ledger.Size(1.0, 0.5, 1.5, 1.2, ""))
    assert ledger.size_class(compatible) == "compatible"
    larger = ledger.replace(effect, size=ledger.Size(3.0, 2.0, 4.0, 1.2, ""))
    assert ledger.size_class(larger) == "larger"
    assert ledger.size_class(effect) == "not comparable"  # no size at all
    other = ledger.replace(effect, size=ledger.not_comparable("LoRA"))
    assert ledger.size_class(other) == "not comparable"


def test_knife_edge_rows_end_within_a_standard_error_of_a_threshold() -> None:
    z = stats.norm.ppf(0.975)
    # lower end 0.5 se above the null: a rerun could make it undecided
    assert ledger.knife_edge(_effect(0.5 + z, 1.0, smallest=100.0))
    assert not ledger.knife_edge(_effect(5.0 + z, 1.0, smallest=100.0))
    # equivalence: only the margin counts
    assert ledger.knife_edge(_effect(-3.0 + z + 0.9, 1.0, kind="equivalence", smallest=3.0))
    assert not ledger.knife_edge(_effect(10.0, 1.0, kind="equivalence", smallest=3.0))


def test_p_values_and_holms_step_down_known_answers() -> None:
    assert ledger.p_value(_effect(1.96, 1.0)) == pytest.approx(0.025, abs=1e-4)
    equivalence = _effect(-1.0, 1.0, kind="equivalence", smallest=3.0)  # 2 se above -3
    assert ledger.p_value(equivalence) == pytest.approx(stats.norm.sf(2.0))
    # m = 4 at 0.05: 0.01 <= 0.0125, 0.015 <= 0.0167, 0.03 > 0.025 stops; NaN never rejected
    assert ledger.holm([0.03, 0.01, math.nan, 0.015, 0.04]) == [False, True, False, True, False]
    assert ledger.holm([0.03, 0.01, math.nan, 0.02, 0.04]) == [False, True, False, False, False]
    assert ledger.holm([0.01, 0.04]) == [True, True]  # 0.01 <= 0.025, then 0.04 <= 0.05


def test_with_errors_the_units_are_fixed_and_the_interval_is_the_measurements() -> None:
    effect = ledger.Effect({"a": 1.0, "b": 3.0}, 0.0, 5.0, "points", {"a": 0.3, "b": 0.4})
    mean, low, high = effect.interval()
    half = stats.norm.ppf(0.975) * math.sqrt(0.3**2 + 0.4**2) / 2
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert ledger.verdict(effect) == "holds"
    # across the two tasks the same numbers decide nothing
    _, across_low, _ = effect.across_units()
    assert across_low < 0 < low
    errors = {"a": 3.0, "b": 4.0}
    noisy = ledger.Effect({"a": 1.0, "b": 3.0}, 0.0, 5.0, "points", errors, smallest=3.0)
    assert ledger.verdict(noisy) == "undecided"
    factor = ledger.examples_to_decide(noisy)
    _, low, high = noisy.interval()
    # the nearer decision for a narrower interval: "present" needs the half-width below
    # 2 (the estimate's distance from the null), "absent" below 3 - 2 = 1
    assert factor == pytest.approx(((high - low) / 2 / 2.0) ** 2)
    assert ledger.to_decide(noisy) == f"{factor:.1f}× the examples"
    # with that many more examples (errors shrink by its square root) the row is decided
    shrunk = {k: v / math.sqrt(factor * 1.01) for k, v in noisy.errors.items()}
    assert ledger.verdict(ledger.replace(noisy, errors=shrunk)) == "holds"


def test_standard_errors_known_answers() -> None:
    differences = np.array([1.0, 0.0, 0.0, 1.0])
    assert ledger.paired_error(differences) == pytest.approx(math.sqrt(1 / 3 / 4))
    with_draws = ledger.paired_error(differences, np.array([0.5, 0.7]))
    assert with_draws == pytest.approx(math.sqrt(1 / 12 + 0.02 / 2))
    assert ledger.binomial_error([0.5, 0.5], 100) == pytest.approx(math.sqrt(0.5 / 100))
    assert ledger.trial_error([0.1, 0.1], [0.0, 0.2]) == pytest.approx(math.sqrt(0.01 + 0.01))


def _sweep_row(task: str, order: str, draw: int, fraction: float, correct: str) -> dict:
    accuracy = correct.count("1") / len(correct)
    row = {"task": task, "trial": 0, "order": order, "draw": draw, "fraction": fraction}
    return row | {"accuracy": accuracy, "correct": correct}


def test_perturbation_rows_are_compared_example_by_example() -> None:
    rows = [
        _sweep_row("a", "a", 0, 0.0, "1111"),
        _sweep_row("a", "a", 0, 0.2, "0011"),
        _sweep_row("a", "random", 0, 0.2, "0111"),
        _sweep_row("a", "random", 1, 0.2, "1111"),
        # b: the orders fail on the same examples, so the paired difference has no spread
        _sweep_row("b", "b", 0, 0.2, "0011"),
        _sweep_row("b", "random", 0, 0.2, "0011"),
        _sweep_row("b", "random", 1, 0.2, "0011"),
    ]
    effect = ledger._fig4({"03_perturbation": {"sweeps": rows}})
    assert effect.units == pytest.approx({"a": 37.5, "b": 0.0})
    differences = np.array([0.5, 1.0, 0.0, 0.0])  # mean over the draws minus the own order
    expected = 100 * ledger.paired_error(differences, np.array([0.75, 1.0]))
    assert effect.errors == pytest.approx({"a": expected, "b": 0.0})
    # unpaired, b's two accuracies of 0.5 would carry a standard error of 35 points
    assert 100 * ledger.binomial_error([0.5, 0.5], 4) == pytest.approx(50 / math.sqrt(2))


def _importance_rows(outcomes: dict[tuple[str, str], str]) -> list[dict]:
    """Rows of a sweep at fractions 0 and 0.2: clean everywhere, then each (task, order)'s
    outcomes at 0.2."""
    rows = []
    for (task, order), correct in outcomes.items():
        rows.append(_sweep_row(task, order, 0, 0.0, "1" * len(correct)))
        rows.append(_sweep_row(task, order, 0, 0.2, correct))
    return rows


def test_selectivity_row_pairs_the_two_orders_at_the_largest_fraction() -> None:
    sweeps = [
        _sweep_row("a", "a", 0, 0.0, "1111"),
        _sweep_row("a", "a", 0, 0.2, "0011"),
        {**_sweep_row("a", "a", 0, 0.2, "0000"), "trial": 1},  # another trial: not compared
        _sweep_row("b", "b", 0, 0.2, "0101"),
    ]
    chosen = [
        _sweep_row("a", "selectivity index", 0, 0.0, "1111"),
        _sweep_row("a", "selectivity index", 0, 0.2, "0111"),
        _sweep_row("b", "selectivity index", 0, 0.2, "0101"),
    ]
    found = {"sweeps": sweeps, "selectivity_sweeps": chosen}
    effect = ledger._fig15({"03_perturbation": found})
    assert effect.units == pytest.approx({"a": 25.0, "b": 0.0})
    expected = 100 * ledger.paired_error(np.array([0.0, 1.0, 0.0, 0.0]))
    assert effect.errors == pytest.approx({"a": expected, "b": 0.0})
    # the paper's selectivity curves lie on its random ones: its effect is Fig. 4's
    assert effect.paper == pytest.approx(np.mean([r - o for o, r in paper.FIG4_AT_17.values()]))
    with pytest.raises(ledger.LedgerError, match="b: the predictivity order"):
        ledger._fig15({"03_perturbation": {**found, "sweeps": sweeps[:3]}})
    # swept in a second trial of a, where the two orders tie: the trials' spread is added
    second = {**_sweep_row("a", "selectivity index", 0, 0.2, "0000"), "trial": 1}
    both = ledger._fig15({"03_perturbation": {**found, "selectivity_sweeps": [*chosen, second]}})
    assert both.units["a"] == pytest.approx(12.5)  # (25 + 0) / 2
    within = [ledger.paired_error(np.array([0.0, 1.0, 0.0, 0.0])), 0.0]
    assert both.errors["a"] == pytest.approx(100 * ledger.trial_error(within, [0.25, 0.0]))


def test_fig6_errors_resample_the_examples_of_every_order_together() -> None:
    # a's own order breaks every example, the other order none: no resample changes that
    steady = _importance_rows({("a", "a"): "0000", ("a", "b"): "1111"})
    assert ledger.importance_errors(steady, ["a"]) == {"a": 0.0}
    # outcomes that differ by example: a spread, which shrinks as the square root of the
    # examples once there are enough of them for the z-scores to move smoothly
    mixed = {("a", "a"): "0101", ("a", "b"): "0110", ("a", "c"): "1110"}
    spread = [
        ledger.importance_errors(
            _importance_rows({k: v * copies for k, v in mixed.items()}), ["a"], draws=4000
        )["a"]
        for copies in (16, 256)
    ]
    assert spread[0] > 0 and spread[1] == pytest.approx(spread[0] / 4, rel=0.25)


def test_tab1_errors_combine_the_examples_and_the_trials() -> None:
    results = {
        "00_data_and_models": {"splits": [{"task": "a", "split": "test", "n": 100}]},
        "01_prompt_tuning": {
            "trials": [
                {"task": "a", "seed": 0, "test_accuracy": 80.0},
                {"task": "a", "seed": 1, "test_accuracy": 70.0},
            ]
        },
        "02_neuron_discovery": {
            "table1": [{"task": "a", "prompt tuning": 75.0, "top soft neuron": 70.0}],
            "top_neuron_trials": {"top soft neuron": {"a": [0.8, 0.6]}},
        },
    }
    effect = ledger._tab1(results)
    within = [ledger.binomial_error([0.8, 0.8], 100), ledger.binomial_error([0.6, 0.7], 100)]
    assert effect.errors == pytest.approx({"a": 100 * ledger.trial_error(within, [0.0, -0.1])})


def test_tab1_pairs_the_neuron_and_the_prompt_on_each_example() -> None:
    results = {
        "01_prompt_tuning": {"test_correct": {"a": ["1000", "1011"]}},
        "02_neuron_discovery": {
            "table1": [{"task": "a", "prompt tuning": 50.0, "top soft neuron": 50.0}],
            "top_neuron_correct": {"top soft neuron": {"a": ["1100", "1010"]}},
        },
    }
    # differences per trial: 0,1,0,0 and 0,0,0,-1; per example over trials 0,.5,0,-.5
    # (variance 1/6 over 4 examples), trial means .25 and -.25 (variance 1/8 over 2)
    expected = 100 * math.sqrt((1 / 6) / 4 + (1 / 8) / 2)
    assert ledger._tab1(results).errors == pytest.approx({"a": expected})


def test_chosen_pruned_model_is_paired_with_the_first_prompt_on_each_example() -> None:
    results = _results()
    results["01_prompt_tuning"] = {"test_correct": {"a": ["1100", "0000"]}}
    chosen = [
        {"task": "a", "test_recovered": 75.0, "unpruned_test": 50.0, "test_correct": "1110"},
        {"task": "b", "test_recovered": 86.0, "unpruned_test": 90.0},  # no outcomes kept
    ]
    results["05_pruning"] = {**results["05_pruning"], "chosen": chosen}
    effect = ledger._chosen_accuracy(results)
    assert effect.units == pytest.approx({"a": 25.0, "b": -4.0})
    # trial 0's outcomes, not trial 1's: the model differs on one example of four
    paired = 100 * ledger.paired_error(np.array([0.0, 0.0, 1.0, 0.0]))
    unpaired = 100 * ledger.binomial_error([0.86, 0.9], 5000)  # b: from the split size
    assert effect.errors == pytest.approx({"a": paired, "b": unpaired})


def test_units_to_decide_shrinks_the_interval_past_the_nearer_bar() -> None:
    values = [-4.0, 0.0, 4.0, 8.0]  # mean 2, null 0, smallest 10: "absent" (8 away) is nearer
    units = dict(zip("abcd", values, strict=True))
    effect = ledger.Effect(units, 0.0, 8.0, "points", smallest=10.0)
    mean, low, high = effect.interval()
    assert ledger.verdict(effect) == "undecided"
    needed = ledger.units_to_decide(effect)
    assert needed == math.ceil(4 * ((high - low) / 2 / (10.0 - mean)) ** 2)
    # at that many units with the same spread, the interval lies inside ±10: absent
    scale = np.std(values, ddof=1) / math.sqrt(needed)
    assert mean + stats.t.ppf(0.975, needed - 1) * scale < 10.0


def test_rows_follow_the_rule_and_missing_chapters_are_not_run() -> None:
    rows = ledger.ledger_rows(_results())
    assert len(rows) == len(ledger.CLAIMS)
    by_source = {(c.chapter, c.source): r for c, r in zip(ledger.CLAIMS, rows, strict=True)}
    tab1 = by_source[("02_neuron_discovery", "§4.1, Tab. 1")]
    assert tab1["estimate"] == pytest.approx((-1.0 - 20.0) / 2)  # soft-only: -1 and -20
    assert tab1["null"] == 0.0 and tab1["kind"] == "equivalence" and tab1["smallest"] == 3.0
    assert tab1["paper"] == pytest.approx(
        np.mean(
            [paper.TABLE1_NEURON[t][0] - paper.TABLE1_PROMPT[t][0] for t in paper.TABLE1_PROMPT]
        )
    )
    tab3 = by_source[("02_neuron_discovery", "§5, Tab. 3")]
    assert tab3["estimate"] == pytest.approx(np.mean([24.0, 25.0, 22.0]))
    assert tab3["verdict"] == "holds"
    fig5 = by_source[("04_cross_task_similarity", "§4.3, Fig. 5")]
    assert fig5["units"] == 4 and fig5["estimate"] == pytest.approx(0.3)  # same 0.3/0.4 vs 0.05
    assert fig5["verdict"] == "holds"
    # per type: a and b are sentiment (0.3 - 0.05), c and d topic (0.4 - 0.05)
    assert fig5["per type"] == "sentiment 0.25 (2); topic 0.35 (2)"
    words = by_source[("04_cross_task_similarity", "§4.4")]
    assert words["estimate"] == pytest.approx(0.05) and words["null"] == 0.0
    assert words["kind"] == "equivalence" and words["smallest"] == 0.1
    speed = [r for r in rows if r["claim"] == "The pruned model is faster on a CPU."][0]
    assert speed["estimate"] == pytest.approx(1.8) and speed["verdict"] == "holds"
    kept = [r for r in rows if r["claim"].startswith("Pruning all but")][0]
    assert kept["estimate"] == pytest.approx(-2 / 3) and kept["verdict"] == "holds"
    chosen = by_source[("05_pruning", "§6.1, Tab. 4 (size chosen on dev)")]
    errors = [100 * math.sqrt((0.79 * 0.21 + 0.8 * 0.2) / 5000)]
    errors.append(100 * math.sqrt((0.86 * 0.14 + 0.9 * 0.1) / 5000))
    half = stats.norm.ppf(0.975) * math.sqrt(sum(e**2 for e in errors)) / 2
    assert chosen["estimate"] == pytest.approx(-2.5) and chosen["null"] == 0.0
    assert (chosen["low"], chosen["high"]) == pytest.approx((-2.5 - half, -2.5 + half))
    assert chosen["verdict"] == "undecided"  # -2.5 +- 0.9: neither above nor below -3
    criteria = by_source[("05_pruning", "not in the paper (§6.1)")]
    # magnitude rows only; each interval's half-width back to its standard error
    half = math.sqrt((2 / stats.norm.ppf(0.975)) ** 2 + (3 / stats.norm.ppf(0.975)) ** 2)
    half *= stats.norm.ppf(0.975) / 2
    assert criteria["units"] == 2 and criteria["estimate"] == pytest.approx(3.0)
    assert criteria["low"] == pytest.approx(3.0 - half) and criteria["verdict"] == "holds"
    transfer = by_source[("06_transferability", "§6.2")]
    assert transfer["estimate"] == pytest.approx(-0.7 / 3) and transfer["verdict"] == "fails"
    assert {r["verdict"] for r in rows if r["where"].startswith("03_")} == {"not run"}
    assert all(r["where"].endswith(".html#" + r["where"].split("#")[1]) for r in rows)
    assert kept["interval over"].startswith("the measurement")  # retrained trials, paired
    assert tab3["interval over"].startswith("the measurement")
    assert tab1["interval over"] == "units"  # no per-trial accuracies in these results
    undecided = [r for r in rows if r["verdict"] == "undecided"]
    assert all(r["to decide"].endswith(("units", "examples")) for r in undecided)


def test_transfer_row_ranks_source_prompts_where_the_chapter_has_them() -> None:
    by_task = {"ON": [0.5, 0.5, 0.5], "skill-neuron ON": [0.5, 0.5, 0.5]}
    by_prompt = {"ON": [0.2, 0.4, 0.3], "skill-neuron ON": [0.5, 0.6, 0.6]}
    found = {"tasks": ["a", "b", "c"], "per_target": by_task}
    assert ledger._transfer({"06_transferability": found}).units == {"a": 0, "b": 0, "c": 0}
    found["per_target_by_prompt"] = by_prompt
    effect = ledger._transfer({"06_transferability": found})
    assert effect.units == pytest.approx({"a": 0.3, "b": 0.2, "c": 0.3})


def test_scaled_puts_the_null_at_zero_and_the_smallest_effect_at_one() -> None:
    row = {"estimate": 4.0, "low": 2.0, "high": 6.0, "null": 0.0, "smallest": 8.0}
    assert ledger.scaled(row) == pytest.approx((0.5, 0.25, 0.75))
    margin = {"estimate": -1.0, "low": -2.0, "high": 0.0, "null": 0.0, "smallest": 2.0}
    assert ledger.scaled(margin)[1] == pytest.approx(-1.0)  # at the margin
    none = {"estimate": 1.0, "low": -1.0, "high": 3.0, "null": 0.0, "smallest": 0.0}
    assert ledger.scaled(none) == pytest.approx((1 / 3, -1 / 3, 1.0))


def test_load_results_skips_missing_chapters_and_the_table_links(store) -> None:
    store.write_results("04_cross_task_similarity", _results()["04_cross_task_similarity"])
    found = ledger.load_results(store)
    assert list(found) == ["04_cross_task_similarity"]
    html = ledger.styled(ledger.ledger_rows(found)).to_html()
    assert 'href="04_cross_task_similarity.html#similarity-of-neuron-rankings"' in html


def test_every_claim_links_to_a_heading_of_its_chapter() -> None:
    import re

    import nbformat

    from helpers import runner

    def slug(heading: str) -> str:
        text = re.sub(r"[^\w\s-]", "", heading.lower()).strip()
        return re.sub(r"[\s_]+", "-", text)

    chapters = {nb.stem: nb for nb in runner.notebooks()}
    for claim in ledger.CLAIMS:
        cells = nbformat.read(chapters[claim.chapter], as_version=4).cells
        headings = {
            slug(line.lstrip("#").strip())
            for cell in cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("#")
        }
        assert claim.anchor in headings, (claim.chapter, claim.anchor)


def test_paper_numbers_for_tasks_with_and_without_a_counterpart() -> None:
    assert paper.reported(paper.TABLE1_PROMPT, "rotten_tomatoes", 0) == 91.8  # SST-2's
    assert paper.reported(paper.TABLE4, "amazon", 1, 0) == 87.6  # IMDB's pruned + PT
    assert paper.reported(paper.TABLE4, "sst2", 2) == 1.34  # a Hub task stands for itself
    assert math.isnan(paper.reported(paper.TABLE1_PROMPT, "reviews.csv", 0))


def _ablation_rows() -> list[dict]:
    """One task, trial 0: at the largest share the predictivity set is right on 1 of 4
    examples and two random draws on 3 of 4 each (different examples)."""
    rows = []
    for order, draw, fraction, correct in (
        ("predictivity", 0, 0.0, "1111"),
        ("auroc", 0, 0.0, "1111"),
        ("random", 0, 0.0, "1111"),
        ("random", 1, 0.0, "1111"),
        ("predictivity", 0, 0.03, "1000"),
        ("auroc", 0, 0.03, "1100"),
        ("random", 0, 0.03, "1110"),
        ("random", 1, 0.03, "1101"),
    ):
        accuracy = correct.count("1") / len(correct)
        rows.append(
            {
                "task": "a",
                "trial": 0,
                "order": order,
                "draw": draw,
                "fraction": fraction,
                "accuracy": accuracy,
                "correct": correct,
            }
        )
    return rows


def test_order_effect_pairs_an_order_with_the_random_draws_at_the_largest_share() -> None:
    effect = ledger.order_effect(_ablation_rows(), "predictivity")
    assert effect.units == pytest.approx({"a": 50.0}) and effect.paper is None
    # per example: random draws' mean [1, 1, .5, .5] minus the set's [1, 0, 0, 0]
    differences = np.array([0.0, 1.0, 0.5, 0.5])
    assert effect.errors["a"] == pytest.approx(100 * np.std(differences, ddof=1) / 2)
    assert ledger.order_effect(_ablation_rows(), "auroc").units == pytest.approx({"a": 25.0})
    right = {"correct": "1111", "accuracy": 1.0}
    swaps = [r | right if r["order"] == "predictivity" else r for r in _ablation_rows()]
    found = {"ablation_sweeps": _ablation_rows(), "swap_sweeps": swaps}
    row = ledger.ledger_rows({"07_beyond_the_paper": found})
    ablation, swap = [r for r in row if r["where"].startswith("07_beyond_the_paper")]
    assert ablation["estimate"] == pytest.approx(50.0) and ablation["verdict"] == "holds"
    # class-swapped, the set is right on every example: 1 - 0.75 = -25 points
    assert swap["estimate"] == pytest.approx(-25.0) and "class" in swap["claim"]


def _eligibility_results() -> dict[str, dict]:
    """Tasks a (learnt, neurons above the null), b (learnt, its top neuron at the null)
    and c (dev at chance), 100 dev examples each, two classes."""
    classes = {"negative": 50.0, "positive": 50.0}
    dev = {"a": [80.0, 82.0], "b": [75.0, 77.0], "c": [52.0, 50.0]}
    return {
        "00_data_and_models": {
            "splits": [
                {"task": t, "split": s, "n": 100, **classes} for t in "abc" for s in ("dev", "test")
            ]
        },
        "01_prompt_tuning": {
            "trials": [
                {"task": t, "seed": i, "dev_accuracy": a, "test_accuracy": a}
                for t, accuracies in dev.items()
                for i, a in enumerate(accuracies)
            ],
        },
        "02_neuron_discovery": {
            "null": {
                "a": {"observed": 0.9, "null_max": 0.6},
                "b": {"observed": 0.6, "null_max": 0.65},
                "c": {"observed": 0.7, "null_max": 0.6},
            },
            "table1": [
                {"task": t, "prompt tuning": 80.0, "top neuron": 78.0, "top soft neuron": 78.0}
                for t in "abc"
            ],
            "table3": [],
        },
    }


def test_a_chance_level_unit_is_left_out_and_listed() -> None:
    results = _eligibility_results()
    reasons = ledger.left_out(results)
    # c: mean 51, se = sqrt(mean of p(1-p)/100 + var/2) with var of (.52, .50)
    within = [ledger.binomial_error([a], 100) for a in (0.52, 0.50)]
    low = 51.0 - stats.norm.ppf(0.975) * 100 * ledger.trial_error(within, [0.52, 0.50])
    assert list(reasons["prompt"]) == ["c"] and f"{low:.1f}" in reasons["prompt"]["c"]
    assert list(reasons["neurons"]) == ["c", "b"]  # b's top neuron is at the null
    assert "null" in reasons["neurons"]["b"]
    # a margin of 40 points leaves every task out of rows that need prompts
    assert set(ledger.left_out(results, learnt_margin=40.0)["prompt"]) == {"a", "b", "c"}
    rows = ledger.ledger_rows(results)
    tab1 = [r for r in rows if r["source"] == "§4.1, Tab. 1"][0]
    assert tab1["used"] == "a" and tab1["units"] == 1
    assert "c: prompt not learnt" in tab1["left out"] and "b: top neuron" in tab1["left out"]
    # its size: 1 + (78 - 80) / (80 - 50) for the unit kept
    assert tab1["size"][0] == pytest.approx(1 - 2 / 30)
    empty = ledger.ledger_rows(results, learnt_margin=40.0)
    tab1 = [r for r in empty if r["source"] == "§4.1, Tab. 1"][0]
    assert tab1["verdict"] == "undecided" and tab1["to decide"] == "no unit qualifies"


def test_between_trial_spread_widens_a_sweeps_interval_as_by_hand() -> None:
    rows = []
    for trial, (own, random) in enumerate((("0011", "0111"), ("0111", "0111"))):
        rows += [
            {**_sweep_row("a", "a", 0, 0.2, own), "trial": trial},
            {**_sweep_row("a", "random", 0, 0.2, random), "trial": trial},
        ]
    effect = ledger._fig4({"03_perturbation": {"sweeps": rows}})
    # trial 0: differences 0,1,0,0 (mean .25, paired se sqrt(.25/4)); trial 1: all 0
    within = [math.sqrt(0.25 / 4), 0.0]
    expected = 100 * math.sqrt(np.mean(np.square(within)) + np.var([0.25, 0.0], ddof=1) / 2)
    assert effect.units == pytest.approx({"a": 12.5})
    assert effect.errors == pytest.approx({"a": expected})
    one_trial = ledger._fig4({"03_perturbation": {"sweeps": rows[:2]}})
    # random rows of a trial whose own order was not swept (chapter 07's other scores)
    # are not compared with it
    assert ledger.order_effect([*rows[:2], rows[3]], "a").units == one_trial.units
    assert one_trial.errors["a"] < effect.errors["a"] * 2  # the spread term is what grew


def test_extra_damage_is_a_share_of_the_random_orders_damage() -> None:
    rows = [
        _sweep_row("a", "a", 0, 0.0, "1111"),
        _sweep_row("a", "random", 0, 0.0, "1111"),
        _sweep_row("a", "a", 0, 0.2, "0001"),  # own: 25%
        _sweep_row("a", "random", 0, 0.2, "0011"),  # random: 50%, a damage of 50 points
    ]
    assert ledger.random_damage(rows) == pytest.approx({"a": 50.0})
    results = {"03_perturbation": {"sweeps": rows}}
    effect = ledger._fig4(results)
    size = ledger._fig4_size(results, effect)
    assert size.estimate == pytest.approx(25.0 / 50.0)
    pairs = paper.FIG4_AT_17
    damage = np.mean([paper.TABLE1_PROMPT[t][0] - r for t, (_, r) in pairs.items()])
    assert size.paper == pytest.approx(np.mean([r - o for o, r in pairs.values()]) / damage)


def test_a_replicate_with_another_headline_marks_the_row_unstable() -> None:
    base = {"verdict": "holds", "knife-edge": False}
    rows = [base, base, {**base, "knife-edge": True}, {**base, "verdict": "not run"}]
    replicate = [base, {**base, "verdict": "undecided"}, base, base]
    assert ledger.stability(rows, replicate) == ["stable", "unstable", "knife-edge", "not run"]
    assert ledger.stability(rows) == ["one run", "one run", "knife-edge", "not run"]
