"""The streaming statistics engine against direct computation, and known answers."""

from __future__ import annotations

import pytest
import torch

from helpers import activations, data, engine, models, prompting


def _split(n: int = 10) -> data.Dataset:
    words = ["a good movie", "the worst film", "great fun", "boring and bad", "loved it"]
    texts = [f"{words[i % 5]} {'very ' * (i % 3)}" for i in range(n)]
    return data.dataset(texts, [i % 2 for i in range(n)], ("negative", "positive"))


@pytest.mark.parametrize("model_type", ["roberta", "llama", "gpt2"])
@pytest.mark.parametrize("prefix_cache", [True, False])
def test_streaming_statistics_equal_direct_computation(model_type: str, prefix_cache: bool) -> None:
    tiny = models.tiny_backbone(model_type)
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    model = prompting.SoftPromptModel(tiny, config, seed=0, prefix_cache=prefix_cache)
    train, dev = _split(10), _split(7)
    base = activations.baseline(model, train, batch_size=3)
    acc, _ = activations.threshold_accuracy(model, dev, base, batch_size=4)
    stored = torch.cat([engine.prompt_activations(model, b) for b in model.batches(train, 5)])
    assert stored.shape == (10, tiny.n_layers, model.n_scored, tiny.ffn_width)
    torch.testing.assert_close(base, stored.mean(0), rtol=0, atol=1e-6)
    dev_acts = torch.cat([engine.prompt_activations(model, b) for b in model.batches(dev, 7)])
    labels = torch.tensor(list(dev["label"]))
    direct = ((dev_acts > base) == labels[:, None, None, None].bool()).float().mean(0)
    torch.testing.assert_close(acc, direct, rtol=0, atol=1e-6)


def test_cached_and_full_layout_activations_agree() -> None:
    tiny = models.tiny_backbone("llama")
    config = prompting.PromptConfig(length=3, max_text_tokens=8, template="answer :")
    cached = prompting.SoftPromptModel(tiny, config, seed=0)
    full = prompting.SoftPromptModel(tiny, config, seed=0, prefix_cache=False)
    batch = next(cached.batches(_split(6), 6))
    torch.testing.assert_close(
        engine.prompt_activations(cached, batch),
        engine.prompt_activations(full, batch),
        rtol=1e-5,
        atol=1e-5,
    )
    assert engine.hook_count(tiny.model) == 0


def test_accumulator_known_answers() -> None:
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    acts = torch.zeros(6, 1, 1, 3)
    acts[:, 0, 0, 0] = labels.float()  # equal to the label
    acts[:, 0, 0, 1] = 7.0  # constant
    acts[:, 0, 0, 2] = 1 - labels.float()  # the label flipped
    base = activations.BaselineAccumulator()
    base.add(acts[:4])
    base.add(acts[4:])
    mean = base.mean()
    torch.testing.assert_close(mean[0, 0], torch.tensor([0.5, 7.0, 0.5]))
    acc = activations.AccuracyAccumulator(mean)
    acc.add(acts[:2], labels[:2])
    acc.add(acts[2:], labels[2:])
    torch.testing.assert_close(acc.accuracy()[0, 0], torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match="binary"):
        acc.add(acts[:1], torch.tensor([2]))
    with pytest.raises(ValueError, match="no examples"):
        activations.BaselineAccumulator().mean()


def test_permutation_null_shares_the_pass_and_matches_direct_computation() -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    dev = _split(9)
    base = activations.baseline(model, dev, batch_size=4)
    plain, _ = activations.threshold_accuracy(model, dev, base, batch_size=4)
    acc, null = activations.threshold_accuracy(model, dev, base, 4, permutations=3, seed=5)
    torch.testing.assert_close(acc, plain)
    assert null is not None and null.shape == (3, *acc.shape)
    acts = torch.cat([engine.prompt_activations(model, b) for b in model.batches(dev, 9)])
    labels = torch.tensor(list(dev["label"]))
    generator = torch.Generator().manual_seed(5)
    first = labels[torch.randperm(9, generator=generator)]
    direct = ((acts > base) == first[:, None, None, None].bool()).float().mean(0)
    torch.testing.assert_close(null[0], direct, rtol=0, atol=1e-6)


def test_views_of_one_split_equal_separate_passes_over_their_rows() -> None:
    tiny = models.tiny_backbone("llama")
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    split = _split(11)
    views = {
        "odd": (torch.tensor([9, 1, 5, 3, 7]), torch.tensor([1, 0, 0, 1, 1])),
        "low": (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 1, 0])),
    }
    rows = {name: r for name, (r, _) in views.items()}
    bases = activations.baselines(model, split, rows, batch_size=4)
    joint = activations.threshold_accuracies(
        model, split, views, bases, 4, permutations=2, seeds={"odd": 3, "low": 4}
    )
    for (name, (r, labels)), seed in zip(views.items(), (3, 4), strict=True):
        alone = data.dataset(
            [split[int(i)]["text"] for i in r], labels.tolist(), ("negative", "positive")
        )
        base = activations.baseline(model, alone, batch_size=2)
        torch.testing.assert_close(bases[name], base, rtol=0, atol=1e-6)
        acc, null = activations.threshold_accuracy(model, alone, base, 3, permutations=2, seed=seed)
        torch.testing.assert_close(joint[name][0], acc, rtol=0, atol=1e-6)
        torch.testing.assert_close(joint[name][1], null, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="repeats a row"):
        activations.baselines(model, split, {"twice": torch.tensor([1, 1])})
    with pytest.raises(IndexError, match="outside the split"):
        activations.baselines(model, split, {"far": torch.tensor([11])})


@pytest.mark.parametrize("model_type", ["roberta", "llama"])
def test_pooled_activations_cover_the_text_tokens_only(model_type: str) -> None:
    tiny = models.tiny_backbone(model_type)
    model = prompting.SoftPromptModel(tiny, prompting.PromptConfig(length=2, max_text_tokens=8))
    batch = next(model.batches(_split(4), 4))
    layout = model.layout(batch)
    with engine.record_neurons(tiny, layers=[1]) as recorded:
        tiny.model.base_model(inputs_embeds=layout.embeds, attention_mask=layout.attention_mask)
    offset = 0 if tiny.kind == "decoder" else model.n_scored
    for i in range(4):
        text = recorded[1][i, offset : offset + int(batch.lengths[i])]
        mean = engine.pooled_activations(model, batch, "mean")[i, 1, 0]
        peak = engine.pooled_activations(model, batch, "max")[i, 1, 0]
        torch.testing.assert_close(mean, text.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(peak, text.max(0).values)
    base = activations.baseline(model, _split(6), 3, pooling="max")
    assert base.shape == (tiny.n_layers, 1, tiny.ffn_width)
