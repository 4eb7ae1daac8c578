"""The text-once engine: cached text states equal the uncached layout, and stay in step
with everything they depend on."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from helpers import activations, data, engine, models, prompt_trials, prompting, tuning, zeroshot

WORDS = ["a good movie", "the worst film", "great fun", "boring and bad", "loved it"]


def _split(n: int = 10) -> data.Dataset:
    texts = [f"{WORDS[i % 5]} {'very ' * (i % 3)}fun" for i in range(n)]
    return data.dataset(texts, [i % 2 for i in range(n)], ("negative", "positive"))


def _double(model_type: str) -> models.Backbone:
    tiny = models.tiny_backbone(model_type)
    tiny.model.double()
    return tiny


def _train(
    tiny: models.Backbone, caches: engine.TextCaches | None, prefix_cache: bool, steps: int
) -> tuple[tuning.TrainResult, prompting.SoftPromptModel]:
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    model = prompting.SoftPromptModel(tiny, config, seed=5, prefix_cache=prefix_cache)
    train = tuning.TrainConfig(
        learning_rate=0.05, batch_size=3, max_steps=steps, eval_every=2, patience=10, mode="eval"
    )
    result = tuning.train_prompt(model, _split(), _split(4), train, 7, False, caches)
    return result, model


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "opt"])
def test_training_on_cached_text_gives_the_prompt_of_the_full_layout(model_type: str) -> None:
    tiny = _double(model_type)
    caches = engine.TextCaches()
    # 8 steps of 3 over 10 examples: more than two epochs, so most steps reuse texts.
    cached, _ = _train(tiny, caches, prefix_cache=True, steps=8)
    per_step, _ = _train(tiny, None, prefix_cache=True, steps=8)
    full, _ = _train(tiny, None, prefix_cache=False, steps=8)
    assert caches.report()["texts_reused"] > caches.report()["texts_computed"] - 4
    for other in (per_step, full):
        torch.testing.assert_close(cached.prompt, other.prompt, rtol=1e-9, atol=1e-12)
        assert [h["dev_accuracy"] for h in cached.history] == [
            h["dev_accuracy"] for h in other.history
        ]
        assert [h["loss"] for h in cached.history] == pytest.approx(
            [h["loss"] for h in other.history], rel=1e-12
        )
    assert not torch.equal(cached.prompt, _train(tiny, None, True, 2)[0].prompt)


def test_a_gathered_batch_cache_equals_the_text_run_for_that_batch() -> None:
    tiny = _double("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    split, caches = _split(), engine.TextCaches()
    first = next(model.batches(split, 4, order=[7, 1, 3, 0]))
    caches.batch_cache(model, split, first)
    # Rows 1 and 3 are stored; 9 and 4 are run now; the gathered cache is for the batch.
    second = next(model.batches(split, 4, order=[3, 9, 1, 4]))
    gathered = caches.batch_cache(model, split, second)
    direct = model.text_cache(second)
    mask = second.attention_mask.bool()
    for ours, theirs in zip(gathered.layers, direct.layers, strict=True):
        for a, b in ((ours.keys, theirs.keys), (ours.values, theirs.values)):
            assert a.shape == b.shape
            torch.testing.assert_close(
                a.transpose(1, 2)[mask], b.transpose(1, 2)[mask], rtol=1e-12, atol=1e-12
            )
    assert caches.computed == 6 and caches.reused == 2
    torch.testing.assert_close(model(second, gathered), model(second), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "opt"])
def test_probing_on_cached_text_equals_probing_the_full_layout(model_type: str) -> None:
    tiny = _double(model_type)
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    cached = prompting.SoftPromptModel(tiny, config, seed=2)
    full = prompting.SoftPromptModel(tiny, config, seed=2, prefix_cache=False)
    caches, split = engine.TextCaches(), _split()
    results = []
    for model, kept in ((cached, caches), (cached, caches), (full, None)):
        base = activations.baseline(model, split, 4, caches=kept)
        accuracy, _ = activations.threshold_accuracy(model, split, base, 3, caches=kept)
        results.append((base, accuracy))
    assert caches.reused == 2 * len(split)  # the second probe ran no text
    for base, accuracy in results[1:]:
        torch.testing.assert_close(base, results[0][0], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(accuracy, results[0][1], rtol=0, atol=0)


def test_the_cache_is_recomputed_when_anything_it_depends_on_changes() -> None:
    tiny = models.tiny_backbone("llama")
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    model = prompting.SoftPromptModel(tiny, config)
    caches, split = engine.TextCaches(), _split()
    batch = next(model.batches(split, 4))
    caches.batch_cache(model, split, batch)
    assert caches.computed == 4
    caches.batch_cache(model, split, batch)
    assert caches.computed == 4  # nothing changed: all reused
    relabelled = data.dataset(list(split["text"]), [1 - y for y in split["label"]], ("n", "p"))
    others = [
        (model, relabelled),  # other content, same rows
        (prompting.SoftPromptModel(tiny, replace(config, max_text_tokens=3)), split),
        (prompting.SoftPromptModel(tiny, replace(config, separator=" | ")), split),
        (prompting.SoftPromptModel(models.tiny_backbone("llama"), config), split),
    ]
    for i, (other, split_) in enumerate(others, start=2):
        caches.batch_cache(other, split_, next(other.batches(split_, 4)))
        assert caches.computed == 4 * i
    assert len(caches._items) == 5


def test_examples_beyond_the_budget_are_not_kept_and_still_get_their_cache() -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    split = _split()
    probe = engine.TextCaches()
    first = next(model.batches(split, 4))
    probe.batch_cache(model, split, first)
    # Room for the first batch's texts and not many more.
    caches = engine.TextCaches(max_bytes=int(1.2 * probe.nbytes))
    for batch in [first, *model.batches(split, 4)]:
        cache = caches.batch_cache(model, split, batch)
        torch.testing.assert_close(model(batch, cache), model(batch), rtol=1e-5, atol=1e-6)
        assert caches.nbytes <= caches.max_bytes
    assert caches.report()["splits_beyond_budget"] == 1
    assert caches.reused == 4 and caches.computed == 4 + 4 + 2  # batch 0 stored, 1-2 not
    none = engine.TextCaches(max_bytes=0)
    none.batch_cache(model, split, first)
    none.batch_cache(model, split, first)
    assert none.nbytes == 0 and none.computed == 8


def test_encoders_and_full_layouts_get_no_batch_cache() -> None:
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    for model in (
        prompting.SoftPromptModel(models.tiny_backbone("roberta"), config),
        prompting.SoftPromptModel(models.tiny_backbone("llama"), config, prefix_cache=False),
    ):
        batch = next(model.batches(_split(), 4))
        assert engine.TextCaches().batch_cache(model, _split(), batch) is None


def test_dropout_is_detected_so_training_recomputes_text_where_it_would_differ() -> None:
    assert engine.active_dropout(models.tiny_backbone("gpt2").model)
    assert not engine.active_dropout(models.tiny_backbone("llama").model)
    tiny = models.tiny_backbone("gpt2")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    caches = engine.TextCaches()
    train = tuning.TrainConfig(batch_size=3, max_steps=4, eval_every=4, mode="train")
    tuning.train_prompt(model, _split(), _split(4), train, 0, False, caches)
    assert not any(key[-1] == "examples" for key in caches._items)  # dev batches only


def _falling_dev(model: prompting.SoftPromptModel, first: int) -> None:
    """Make a model's dev accuracy fall after ``first`` evaluations, so it stops early."""
    calls = iter(range(10**6))
    evaluate = model.evaluate

    def falling(split, *args, **kwargs):  # noqa: ANN001, ANN202
        result = evaluate(split, *args, **kwargs)
        wrong = result.labels if next(calls) < first else 1 - result.labels
        return zeroshot.Evaluation(result.labels, wrong)

    model.evaluate = falling  # type: ignore[method-assign]


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "opt"])
def test_trials_trained_together_give_each_the_prompt_it_gets_alone(model_type: str) -> None:
    tiny = _double(model_type)
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    train = tuning.TrainConfig(
        learning_rate=0.2, batch_size=3, max_steps=9, eval_every=1, patience=2, mode="eval"
    )
    seeds, stops = [3, 4, 5], [2, 9, 4]  # the first trial stops early, the others go on
    together = [prompting.SoftPromptModel(tiny, config, seed=s) for s in seeds]
    for model, first in zip(together, stops, strict=True):
        _falling_dev(model, first)
    caches = engine.TextCaches()
    joint = tuning.train_prompts(together, _split(), _split(4), train, seeds, False, caches)
    for seed, first, result in zip(seeds, stops, joint, strict=True):
        alone = prompting.SoftPromptModel(tiny, config, seed=seed)
        _falling_dev(alone, first)
        single = tuning.train_prompt(alone, _split(), _split(4), train, seed, False)
        torch.testing.assert_close(result.prompt, single.prompt, rtol=1e-9, atol=1e-12)
        assert (result.best_step, result.best_dev) == (single.best_step, single.best_dev)
        assert [h["step"] for h in result.history] == [h["step"] for h in single.history]
        assert [h["loss"] for h in result.history] == pytest.approx(
            [h["loss"] for h in single.history], rel=1e-9
        )
    assert [len(r.history) for r in joint] == [4, 9, 6]
    assert [r.best_step for r in joint] == [2, 9, 4]


def test_run_trials_together_stores_what_one_at_a_time_stores(store, tmp_path) -> None:
    from helpers.store import ArtefactStore

    tiny = _double("llama")
    task = data.TaskData(data.task_spec("rotten_tomatoes"), _split(), _split(4), _split(6), "k")
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    train = tuning.TrainConfig(learning_rate=0.1, batch_size=3, max_steps=4, eval_every=2)
    apart = prompt_trials.run_trials(tiny, task, config, train, [0, 1, 2], store, False)
    other = ArtefactStore(tmp_path / "other")
    together = prompt_trials.run_trials(tiny, task, config, train, [0, 1, 2], other, False, None, 2)
    for a, b in zip(apart, together, strict=True):
        assert a.key == b.key
        torch.testing.assert_close(
            a.tensors()["prompt"], b.tensors()["prompt"], rtol=1e-9, atol=1e-12
        )
        assert a.json("metrics") == b.json("metrics")
    with pytest.raises(ValueError, match="joint_trials must be >= 1"):
        prompt_trials.run_trials(tiny, task, config, train, [0], store, False, None, 0)
    with pytest.raises(prompting.PromptError, match="one backbone and one prompt config"):
        models_ = [
            prompting.SoftPromptModel(tiny, config),
            prompting.SoftPromptModel(tiny, replace(config, length=2)),
        ]
        tuning.train_prompts(models_, _split(), _split(4), train, [0, 1], False)


def _scores(model: prompting.SoftPromptModel, caches: engine.TextCaches, split: data.Dataset):
    return [model(batch, cache) for batch, cache in caches.batches(model, split, 4)]


def test_evaluation_texts_kept_on_disk_are_read_back_by_a_later_process(tmp_path) -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    split = _split()
    first = engine.TextCaches(folder=tmp_path)
    expected = _scores(model, first, split)
    assert (first.computed, first.loaded, first.written) == (10, 0, 10)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and first.report()["folder_gb"] > 0
    later = engine.TextCaches(folder=tmp_path)  # a new chapter: nothing in memory
    got = _scores(model, later, split)
    assert (later.computed, later.loaded, later.written) == (0, 10, 0)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_texts_on_disk_are_not_used_for_other_weights_texts_or_tokens(tmp_path) -> None:
    tiny = models.tiny_backbone("llama")
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    model = prompting.SoftPromptModel(tiny, config)
    split = _split()
    _scores(model, engine.TextCaches(folder=tmp_path), split)
    changed = models.tiny_backbone("llama")
    with torch.no_grad():
        changed.model.get_input_embeddings().weight[5] += 1.0  # same name, other weights
    edited = data.dataset(
        [*list(split["text"])[:-1], "loved it a lot"], list(split["label"]), ("n", "p")
    )
    others = [
        (prompting.SoftPromptModel(changed, config), split),
        (model, edited),
        (prompting.SoftPromptModel(tiny, replace(config, max_text_tokens=3)), split),
    ]
    for other, split_ in others:
        caches = engine.TextCaches(folder=tmp_path)
        got = _scores(other, caches, split_)
        assert caches.loaded == 0 and caches.computed == 10
        fresh = _scores(other, engine.TextCaches(), split_)
        for a, b in zip(got, fresh, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 + len(others)


def test_texts_on_disk_respect_hooks_the_budget_and_a_damaged_file(tmp_path) -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    split = _split()
    with engine.record_neurons(tiny):  # a model with hooks on keeps nothing on disk
        _scores(model, engine.TextCaches(folder=tmp_path), split)
    assert not list(tmp_path.glob("*"))
    _scores(model, engine.TextCaches(folder=tmp_path, max_folder_bytes=1000), split)
    assert not list(tmp_path.glob("*"))  # beyond the folder's budget
    expected = _scores(model, engine.TextCaches(folder=tmp_path), split)
    (file,) = tmp_path.glob("*.safetensors")
    file.write_bytes(file.read_bytes()[:100])
    caches = engine.TextCaches(folder=tmp_path)
    got = _scores(model, caches, split)
    assert caches.loaded == 0 and caches.computed == 10
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_weights_digest_changes_with_any_weight_and_only_then() -> None:
    a, b = models.tiny_backbone("gpt2"), models.tiny_backbone("gpt2")
    assert engine.weights_digest(a.model) == engine.weights_digest(b.model)
    with torch.no_grad():
        b.model.get_output_embeddings().weight[0, 0] += 1e-3
    assert engine.weights_digest(a.model) != engine.weights_digest(b.model)
    assert engine.weights_digest(a.model) != engine.weights_digest(a.model.double())
