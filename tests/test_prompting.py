"""Hard prompts, prediction positions and the verbalizer on tiny backbones."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import toys

from helpers import data, engine, models, prompt_trials, prompting, tuning, zeroshot


def _split() -> data.Dataset:
    texts = ["a good movie", "the worst film", "great fun", "boring and bad"]
    return data.dataset(texts, [1, 0, 1, 0], ("negative", "positive"))


def test_prediction_position_is_last_real_token_or_mask(tiny: models.Backbone) -> None:
    batches = zeroshot.hard_prompt_batches(tiny, _split(), "{text} sentiment :", 4, 16)
    encoded, rows = next(batches)
    positions = zeroshot.prediction_positions(tiny, encoded["input_ids"], encoded["attention_mask"])
    ids = encoded["input_ids"][torch.arange(4), positions]
    if tiny.kind == "encoder":
        assert (ids == tiny.tokenizer.mask_token_id).all()
    else:
        assert (ids == tiny.tokenizer.convert_tokens_to_ids(":")).all()
        assert (encoded["attention_mask"].sum(1) < encoded["input_ids"].shape[1]).any()
    assert sorted(rows.tolist()) == [0, 1, 2, 3]
    lengths = encoded["attention_mask"].sum(1)
    assert (lengths[1:] >= lengths[:-1]).all()  # shortest texts first


def test_head_at_one_position_equals_full_sequence_logits(tiny: models.Backbone) -> None:
    encoded, _ = next(zeroshot.hard_prompt_batches(tiny, _split(), "{text} sentiment :", 4, 16))
    positions = zeroshot.prediction_positions(tiny, encoded["input_ids"], encoded["attention_mask"])
    label_ids = data.verbalizer_ids(tiny.tokenizer, ["negative", "positive"])
    hidden = tiny.model.base_model(**encoded).last_hidden_state
    fast = zeroshot.label_logits(tiny, hidden, positions, label_ids)
    full = tiny.model(**encoded).logits[torch.arange(4), positions][:, label_ids]
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_zero_shot_returns_one_prediction_per_example(tiny: models.Backbone) -> None:
    result = zeroshot.zero_shot(tiny, _split(), "{text} sentiment :", ["negative", "positive"], 3)
    assert result.labels.tolist() == [1, 0, 1, 0]
    assert set(result.predictions.tolist()) <= {0, 1}
    assert 0.0 <= result.accuracy <= 1.0


def test_several_verbalizers_equal_separate_zero_shot_runs(tiny: models.Backbone) -> None:
    split = data.dataset(
        ["a good movie", "the worst film and very bad", "great fun", "bad", "it was fine"],
        [1, 0, 1, 0, 1],
        ("negative", "positive"),
    )
    words = {"shared": ["negative", "positive"], "natural": ["bad", "good"]}
    joint = zeroshot.zero_shot_verbalizers(tiny, split, "{text} sentiment :", words, 2)
    for name, label_words in words.items():
        alone = zeroshot.zero_shot(tiny, split, "{text} sentiment :", label_words, 5)
        assert joint[name].predictions.tolist() == alone.predictions.tolist()
        assert joint[name].labels.tolist() == [1, 0, 1, 0, 1]


def test_zero_shot_bad_input(tiny: models.Backbone) -> None:
    with pytest.raises(data.LabelWordError, match="single tokens"):
        zeroshot.zero_shot(tiny, _split(), "{text} :", ["negative", "very good"])
    with pytest.raises(ValueError, match="empty split"):
        zeroshot.zero_shot(tiny, _split().select([]), "{text} :", ["negative", "positive"])


def test_balanced_accuracy_known_answers() -> None:
    labels = np.array([0, 0, 0, 1])
    assert zeroshot.balanced_accuracy(labels, np.zeros(4, dtype=int)) == 0.5
    assert zeroshot.balanced_accuracy(labels, labels) == 1.0
    assert zeroshot.Evaluation(labels, np.zeros(4, dtype=int)).accuracy == 0.75


def test_truncate_keeps_the_first_tokens() -> None:
    tokenizer = models.tiny_tokenizer("decoder")
    assert zeroshot.truncate(tokenizer, "a good movie and a bad plot", 3) == "a good movie"
    assert zeroshot.truncate(tokenizer, "a good movie", 10) == "a good movie"


def test_zero_shot_of_a_four_class_task_uses_its_natural_words_only() -> None:
    from dataclasses import replace

    names = ("business", "sport", "market", "bank")
    spec = replace(data.task_spec("bbc"), label_names=names, natural_words=names)
    split = data.dataset(["team match", "the market", "a goal", "bank profit"], [1, 2, 1, 3], names)
    rows = zeroshot.zero_shot_table(
        models.tiny_backbone("llama"), [data.TaskData(spec, split, split, split, "k")], "test"
    )
    assert [(r["words"], r["label_words"]) for r in rows] == [
        ("natural", "business/sport/market/bank")
    ]
    assert rows[0]["chance"] == 25.0


@pytest.mark.slow
def test_embedded_backbone_zero_shot_beats_chance_on_sentiment(store) -> None:
    backbone = models.load_backbone("smollm2-135m")
    task = data.load_task("rotten_tomatoes", data.SplitSizes(10, 10, 64), store=store)
    rows = zeroshot.zero_shot_table(backbone, [task], "test", 32, 64)
    assert rows[0]["label_words"] == "negative/positive"
    assert rows[0]["accuracy"] > 55.0


# ----------------------------------------------------------------------------------
# Soft prompts.


def _pairs() -> data.Dataset:
    return toys.reviews()


def _soft(tiny: models.Backbone, **settings) -> prompting.SoftPromptModel:
    config = prompting.PromptConfig(length=4, max_text_tokens=8, **settings)
    return prompting.SoftPromptModel(tiny, config, seed=0)


def test_gradients_reach_only_the_prompt(tiny: models.Backbone) -> None:
    model = _soft(tiny)
    batch = next(model.batches(_pairs(), 6))
    torch.nn.functional.cross_entropy(model(batch), batch.labels).backward()
    assert model.prompt.grad is not None and model.prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.model.parameters())
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["prompt"]


def test_layout_puts_the_prompt_and_the_prediction_where_design_says(
    tiny: models.Backbone,
) -> None:
    model = _soft(tiny)
    batch = next(model.batches(_pairs(), 6))
    layout = model.layout(batch)
    n = len(batch.labels)
    at_prompt = layout.embeds[torch.arange(n)[:, None], layout.prompt_positions]
    embedding = tiny.model.get_input_embeddings().weight
    if tiny.kind == "encoder":
        assert layout.predict.tolist() == [0] * n
        mask = embedding[tiny.tokenizer.mask_token_id].expand(n, -1)
        torch.testing.assert_close(at_prompt[:, 0], mask)
        torch.testing.assert_close(at_prompt[:, 1:], model.prompt.expand(n, -1, -1))
    else:
        # The soft prompt follows the text and the prediction reads the last prompt position.
        torch.testing.assert_close(at_prompt, model.prompt.expand(n, -1, -1))
        assert (layout.prompt_positions[:, 0] == batch.lengths).all()
        assert (layout.predict == layout.prompt_positions[:, -1]).all()
        assert (layout.attention_mask.sum(1) - 1 == layout.predict).all()
    # Whatever the layout, the prediction must see the text: two texts, two outputs.
    logits = model(batch)
    assert not torch.allclose(logits[0], logits[1])


def test_prediction_logits_equal_the_full_model_at_that_position(tiny: models.Backbone) -> None:
    model = _soft(tiny, template="answer :")
    batch = next(model.batches(_pairs(), 6))
    layout = model.layout(batch)
    full = tiny.model(inputs_embeds=layout.embeds, attention_mask=layout.attention_mask).logits
    expected = full[torch.arange(6), layout.predict][:, model.label_ids]
    torch.testing.assert_close(model(batch), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2", "mistral"])
def test_cached_text_prefix_gives_the_full_layout_outputs(model_type: str) -> None:
    tiny = models.tiny_backbone(model_type)
    cached = _soft(tiny, template="answer :")
    full = prompting.SoftPromptModel(tiny, cached.config, seed=0, prefix_cache=False)
    assert cached.prefix_cache and not full.prefix_cache
    batch = next(cached.batches(_pairs(), 6))
    torch.testing.assert_close(
        cached.prompt_hidden(batch), full.prompt_hidden(batch), rtol=1e-5, atol=1e-5
    )
    cache = cached.text_cache(batch)
    first, second = cached(batch, cache), cached(batch, cache)  # the cache is reusable
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, full(batch), rtol=1e-5, atol=1e-5)
    # Gradients through the cached path equal those through the full layout.
    for model in (cached, full):
        model.prompt.grad = None
        torch.nn.functional.cross_entropy(model(batch), batch.labels).backward()
    torch.testing.assert_close(cached.prompt.grad, full.prompt.grad, rtol=1e-4, atol=1e-6)


def test_a_bfloat16_backbone_gives_float32_logits_that_train_the_prompt() -> None:
    tiny = models.tiny_backbone("llama")
    half = models.tiny_backbone("llama")
    half.model.to(torch.bfloat16)
    high, low = _soft(tiny, template="answer :"), _soft(half, template="answer :")
    assert low.prompt.dtype == torch.bfloat16
    batch = next(low.batches(_pairs(), 6))
    logits = low(batch, low.text_cache(batch))
    assert logits.dtype == torch.float32  # the loss and every comparison read float32
    torch.testing.assert_close(logits, high(batch), rtol=0.05, atol=0.05)
    torch.nn.functional.cross_entropy(logits, batch.labels).backward()
    assert low.prompt.grad is not None and low.prompt.grad.abs().sum() > 0
    scores = zeroshot.label_logits(
        half, torch.randn(2, 3, 32, dtype=torch.bfloat16), torch.tensor([0, 2]), [5, 6]
    )
    assert scores.dtype == torch.float32


def test_decoder_template_and_pair_separator(tmp_path) -> None:
    tiny = models.tiny_backbone("llama")
    model = _soft(tiny, template="answer :", separator=" . ")
    assert model.n_scored == 4 + 2
    split = data.dataset(["a man runs"], [1], ("negative", "positive"), ["a dog sits"])
    batch = next(model.batches(split, 1))
    ids = tiny.tokenizer("a man runs . a dog sits", add_special_tokens=False)["input_ids"]
    assert batch.input_ids[0].tolist() == ids
    layout = model.layout(batch)
    assert layout.prompt_positions[0].tolist() == list(range(len(ids), len(ids) + 6))


def test_saved_prompt_reloads_to_identical_logits(tiny: models.Backbone, store) -> None:
    task = data.TaskData(data.task_spec("rotten_tomatoes"), _pairs(), _pairs(), _pairs(), "k")
    train = tuning.TrainConfig(max_steps=2, eval_every=1, batch_size=3, learning_rate=0.1)
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    artefact = prompt_trials.run_trial(
        tiny, task, config, train, seed=1, store=store, progress=False
    )
    assert artefact.json("metrics")["best_step"] in (1, 2)
    reloaded = prompt_trials.load_prompt(store.load("prompts", artefact.key), tiny)
    torch.testing.assert_close(reloaded.prompt, artefact.tensors()["prompt"])
    again = prompt_trials.run_trial(tiny, task, config, train, seed=1, store=store, progress=False)
    assert again.key == artefact.key
    assert prompt_trials.trial_setup(again) == (config, train, 1)
    other = prompt_trials.load_prompt(again, tiny)
    logits = reloaded(next(reloaded.batches(_pairs(), 6)))
    torch.testing.assert_close(logits, other(next(other.batches(_pairs(), 6))), rtol=0, atol=0)
    fresh = prompting.SoftPromptModel(tiny, config, seed=123)
    assert not torch.allclose(fresh(next(fresh.batches(_pairs(), 6))), logits)


def test_early_stopping_keeps_the_best_dev_prompt() -> None:
    tiny = models.tiny_backbone("gpt2")
    model = _soft(tiny)
    correct = iter([5, 8, 6, 7, 9])  # dev accuracy 0.5, 0.8, 0.6, 0.7, ... out of 10
    seen: list[torch.Tensor] = []

    def evaluate(data, batch_size=32, progress=False, caches=None):
        seen.append(model.prompt.detach().clone())
        k = next(correct)
        return zeroshot.Evaluation(np.ones(10, dtype=int), (np.arange(10) < k).astype(int))

    model.evaluate = evaluate  # type: ignore[method-assign]
    config = tuning.TrainConfig(
        max_steps=10, eval_every=1, patience=2, learning_rate=0.5, batch_size=2
    )
    result = tuning.train_prompt(model, _pairs(), _pairs(), config, progress=False)
    assert [h["dev_accuracy"] for h in result.history] == [0.5, 0.8, 0.6, 0.7]
    assert (result.best_step, result.best_dev) == (2, 0.8)
    torch.testing.assert_close(model.prompt.detach(), seen[1])
    assert not torch.allclose(seen[1], seen[3])


def test_soft_prompt_bad_input(store) -> None:
    tiny = models.tiny_backbone("llama")
    with pytest.raises(data.LabelWordError, match="single tokens"):
        _soft(tiny, label_words=("negative", "very good"))
    with pytest.raises(prompting.PromptError, match="exceeds the model's maximum length 128"):
        prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=100, max_text_tokens=20))
    with pytest.raises(prompting.PromptError, match=">= 1"):
        prompting.PromptConfig(length=0)
    with pytest.raises(ValueError, match="empty split"):
        tuning.train_prompt(_soft(tiny), _pairs().select([]), _pairs(), tuning.TrainConfig())
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        tuning.TrainConfig(learning_rate=0)
    task = data.TaskData(data.task_spec("rotten_tomatoes"), _pairs(), _pairs(), _pairs(), "k")
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    train = tuning.TrainConfig(max_steps=1, eval_every=1)
    artefact = prompt_trials.run_trial(tiny, task, config, train, 0, store, progress=False)
    with pytest.raises(prompting.PromptError, match="trained on 'tiny-llama'"):
        prompt_trials.load_prompt(artefact, models.tiny_backbone("gpt2"))


def test_initialisations_follow_the_config() -> None:
    tiny = models.tiny_backbone("llama")
    normal = _soft(tiny, init="normal", init_std=0.03)
    assert abs(float(normal.prompt.detach().std()) - 0.03) < 0.015
    vocab = _soft(tiny, init="vocab")
    rows = tiny.model.get_input_embeddings().weight
    assert all(any(torch.equal(v, r) for r in rows) for v in vocab.prompt)


def test_task_init_ends_with_the_hand_written_words_after_vocabulary_vectors() -> None:
    tiny = models.tiny_backbone("llama")
    task = data.TaskData(data.task_spec("rotten_tomatoes"), _pairs(), _pairs(), _pairs(), "k")
    base = prompting.PromptConfig(length=6, init="task", max_text_tokens=8)
    config = prompting.prompt_config_for(task, base)
    assert (config.init, config.init_text) == ("text", " Sentiment:")
    model = prompting.SoftPromptModel(tiny, config, seed=0)
    words = tiny.tokenizer(" Sentiment:", add_special_tokens=False)["input_ids"]
    rows = tiny.model.get_input_embeddings().weight
    assert torch.equal(model.prompt[-len(words) :], rows[torch.tensor(words)])
    vocab = prompting.SoftPromptModel(tiny, replace(config, init="vocab"), seed=0)
    assert torch.equal(model.prompt[: 6 - len(words)], vocab.prompt[: 6 - len(words)])
    with pytest.raises(prompting.PromptError, match="prompt_config_for"):
        prompting.SoftPromptModel(tiny, base)
    with pytest.raises(prompting.PromptError, match="more than the prompt's length 1"):
        prompting.SoftPromptModel(tiny, replace(config, length=1))


def test_text_caches_reused_across_prompts_give_the_same_evaluation() -> None:
    tiny = models.tiny_backbone("llama")
    caches = engine.TextCaches()
    for seed in (0, 1):
        config = prompting.PromptConfig(length=3, max_text_tokens=8)
        model = prompting.SoftPromptModel(tiny, config, seed=seed)
        plain = model.evaluate(_pairs(), batch_size=4)
        for _ in range(2):
            cached = model.evaluate(_pairs(), batch_size=4, caches=caches)
            assert cached.predictions.tolist() == plain.predictions.tolist()
    assert len(caches._items) == 1


@pytest.mark.slow
def test_embedded_backbone_cached_prefix_equals_full_layout() -> None:
    backbone = models.load_backbone("smollm2-135m")
    config = prompting.PromptConfig(length=4, max_text_tokens=16)
    cached = prompting.SoftPromptModel(backbone, config, seed=0)
    full = prompting.SoftPromptModel(backbone, config, seed=0, prefix_cache=False)
    batch = next(cached.batches(_pairs(), 6))
    torch.testing.assert_close(cached(batch), full(batch), rtol=1e-4, atol=1e-4)


def test_text_caches_drop_the_least_recently_used_split_beyond_their_budget() -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    first, second = _pairs().select(range(3)), _pairs().select(range(3, 6))
    probe = engine.TextCaches()
    probe.batches(model, first, 3)
    one_split = probe.nbytes
    caches = engine.TextCaches(max_bytes=int(1.5 * one_split))
    caches.batches(model, first, 3)
    caches.batches(model, second, 3)
    assert len(caches._items) == 1 and caches.nbytes <= 1.5 * one_split
    assert (
        model.evaluate(first, 3, caches=caches).predictions.tolist()
        == model.evaluate(first, 3).predictions.tolist()
    )


def test_evaluation_is_in_split_order_although_batches_go_by_length() -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    split = _pairs()
    lengths = model.text_lengths(split)
    assert lengths.tolist() == [int(b.lengths[0]) for b in map(_single(model, split), range(6))]
    whole = model.evaluate(split, batch_size=4)
    one_by_one = [int(model.evaluate(split.select([i]), 1).predictions[0]) for i in range(6)]
    assert whole.predictions.tolist() == one_by_one
    assert whole.labels.tolist() == list(split["label"])
    rows = [b.rows.tolist() for b, _ in model.eval_batches(split, 4)]
    assert sorted(sum(rows, [])) == list(range(6))
    assert [lengths[r].tolist() for r in rows] == [sorted(lengths[r]) for r in rows]


def _single(model: prompting.SoftPromptModel, split: data.Dataset):
    return lambda i: next(model.batches(split.select([i]), 1))


def test_bucketed_order_by_class_keeps_batches_mixed_where_length_follows_the_label() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    lengths = np.where(labels == 1, 60, 20) + rng.integers(0, 10, size=400)
    order = engine.bucketed_order(lengths, 8, np.random.default_rng(1), 16, labels)
    assert sorted(order.tolist()) == list(range(400))
    batches = [order[i : i + 8] for i in range(0, 400, 8)]
    by_length = engine.bucketed_order(lengths, 8, np.random.default_rng(1), 16)
    assert max(abs(int(labels[b].sum()) - 4) for b in batches) <= 2
    assert max(abs(int(labels[by_length[i : i + 8]].sum()) - 4) for i in range(0, 400, 8)) == 4
    # Within a class, lengths stay close: less padding than a plain shuffle of that class.
    spread = np.mean([np.ptp(lengths[b][labels[b] == 0]) for b in batches])
    assert spread < 5


def test_bucketed_order_is_a_permutation_with_batches_of_similar_length() -> None:
    lengths = np.random.default_rng(0).integers(1, 100, size=203)
    order = engine.bucketed_order(lengths, 8, np.random.default_rng(1), window=16)
    assert sorted(order.tolist()) == list(range(203))
    batches = [order[i : i + 8] for i in range(0, 203, 8)]
    plain = [np.random.default_rng(1).permutation(203)[i : i + 8] for i in range(0, 203, 8)]

    def padding(bs: list[np.ndarray]) -> int:
        return sum(int(lengths[b].max() * len(b) - lengths[b].sum()) for b in bs)

    assert padding(batches) < 0.5 * padding(plain)
    again = engine.bucketed_order(lengths, 8, np.random.default_rng(1), window=16)
    assert order.tolist() == again.tolist()
    other = engine.bucketed_order(lengths, 8, np.random.default_rng(2), window=16)
    assert order.tolist() != other.tolist()
    # Window 1 keeps a plain shuffle's batches (200 examples: no short batch to move).
    one = engine.bucketed_order(lengths[:200], 8, np.random.default_rng(1), window=1)
    shuffled = np.random.default_rng(1).permutation(200)
    assert sorted(sorted(one[i : i + 8].tolist()) for i in range(0, 200, 8)) == sorted(
        sorted(shuffled[i : i + 8].tolist()) for i in range(0, 200, 8)
    )


def test_a_trial_can_start_from_a_stored_prompt_on_a_backbone_of_the_same_width(store) -> None:
    tiny = models.tiny_backbone("llama")
    task = data.TaskData(data.task_spec("rotten_tomatoes"), _pairs(), _pairs(), _pairs(), "k")
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    first = prompt_trials.run_trial(
        tiny, task, config, tuning.TrainConfig(max_steps=2, eval_every=1), 0, store, False
    )
    # No training step at all (lr 0): the stored start comes back unchanged.
    still = tuning.TrainConfig(max_steps=1, eval_every=1, learning_rate=1e-30)
    other = models.tiny_backbone("llama", seed=5)
    resumed = prompt_trials.run_trial(other, task, config, still, 0, store, False, start=first)
    torch.testing.assert_close(resumed.tensors()["prompt"], first.tensors()["prompt"])
    assert resumed.json("config")["start"] == first.key
    moved = prompt_trials.on_backbone(prompt_trials.load_prompt(first, tiny), other)
    torch.testing.assert_close(moved.prompt, first.tensors()["prompt"], rtol=0, atol=0)
    assert moved.backbone is other
    with pytest.raises(prompting.PromptError, match="cannot start from prompt"):
        prompt_trials.run_trial(
            other, task, replace(config, length=4), still, 0, store, False, start=first
        )
    narrow = prompting.SoftPromptModel(tiny, config)
    narrow.prompt = torch.nn.Parameter(torch.zeros(3, 7))
    with pytest.raises(prompting.PromptError, match="cannot run on 'tiny-gpt2'"):
        prompt_trials.on_backbone(narrow, models.tiny_backbone("gpt2"))


def test_a_moved_task_file_tunes_the_same_prompt(tmp_path: Path, tiny_csv: Path, store) -> None:
    """A task of one's own is seeded by its content, not its path: a copy of the file in
    another folder gets the same splits, the same trial seed and so the same prompt."""
    moved = tmp_path / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    moved.write_text(tiny_csv.read_text())
    tiny = models.tiny_backbone("llama")
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    train = tuning.TrainConfig(max_steps=2, eval_every=1, batch_size=4)
    prompts = []
    for file in (tiny_csv, moved):
        task = data.load_task(str(file), data.SplitSizes(16, 8, 8), seed=5)
        prompts.append(prompt_trials.run_trial(tiny, task, config, train, 0, store, False))
    assert prompts[0].key != prompts[1].key  # stored apart: the task names differ
    first, second = (p.tensors()["prompt"] for p in prompts)
    assert torch.equal(first, second)
    other = prompt_trials.run_trial(tiny, task, config, train, 1, store, False)
    assert not torch.equal(other.tensors()["prompt"], first)  # the trial seed still counts
