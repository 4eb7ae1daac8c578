"""Pruning: the pruned model equals the masked model, for every architecture."""

from __future__ import annotations

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
