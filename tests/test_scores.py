"""Known answers for the other neuron scores and the diagnostics of a selected set."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import scores
from helpers.activations import NeuronError


def _planted(n: int = 200, layers: int = 3, prompt: int = 2, ffn: int = 16, seed: int = 0):
    """Noise activations with one planted neuron (layer 1, position 1, index 5) that
    follows the label, and labels half 0, half 1."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    acts = torch.randn(n, layers, prompt, ffn, generator=generator)
    acts[:, 1, 1, 5] = labels * 2.0 + 0.3 * torch.randn(n, generator=generator)
    return acts, labels


def test_auroc_matches_scikit_learn_and_is_two_sided() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1] * 20)
    acts = torch.randn(40, 5, generator=generator).round(decimals=1)  # ties included
    found = scores.auroc(acts, labels)
    for j in range(5):
        area = roc_auc_score(labels.numpy(), acts[:, j].numpy())
        assert found[j].item() == pytest.approx(max(area, 1 - area), abs=1e-6)
    flipped = scores.auroc(-acts, labels)
    assert torch.allclose(found, flipped)
    assert scores.auroc(torch.ones(40, 1), labels).item() == pytest.approx(0.5)


def test_correlation_matches_numpy_and_a_constant_neuron_scores_zero() -> None:
    generator = torch.Generator().manual_seed(2)
    acts, target = torch.randn(50, 4, generator=generator), torch.randn(50, generator=generator)
    acts[:, 3] = 7.0
    found = scores.correlation(acts, target)
    for j in range(3):
        r = np.corrcoef(acts[:, j].numpy(), target.numpy())[0, 1]
        assert found[j].item() == pytest.approx(abs(r), abs=1e-5)
    assert found[3].item() == 0.0


@pytest.mark.parametrize("score", scores.SCORES)
def test_a_planted_neuron_is_ranked_first_by_every_score(score: str) -> None:
    acts, labels = _planted()
    confidence = acts[:, 1, 1, 5] * 1.5 - 1  # the model's confidence follows that neuron
    gradient = torch.zeros_like(acts)
    gradient[:, 1, 1, 5] = 1.0  # and only that neuron moves the output
    ranked = scores.score_neurons(score, acts, labels, confidence, 100, gradient)  # type: ignore[arg-type]
    assert ranked.shape == (3, 16)
    assert divmod(int(ranked.argmax()), 16) == (1, 5)


def test_the_l1_probe_is_sparse_and_unknown_scores_are_refused() -> None:
    acts, labels = _planted()
    weights = scores.score_neurons("l1_probe", acts, labels, keep=3)
    assert 3 <= int((weights > 0).sum()) < weights.numel() // 4
    assert int((scores.l1_probe(acts.flatten(1), labels, keep=1, steps=1) > 0).sum()) >= 1
    with pytest.raises(ValueError, match="score.*'mean_ablation'"):
        scores.score_neurons("mean_ablation", acts, labels)  # type: ignore[arg-type]
    with pytest.raises(NeuronError, match="log-odds gradients per example"):
        scores.score_neurons("attribution", acts, labels)
    with pytest.raises(NeuronError, match="confidence per example"):
        scores.score_neurons("confidence", acts, labels)
    with pytest.raises(NeuronError, match="both 0 and 1"):
        scores.auroc(acts, torch.zeros(len(acts)))
    with pytest.raises(NeuronError, match="keep must be >= 1, got 0"):
        scores.l1_probe(acts.flatten(1), labels, keep=0)


def test_agreement_has_known_values() -> None:
    score = torch.tensor([[0.5, 0.9, 0.8], [0.7, 0.1, 0.2]])
    same = scores.agreement(score, score * 2, 3)
    assert same == {"spearman": pytest.approx(1.0), "top_overlap": 1.0}
    reverse = scores.agreement(score, -score, 2)
    assert reverse["spearman"] == pytest.approx(-1.0) and reverse["top_overlap"] == 0.0
    shifted = torch.tensor([[0.5, 0.9, 0.1], [0.7, 0.8, 0.2]])  # top 2: (0,1),(1,1) vs (0,1),(0,2)
    assert scores.agreement(score, shifted, 2)["top_overlap"] == 0.5
    rows = scores.agreement_rows({"a": score, "b": score, "c": -score}, 2)
    assert [(r["score"], r["other"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]


def test_view_sides_and_log_odds_for_every_kind_of_view() -> None:
    three = ["negative", "neutral", "positive"]
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert scores.view_sides("pn", three) == ([0], [2])
    assert scores.view_sides("neu", three) == ([0, 2], [1])
    assert scores.log_odds(logits, "pn", three).item() == pytest.approx(2.0)
    rest = torch.logsumexp(torch.tensor([1.0, 3.0]), 0).item()
    assert scores.log_odds(logits, "neu", three).item() == pytest.approx(2.0 - rest)
    four = ["a", "b", "c", "d"]
    assert scores.view_sides("c_vs_rest", four) == ([0, 1, 3], [2])
    assert scores.log_odds(torch.tensor([[0.0, 4.0]]), "binary", ["n", "p"]).item() == 4.0
    with pytest.raises(NeuronError, match="view 'pn' is not a binary view of the classes"):
        scores.view_sides("pn", four)


def test_scores_of_a_prompt_agree_with_its_probe_and_its_predictions(store) -> None:
    """On a tiny model: the activation matrix gives the probe's predictivity exactly, and
    the label logits give the prompt's own predictions."""
    from helpers import models, predictivity, prompting
    from tests.test_predictivity import _probe_task

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, True)
    words = ("negative", "neutral", "positive")
    model = prompting.SoftPromptModel(
        tiny, prompting.PromptConfig(length=2, max_text_tokens=8, label_words=words)
    )
    probe = predictivity.probe(model, task, predictivity.ProbeConfig(20, batch_size=7), store, {})
    mask = predictivity.scored_mask(model)
    acts = scores.neuron_matrix(model, task.dev, mask, batch_size=4)
    assert acts.shape == (len(task.dev), tiny.n_layers, int(mask.sum()), tiny.ffn_width)
    views = predictivity.binary_views(task.dev, 3)
    for view, (rows, labels) in views.items():
        baseline = probe.tensors()[f"{view}/baseline"][:, mask]
        found = scores.threshold_predictivity(acts[rows], labels, baseline)
        expected = predictivity.dev_predictivity([probe], view, mask)
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-6, check_dtype=False)
    logits = scores.label_logits(model, task.dev, batch_size=5)
    assert (logits.argmax(1).numpy() == model.evaluate(task.dev, 8).predictions).all()
    found = scores.view_scores(acts, logits, views, words, keep=2)
    assert list(found) == ["auroc", "l1_probe", "confidence"]  # no gradients: no attribution
    assert all(len(v) == 2 for v in found.values())
    assert found["auroc"][0].shape == (tiny.n_layers, tiny.ffn_width)
    # the predictivity a causal test ranks by is the probe's own, per view
    own = scores.own_predictivity(probe, list(views), mask)
    assert list(own) == [scores.PREDICTIVITY] and len(own[scores.PREDICTIVITY]) == 2
    torch.testing.assert_close(
        own[scores.PREDICTIVITY][1], predictivity.dev_predictivity([probe], "neu", mask)
    )
    inputs = scores.sweep_inputs(model, "prompt-key", probe, task, task.train, {**own, **found})
    assert inputs["own"] == scores.PREDICTIVITY and inputs["split"] is task.test
    assert set(inputs["orders"]) == {scores.PREDICTIVITY, "auroc", "l1_probe", "confidence"}
    assert inputs["identity"]["scores"] == scores.digest({**own, **found})
    assert inputs["upstream"] == ["prompt-key", probe.key, task.key]
    chosen = inputs["orders"][scores.PREDICTIVITY](0.5)
    assert chosen.shape == (tiny.n_layers, tiny.ffn_width) and chosen.any()


def test_redundancy_finds_a_copy_outside_the_set_and_none_for_a_unique_neuron() -> None:
    generator = torch.Generator().manual_seed(3)
    acts = torch.randn(300, 6, generator=generator)
    acts[:, 4] = -2 * acts[:, 0] + 1  # an exact (negated) copy of neuron 0, unselected
    selected = torch.tensor([True, True, False, False, False, False])
    found = scores.redundancy(acts, selected, chunk=2)
    assert found[0].item() == pytest.approx(1.0, abs=1e-6)
    assert found[1].item() < 0.3  # independent noise: small correlations only


def test_bootstrap_stability_is_one_for_a_clear_signal_and_low_for_noise() -> None:
    acts, labels = _planted(n=200)
    flat = acts.flatten(1)

    def rank_planted(rows: torch.Tensor) -> torch.Tensor:
        return scores.auroc(flat[rows], labels[rows]).reshape(1, -1)

    assert scores.bootstrap_stability(rank_planted, 200, 1, draws=5) == [1.0] * 5
    noise = torch.randn(200, 96, generator=torch.Generator().manual_seed(4))

    def rank_noise(rows: torch.Tensor) -> torch.Tensor:
        return scores.auroc(noise[rows], labels[rows]).reshape(1, -1)

    assert np.mean(scores.bootstrap_stability(rank_noise, 200, 5, draws=5)) < 0.5


def test_diagnose_finds_a_copy_of_the_top_neuron_and_a_stable_top_set() -> None:
    """The label-following neuron (layer 1, index 5) has an exact copy (layer 2, index 7):
    the top neuron is the first of the two, its closest outsider is its copy, and every
    resample picks it again."""
    acts, labels = _planted(n=120)
    signal = labels * 2.0 + 0.3 * torch.randn(120, generator=torch.Generator().manual_seed(5))
    acts[:, 1, :, 5] = signal[:, None]
    acts[:, 2, :, 7] = signal[:, None]
    auroc = scores.over_positions(scores.auroc(acts, labels))
    baseline = acts[:60].mean(dim=0)
    ranked = {"predictivity": scores.threshold_predictivity(acts, labels, baseline), "auroc": auroc}
    ranked |= {"l1_probe": auroc, "confidence": auroc, "attribution": auroc}
    gradient = torch.zeros_like(acts)
    gradient[:, 1, :, 5] = 1.0  # only the planted neuron moves the output
    rows = scores.diagnose(
        acts, labels, baseline, ranked, 1, 4, confidence=signal, gradient=gradient
    )
    assert [r["score"] for r in rows] == list(ranked)
    assert rows[0]["closest |r|"] == pytest.approx(1.0, abs=1e-6) and rows[0]["redundant"] == 1.0
    stability = {r["score"]: r["stability"] for r in rows}
    assert math.isnan(stability.pop("l1_probe"))  # refit per resample: not recomputed
    assert stability == dict.fromkeys(["predictivity", "auroc", "confidence", "attribution"], 1.0)
    plain = scores.diagnose(acts, labels, baseline, ranked, 1, 4)  # no confidence, no gradient
    assert [math.isnan(r["stability"]) for r in plain] == [False, False, True, True, True]


def test_carry_over_to_the_same_data_agrees_fully_and_needs_a_ranking_per_view() -> None:
    from helpers import models, predictivity, prompting
    from tests.test_predictivity import _probe_task

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, False)
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    mask = predictivity.scored_mask(model)
    views = predictivity.binary_views(task.dev, 2)
    rows_, labels = views["binary"]
    acts = scores.neuron_matrix(model, task.dev, mask, batch_size=4)
    own = [scores.over_positions(scores.auroc(acts[rows_], labels))]
    found = scores.carry_over(model, task.dev, views, own, own, mask, 5, batch_size=3)
    assert [(r["view"], r["versus"]) for r in found] == [
        ("binary", "own data"),
        ("binary", "target's prompt"),
    ]
    assert all(r["spearman"] == pytest.approx(1.0) and r["top_overlap"] == 1.0 for r in found)
    with pytest.raises(NeuronError, match="one ranking per view of the split: 1 views, 2 and 1"):
        scores.carry_over(model, task.dev, views, own * 2, own, mask, 5)


def test_summary_rows_count_the_neurons_each_score_keeps() -> None:
    value = torch.tensor([[0.0, 0.2], [0.0, 0.9]])
    rows = scores.summary_rows({"t": {"l1_probe": [value]}}, {"t": {"binary": None}})
    assert rows == [
        {
            "task": "t",
            "view": "binary",
            "score": "l1_probe",
            "max": pytest.approx(0.9),
            "neurons above 0": 2,
        }
    ]


def test_the_l1_probe_is_repeatable_and_the_digest_follows_the_values() -> None:
    acts, labels = _planted(n=80)
    first = scores.l1_probe(acts.flatten(1), labels, keep=5)
    assert torch.equal(first, scores.l1_probe(acts.flatten(1), labels, keep=5))
    value = torch.rand(2, 3)
    assert scores.digest({"a": [value]}) == scores.digest({"a": [value.clone()]})
    assert scores.digest({"a": [value]}) != scores.digest({"a": [value + 1e-3]})
    assert scores.digest({"a": [value]}) != scores.digest({"b": [value]})


def test_log_odds_gradients_match_a_finite_difference() -> None:
    """Adding ε to one neuron at one scored position changes the log-odds by ε times
    its gradient, example by example (the text cached first, so only the prompt
    positions run under the hook)."""
    from helpers import engine, models, predictivity, prompting
    from tests.test_predictivity import _probe_task

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, False)
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    views = predictivity.binary_views(task.dev, 2)
    names = task.label_names
    caches = engine.TextCaches()
    mask = predictivity.scored_mask(model)
    gradients = scores.log_odds_gradients(model, task.dev, views, names, mask, 4, caches)["binary"]
    assert gradients.shape == (len(task.dev), tiny.n_layers, model.n_scored, tiny.ffn_width)
    layer, position = 0, model.n_scored - 1
    neuron = int(gradients[:, layer, position].abs().mean(0).argmax())
    eps, batches = 1e-2, list(caches.batches(model, task.dev, 4))

    def nudge(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, position, neuron] += eps
        return x

    base, moved = torch.empty(len(task.dev)), torch.empty(len(task.dev))
    with torch.no_grad():
        for batch, cache in batches:
            base[batch.rows] = scores.log_odds(model(batch, cache), "binary", names)
            with engine.site_hooks(tiny, {layer: nudge}):
                moved[batch.rows] = scores.log_odds(model(batch, cache), "binary", names)
    expected = gradients[:, layer, position, neuron]
    torch.testing.assert_close((moved - base) / eps, expected, rtol=0.05, atol=1e-4)
    acts = scores.neuron_matrix(model, task.dev, mask, 4, caches)
    found = scores.attribution(acts, gradients)
    shifted = acts[:, layer, :, neuron] - acts[:, layer, :, neuron].mean(0)
    manual = (gradients[:, layer, :, neuron] * shifted).sum(1).abs().mean()
    assert found[layer, neuron].item() == pytest.approx(manual.item(), rel=1e-5)


def test_standing_ranks_a_score_and_decides_whether_it_is_among_the_best() -> None:
    means = {"predictivity": 8.0, "auroc": 2.0, "attribution": 20.0}
    found = scores.standing(means, {"predictivity": 11.0, "auroc": 4.0, "attribution": 24.0})
    assert found == {"best": "attribution", "rank": 2, "among_best": "not among"}
    close = scores.standing(means, {"predictivity": 21.0, "auroc": 4.0, "attribution": 24.0})
    assert close["among_best"] == "among"
    series = scores.standing(pd.Series(means), pd.Series(means) + 3.0)
    assert series == {"best": "attribution", "rank": 2, "among_best": "not among"}
    assert type(series["rank"]) is int  # JSON keeps it a number
    alone = scores.standing(means, means, "attribution")
    assert alone == {"best": "attribution", "rank": 1, "among_best": "among"}
    with pytest.raises(NeuronError, match="'mine' has no gap"):
        scores.standing(means, means, "mine")
