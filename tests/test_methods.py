"""LoRA and BitFit on tiny backbones: a fresh method changes nothing, training touches
only its own parameters, and a stored method reloads to identical outputs."""

from __future__ import annotations

import copy

import pytest
import torch
import toys

from helpers import data, methods, models, prompting, tuning


def _task() -> data.TaskData:
    return toys.review_task()


def _ids(backbone: models.Backbone) -> torch.Tensor:
    return torch.randint(
        5, len(backbone.tokenizer), (2, 6), generator=torch.Generator().manual_seed(0)
    )


def test_fresh_lora_computes_what_the_backbone_computes(tiny: models.Backbone) -> None:
    ids = _ids(tiny)
    before = tiny.model(input_ids=ids).logits
    added = methods.add_lora(tiny, rank=2)
    projections = 1 if tiny.model.config.model_type == "gpt2" else 2  # c_attn, or q and v
    assert len(added) == 2 * projections * tiny.n_layers  # A and B per projection
    torch.testing.assert_close(tiny.model(input_ids=ids).logits, before)
    with torch.no_grad():
        added[1].add_(0.5)  # a non-zero B changes the output
    assert not torch.allclose(tiny.model(input_ids=ids).logits, before)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_lora_adds_the_scaled_low_rank_product_to_the_projection(kind: str) -> None:
    tiny = models.tiny_backbone(kind)
    name = "q_proj" if kind == "llama" else "c_attn"
    block = tiny.layers()[0]
    path = next(n for n, _ in block.named_modules() if n.endswith(name))
    base = copy.deepcopy(block.get_submodule(path))
    a, b = methods.add_lora(tiny, rank=2, alpha=6.0)[:2]
    with torch.no_grad():
        b.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, a.shape[1], generator=torch.Generator().manual_seed(2))
    expected = base(x) + (6.0 / 2) * x @ a.T @ b.T  # W x + (α/r) B A x
    torch.testing.assert_close(block.get_submodule(path)(x), expected)


def test_lora_training_changes_only_lora_parameters() -> None:
    tiny = models.tiny_backbone("llama")
    ffn_before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    config = methods.MethodConfig("lora", rank=2)
    model, params = methods.method_model(
        tiny, _task(), prompting.PromptConfig(max_text_tokens=8), config
    )
    assert model.config.init_text == " Sentiment:" and not model.prompt.requires_grad
    train = tuning.TrainConfig(
        learning_rate=0.05, max_steps=3, eval_every=1, batch_size=3, patience=5
    )
    tuning.train_prompt(model, _task().train, _task().dev, train, parameters=params, progress=False)
    after = dict(tiny.model.named_parameters())
    for name, value in ffn_before.items():
        key = name.replace("q_proj.", "q_proj.base_layer.").replace("v_proj.", "v_proj.base_layer.")
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert any(float(p.detach().abs().sum()) > 0 for p in params[1::2])  # B moved from zero


def test_bitfit_needs_biases() -> None:
    with pytest.raises(methods.MethodError, match="no bias parameters"):
        methods.bias_parameters(models.tiny_backbone("llama"))
    roberta = models.tiny_backbone("roberta")
    biases = methods.bias_parameters(roberta)
    assert biases and all(p.requires_grad for p in biases)
    with pytest.raises(
        methods.MethodError, match="method must be one of 'lora', 'bitfit'; got 'adapter'"
    ):
        methods.MethodConfig("adapter")


def test_train_prompt_refuses_stray_trainable_parameters() -> None:
    tiny = models.tiny_backbone("llama")
    model, params = methods.method_model(
        tiny, _task(), prompting.PromptConfig(max_text_tokens=8), methods.MethodConfig()
    )
    train = tuning.TrainConfig(max_steps=1, eval_every=1)
    with pytest.raises(prompting.PromptError, match="exactly those that require grad"):
        tuning.train_prompt(model, _task().train, _task().dev, train, parameters=params[:1])


def test_a_stored_method_reloads_to_identical_outputs(store) -> None:
    base = models.tiny_backbone("gpt2")
    config = methods.MethodConfig("lora", rank=2)
    train = tuning.TrainConfig(learning_rate=0.05, max_steps=2, eval_every=1, batch_size=3)
    prompt = prompting.PromptConfig(max_text_tokens=8)
    first, artefact = methods.run_method(
        lambda: copy.deepcopy(base), _task(), prompt, config, train, 0, store
    )
    again, same = methods.run_method(
        lambda: copy.deepcopy(base), _task(), prompt, config, train, 0, store
    )
    assert same.key == artefact.key and "test_accuracy" in artefact.json("metrics")
    batch = next(first.batches(_task().test, 6))
    torch.testing.assert_close(first(batch), again(batch), rtol=0, atol=0)
    assert not any(p.requires_grad for p in again.backbone.model.parameters())
    assert first.backbone.name.startswith("tiny-gpt2+lora:")
