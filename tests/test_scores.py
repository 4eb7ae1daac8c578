"""Known answers for the other neuron scores and the diagnostics of a selected set."""

from __future__ import annotations

import numpy as np
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
    ranked = scores.score_neurons(score, acts, labels, confidence)  # type: ignore[arg-type]
    assert ranked.shape == (3, 16)
    assert divmod(int(ranked.argmax()), 16) == (1, 5)


def test_the_l1_probe_is_sparse_and_unknown_scores_are_refused() -> None:
    acts, labels = _planted()
    weights = scores.score_neurons("l1_probe", acts, labels, strength=0.05)
    assert int((weights > 0).sum()) < weights.numel() // 4
    with pytest.raises(ValueError, match="score.*'mean_ablation'"):
        scores.score_neurons("mean_ablation", acts, labels)  # type: ignore[arg-type]
    with pytest.raises(NeuronError, match="confidence per example"):
        scores.score_neurons("confidence", acts, labels)
    with pytest.raises(NeuronError, match="both 0 and 1"):
        scores.auroc(acts, torch.zeros(len(acts)))
    with pytest.raises(NeuronError, match="strength must be > 0, got 0"):
        scores.l1_probe(acts.flatten(1), labels, strength=0)


def test_top_breaks_ties_by_index_and_agreement_has_known_values() -> None:
    score = torch.tensor([[0.5, 0.9, 0.9], [0.9, 0.1, 0.2]])
    assert scores.top(score, 2).tolist() == [[False, True, True], [False, False, False]]
    with pytest.raises(NeuronError, match=r"count must be in 1..6, got 7"):
        scores.top(score, 7)
    same = scores.agreement(score, score * 2, 3)
    assert same == {"spearman": pytest.approx(1.0), "top_overlap": 1.0}
    reverse = scores.agreement(score, -score, 2)
    assert reverse["spearman"] < -0.9 and reverse["top_overlap"] == 0.0
    rows = scores.agreement_rows({"a": score, "b": score, "c": -score}, 2)
    assert [(r["score"], r["other"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]


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
