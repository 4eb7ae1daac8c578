"""Perturbation hooks: known answers on tiny backbones, and no hook left behind."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import activations, data, engine, models, perturbation, prompting
from helpers.predictivity import select


def _ids(backbone: models.Backbone, n: int = 3, length: int = 7) -> torch.Tensor:
    return torch.randint(
        5, len(backbone.tokenizer), (n, length), generator=torch.Generator().manual_seed(0)
    )


def _chosen(backbone: models.Backbone, share: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(backbone.n_layers, backbone.ffn_width, generator=generator) < share


def test_zero_noise_changes_nothing(tiny: models.Backbone) -> None:
    ids = _ids(tiny)
    plain = tiny.model(input_ids=ids).logits
    with perturbation.perturbed(tiny, _chosen(tiny), "gaussian", sigma=0.0):
        noisy = tiny.model(input_ids=ids).logits
    torch.testing.assert_close(noisy, plain, rtol=0, atol=0)
    with perturbation.perturbed(tiny, _chosen(tiny), "gaussian", sigma=0.5):
        assert not torch.allclose(tiny.model(input_ids=ids).logits, plain)
    assert engine.hook_count(tiny.model) == 0


def test_value_replacement_equals_neurons_fixed_by_hand(tiny: models.Backbone) -> None:
    ids, chosen = _ids(tiny), _chosen(tiny)
    values = torch.randn(tiny.n_layers, tiny.ffn_width)
    with (
        perturbation.perturbed(tiny, chosen, "value", values),
        engine.record_neurons(tiny) as acts,
    ):
        out = tiny.model(input_ids=ids).logits
    for layer in range(tiny.n_layers):
        seen = acts[layer][..., chosen[layer]]
        torch.testing.assert_close(seen, values[layer, chosen[layer]].expand_as(seen))
    with perturbation.perturbed(tiny, chosen, "zero"), engine.record_neurons(tiny) as acts:
        tiny.model(input_ids=ids)
    assert all((acts[layer][..., chosen[layer]] == 0).all() for layer in range(tiny.n_layers))
    assert out.shape[:2] == ids.shape


def test_gaussian_noise_is_drawn_per_example_and_shared_by_positions() -> None:
    tiny = models.tiny_backbone("llama")
    ids, chosen = _ids(tiny), _chosen(tiny)
    with engine.record_neurons(tiny) as clean:
        tiny.model(input_ids=ids)
    clean = dict(clean)
    noise_on = perturbation.perturbed(tiny, chosen, "gaussian", sigma=0.1, seed=3)
    with noise_on, engine.record_neurons(tiny, layers=[0]) as noisy:
        tiny.model(input_ids=ids)
    # Layer 0 sees the clean input, so the difference is the noise itself.
    noise = noisy[0] - clean[0]
    assert torch.allclose(noise, noise[:, :1].expand_as(noise), atol=1e-6)
    assert not torch.allclose(noise[0], noise[1])
    assert (noise[..., ~chosen[0]] == 0).all()
    assert 0.05 < float(noise[..., chosen[0]].std()) < 0.2


def test_hooks_are_removed_on_error_and_bad_input_is_refused() -> None:
    tiny = models.tiny_backbone("gpt2")
    with (
        pytest.raises(RuntimeError, match="boom"),
        perturbation.perturbed(tiny, _chosen(tiny), "zero"),
    ):
        assert engine.hook_count(tiny.model) > 0
        raise RuntimeError("boom")
    assert engine.hook_count(tiny.model) == 0
    bad = [
        ((torch.ones(1, 3, dtype=torch.bool), "zero"), "shape"),
        ((_chosen(tiny), "value"), "needs values"),
        (
            (_chosen(tiny), "shuffle"),
            "how must be one of 'gaussian', 'zero', 'value'; got 'shuffle'",
        ),
    ]
    for (neurons, how), message in bad:
        with pytest.raises(ValueError, match=message), perturbation.perturbed(tiny, neurons, how):
            pass
    for field, value in (("scope", "text"), ("noise_scale", "relative"), ("noise_per", "layer")):
        with pytest.raises(ValueError, match=f"{field} must be one of .*; got '{value}'"):
            perturbation.PerturbConfig(**{field: value})


def test_token_noise_differs_by_position_and_first_limits_the_positions() -> None:
    tiny = models.tiny_backbone("llama")
    ids, chosen = _ids(tiny), _chosen(tiny)
    with engine.record_neurons(tiny, layers=[0]) as clean:
        tiny.model(input_ids=ids)
    clean = dict(clean)
    with (
        perturbation.perturbed(tiny, chosen, "gaussian", sigma=0.1, per="token", first=3),
        engine.record_neurons(tiny, layers=[0]) as noisy,
    ):
        tiny.model(input_ids=ids)
    noise = noisy[0] - clean[0]
    assert not torch.allclose(noise[:, 0], noise[:, 1])
    assert (noise[:, 3:] == 0).all() and (noise[:, :3, chosen[0]] != 0).all()


def test_per_neuron_sigma_leaves_zero_sigma_neurons_alone() -> None:
    tiny = models.tiny_backbone("llama")
    ids, chosen = _ids(tiny), torch.ones(2, 48, dtype=torch.bool)
    sigma = torch.zeros(tiny.n_layers, tiny.ffn_width)
    sigma[:, :5] = 0.3
    with engine.record_neurons(tiny, layers=[0]) as clean:
        tiny.model(input_ids=ids)
    clean = dict(clean)
    with (
        perturbation.perturbed(tiny, chosen, "gaussian", sigma=sigma),
        engine.record_neurons(tiny, layers=[0]) as noisy,
    ):
        tiny.model(input_ids=ids)
    noise = noisy[0] - clean[0]
    assert (noise[..., 5:] == 0).all() and (noise[..., :5] != 0).all()
    with pytest.raises(ValueError, match="sigma must have shape"):
        perturbation.perturbed(tiny, chosen, sigma=torch.zeros(3)).__enter__()


def test_random_counterpart_keeps_the_count_in_every_layer() -> None:
    chosen = torch.zeros(4, 30, dtype=torch.bool)
    chosen[0, :5], chosen[2, 10:22] = True, True
    drawn = perturbation.random_counterpart(chosen, seed=1)
    assert drawn.sum(dim=1).tolist() == chosen.sum(dim=1).tolist()
    assert not torch.equal(drawn, chosen)
    assert torch.equal(drawn, perturbation.random_counterpart(chosen, seed=1))
    assert not torch.equal(drawn, perturbation.random_counterpart(chosen, seed=2))


def test_stratified_counterpart_matches_each_layers_spread_strata() -> None:
    # 200 neurons per layer; neurons 0-1 of each layer are massive (spread 400 against ~1).
    generator = torch.Generator().manual_seed(0)
    scale = torch.rand(3, 200, generator=generator) + 0.5
    scale[:, :2] = 400.0
    chosen = torch.zeros(3, 200, dtype=torch.bool)
    chosen[:, 0], chosen[:, 150:160] = True, True  # one massive neuron and ten others
    large = perturbation.massive(scale)
    assert large.sum(dim=1).tolist() == [2, 2, 2]
    plain_hits, strata = [], (0.5, 0.9)  # the top stratum: 20 neurons, 2 of them massive
    for seed in range(40):
        drawn = perturbation.random_counterpart(chosen, seed, scale, strata)
        assert drawn.sum(dim=1).tolist() == chosen.sum(dim=1).tolist()
        assert (drawn & large).sum(dim=1).tolist() == [1, 1, 1]
        for layer in range(3):  # as many from each stratum of the layer as the chosen set
            cuts = torch.quantile(scale[layer].double(), torch.tensor(strata).double())
            level = torch.bucketize(scale[layer].double(), cuts)
            level[large[layer]] = len(strata) + 1
            counts = [int((drawn[layer] & (level == k)).sum()) for k in range(len(strata) + 2)]
            expected = [int((chosen[layer] & (level == k)).sum()) for k in range(len(strata) + 2)]
            assert counts == expected
        plain = perturbation.random_counterpart(chosen, seed)
        plain_hits.append(int((plain & large).sum()))
    assert plain_hits.count(3) < 40  # a plain draw rarely holds one massive neuron a layer


def test_sweep_counts_massive_neurons_and_keys_the_stratification(store) -> None:
    model, split = _prompt_model(), _split()
    scale = torch.ones(model.backbone.n_layers, model.backbone.ffn_width)
    scale[:, 0] = 500.0
    order = {"mine": lambda f: select(scale, fraction=f)}  # the massive neurons first
    config = perturbation.PerturbConfig(noise="zero", scope="prompt")
    plan = perturbation.SweepPlan(store, [0.0, 0.1], config, random_draws=2)
    rows = plan.run(model, split, order, "mine", {"t": 1}, [], scale=scale)
    perturbed = [r for r in rows if r["fraction"] > 0]
    assert {r["order"]: r["massive"] for r in perturbed if r["order"] == "mine"} == {
        "mine": model.backbone.n_layers
    }
    assert all(r["massive"] == model.backbone.n_layers for r in perturbed)  # stratified too
    plain = plan.run(model, split, order, "mine", {"t": 1}, [])
    assert "massive" not in plain[0] and len(list((store.root / "sweeps").iterdir())) == 2


@pytest.mark.parametrize("noise", ["value", "swap"])
def test_a_sweep_is_kept_apart_for_each_set_of_training_examples_it_takes_values_from(
    store, noise: str
) -> None:
    model, split = _prompt_model(), _split()
    order = {"mine": lambda f: _chosen(model.backbone, f)}
    config = perturbation.PerturbConfig(noise=noise, scope="prompt")
    plan = perturbation.SweepPlan(store, [0.0, 0.5], config, random_draws=1, batch_size=4)
    fits = [split.select([0, 1, 2, 3]), split.select([2, 3, 4, 5])]
    first, _ = (plan.run(model, split, order, "mine", {"t": 1}, [], fit) for fit in fits)
    assert len(list((store.root / "sweeps").iterdir())) == 2  # not the first one's rows again
    again = plan.run(model, split, order, "mine", {"t": 1}, [], fits[0])
    assert again == first and len(list((store.root / "sweeps").iterdir())) == 2


def test_a_sweep_plan_refuses_a_fixed_value_perturbation_without_training_examples(store) -> None:
    model, split = _prompt_model(), _split()
    scores = torch.rand(model.backbone.n_layers, model.backbone.ffn_width)
    order = {"mine": lambda f: select(scores, fraction=f)}
    plan = perturbation.SweepPlan(store, [0.0, 0.1], perturbation.PerturbConfig(noise="value"))
    with pytest.raises(perturbation.PerturbationError, match="needs training examples"):
        plan.run(model, split, order, "mine", {"t": 1}, [])
    assert not (store.root / "sweeps").exists()  # refused before any work


def _prompt_model(kind: str = "llama") -> prompting.SoftPromptModel:
    tiny = models.tiny_backbone(kind)
    return prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=3, max_text_tokens=8))


def _split() -> data.Dataset:
    texts = ["a good movie", "the worst film", "great fun", "boring and bad", "loved it", "it"]
    return data.dataset(texts, [1, 0, 1, 0, 1, 0], ("negative", "positive"))


def test_prompt_scope_on_a_decoder_equals_perturbing_prompt_positions_of_the_full_layout() -> None:
    model, split = _prompt_model(), _split()
    chosen = _chosen(model.backbone, 0.5)
    config = perturbation.PerturbConfig(noise="zero", scope="prompt")
    caches = engine.TextCaches()
    ours = perturbation.perturbed_evaluation(
        model, split, chosen, config, batch_size=4, caches=caches
    ).accuracy
    # By hand: the full layout, zeroing the chosen neurons at each example's prompt positions.
    batch = next(model.batches(split, len(split)))
    layout = model.layout(batch)
    at_prompt = torch.zeros(layout.attention_mask.shape, dtype=torch.bool)
    at_prompt[torch.arange(len(split))[:, None], layout.prompt_positions] = True
    handles = [
        site.register_forward_pre_hook(
            lambda _m, args, keep=chosen[layer]: (
                args[0].masked_fill(at_prompt[:, :, None] & keep[None, None, :], 0.0),
            )
        )
        for layer, site in enumerate(model.backbone.neuron_sites())
    ]
    try:
        with prompting.prefix_cached(model, False), torch.no_grad():
            expected = model(batch).argmax(dim=1)
    finally:
        for handle in handles:
            handle.remove()
    assert ours == pytest.approx(float((expected == batch.labels).float().mean()))
    # The shared text caches were filled before the hooks: clean evaluations stay clean.
    clean = model.evaluate(split, 4)
    cached = model.evaluate(split, 4, caches=caches)
    assert cached.predictions.tolist() == clean.predictions.tolist()
    assert engine.hook_count(model.backbone.model) == 0


@pytest.mark.parametrize("setting", ["no prefix cache", "no cache budget"])
def test_prompt_scope_never_runs_the_text_under_the_hooks(setting: str) -> None:
    # The text must run without hooks, also for a decoder model without its own text
    # cache and for caches whose budget holds nothing.
    model, split = _prompt_model(), _split()
    chosen = _chosen(model.backbone, 0.5)
    config = perturbation.PerturbConfig(noise="zero", scope="prompt")
    reference = perturbation.perturbed_evaluation(model, split, chosen, config, batch_size=4)
    reference = reference.predictions.tolist()
    texts, layouts = [], []
    text_cache, layout = model.text_cache, model.layout

    def watched_text(batch):
        texts.append(engine.hook_count(model.backbone.model))
        return text_cache(batch)

    def watched_layout(batch):
        layouts.append(engine.hook_count(model.backbone.model))
        return layout(batch)

    model.text_cache, model.layout = watched_text, watched_layout
    caches = engine.TextCaches(max_bytes=0) if setting == "no cache budget" else None
    if setting == "no prefix cache":
        model.prefix_cache = False
    ours = perturbation.perturbed_evaluation(
        model, split, chosen, config, batch_size=4, caches=caches
    ).predictions.tolist()
    assert texts and set(texts) == {0} and layouts == []
    assert ours == reference
    assert model.prefix_cache == (setting != "no prefix cache")


def test_noise_at_a_layer_does_not_depend_on_the_other_layers_perturbed() -> None:
    tiny = models.tiny_backbone("llama")
    ids = _ids(tiny)
    lower = torch.zeros(tiny.n_layers, tiny.ffn_width, dtype=torch.bool)
    lower[0, :5] = True
    upper = torch.zeros_like(lower)
    upper[1, :5] = True

    def layer_one(chosen: torch.Tensor | None) -> torch.Tensor:
        with (
            perturbation.perturbed(tiny, chosen, "gaussian", sigma=0.5, seed=3)
            if chosen is not None
            else engine.record_neurons(tiny),
            engine.record_neurons(tiny) as acts,
        ):
            tiny.model(input_ids=ids)
        return acts[1]

    alone = layer_one(upper) - layer_one(None)  # layer 1's noise with layer 0 clean
    with_lower = layer_one(upper | lower) - layer_one(lower)  # and with layer 0 perturbed
    assert alone[..., :5].abs().min() > 0
    torch.testing.assert_close(with_lower, alone)


def test_all_scope_perturbs_the_text_too_and_encoders_keep_to_the_prompt() -> None:
    model, split = _prompt_model(), _split()
    everything = torch.ones(model.backbone.n_layers, model.backbone.ffn_width, dtype=torch.bool)
    zero_all = perturbation.PerturbConfig(noise="zero", scope="all")
    with (
        prompting.prefix_cached(model, False),
        perturbation.perturbed(model.backbone, everything, "zero"),
    ):
        expected = model.evaluate(split, 4).accuracy
    assert (
        perturbation.perturbed_evaluation(model, split, everything, zero_all, 0, 4).accuracy
        == expected
    )
    encoder = _prompt_model("roberta")
    with perturbation.perturbed(encoder.backbone, everything, "zero", first=encoder.n_scored):
        expected = encoder.evaluate(split, 4).accuracy
    zero_prompt = perturbation.PerturbConfig(noise="zero", scope="prompt")
    assert (
        perturbation.perturbed_evaluation(encoder, split, everything, zero_prompt, 0, 4).accuracy
        == expected
    )


def test_sweep_rows_with_zero_noise_all_equal_the_clean_accuracy() -> None:
    model, split = _prompt_model(), _split()
    gen = torch.Generator().manual_seed(0)
    scores = {name: torch.rand(2, 48, generator=gen) for name in ("own", "other")}
    orders = {name: partial(select, value, selection="per_layer") for name, value in scores.items()}
    config = perturbation.PerturbConfig(sigma=0.0)
    rows = perturbation.sweep(model, split, orders, [0.0, 0.1, 0.5], config, "own", 2, batch_size=4)
    clean = model.evaluate(split, 4).accuracy
    assert len(rows) == 3 * (2 + 2)
    assert all(row["accuracy"] == clean for row in rows)
    assert {row["order"] for row in rows} == {"own", "other", "random"}
    with pytest.raises(ValueError, match="own order"):
        perturbation.sweep(model, split, orders, [0.1], config, "missing")


def test_sweep_rows_keep_each_examples_outcome_in_split_order() -> None:
    model, split = _prompt_model(), _split()
    scores = torch.rand(2, 48, generator=torch.Generator().manual_seed(1))
    orders = {"own": partial(select, scores, selection="per_layer")}
    config = perturbation.PerturbConfig(noise="zero", scope="all")
    rows = perturbation.sweep(model, split, orders, [0.0, 0.5, 1.0], config, "own", 1, batch_size=3)
    clean = model.evaluate(split, 4)
    assert rows[0]["correct"] == "".join(
        "1" if c else "0" for c in clean.labels == clean.predictions
    )
    matrix = perturbation.correct_matrix(rows)
    assert matrix.shape == (len(rows), len(split))
    assert matrix.mean(axis=1) == pytest.approx([row["accuracy"] for row in rows])
    everything = torch.ones(2, 48, dtype=torch.bool)
    zeroed = perturbation.perturbed_evaluation(model, split, everything, config, 0, 4)
    own_all = next(r for r in rows if r["order"] == "own" and r["fraction"] == 1.0)
    assert own_all["correct"] == "".join(
        "1" if c else "0" for c in zeroed.labels == zeroed.predictions
    )
    with pytest.raises(ValueError, match="different numbers of examples"):
        perturbation.correct_matrix([{"correct": "01"}, {"correct": "011"}])


def test_importance_is_the_area_between_random_and_order_curves() -> None:
    rows = [
        {"order": "random", "draw": d, "fraction": f, "accuracy": 0.8}
        for d in (0, 1)
        for f in (0.0, 0.1, 0.2)
    ]
    rows += [{"order": "a", "draw": 0, "fraction": f, "accuracy": 0.8 - f} for f in (0.0, 0.1, 0.2)]
    rows += [{"order": "b", "draw": 0, "fraction": f, "accuracy": 0.8} for f in (0.0, 0.1, 0.2)]
    found = perturbation.importance(rows)
    assert found["a"] == pytest.approx(0.02) and found["b"] == pytest.approx(0.0)
    z = perturbation.zscored(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 2.0]}))
    assert z.to_numpy().tolist() == [[-1.0, 1.0], [0.0, 0.0]]
    assert perturbation.curve_area([0.2, 0.0, 0.1], [1.0, 1.0, 1.0]) == pytest.approx(0.2)


def test_selectivity_index_known_answers_and_class_means() -> None:
    means = torch.zeros(2, 1, 2, 3)
    means[0, 0, :, 0] = 2.0  # only class 0 drives neuron 0: index 1
    means[:, 0, :, 1] = 1.0  # both classes alike: index 0
    means[0, 0, 0, 2], means[1, 0, 0, 2] = 3.0, 1.0  # (3 - 1) / (3 + 1) at position 0
    index = perturbation.selectivity_index(means)
    assert torch.allclose(index, torch.tensor([[1.0, 0.0, 0.5]]))
    model, split = _prompt_model(), _split()
    found = perturbation.class_means(model, split, 2, batch_size=4)
    batch = next(model.batches(split, len(split)))
    acts = engine.prompt_activations(model, batch)
    torch.testing.assert_close(found[1], acts[batch.labels == 1].mean(dim=0))
    with pytest.raises(ValueError, match="every class"):
        perturbation.class_means(model, split.select([0, 2]), 2)


def test_neuron_spread_is_the_standard_deviation_over_examples_and_positions() -> None:
    model, split = _prompt_model(), _split()
    batch = next(model.batches(split, len(split)))
    acts = engine.prompt_activations(model, batch)
    expected = acts.transpose(1, 2).reshape(-1, *acts.shape[1::2]).std(dim=0, unbiased=False)
    torch.testing.assert_close(
        perturbation.neuron_spread(model, split, 4), expected, atol=1e-5, rtol=1e-4
    )


def test_perturbation_values_are_baselines_spreads_or_nothing() -> None:
    model, split = _prompt_model(), _split()
    baseline = perturbation.perturbation_values(
        model, split, perturbation.PerturbConfig(noise="value"), 4
    )
    expected = activations.baseline(model, split, 4).mean(dim=1)
    torch.testing.assert_close(baseline, expected)
    spread = perturbation.perturbation_values(
        model, split, perturbation.PerturbConfig(noise_scale="spread"), 4
    )
    torch.testing.assert_close(spread, perturbation.neuron_spread(model, split, 4))
    assert perturbation.perturbation_values(model, split, perturbation.PerturbConfig(), 4) is None
    with pytest.raises(ValueError, match="needs each neuron's spread"):
        perturbation.perturbed_evaluation(
            model,
            split,
            torch.ones(2, 48, dtype=torch.bool),
            perturbation.PerturbConfig(noise_scale="spread"),
        )


def _rows(task: str, order: str, fraction: float, accuracy: float) -> dict:
    return {"task": task, "trial": 0, "order": order, "fraction": fraction, "accuracy": accuracy}


def test_at_largest_compares_the_own_order_with_every_random_draw() -> None:
    rows = [
        _rows("a", "a", 0.0, 0.9),
        _rows("a", "random", 0.0, 0.9),
        _rows("a", "a", 0.2, 0.5),
        _rows("a", "random", 0.2, 0.7),
        _rows("a", "random", 0.2, 0.6),
        _rows("b", "b", 0.2, 0.7),
        _rows("b", "random", 0.2, 0.6),
        _rows("b", "random", 0.2, 0.8),
    ]
    sweeps = pd.DataFrame(rows).assign(massive=[0, 0, 1, 0, 2, 0, 0, 0])
    table = perturbation.at_largest(sweeps, ["b", "a"])
    assert list(table.index) == ["b", "a"]
    assert table.loc["a", "own order"] == pytest.approx(50.0)
    assert table.loc["a", "random mean"] == pytest.approx(65.0)
    assert table.loc["a", "massive, random"] == 1.0 and table.loc["a", "massive, own"] == 1.0
    assert table["own hurts more"].tolist() == [False, True]  # b: 70 is not below 60


def test_with_predictivity_renames_the_own_order_and_stacks_the_other_ranking() -> None:
    sweeps = pd.DataFrame(
        [_rows("a", "a", 0.1, 0.5), _rows("a", "b", 0.1, 0.6), _rows("a", "random", 0.1, 0.7)]
        + [{**_rows("a", "a", 0.1, 0.4), "trial": 1}]
    )
    other = [_rows("a", "selectivity index", 0.1, 0.8)]
    stacked = perturbation.with_predictivity(sweeps, other)
    assert stacked["order"].tolist() == ["predictivity", "random", "selectivity index"]
    assert stacked["accuracy"].tolist() == [0.5, 0.7, 0.8]
    # a ranking swept in both trials keeps both trials' own order
    both = perturbation.with_predictivity(sweeps, [*other, {**other[0], "trial": 1}])
    assert both["accuracy"].tolist() == [0.5, 0.7, 0.4, 0.8, 0.8]


# ----------------------------------------------------------------------------------
# Class-swap activation patching (chapter 07).


def _patched_margins(model, split, neurons, values) -> torch.Tensor:
    """Margins with the neurons fixed at ``values`` at the scored positions, by hand."""
    decoder = model.backbone.kind == "decoder"
    out = torch.empty(len(split))
    with prompting.prefix_cached(model, decoder):
        batches = list(engine.TextCaches().batches(model, split, 4))
        first = None if decoder else model.n_scored
        hooks = perturbation.perturbed(model.backbone, neurons, "value", values, first=first)
        with hooks, torch.no_grad():
            for batch, cache in batches:
                logits = model(batch, cache)
                out[batch.rows] = (logits[:, 1] - logits[:, 0]) * (2 * batch.labels - 1)
    return out


@pytest.mark.parametrize("kind", ["llama", "roberta"])
def test_class_swap_sets_each_example_to_the_other_class_mean(kind: str) -> None:
    model, split = _prompt_model(kind), _split()
    layers, width, k = model.backbone.n_layers, model.backbone.ffn_width, model.n_scored
    chosen = _chosen(model.backbone, 0.5)
    by_class = torch.randn(2, layers, width, generator=torch.Generator().manual_seed(4))
    means = by_class[:, :, None, :].expand(2, layers, k, width).contiguous()
    found = perturbation.class_swapped(model, split, chosen, means, "other", batch_size=4)
    labels = torch.tensor(split["label"])
    for label in (0, 1):
        rows = (labels == label).nonzero().flatten()
        expected = _patched_margins(model, split, chosen, by_class[1 - label])[rows]
        torch.testing.assert_close(
            torch.tensor(found.margins[rows]).float(), expected, atol=1e-5, rtol=1e-4
        )
    assert found.predictions.tolist() == [
        int(m > 0) if y else int(m <= 0)
        for m, y in zip(found.margins, labels.tolist(), strict=True)
    ]
    assert engine.hook_count(model.backbone.model) == 0


def test_swapping_with_the_same_class_changes_nothing_where_its_mean_is_the_example() -> None:
    model = _prompt_model()
    split = _split().select([0, 1])  # one example of each class: its class's mean is itself
    means = perturbation.class_means(model, split, 2, batch_size=2)
    everything = torch.ones(model.backbone.n_layers, model.backbone.ffn_width, dtype=torch.bool)
    nothing = torch.zeros_like(everything)
    clean = perturbation.class_swapped(model, split, nothing, means, "other", 2).margins
    same = perturbation.class_swapped(model, split, everything, means, "same", 2).margins
    other = perturbation.class_swapped(model, split, everything, means, "other", 2).margins
    np.testing.assert_allclose(same, clean, atol=1e-5)
    assert not np.allclose(other, clean, atol=1e-3)
    with pytest.raises(perturbation.PerturbationError, match="means must have shape"):
        perturbation.class_swapped(model, split, everything, means[:, :1], "other", 2)
    with pytest.raises(ValueError, match="swap"):
        perturbation.class_swapped(model, split, everything, means, "mine", 2)  # type: ignore[arg-type]
    with pytest.raises(perturbation.PerturbationError, match="scope='prompt'"):
        perturbation.PerturbConfig(noise="swap", scope="all")


def test_swapping_a_planted_causal_neuron_turns_every_prediction_over() -> None:
    """The last layer's neuron ``j`` writes the label words' logit difference a thousand
    times over: the prediction is the sign of its activation at the read-out. Labelled
    by that sign, the prompt is always right; swapping that one neuron for the other
    class's mean makes it always wrong, swapping it for its own class's mean or swapping
    a random neuron of the layer instead changes nothing."""
    model = _prompt_model()
    backbone, last = model.backbone, model.backbone.n_layers - 1
    words = "good great fun boring bad awful loved hated movie film plot story".split()
    texts = [f"{a} {b} {c}" for a in words[:6] for b in words[6:9] for c in words[9:]]
    unlabelled = data.dataset(texts, [0] * len(texts), ("negative", "positive"))
    batch = next(model.batches(unlabelled, len(texts)))
    at_readout = engine.prompt_activations(model, batch)[:, last, -1]  # [n, ffn]
    j = int((at_readout > 0).float().mean(0).sub(0.5).abs().argmin())  # the most mixed signs
    value = at_readout[:, j]
    clear = (value.abs() > 0.1 * value.abs().median()).nonzero().flatten().tolist()
    labels = (value[clear] > 0).long()
    assert 0 < int(labels.sum()) < len(clear)  # both classes
    head = backbone.head().weight
    direction = head[model.label_ids[1]] - head[model.label_ids[0]]
    with torch.no_grad():
        backbone.neuron_sites()[last].weight[:, j] = 1e3 / value.abs().median() * direction
    split = data.dataset([texts[i] for i in clear], labels.tolist(), ("negative", "positive"))
    assert model.evaluate(split, 8).accuracy == 1.0  # the plant decides every prediction
    means = perturbation.class_means(model, split, 2, batch_size=8)
    planted = torch.zeros(backbone.n_layers, backbone.ffn_width, dtype=torch.bool)
    planted[last, j] = True
    elsewhere = torch.zeros_like(planted)
    elsewhere[last, (j + 1) % backbone.ffn_width] = True
    swap = partial(perturbation.class_swapped, model, split, means=means, batch_size=8)
    assert swap(planted, swap="other").accuracy == 0.0
    assert swap(planted, swap="same").accuracy == 1.0
    assert swap(elsewhere, swap="other").accuracy == 1.0
    config = perturbation.PerturbConfig(noise="swap", scope="prompt")
    rows = perturbation.sweep(
        model,
        split,
        {"planted": lambda f: planted},
        [0.0, 0.5],
        config,
        "planted",
        random_draws=1,
        batch_size=8,
        values=means,
    )
    accuracy = {(r["order"], r["fraction"]): r["accuracy"] for r in rows}
    assert accuracy[("planted", 0.0)] == 1.0 and accuracy[("planted", 0.5)] == 0.0
    assert all(r["margin"] > 0 for r in rows if r["fraction"] == 0.0)
    assert [r["margin"] < 0 for r in rows if r["order"] == "planted"] == [False, True]


def test_noise_is_added_in_float32_and_rounded_once_on_a_bfloat16_backbone() -> None:
    from helpers.data import stable_seed

    tiny = models.tiny_backbone("llama")
    tiny.model.to(torch.bfloat16)
    ids, chosen = _ids(tiny), _chosen(tiny)
    with engine.record_neurons(tiny, layers=[0]) as clean:
        tiny.model(input_ids=ids)
    with (
        perturbation.perturbed(tiny, chosen, "gaussian", sigma=0.1, seed=3),
        engine.record_neurons(tiny, layers=[0]) as noisy,
    ):
        tiny.model(input_ids=ids)
    generator = torch.Generator().manual_seed(stable_seed("noise", 3, 0))
    noise = torch.randn(ids.shape[0], 1, tiny.ffn_width, generator=generator) * 0.1
    expected = clean[0].float() + noise * chosen[0]  # the clean values are bfloat16's
    torch.testing.assert_close(noisy[0], expected.to(torch.bfloat16).float(), rtol=0, atol=0)
