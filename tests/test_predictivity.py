"""Predictivity and skill-neuron selection on hand-built accuracies."""

from __future__ import annotations

import pytest
import torch

from helpers import engine, predictivity


def test_predictivity_known_answers() -> None:
    acc = torch.full((2, 1, 3, 4), 0.5)  # [trial, layer, prompt, ffn]
    acc[:, 0, 1, 0] = 1.0  # equal to the label at one position
    acc[:, 0, 2, 1] = 0.0  # the label flipped: just as predictive
    acc[0, 0, 0, 2], acc[1, 0, 0, 2] = 0.8, 0.6  # trials disagree: mean of maxima
    scores = predictivity.predictivity(acc)
    torch.testing.assert_close(scores[0], torch.tensor([1.0, 1.0, 0.7, 0.5]))


def test_flipping_labels_changes_nothing() -> None:
    acc = torch.rand(3, 2, 4, 5)
    torch.testing.assert_close(predictivity.predictivity(acc), predictivity.predictivity(1 - acc))


def test_position_mask_excludes_the_prediction_position_for_soft_only() -> None:
    decoder = predictivity.position_mask(6, 5, 4, "decoder", "soft")
    assert decoder.tolist() == [True, True, True, True, False, False]
    no_template = predictivity.position_mask(4, 3, 4, "decoder", "soft")
    assert no_template.tolist() == [True, True, True, False]
    encoder = predictivity.position_mask(5, 0, 4, "encoder", "soft")
    assert encoder.tolist() == [False, True, True, True, True]
    assert predictivity.position_mask(5, 0, 4, "encoder", "prompt").all()
    acc = torch.full((1, 1, 4, 1), 0.5)
    acc[0, 0, 3, 0] = 0.9  # only the prediction position is predictive
    assert float(predictivity.predictivity(acc, no_template)[0, 0]) == 0.5


def test_per_layer_selection_returns_exactly_the_count_per_layer() -> None:
    scores = torch.rand(4, 50)
    mask = predictivity.select(scores, fraction=0.1)
    assert mask.sum(dim=1).tolist() == [5, 5, 5, 5]
    for layer in range(4):
        assert scores[layer][mask[layer]].min() >= scores[layer][~mask[layer]].max()
    assert predictivity.select(scores, count=7).sum(dim=1).tolist() == [7] * 4
    # 2% of 50 rounds down to none; a positive fraction keeps at least one per layer
    assert predictivity.select(scores, fraction=0.02).sum(dim=1).tolist() == [1] * 4
    assert predictivity.select(scores, fraction=0.0).sum() == 0


def test_global_selection_takes_the_best_anywhere() -> None:
    scores = torch.zeros(3, 10)
    scores[2, :6] = 1.0
    mask = predictivity.select(scores, count=5, selection="global")
    assert mask.sum() == 5 and mask[2].sum() == 5
    assert predictivity.select(scores, fraction=0.2, selection="global").sum() == 6
    with pytest.raises(
        ValueError, match="selection must be one of 'per_layer', 'global'; got 'all'"
    ):
        predictivity.select(scores, count=1, selection="all")
    with pytest.raises(ValueError, match="exactly one"):
        predictivity.select(scores)


def test_multiclass_selection_takes_equal_unique_shares() -> None:
    first = torch.tensor([[9.0, 8.0, 7.0, 1.0, 0.0, 0.0]])
    second = torch.tensor([[9.0, 0.0, 0.0, 8.0, 7.0, 1.0]])
    mask = predictivity.select_multiclass([first, second], count=2)
    # subtask 1 takes 0, subtask 2 skips 0 and takes 3, then 1 and 4
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 3, 4]


def test_ranking_orders_best_first() -> None:
    scores = torch.tensor([[0.5, 0.9], [0.7, 0.6]])
    assert [(layer, i) for layer, i, _ in predictivity.ranking(scores)] == [
        (0, 1),
        (1, 0),
        (1, 1),
        (0, 0),
    ]


def test_jaccard_known_answers() -> None:
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert predictivity.jaccard(a, b) == 1 / 3
    assert predictivity.jaccard(a, a) == 1.0
    assert predictivity.jaccard(a, ~a) == 0.0


def _probe_task(tiny, three_classes: bool):
    from helpers import data

    names = ("negative", "neutral", "positive") if three_classes else ("negative", "positive")
    words = ["a good movie", "the worst film", "great fun", "boring and bad", "loved it", "a film"]
    texts = [f"{words[i % 6]} {'very ' * (i % 4)}{'and fun' if i % 5 else ''}" for i in range(60)]
    labels = [i % len(names) for i in range(60)]
    split = data.dataset(texts, labels, names)
    spec = data.task_spec("cf_tweets" if three_classes else "rotten_tomatoes")
    return data.TaskData(
        spec, split.select(range(30)), split.select(range(30, 45)), split.select(range(45, 60)), "k"
    )


@pytest.mark.parametrize("three_classes", [False, True])
def test_probe_stores_statistics_per_binary_view(three_classes: bool, store) -> None:
    from helpers import models, prompting

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, three_classes)
    words = ("negative", "neutral", "positive") if three_classes else ("negative", "positive")
    config = prompting.PromptConfig(length=2, max_text_tokens=8, label_words=words)
    runs = []
    for seed in range(2):
        model = prompting.SoftPromptModel(tiny, config, seed=seed)
        probe_config = predictivity.ProbeConfig(baseline_size=20, permutations=4, batch_size=8)
        runs.append(predictivity.probe(model, task, probe_config, store, {"seed": seed}))
    expected = ["pn", "neu"] if three_classes else ["binary"]
    assert predictivity.views(runs[0]) == expected
    tensors = runs[0].tensors()
    assert tensors[f"{expected[0]}/dev"].shape == (tiny.n_layers, 2, tiny.ffn_width)
    assert tensors[f"{expected[0]}/null_top"].shape == (4,)
    scores = predictivity.task_predictivity(runs)
    assert set(scores) == set(expected)
    assert all(((s >= 0.5) & (s <= 1.0)).all() for s in scores.values())
    mask = predictivity.skill_neurons(runs, count=4)
    assert mask.sum(dim=1).tolist() == [4, 4]
    rows = predictivity.top_neuron(runs, expected[0])
    assert len(rows) == 2 and all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert 0.0 <= predictivity.stability(runs, expected[0], count=10) <= 1.0
    again = predictivity.probe(
        prompting.SoftPromptModel(tiny, config, seed=0),
        task,
        predictivity.ProbeConfig(baseline_size=20, permutations=4, batch_size=8),
        store,
        {"seed": 0},
    )
    assert again.key == runs[0].key
    dev_only = predictivity.probe(
        prompting.SoftPromptModel(tiny, config, seed=0),
        task,
        predictivity.ProbeConfig(baseline_size=20, permutations=4, batch_size=8, on_test=False),
        store,
        {"seed": 0},
    )
    assert dev_only.key != runs[0].key
    assert set(dev_only.tensors()) == set(tensors) - {f"{view}/test" for view in expected}
    torch.testing.assert_close(
        dev_only.tensors()[f"{expected[0]}/dev"], tensors[f"{expected[0]}/dev"]
    )
    # a replicate's null seed draws other permutations of the same labels: another null,
    # the same real statistics
    shifted = predictivity.probe(
        prompting.SoftPromptModel(tiny, config, seed=0),
        task,
        predictivity.ProbeConfig(baseline_size=20, permutations=4, batch_size=8, null_seed=1),
        store,
        {"seed": 0},
    )
    assert shifted.key != runs[0].key
    view = expected[0]
    assert not torch.equal(shifted.tensors()[f"{view}/null_top"], tensors[f"{view}/null_top"])
    torch.testing.assert_close(shifted.tensors()[f"{view}/dev"], tensors[f"{view}/dev"])


def test_top_neuron_is_oriented_on_dev() -> None:
    class Fake:
        def __init__(self, dev, test):
            self._t = {"binary/dev": dev, "binary/test": test}

        def tensors(self):
            return self._t

        def json(self, name):
            return {"dev_examples": {"binary": 10}}[name]

    dev = torch.full((1, 2, 3), 0.5)  # [layer, prompt, ffn]
    test = torch.full((1, 2, 3), 0.5)
    dev[0, 1, 2], test[0, 1, 2] = 0.1, 0.2  # inhibitory on dev: predicts the other class
    rows = predictivity.top_neuron([Fake(dev, test)], "binary")
    assert (rows[0]["layer"], rows[0]["neuron"], rows[0]["position"]) == (0, 2, 1)
    assert rows[0]["test_accuracy"] == pytest.approx(0.8)


def test_predictivity_from_counts_ties_exactly() -> None:
    # Two neurons whose trials have the same counts out of 300 in another order (and one
    # reliably below its baseline): their Pred(N) must be equal, not one float ulp apart.
    counts = torch.tensor([[27.0, 273.0, 150.0], [150.0, 27.0, 273.0], [273.0, 150.0, 27.0]])
    acc = (counts.T.double() / 300).float()[:, None, None, :]  # [trial, layer, prompt, ffn]
    exact = predictivity.predictivity(acc, examples=300)
    assert exact.dtype == torch.float64
    assert exact[0, 0] == exact[0, 1] == exact[0, 2] == (273 + 273 + 150) / 900
    with pytest.raises(ValueError, match="not counts out of examples=7"):
        predictivity.predictivity(acc, examples=7)
    with pytest.raises(ValueError, match="must be positive"):
        predictivity.predictivity(acc, examples=0)


def test_select_breaks_ties_by_index() -> None:
    # A plateau of equal scores across the boundary: the lowest indices are chosen, in
    # every layer and over the whole model (torch.topk picks among ties at random).
    scores = torch.zeros(30, 1536, dtype=torch.float64)
    scores[:, :40], scores[:, 40:200] = 1.0, 0.5
    per_layer = predictivity.select(scores, count=100)
    assert per_layer[:, :100].all() and not per_layer[:, 100:].any()
    overall = predictivity.select(scores, count=30 * 40 + 70, selection="global")
    assert overall[:, :40].all() and overall[0, 40:110].all()
    assert int(overall.sum()) == 30 * 40 + 70 and not overall[1:, 40:].any()


def test_logistic_accuracy_separates_separable_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(90, 2, generator=generator)
    y = torch.arange(90) % 3
    x[:, 0] += 4 * y  # class is a function of feature 0
    assert predictivity.logistic_accuracy(x[:60], y[:60], x[60:], y[60:]) > 0.9
    noise = torch.randn(90, 2, generator=generator)
    assert predictivity.logistic_accuracy(noise[:60], y[:60], noise[60:], y[60:]) < 0.7


def test_multiclass_top_neurons_runs_per_trial(store) -> None:
    from helpers import models, prompting

    tiny = models.tiny_backbone("gpt2")
    task = _probe_task(tiny, True)
    config = prompting.PromptConfig(
        length=2, max_text_tokens=8, label_words=("negative", "neutral", "positive")
    )
    prompts = [prompting.SoftPromptModel(tiny, config, seed=s) for s in range(2)]
    probe_config = predictivity.ProbeConfig(baseline_size=20, batch_size=8)
    runs = [
        predictivity.probe(m, task, probe_config, store, {"seed": s}) for s, m in enumerate(prompts)
    ]
    rows = predictivity.multiclass_top_neurons(runs, prompts, task.train, task.test)
    assert [r["trial"] for r in rows] == [0, 1]
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
    values = predictivity.neuron_values(prompts[0], task.test, [(0, 1, 3), (1, 0, 5)])
    assert values.shape == (len(task.test), 2)


def test_controls_and_scored_mask() -> None:
    from helpers import data, models, prompting

    tiny = models.tiny_backbone("llama")
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    hand = data.task_spec("rotten_tomatoes").hand_prompt
    assert hand == " Sentiment:"
    random_backbone = models.random_like(tiny, seed=1)
    assert random_backbone.name == "random-tiny-llama"
    same = [
        torch.equal(a, b)
        for a, b in zip(tiny.model.parameters(), random_backbone.model.parameters(), strict=True)
    ]
    assert not all(same)
    controls = predictivity.control_prompts(tiny, random_backbone, config, "sentiment :", seed=2)
    assert set(controls) == {"random prompt", "hand-written prompt", "random model"}
    written = controls["hand-written prompt"]
    ids = tiny.tokenizer("sentiment :", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(written.prompt, tiny.model.get_input_embeddings().weight[ids])
    assert written.config.length == 2
    mask = predictivity.scored_mask(controls["random prompt"], "soft")
    assert mask.tolist() == [True, True, False]
    with pytest.raises(prompting.PromptError, match="is 2 tokens, more than"):
        prompting.SoftPromptModel(
            tiny,
            prompting.PromptConfig(
                length=1, init="text", init_text="sentiment :", max_text_tokens=8
            ),
        )


def test_probe_shares_text_caches_for_every_split(store) -> None:
    from helpers import models, prompting

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, False)
    caches = engine.TextCaches()
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    predictivity.probe(
        model, task, predictivity.ProbeConfig(20, batch_size=8), store, {"a": 1}, caches=caches
    )
    assert len(caches._items) == 3  # baseline subset, dev and test


def test_multiclass_probe_equals_direct_computation_on_the_subtasks(store) -> None:
    from helpers import data, models, prompting

    tiny = models.tiny_backbone("gpt2")
    task = _probe_task(tiny, True)
    words = ("negative", "neutral", "positive")
    model = prompting.SoftPromptModel(
        tiny, prompting.PromptConfig(length=2, max_text_tokens=8, label_words=words)
    )
    probe = predictivity.probe(
        model, task, predictivity.ProbeConfig(None, batch_size=7), store, {"m": 1}
    )
    tensors = probe.tensors()
    for view in ("pn", "neu"):
        train, dev = data.binary_subtask(task.train, view), data.binary_subtask(task.dev, view)
        acts = torch.cat([engine.prompt_activations(model, b) for b in model.batches(train, 100)])
        base = acts.mean(0)
        torch.testing.assert_close(tensors[f"{view}/baseline"], base, rtol=0, atol=1e-6)
        dev_acts = torch.cat([engine.prompt_activations(model, b) for b in model.batches(dev, 100)])
        labels = torch.tensor(list(dev["label"]))
        direct = ((dev_acts > base) == labels[:, None, None, None].bool()).float().mean(0)
        torch.testing.assert_close(tensors[f"{view}/dev"], direct, rtol=0, atol=1e-6)


def test_view_scores_name_each_binary_view_and_summarise_it(store) -> None:
    from helpers import models, prompting

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, three_classes=True)
    words = ("negative", "neutral", "positive")
    config = prompting.PromptConfig(length=2, max_text_tokens=8, label_words=words)
    model = prompting.SoftPromptModel(tiny, config, seed=0)
    probe = predictivity.probe(
        model, task, predictivity.ProbeConfig(20, batch_size=8), store, {"seed": 0}
    )
    scores = predictivity.view_scores({"mine": [probe]})
    assert list(scores) == ["mine:pn", "mine:neu"]
    assert predictivity.view_label("mine", "binary") == "mine"
    torch.testing.assert_close(scores["mine:neu"], predictivity.dev_predictivity([probe], "neu"))
    rows = predictivity.score_rows(scores)
    best = 100 * float(scores["mine:pn"].max())
    assert rows[0]["view"] == "mine:pn" and rows[0]["max"] == pytest.approx(best)
    assert rows[0]["neurons"] == tiny.n_layers * tiny.ffn_width
    assert rows[0][">= 70%"] == int((scores["mine:pn"] >= 0.7).sum()) >= rows[0][">= 80%"]


def test_control_accuracies_give_each_untuned_control_its_top_neuron(store) -> None:
    from helpers import engine, models, prompting

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, three_classes=False)
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    prompt = prompting.SoftPromptModel(tiny, config, seed=0)
    random_backbone = models.random_like(tiny, seed=3)
    probe_config = predictivity.ProbeConfig(20, permutations=3, batch_size=8)
    found = predictivity.control_accuracies(
        prompt,
        random_backbone,
        task,
        task.train,
        probe_config,
        store,
        "prompt",
        engine.TextCaches(),
        engine.TextCaches(),
        seed=5,
    )
    assert list(found) == ["random prompt", "hand-written prompt", "random model"]
    assert all(0 <= value <= 100 for value in found.values())
    untuned = predictivity.control_prompts(tiny, random_backbone, config, "a review", 5)
    probe = predictivity.probe(
        untuned["random model"],
        task,
        predictivity.ProbeConfig(20, batch_size=8),
        store,
        {"control": "random model", "backbone": random_backbone.name},
    )  # the same probe as the helper made: without permutations
    expected = predictivity.top_accuracy([probe], [untuned["random model"]], task.train, task.test)
    assert found["random model"] == pytest.approx(100 * expected[0])


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("negative", "neutral", "positive"), ["pn", "neu"]),  # the paper's subtasks
        (("0", "1", "2"), ["0_vs_rest", "1_vs_rest", "2_vs_rest"]),  # no class named neutral
        (("a", "b", "c", "d"), ["a_vs_rest", "b_vs_rest", "c_vs_rest", "d_vs_rest"]),
    ],
)
def test_multi_class_splits_are_scored_on_binary_views(names, expected) -> None:
    from helpers import data

    labels = [i % len(names) for i in range(8 * len(names))]
    split = data.dataset([f"text {i}" for i in range(len(labels))], labels, names)
    views = predictivity.binary_views(split, len(names))
    assert list(views) == expected
    for view, (rows, binary) in views.items():
        assert set(binary.tolist()) == {0, 1} and int(binary.sum()) * 2 == len(binary)  # balanced
        if view.endswith("_vs_rest"):
            label = names.index(view.removesuffix("_vs_rest"))
            chosen = torch.tensor(labels)[rows]
            assert torch.equal(binary, (chosen == label).long())


def test_a_four_class_task_gets_its_own_views_through_the_probe(store) -> None:
    from dataclasses import replace

    from helpers import data, models, prompting

    tiny = models.tiny_backbone("llama")
    names = ("business", "sport", "film", "market")
    texts = [f"{w} {'very ' * (i % 3)}good" for i, w in enumerate(["team match"] * 80)]
    split = data.dataset(texts, [i % 4 for i in range(80)], names)
    spec = replace(data.task_spec("bbc"), label_names=names, natural_words=names)
    task = data.TaskData(spec, split.select(range(40)), split, split, "four")
    config = prompting.PromptConfig(length=2, max_text_tokens=8, label_words=names)
    model = prompting.SoftPromptModel(tiny, config)
    probe_config = predictivity.ProbeConfig(baseline_size=20, permutations=2, batch_size=16)
    artefact = predictivity.probe(model, task, probe_config, store, {"seed": 0})
    assert predictivity.views(artefact) == [f"{n}_vs_rest" for n in names]
    skill = predictivity.skill_neurons([artefact], count=8)
    assert skill.sum(dim=1).tolist() == [8, 8]  # two from each of the four views, per layer


@pytest.mark.parametrize("three_classes", [False, True])
def test_top_outcomes_count_to_the_top_neurons_test_accuracy(three_classes: bool, store) -> None:
    from helpers import models, prompting

    tiny = models.tiny_backbone("llama")
    task = _probe_task(tiny, three_classes)
    words = ("negative", "neutral", "positive") if three_classes else ("negative", "positive")
    config = prompting.PromptConfig(length=2, max_text_tokens=8, label_words=words)
    prompts = [prompting.SoftPromptModel(tiny, config, seed=s) for s in range(2)]
    probe_config = predictivity.ProbeConfig(baseline_size=20, batch_size=8)
    runs = [
        predictivity.probe(m, task, probe_config, store, {"seed": s}) for s, m in enumerate(prompts)
    ]
    args = (runs, prompts, task.train, task.test)
    outcomes = predictivity.top_outcomes(*args)
    accuracies = predictivity.top_accuracy(*args)
    assert [len(o) for o in outcomes] == [len(task.test)] * 2
    # the per-example outcomes count up to the accuracy the probe (or the fit) reports
    counted = [o.count("1") / len(o) for o in outcomes]
    assert counted == pytest.approx(accuracies, abs=1e-6)
    if not three_classes:  # and each is the oriented threshold rule of eq. 4 on that example
        pick = predictivity.top_neuron(runs, "binary")[0]
        neuron = (pick["layer"], pick["position"], pick["neuron"])
        value = predictivity.neuron_values(prompts[0], task.test, [neuron])[:, 0]
        above = value > runs[0].tensors()["binary/baseline"][neuron]
        right = (above == torch.tensor(task.test["label"]).bool()) == pick["positive"]
        assert outcomes[0] == "".join("1" if r else "0" for r in right.tolist())
