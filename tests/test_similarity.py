"""Rank similarity, overlaps, label words and word selectivity on hand-built inputs."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import data, models, prompt_trials, prompting, similarity, tuning
from helpers.predictivity import neuron_values


def test_identical_rankings_give_one_and_reversed_give_minus_one() -> None:
    a = torch.tensor([[0.9, 0.5, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]])
    assert torch.allclose(similarity.spearman(a, a), torch.ones(2))
    assert torch.allclose(similarity.spearman(a, -a), -torch.ones(2))


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(3, 40)).astype(np.float32)
    b = rng.integers(0, 5, size=(3, 40)).astype(np.float32)
    ours = similarity.spearman(torch.from_numpy(a), torch.from_numpy(b))
    theirs = [stats.spearmanr(a[i], b[i]).statistic for i in range(3)]
    assert np.allclose(ours.numpy(), theirs, atol=1e-6)


def test_constant_ranking_has_zero_similarity() -> None:
    assert float(similarity.spearman(torch.ones(5), torch.arange(5.0))) == 0.0


def test_a_task_with_itself_is_compared_across_different_trials_only() -> None:
    base = torch.arange(12.0).reshape(1, 2, 6)
    trials = torch.cat([base, base, -base])  # trials 0 and 1 agree, trial 2 is reversed
    # pairs (0,1), (1,0): +1; (0,2), (2,0), (1,2), (2,1): -1 -> mean -1/3 in each layer
    same = similarity.layer_similarity(trials, trials, same=True)
    assert torch.allclose(same, torch.full((2,), -1 / 3))
    with pytest.raises(ValueError, match="at least two trials"):
        similarity.layer_similarity(base, base, same=True)
    assert torch.allclose(similarity.layer_similarity(base, base, same=False), torch.ones(2))


def test_similarity_matrix_is_symmetric_with_a_trial_diagonal() -> None:
    gen = torch.Generator().manual_seed(0)
    shared = torch.rand(1, 3, 50, generator=gen)
    rankings = {
        "a": shared + 0.1 * torch.rand(2, 3, 50, generator=gen),
        "b": shared + 0.1 * torch.rand(2, 3, 50, generator=gen),
        "c": torch.rand(2, 3, 50, generator=gen),
    }
    matrix = similarity.similarity_matrix(rankings)
    assert matrix.shape == (3, 3, 3)
    assert torch.equal(matrix, matrix.transpose(0, 1))
    mean = matrix.mean(dim=2)
    assert mean[0, 1] > 0.8 and abs(float(mean[0, 2])) < 0.3
    expected = similarity.layer_similarity(rankings["a"], rankings["a"], same=True)
    assert torch.allclose(matrix[0, 0], expected)


def test_type_summary_groups_pairs_by_task_and_type() -> None:
    names = ["rt", "amazon", "tweets:pn", "tweets:neu", "bbc"]
    types = {"rt": "sentiment", "amazon": "sentiment", "tweets": "sentiment", "bbc": "topic"}
    matrix = torch.full((5, 5), 0.1)
    matrix.fill_diagonal_(0.6)
    matrix[2, 3] = matrix[3, 2] = 0.4  # two subtasks of one task
    for i, j in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]:
        matrix[i, j] = matrix[j, i] = 0.3
    summary = similarity.type_summary(matrix, names, types)
    assert summary["same task"] == pytest.approx((5 * 0.6 + 0.4) / 6)
    assert summary["same type"] == pytest.approx(0.3)
    assert summary["cross type"] == pytest.approx(0.1)


def test_group_curves_average_each_group_and_leave_out_empty_ones() -> None:
    names = ["a", "b", "c"]
    by_layer = torch.zeros(3, 3, 2)
    by_layer[0, 0] = by_layer[1, 1] = by_layer[2, 2] = torch.tensor([0.5, 0.7])
    by_layer[0, 1] = torch.tensor([0.2, 0.4])  # a and b: one type
    by_layer[0, 2] = by_layer[1, 2] = torch.tensor([0.0, 0.1])  # c: another
    curves = similarity.group_curves(by_layer, names, {"a": "x", "b": "x", "c": "y"})
    np.testing.assert_allclose(curves["same task"], [0.5, 0.7])
    np.testing.assert_allclose(curves["same type"], [0.2, 0.4])
    np.testing.assert_allclose(curves["cross type"], [0.0, 0.1])
    alone = similarity.group_curves(by_layer, names, {"a": "x", "b": "y", "c": "z"})
    assert set(alone) == {"same task", "cross type"}  # no two tasks of one type


@pytest.mark.parametrize(
    ("overlap", "total", "size_a", "size_b"),
    [
        (0, 10, 3, 4),
        (2, 10, 3, 4),
        (3, 10, 3, 4),
        (4, 10, 3, 4),
        (5, 1000, 20, 30),
        (12, 46080, 921, 921),
    ],
)
def test_hypergeometric_pvalue_is_the_exact_tail(overlap, total, size_a, size_b) -> None:
    # The tail by exact integer arithmetic: sum over k >= overlap of C(a,k) C(t-a,b-k) / C(t,b).
    exact = Fraction(
        sum(
            math.comb(size_a, k) * math.comb(total - size_a, size_b - k)
            for k in range(max(overlap, 0), min(size_a, size_b) + 1)
        ),
        math.comb(total, size_b),
    )
    ours = similarity.hypergeometric_pvalue(overlap, total, size_a, size_b)
    assert ours == pytest.approx(float(exact), rel=1e-9, abs=1e-300)
    known = {(0, 10, 3, 4): 1.0, (2, 10, 3, 4): 1 / 3, (3, 10, 3, 4): 1 / 30, (4, 10, 3, 4): 0.0}
    if (overlap, total, size_a, size_b) in known:
        assert ours == pytest.approx(known[overlap, total, size_a, size_b])
    with pytest.raises(ValueError, match="must lie in"):
        similarity.hypergeometric_pvalue(1, 10, 11, 3)


def test_overlap_rows_report_chance_and_significance() -> None:
    a = torch.zeros(4, 25, dtype=torch.bool)
    b = torch.zeros(4, 25, dtype=torch.bool)
    a[0, :10] = True
    b[0, :10] = True
    (row,) = similarity.overlap_rows({"a": a, "b": b})
    assert (row["shared"], row["jaccard"]) == (10, 1.0)
    assert row["expected by chance"] == pytest.approx(1.0)
    assert row["p_value"] == pytest.approx(stats.hypergeom.sf(9, 100, 10, 10))


def test_task_tree_joins_the_most_similar_pair_first() -> None:
    matrix = torch.tensor([[1.0, 0.2, 0.8], [0.2, 1.0, 0.1], [0.8, 0.1, 1.0]])
    tree = similarity.task_tree(matrix)
    assert sorted(tree[0, :2].astype(int).tolist()) == [0, 2]
    assert tree[0, 2] == pytest.approx(0.2)


def test_vocabulary_words_are_single_tokens_of_the_backbone(tiny: models.Backbone) -> None:
    words = similarity.vocabulary_words(tiny)
    assert ("movie", tiny.tokenizer.convert_tokens_to_ids("movie")) in [(w, i) for i, w in words]
    assert all(w not in {".", "a", "an", "<pad>"} for _, w in words)


def test_random_label_words_are_distinct_valid_and_seeded() -> None:
    tiny = models.tiny_backbone("llama")
    words = similarity.random_label_words(tiny, 3, seed=4)
    assert len(set(words)) == 3
    assert words == similarity.random_label_words(tiny, 3, seed=4)
    data.verbalizer_ids(tiny.tokenizer, words, leading_space=True)
    with pytest.raises(prompting.PromptError, match="whole-word tokens"):
        similarity.random_label_words(tiny, 1000, seed=0)


def test_label_word_robustness_uses_seeds_the_default_trials_do_not(store) -> None:
    from test_predictivity import _probe_task

    from helpers import predictivity

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, three_classes=False)
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    train = tuning.TrainConfig(learning_rate=0.1, batch_size=4, max_steps=2, eval_every=1)
    trained = prompt_trials.run_trials(tiny, task, config, train, [0, 1], store, False)
    probe_config = predictivity.ProbeConfig(baseline_size=20, batch_size=8)
    models_ = [prompt_trials.load_prompt(a, tiny) for a in trained]
    probes = predictivity.probe_trials(models_, trained, task, probe_config, store)
    with pytest.raises(ValueError, match=r"seeds \[1\] are also default trials' seeds \[0, 1\]"):
        similarity.label_word_robustness(tiny, task, trained, probes, [1, 2], store)
    rows = similarity.label_word_robustness(tiny, task, trained, probes, [5], store, max_steps=3)
    (row,) = rows
    assert row["seed"] == 5 and row["label words"] == "/".join(
        similarity.random_label_words(tiny, 2, seed=5)
    )
    (retrained,) = prompt_trials.run_trials(
        tiny,
        task,
        replace(config, label_words=tuple(row["label words"].split("/"))),
        replace(train, max_steps=3),
        [5],
        store,
        False,
    )
    assert row["dev accuracy"] == pytest.approx(100 * retrained.json("metrics")["dev_accuracy"])
    assert retrained.json("config")["train"]["max_steps"] == 3
    assert row["default dev accuracy"] == pytest.approx(
        100 * np.mean([a.json("metrics")["dev_accuracy"] for a in trained])
    )
    ours = similarity.trial_predictivity(probes, "binary")
    assert row["ρ default vs default"] == pytest.approx(
        float(similarity.layer_similarity(ours, ours, same=True).mean())
    )


def test_weight_selectivity_finds_the_word_a_neuron_is_built_from(tiny: models.Backbone) -> None:
    word = "profit"
    index = tiny.tokenizer.convert_tokens_to_ids(word)
    embedding = tiny.model.get_input_embeddings().weight.detach()[index]
    module = tiny.ffn_inputs(1)[0]
    with torch.no_grad():
        if isinstance(module, torch.nn.Linear):
            module.weight[5] = embedding
        else:  # GPT-2's Conv1D stores the transpose
            module.weight[:, 5] = embedding
    found = similarity.weight_selectivity(tiny, layer=1, neuron=5, k=3)
    assert found["top"][0] == word
    vocabulary = {w for _, w in similarity.vocabulary_words(tiny)}
    assert set(found["top"]) | set(found["bottom"]) <= vocabulary


def test_activation_selectivity_orders_words_by_the_neuron_value() -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=4))
    found = similarity.activation_selectivity(model, (1, 0, 7), k=2, sample=None)
    words = [w for _, w in similarity.vocabulary_words(tiny)]
    values = neuron_values(model, data.dataset(words, [0] * len(words), ("a", "b")), [(1, 0, 7)])
    order = values[:, 0].argsort(descending=True, stable=True)
    assert found["top"] == [words[int(i)] for i in order[:2]]
    assert found["bottom"] == [words[int(i)] for i in order.flip(0)[:2]]


def test_by_task_averages_subtask_views() -> None:
    names = ["a", "b:pn", "b:neu"]
    matrix = torch.tensor([[1.0, 0.2, 0.4], [0.2, 0.6, 0.5], [0.4, 0.5, 0.8]])
    tasks, out = similarity.by_task(matrix, names)
    assert tasks == ["a", "b"]
    assert torch.allclose(out, torch.tensor([[1.0, 0.3], [0.3, 0.6]]))


def test_word_rows_name_each_views_top_neuron_and_its_words(store) -> None:
    from helpers import predictivity

    tiny = models.tiny_backbone("llama")
    names = ("negative", "neutral", "positive")
    config = prompting.PromptConfig(length=2, max_text_tokens=8, label_words=names)
    model = prompting.SoftPromptModel(tiny, config, seed=0)
    texts = [
        f"{w} {'very ' * (i % 3)}" for i, w in enumerate(["good fun", "bad film", "a film"] * 8)
    ]
    split = data.dataset(texts, [i % 3 for i in range(24)], names)
    task = data.TaskData(data.task_spec("cf_tweets"), split, split, split, "k")
    probe = predictivity.probe(model, task, predictivity.ProbeConfig(12, batch_size=8), store, {})
    rows = similarity.word_rows(model, probe, "mine", None, k=2, activation_words=None)
    assert [r["task"] for r in rows] == ["mine:pn"] * 4 + ["mine:neu"] * 4
    assert [r["measure"] for r in rows[:4]] == [
        "cosine top",
        "cosine bottom",
        "activation top",
        "activation bottom",
    ]
    best = predictivity.top_neuron([probe], "neu")[0]
    assert rows[4]["neuron"] == f"L{best['layer']}.{best['neuron']}"
    cosine = similarity.weight_selectivity(tiny, best["layer"], best["neuron"], 2)
    assert rows[4]["words"] == ", ".join(cosine["top"])


def test_task_similarity_averages_views_and_follows_the_tasks_order() -> None:
    names = ["a", "b:pn", "b:neu"]
    matrix = torch.tensor([[1.0, 0.2, 0.4], [0.2, 0.6, 0.5], [0.4, 0.5, 0.8]])
    out = similarity.task_similarity(matrix, names, ["b", "a"])
    assert torch.allclose(out, torch.tensor([[0.6, 0.3], [0.3, 1.0]]))
    with pytest.raises(similarity.SimilarityError, match=r"no similarity for tasks \['c'\]"):
        similarity.task_similarity(matrix, names, ["a", "c"])


def test_averaged_similarity_ranks_the_trial_means_and_jackknifes_over_trials() -> None:
    generator = torch.Generator().manual_seed(0)
    ours = torch.rand(3, 2, 50, generator=generator)
    # three copies of one ranking: the mean is that ranking, every leave-one-out too
    same = ours.mean(0, keepdim=True).expand(3, -1, -1)
    rho, se = similarity.averaged_similarity(ours, same)
    assert rho == pytest.approx(1.0) and se == pytest.approx(0.0, abs=1e-9)
    reversed_ = -ours
    assert similarity.averaged_similarity(ours, reversed_)[0] == pytest.approx(-1.0)
    # one trial: no jackknife
    assert math.isnan(similarity.averaged_similarity(ours, ours[:1])[1])
    # by hand: the leave-one-out values' spread, times (k - 1) / k
    theirs = torch.rand(3, 2, 50, generator=generator)
    left = [
        similarity.averaged_similarity(ours, theirs[[j for j in range(3) if j != i]])[0]
        for i in range(3)
    ]
    expected = math.sqrt(2 / 3 * sum((v - sum(left) / 3) ** 2 for v in left))
    assert similarity.averaged_similarity(ours, theirs)[1] == pytest.approx(expected)
