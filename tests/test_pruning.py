"""Pruning: the pruned model equals the masked model, for every architecture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import models, perturbation, predictivity, prompt_trials, pruning, tuning


def _ids(backbone: models.Backbone) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(5, len(backbone.tokenizer), (3, 9), generator=generator)


def _setup(backbone: models.Backbone) -> tuple[dict[int, list[int]], torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    scores = torch.rand(backbone.n_layers, backbone.ffn_width, generator=generator)
    baselines = torch.randn(backbone.n_layers, backbone.ffn_width, generator=generator)
    config = pruning.PruneConfig(kept_fraction=0.1, layer_share=0.5)
    kept = pruning.kept_neurons(predictivity.select(scores, fraction=0.1), config)
    return kept, baselines


def test_pruned_model_equals_removed_neurons_fixed_at_their_baselines(
    tiny: models.Backbone,
) -> None:
    kept, baselines = _setup(tiny)
    assert list(kept) == [1] and len(kept[1]) == int(0.1 * tiny.ffn_width)
    ids = _ids(tiny)
    before = tiny.model(input_ids=ids).logits
    pruned = pruning.prune(tiny, kept, baselines)
    removed = pruning.removed_mask(tiny, kept)
    with perturbation.perturbed(tiny, removed, "value", baselines):
        masked = tiny.model(input_ids=ids).logits
    torch.testing.assert_close(pruned.model(input_ids=ids).logits, masked, rtol=1e-5, atol=1e-5)
    assert pruned.neuron_sites()[1].weight.numel() < tiny.neuron_sites()[1].weight.numel()
    # The original is untouched.
    torch.testing.assert_close(tiny.model(input_ids=ids).logits, before, rtol=0, atol=0)


def test_a_bfloat16_pruned_model_equals_the_masked_one_to_a_few_rounding_steps() -> None:
    # Chapter 05's check: the two sum the same terms in another order, so they may differ
    # by a few of bfloat16's rounding steps of the largest logit, never by a constant.
    tiny = models.tiny_backbone("llama")
    tiny.model.to(torch.bfloat16)
    kept, baselines = _setup(tiny)
    ids = _ids(tiny)
    pruned = pruning.prune(tiny, kept, baselines)
    assert pruned.dtype == torch.bfloat16
    fold = pruned.neuron_sites()[1].bias.double()
    weight, removed = tiny.neuron_sites()[1].weight.double(), pruning.removed_mask(tiny, kept)[1]
    exact = weight[:, removed] @ baselines[1, removed].double()  # summed without rounding
    torch.testing.assert_close(fold, exact, rtol=2**-8, atol=1e-6)  # rounded once
    with perturbation.perturbed(tiny, pruning.removed_mask(tiny, kept), "value", baselines):
        masked = tiny.model(input_ids=ids).logits.float()
    small = pruned.model(input_ids=ids).logits.float()
    tolerance = pruning.fold_tolerance(masked, torch.bfloat16)
    assert tolerance == max(1e-3, 4 * 2**-7 * float(masked.abs().max()))
    assert float((small - masked).abs().max()) < tolerance
    assert pruning.fold_tolerance(torch.tensor([-20.0, 3.0]), torch.float32) == 1e-3
    # a known answer: 4 steps of bfloat16 (2^-7 each) at the largest logit, 16
    assert pruning.fold_tolerance(torch.tensor([-16.0, 3.0]), torch.bfloat16) == 0.5


def test_keeping_every_neuron_changes_nothing(tiny: models.Backbone) -> None:
    # Folding the kept neurons' baselines too (the official code) would fail this.
    baselines = torch.randn(tiny.n_layers, tiny.ffn_width)
    everything = {layer: list(range(tiny.ffn_width)) for layer in range(tiny.n_layers)}
    pruned = pruning.prune(tiny, everything, baselines)
    ids = _ids(tiny)
    torch.testing.assert_close(
        pruned.model(input_ids=ids).logits, tiny.model(input_ids=ids).logits, rtol=1e-5, atol=1e-5
    )


def test_size_and_flops_shrink_by_the_removed_units() -> None:
    tiny = models.tiny_backbone("llama")
    kept, baselines = _setup(tiny)
    pruned = pruning.prune(tiny, kept, baselines)
    removed = tiny.ffn_width - len(kept[1])
    d_model = tiny.model.config.hidden_size
    # Gated MLP: gate and up lose a row, down loses a column per removed unit; down gains a bias.
    assert (
        pruning.parameter_count(tiny) - pruning.parameter_count(pruned)
        == 3 * removed * d_model - d_model
    )
    saved = pruning.flops_per_token(tiny, 16) - pruning.flops_per_token(pruned, 16)
    assert saved == pytest.approx(2 * 3 * removed * d_model)
    assert pruning.pruned_layers(12, 0.75) == list(range(3, 12))


def test_stored_pruned_model_reloads_to_identical_outputs(store) -> None:
    tiny = models.tiny_backbone("gpt2")
    generator = torch.Generator().manual_seed(2)
    scores = torch.rand(tiny.n_layers, tiny.ffn_width, generator=generator)
    baselines = torch.randn(tiny.n_layers, tiny.ffn_width, generator=generator)
    config = pruning.PruneConfig(kept_fraction=0.25, layer_share=1.0)
    skill = predictivity.select(scores, fraction=0.25)
    first, artefact = pruning.pruned_model(tiny, skill, baselines, config, store)
    direct = pruning.prune(tiny, pruning.kept_neurons(skill, config), baselines)
    again, same = pruning.pruned_model(tiny, skill, baselines, config, store)
    assert same.key == artefact.key and again.name == first.name
    ids = _ids(tiny)
    expected = direct.model(input_ids=ids).logits
    torch.testing.assert_close(first.model(input_ids=ids).logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(again.model(input_ids=ids).logits, expected, rtol=0, atol=0)
    assert set(artefact.json("structure")["kept"]) == {"0", "1"}
    # another constant is another recipe: its own artefact
    text = pruning.PruneConfig(kept_fraction=0.25, layer_share=1.0, constant="text")
    assert pruning.pruned_model(tiny, skill, baselines, text, store)[1].key != artefact.key
    with pytest.raises(ValueError, match="pruned from 'tiny-gpt2'"):
        pruning.load_pruned(artefact, models.tiny_backbone("llama"))


def test_kept_neurons_pad_a_layer_short_of_skill_neurons() -> None:
    skill = torch.zeros(4, 50, dtype=torch.bool)
    skill[3, [7, 9, 11]] = True
    skill[2, 40] = True
    kept = pruning.kept_neurons(skill, pruning.PruneConfig(kept_fraction=0.04, layer_share=0.5))
    assert kept == {2: [0, 40], 3: [7, 9, 11]}


def test_bad_pruning_input_is_refused() -> None:
    tiny = models.tiny_backbone("llama")
    baselines = torch.zeros(tiny.n_layers, tiny.ffn_width)
    with pytest.raises(ValueError, match="shape"):
        pruning.prune(tiny, {1: [0]}, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="does not exist"):
        pruning.prune(tiny, {5: [0]}, baselines)
    with pytest.raises(ValueError, match="kept neurons"):
        pruning.prune(tiny, {1: [tiny.ffn_width]}, baselines)
    with pytest.raises(ValueError, match="kept_fraction"):
        pruning.PruneConfig(kept_fraction=0)
    with pytest.raises(ValueError, match="constant must be one of"):
        pruning.PruneConfig(constant="median")  # type: ignore[arg-type]


def test_latency_times_every_model_at_every_shape() -> None:
    tiny = models.tiny_backbone("llama")
    kept, baselines = _setup(tiny)
    rows = pruning.latency(
        {"original": tiny, "pruned": pruning.prune(tiny, kept, baselines)},
        batch_sizes=(1, 2),
        seq_lens=(4,),
        repeats=2,
        warmup=1,
        threads=1,
    )
    assert [(r["model"], r["batch"]) for r in rows] == [
        ("original", 1),
        ("pruned", 1),
        ("original", 2),
        ("pruned", 2),
    ]
    assert all(0 < r["ms_min"] <= r["ms"] <= r["ms_max"] for r in rows)


def test_prompt_baselines_average_the_scored_positions() -> None:
    from helpers import activations, data, prompting

    tiny = models.tiny_backbone("llama")
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    model = prompting.SoftPromptModel(tiny, config, seed=0)
    split = data.dataset(["a good movie", "the worst film", "great fun"], [1, 0, 1], ("n", "p"))
    full = activations.baseline(model, split, batch_size=2)
    mask = torch.tensor([True, False, True])
    torch.testing.assert_close(
        pruning.prompt_baselines(model, split, mask, batch_size=2), full[:, mask].mean(1)
    )
    assert pruning.prompt_baselines(model, split).shape == (tiny.n_layers, tiny.ffn_width)


@pytest.mark.parametrize("kind", ["llama", "roberta"])
def test_removed_constants_are_the_means_of_the_positions_they_replace(kind: str) -> None:
    from helpers import data, engine, prompting

    model = prompting.SoftPromptModel(
        models.tiny_backbone(kind), prompting.PromptConfig(length=3, max_text_tokens=8)
    )
    texts = ["a good movie", "the worst film of all", "great fun", "it"]
    split = data.dataset(texts, [1, 0, 1, 0], ("negative", "positive"))
    # By hand, one example at a time (no padding): every position's activations, split
    # into the scored prompt positions and the rest (the text).
    text_rows, all_rows = [], []
    for i in range(len(split)):
        batch = next(model.batches(split.select([i]), 1))
        layout = model.layout(batch)
        with engine.record_neurons(model.backbone) as recorded, torch.no_grad():
            model.backbone.model.base_model(
                inputs_embeds=layout.embeds, attention_mask=layout.attention_mask
            )
        acts = torch.stack([recorded[k][0] for k in range(model.backbone.n_layers)], dim=1)
        prompt = set(layout.prompt_positions[0].tolist())
        text = [p for p in range(acts.shape[0]) if p not in prompt]
        text_rows.append(acts[text])
        all_rows.append(acts)
    expected_text = torch.cat(text_rows).mean(dim=0)  # token-weighted over the examples
    expected_all = torch.cat(all_rows).mean(dim=0)
    found_text = pruning.removed_constants(model, split, "text", batch_size=3)
    found_all = pruning.removed_constants(model, split, "all", batch_size=3)
    torch.testing.assert_close(found_text, expected_text, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found_all, expected_all, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(found_text, found_all)
    prompt_means = pruning.removed_constants(model, split, "prompt", batch_size=3)
    torch.testing.assert_close(prompt_means, pruning.prompt_baselines(model, split, batch_size=3))
    with pytest.raises(ValueError, match="constant must be one of 'prompt', 'text', 'all'"):
        pruning.removed_constants(model, split, "mean")  # type: ignore[arg-type]


def test_constant_accuracies_score_each_constant_as_its_own_pruned_model() -> None:
    from helpers import data, prompting

    model = prompting.SoftPromptModel(
        models.tiny_backbone("llama"), prompting.PromptConfig(length=3, max_text_tokens=8)
    )
    texts = ["a good movie", "the worst film of all", "great fun", "it", "bad", "loved it"]
    split = data.dataset(texts, [1, 0, 1, 0, 0, 1], ("negative", "positive"))
    kept = {1: list(range(4))}
    found = pruning.constant_accuracies(model, split, split, kept, batch_size=4)
    assert list(found) == ["prompt", "text", "all"]
    for how, accuracy in found.items():
        values = pruning.removed_constants(model, split, how, batch_size=4)
        small = pruning.prune(model.backbone, kept, values)
        assert accuracy == prompt_trials.on_backbone(model, small).evaluate(split, 4).accuracy


def _prompt_and_task():
    import toys

    from helpers import prompting

    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=3, max_text_tokens=8))
    return model, toys.review_task()


def test_recovery_row_moves_the_prompt_and_retrains_it_from_where_it_was(store) -> None:
    from helpers import tables

    model, task = _prompt_and_task()
    train = tuning.TrainConfig(max_steps=2, eval_every=1, batch_size=3, learning_rate=0.1)
    artefact = prompt_trials.run_trial(model.backbone, task, model.config, train, 4, store, False)
    prompt = prompt_trials.load_prompt(artefact, model.backbone)
    small = pruning.prune(model.backbone, {1: [0, 1]}, torch.zeros(2, model.backbone.ffn_width))
    skipped = pruning.recovery_row(prompt, artefact, small, task, None, store, 4)
    expected = prompt_trials.on_backbone(prompt, small).evaluate(task.test, 4).accuracy
    assert skipped[tables.PRUNED] == pytest.approx(100 * expected)
    assert skipped[tables.PROMPT] == pytest.approx(100 * artefact.json("metrics")["test_accuracy"])
    assert (
        skipped["retrained_key"] is None and skipped[tables.RETRAINED] != skipped[tables.RETRAINED]
    )
    row = pruning.recovery_row(prompt, artefact, small, task, train, store, 4)
    again = store.load("prompts", row["retrained_key"])
    assert again.meta["upstream"][-1] == artefact.key  # started from the trained prompt
    assert row[tables.RETRAINED] == pytest.approx(100 * again.json("metrics")["test_accuracy"])


def test_kept_fraction_rows_shrink_the_model_as_less_is_kept() -> None:
    model, task = _prompt_and_task()
    scores = torch.rand(model.backbone.n_layers, model.backbone.ffn_width)
    rows = pruning.kept_fraction_rows(
        model.backbone,
        model,
        lambda f: predictivity.select(scores, fraction=f),
        torch.zeros_like(scores),
        task.test,
        [0.25, 1.0],
        0.5,
        (1, 8),
        4,
    )
    assert [r["kept_fraction"] for r in rows] == [0.25, 1.0]
    # keeping everything adds only the output projections' folded biases
    assert rows[0]["parameter_share"] < 100 <= rows[1]["parameter_share"] < 101
    assert rows[0]["flop_limit"] > 1 and rows[1]["flop_limit"] == pytest.approx(1, abs=0.01)
    assert all(0 <= r["accuracy"] <= 100 and r["speedup"] > 0 for r in rows)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_magnitude_scores_are_mean_absolute_activation_times_output_norm(kind: str) -> None:
    from helpers import data, engine, prompting

    model = prompting.SoftPromptModel(
        models.tiny_backbone(kind), prompting.PromptConfig(length=3, max_text_tokens=8)
    )
    split = data.dataset(["a good movie", "the worst film of all", "it"], [1, 0, 1], ("n", "p"))
    rows = []
    for i in range(len(split)):  # one example at a time: no padding
        layout = model.layout(next(model.batches(split.select([i]), 1)))
        with engine.record_neurons(model.backbone) as recorded, torch.no_grad():
            model.backbone.model.base_model(
                inputs_embeds=layout.embeds, attention_mask=layout.attention_mask
            )
        rows.append(torch.stack([recorded[k][0] for k in range(model.backbone.n_layers)], dim=1))
    mean_abs = torch.cat(rows).abs().mean(dim=0)
    # What neuron i writes into the residual stream: the site's output for a unit input,
    # minus its output for zero.
    norms = torch.zeros_like(mean_abs)
    with torch.no_grad():
        for layer, site in enumerate(model.backbone.neuron_sites()):
            units = torch.eye(model.backbone.ffn_width)
            written = site(units) - site(torch.zeros(1, model.backbone.ffn_width))
            norms[layer] = written.norm(dim=1)
    torch.testing.assert_close(pruning.output_norms(model.backbone), norms, rtol=1e-5, atol=1e-6)
    found = pruning.magnitude_scores(model, split, batch_size=2)
    torch.testing.assert_close(found, mean_abs * norms, rtol=1e-4, atol=1e-6)


def test_pareto_front_keeps_what_nothing_beats_on_speed_and_accuracy() -> None:
    rows = [
        {"flop_limit": 1.0, "dev_accuracy": 90.0},
        {"flop_limit": 1.5, "dev_accuracy": 88.0},
        {"flop_limit": 1.4, "dev_accuracy": 87.0},  # slower and worse than 1.5
        {"flop_limit": 2.0, "dev_accuracy": 60.0},
        {"flop_limit": 1.8, "dev_accuracy": 60.0},  # as accurate as a faster one
    ]
    front = pruning.pareto_front(rows)
    assert [(r["flop_limit"], r["dev_accuracy"]) for r in front] == [
        (2.0, 60.0),
        (1.5, 88.0),
        (1.0, 90.0),
    ]


def test_the_chosen_point_is_the_fastest_within_the_allowed_drop_on_dev() -> None:
    rows = [
        {"flop_limit": 2.0, "dev_recovered": 70.0},
        {"flop_limit": 1.6, "dev_recovered": 78.0},
        {"flop_limit": 1.2, "dev_recovered": 80.0},
    ]
    assert pruning.chosen_point(rows, 80.0, 3.0)["flop_limit"] == 1.6
    assert pruning.chosen_point(rows, 80.0, 0.0)["flop_limit"] == 1.2
    # none within the drop: the most accurate on dev
    assert pruning.chosen_point(rows, 95.0, 3.0)["flop_limit"] == 1.2


def test_criterion_neurons_keep_as_many_per_layer_as_the_skill_neurons() -> None:
    skill = torch.zeros(3, 20, dtype=torch.bool)
    skill[0, [1, 2]] = True
    skill[2, [5, 6, 7]] = True
    magnitude = torch.arange(60, dtype=torch.float).reshape(3, 20)
    found = pruning.criterion_neurons(skill, magnitude, draws=2, seed=4)
    assert list(found) == ["skill", "magnitude", "random 0", "random 1"]
    for chosen in found.values():
        assert chosen.sum(dim=1).tolist() == [2, 0, 3]
    assert found["magnitude"][0].nonzero().flatten().tolist() == [18, 19]
    assert found["magnitude"][2].nonzero().flatten().tolist() == [17, 18, 19]
    assert not torch.equal(found["random 0"], found["random 1"])
    again = pruning.criterion_neurons(skill, magnitude, draws=2, seed=4)
    assert torch.equal(again["random 1"], found["random 1"])


def test_criteria_comparison_pairs_the_outcomes_of_the_same_examples() -> None:
    skill = [1, 1, 1, 1, 0, 1, 1, 1]
    rows = [
        {"criterion": "skill", "correct": skill},
        {"criterion": "magnitude", "correct": [0, 1, 0, 1, 0, 0, 1, 0]},
        {"criterion": "random", "correct": [1, 1, 1, 1, 0, 1, 1, 1]},
        {"criterion": "random", "correct": [1, 1, 1, 1, 0, 1, 1, 1]},
    ]
    found = {r["criterion"]: r for r in pruning.criteria_comparison(rows)}
    difference = 100 * (np.array(skill) - np.array([0, 1, 0, 1, 0, 0, 1, 0]))
    error = difference.std(ddof=1) / np.sqrt(len(difference))
    assert found["magnitude"]["difference"] == pytest.approx(difference.mean())
    assert found["magnitude"]["low"] == pytest.approx(difference.mean() - 1.959964 * error)
    assert found["magnitude"]["skill neurons are"] == "better"
    # identical outcomes: no difference and no spread, so no side is excluded
    assert found["random"]["sets"] == 2 and found["random"]["difference"] == 0
    assert found["random"]["skill neurons are"] == "undecided"
    with pytest.raises(ValueError, match="no skill-neuron row"):
        pruning.criteria_comparison(rows[1:])


def test_criteria_rows_score_each_criterion_as_its_own_pruned_model() -> None:
    model, task = _prompt_and_task()
    skill = predictivity.select(torch.rand(2, model.backbone.ffn_width), fraction=0.25)
    magnitude = torch.rand(2, model.backbone.ffn_width)
    neurons = pruning.criterion_neurons(skill, magnitude, draws=1)
    config = pruning.PruneConfig(0.25, 0.5)
    baselines = torch.zeros(2, model.backbone.ffn_width)
    rows = pruning.criteria_rows(model.backbone, model, neurons, baselines, task.test, config, 4)
    assert [r["set"] for r in rows] == ["skill", "magnitude", "random 0"]
    small = pruning.prune(
        model.backbone, pruning.kept_neurons(neurons["magnitude"], config), baselines
    )
    expected = prompt_trials.on_backbone(model, small).evaluate(task.test, 4)
    assert rows[1]["correct"] == (expected.labels == expected.predictions).astype(int).tolist()
    assert rows[1]["accuracy"] == pytest.approx(100 * expected.accuracy)


def test_search_rows_cover_the_grid_and_nothing_pruned_is_the_prompt_itself() -> None:
    model, task = _prompt_and_task()
    scores = torch.rand(model.backbone.n_layers, model.backbone.ffn_width)
    rows = pruning.search_rows(
        model.backbone,
        model,
        lambda f: predictivity.select(scores, fraction=f),
        torch.zeros_like(scores),
        task.dev,
        [0.25, 0.5],
        [0.0, 0.5, 1.0],
        8,
        4,
    )
    assert [(r["kept_fraction"], r["pruned_layers"]) for r in rows] == [
        (0.25, 0),
        (0.25, 1),
        (0.25, 2),
        (0.5, 0),
        (0.5, 1),
        (0.5, 2),
    ]
    unpruned = 100 * model.evaluate(task.dev, 4).accuracy
    assert rows[0]["dev_accuracy"] == pytest.approx(unpruned) and rows[0]["flop_limit"] == 1
    assert (
        rows[1]["flop_limit"] < rows[2]["flop_limit"]
        and rows[4]["flop_limit"] < rows[1]["flop_limit"]
    )


def test_front_rows_retrain_each_point_on_its_stored_pruned_model(store) -> None:
    model, task = _prompt_and_task()
    train = tuning.TrainConfig(max_steps=2, eval_every=1, batch_size=3, learning_rate=0.1)
    artefact = prompt_trials.run_trial(model.backbone, task, model.config, train, 4, store, False)
    prompt = prompt_trials.load_prompt(artefact, model.backbone)
    scores = torch.rand(model.backbone.n_layers, model.backbone.ffn_width)
    skill_for = lambda f: predictivity.select(scores, fraction=f)  # noqa: E731
    front = [{"kept_fraction": 0.25, "layer_share": 0.5, "pruned_layers": 1, "flop_limit": 1.2}] * 2
    baselines = torch.zeros_like(scores)
    rows, built = pruning.front_rows(
        model.backbone,
        prompt,
        artefact,
        task,
        front,
        skill_for,
        baselines,
        "text",
        train,
        store,
        [artefact.key],
        4,
    )
    (row,) = rows
    assert row["point"] == "0.25 of 1 layers" and list(built) == [row["point"]]
    stored = store.load("pruned", row["pruned_key"])
    assert stored.meta["config"]["prune"]["constant"] == "text"
    retrained = [a for a in store.root.joinpath("prompts").iterdir() if a.name != artefact.key]
    assert len(retrained) == 1
    again = store.load("prompts", retrained[0].name)
    assert again.meta["upstream"][-1] == artefact.key
    metrics = again.json("metrics")
    assert row["dev_prompt_retrained"] == pytest.approx(100 * metrics["dev_accuracy"])
    assert row["test_prompt_retrained"] == pytest.approx(100 * metrics["test_accuracy"])
    assert row["recovery"] == "prompt_retrained" and row["test_correct"] == metrics["test_correct"]
    assert (row["dev_recovered"], row["test_recovered"]) == (
        row["dev_prompt_retrained"],
        row["test_prompt_retrained"],
    )


def test_front_rows_leave_out_points_slower_than_one_already_within_the_drop(monkeypatch) -> None:
    dev = {
        "0.1 of 3 layers": 0.6,
        "0.1 of 2 layers": 0.8,
        "0.5 of 1 layers": 0.9,
        "0.02 of 3 layers": 0.5,
    }
    retrained, shared = [], []

    class Scored:
        accuracy = 0.5

    class Prompt:
        config = None

        def evaluate(self, split, batch_size, caches=None):
            shared.append(caches)
            return Scored()

    def pruned_model(model, skill, baselines, config, store, upstream):
        label = f"{config.kept_fraction:g} of {int(4 * config.layer_share)} layers"
        return label, type("Stored", (), {"key": label})()

    def run_trial(small, task, prompt, train, seed, store, progress, caches, start):
        retrained.append(small)
        assert caches is shared[-1] and caches is not None  # one text cache per point
        metrics = {"dev_accuracy": dev[small], "test_accuracy": 0.7, "test_correct": "1"}
        return type("Trial", (), {"json": lambda self, name: metrics})()

    monkeypatch.setattr(pruning, "pruned_model", pruned_model)
    monkeypatch.setattr(pruning, "run_trial", run_trial)
    monkeypatch.setattr(pruning, "on_backbone", lambda prompt, small: Prompt())
    artefact = type("Artefact", (), {"json": lambda self, name: {"seed": 0}})()

    def point(fraction: float, layers: int, flop_limit: float) -> dict:
        return {
            "kept_fraction": fraction,
            "layer_share": layers / 4,
            "pruned_layers": layers,
            "flop_limit": flop_limit,
        }

    front = [point(0.1, 3, 1.9), point(0.1, 2, 1.5), point(0.5, 1, 1.2)]
    recipe = [point(0.02, 3, 2.1)]
    skill_for = lambda f: f  # noqa: E731
    task = type("Task", (), {"test": None})()
    args = (None, Prompt(), artefact, task, front, skill_for, None, "text", tuning.TrainConfig())
    rows, built = pruning.front_rows(
        *args, None, [], 4, reference=81.0, max_drop=3.0, always=recipe
    )
    # fastest first; "0.1 of 2 layers" reaches 80 >= 81 - 3, so the slower point is left out
    assert retrained == ["0.02 of 3 layers", "0.1 of 3 layers", "0.1 of 2 layers"]
    assert [r["point"] for r in rows] == [*dev][:3] + ["0.02 of 3 layers"]
    assert list(built) == retrained
    left = rows[2]
    assert (
        left["recovery"] == "none"
        and math.isnan(left["dev_recovered"])
        and left["pruned_key"] is None
    )
    assert rows[1]["dev_recovered"] == 80.0 and rows[3]["dev_recovered"] == 50.0
    assert pruning.chosen_point(rows, 81.0, 3.0)["point"] == "0.1 of 2 layers"
    # without a reference every point is recovered
    retrained.clear()
    rows, _ = pruning.front_rows(*args, None, [], 4, always=recipe)
    assert len(retrained) == 4 and all(r["recovery"] == "prompt_retrained" for r in rows)


def test_lora_front_trains_only_points_that_could_still_be_chosen(monkeypatch) -> None:
    def point(name: str, flop_limit: float, dev: float) -> dict:
        recovered = {"dev_recovered": dev, "test_recovered": dev - 1, "test_correct": "1"}
        return {"point": name, "flop_limit": flop_limit, "pruned_key": name} | recovered

    rows = [point("slow", 1.2, 80.0), point("mid", 1.6, 79.0), point("fast", 1.9, 60.0)]
    rows.append(point("fastest", 2.1, 55.0))
    lora_dev = {"slow": 0.85, "mid": 0.9, "fast": 0.79, "fastest": 0.5}
    trained = []

    def lora(backbone, pruned, *args) -> dict:
        trained.append(pruned)
        return {"dev_accuracy": lora_dev[pruned], "test_accuracy": 0.7, "test_correct": "0"}

    monkeypatch.setattr(pruning, "lora_recovery", lora)
    store = type("Store", (), {"load": lambda self, stage, key: key})()
    found = pruning.lora_front(None, rows, None, None, None, None, None, store, 81.0, 3.0)
    # prompt retraining alone chooses "mid" (79 >= 81 - 3): nothing slower is trained;
    # fastest first, "fast" comes within the drop by its LoRA, so "mid" is not trained
    assert trained == ["fastest", "fast"]
    assert [math.isnan(r["dev_lora"]) for r in found] == [True, True, False, False]
    mid, fast, fastest = found[1], found[2], found[3]
    assert mid["dev_recovered"] == 79.0 and "recovery" not in mid  # kept its own
    assert (fast["recovery"], fast["dev_recovered"], fast["test_recovered"]) == ("lora", 79.0, 70.0)
    assert fast["test_correct"] == "0" and fastest["dev_lora"] == 50.0
    assert fastest["dev_recovered"] == 55.0 and "recovery" not in fastest  # kept its own
    assert pruning.chosen_point(found, 81.0, 3.0)["point"] == "fast"  # as if all were trained
    # no point within the drop, by prompt retraining or a LoRA: every point is trained
    trained.clear()
    found = pruning.lora_front(None, rows, None, None, None, None, None, store, 95.0, 3.0)
    assert trained == ["fastest", "fast", "mid", "slow"]
    assert pruning.chosen_point(found, 95.0, 3.0)["point"] == "mid"  # the most accurate
    # a LoRA brings "mid" within (90 >= 89): "slow" is left out
    trained.clear()
    pruning.lora_front(None, rows, None, None, None, None, None, store, 92.0, 3.0)
    assert trained == ["fastest", "fast", "mid"]


def test_lora_recovery_adapts_a_copy_of_the_pruned_model_and_keeps_the_prompt(store) -> None:
    from helpers import engine, methods

    model, task = _prompt_and_task()
    train = tuning.TrainConfig(max_steps=2, eval_every=1, batch_size=3, learning_rate=0.1)
    artefact = prompt_trials.run_trial(model.backbone, task, model.config, train, 4, store, False)
    prompt = prompt_trials.load_prompt(artefact, model.backbone)
    before = prompt.prompt.detach().clone()
    digest = engine.weights_digest(model.backbone.model)
    skill = predictivity.select(torch.rand(model.backbone.n_layers, model.backbone.ffn_width), 0.25)
    config = pruning.PruneConfig(0.25, 0.5, "text")
    _, pruned = pruning.pruned_model(model.backbone, skill, torch.zeros(skill.shape), config, store)
    method = methods.MethodConfig("lora", rank=2)
    found = pruning.lora_recovery(
        model.backbone, pruned, prompt, artefact, task, method, train, store
    )
    assert torch.equal(prompt.prompt, before)  # the prompt is kept as it is
    assert engine.weights_digest(model.backbone.model) == digest  # the original untouched
    (stored,) = list(store.root.joinpath("pruned_lora").iterdir())
    lora = store.load("pruned_lora", stored.name)
    assert lora.meta["upstream"] == [pruned.key, artefact.key, task.key]
    state = lora.tensors()
    assert state and all(".lora_" in name for name in state)
    # Rebuilt from what is stored, the adapted model scores what was reported.
    small = pruning.load_pruned(pruned, model.backbone)
    rebuilt = prompt_trials.on_backbone(prompt, small)
    methods.add_lora(small, method.rank, method.alpha, 0)
    named = dict(small.model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            named[name].copy_(value)
    assert rebuilt.evaluate(task.test).accuracy == pytest.approx(found["test_accuracy"])
    again = pruning.lora_recovery(
        model.backbone, pruned, prompt, artefact, task, method, train, store
    )
    assert again == found and len(list(store.root.joinpath("pruned_lora").iterdir())) == 1


def test_a_pruned_model_of_different_widths_per_layer_reloads_from_its_safetensors(store) -> None:
    tiny = models.tiny_backbone("llama")
    skill = torch.zeros(tiny.n_layers, tiny.ffn_width, dtype=torch.bool)
    skill[0, :3] = True
    skill[1, :7] = True  # global selection can put more skill neurons in one layer
    config = pruning.PruneConfig(kept_fraction=1 / tiny.ffn_width, layer_share=1.0)
    baselines = torch.randn(tiny.n_layers, tiny.ffn_width)
    first, artefact = pruning.pruned_model(tiny, skill, baselines, config, store)
    widths = [site.weight.shape[1] for site in first.neuron_sites()]
    assert widths == [3, 7]
    assert any(k.endswith(".safetensors") for k in [p.name for p in artefact.path.iterdir()])
    again = pruning.load_pruned(store.load("pruned", artefact.key), tiny)
    assert [site.weight.shape[1] for site in again.neuron_sites()] == [3, 7]
    ids = _ids(tiny)
    torch.testing.assert_close(
        again.model(input_ids=ids).logits, first.model(input_ids=ids).logits, rtol=0, atol=0
    )
