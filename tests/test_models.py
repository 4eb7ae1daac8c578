"""Architecture registry, backbone loading and the neuron site."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from helpers import engine, models


def _reference_neurons(backbone: models.Backbone, layer: int, x: torch.Tensor) -> torch.Tensor:
    """Compute a layer's neurons by hand from the FFN weights: the input of the output
    projection, after the activation (and the gate's product for gated MLPs)."""
    block = backbone.layers()[layer]
    config = backbone.model.config
    family = config.model_type
    if family in ("roberta", "bert"):
        dense = block.intermediate.dense
        return ACT2FN[config.hidden_act](F.linear(x, dense.weight, dense.bias))
    if family == "gpt2":
        c_fc = block.mlp.c_fc  # Conv1D: weight is [in, out]
        return ACT2FN[config.activation_function](x @ c_fc.weight + c_fc.bias)
    if family == "opt":  # on the hidden states flattened over the batch
        return ACT2FN[config.activation_function](F.linear(x, block.fc1.weight, block.fc1.bias))
    mlp = block.mlp
    return ACT2FN[config.hidden_act](F.linear(x, mlp.gate_proj.weight)) * F.linear(
        x, mlp.up_proj.weight
    )


def _ffn_input_module(backbone: models.Backbone, layer: int) -> torch.nn.Module:
    block = backbone.layers()[layer]
    if backbone.model.config.model_type == "opt":
        return block.fc1
    return block.intermediate if backbone.kind == "encoder" else block.mlp


def test_captured_neurons_equal_hand_computed_ffn_hidden_layer(tiny: models.Backbone) -> None:
    encoded = tiny.tokenizer(
        ["a good movie", "the worst film ever"], padding=True, return_tensors="pt"
    )
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        _ffn_input_module(tiny, i).register_forward_pre_hook(
            lambda _m, args, i=i: inputs.__setitem__(i, args[0].detach())
        )
        for i in range(tiny.n_layers)
    ]
    received: dict[int, torch.Tensor] = {}
    handles += [
        site.register_forward_pre_hook(
            lambda _m, args, i=i: received.__setitem__(i, args[0].detach())
        )
        for i, site in enumerate(tiny.neuron_sites())
    ]
    with engine.record_neurons(tiny) as recorded:
        tiny.model(**encoded)
    for handle in handles:
        handle.remove()
    assert sorted(recorded) == list(range(tiny.n_layers))
    for layer in range(tiny.n_layers):
        assert recorded[layer].shape == (2, encoded["input_ids"].shape[1], tiny.ffn_width)
        # OPT's site receives [n * seq, ffn]: the engine hands it out as [n, seq, ffn]
        shape = recorded[layer].shape
        expected = _reference_neurons(tiny, layer, inputs[layer]).reshape(shape)
        torch.testing.assert_close(recorded[layer], expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(recorded[layer], received[layer].reshape(shape))


def test_no_hook_left_behind_even_on_error(tiny: models.Backbone) -> None:
    before = engine.hook_count(tiny.model)
    encoded = tiny.tokenizer(["a good movie"], return_tensors="pt")
    reference = tiny.model(**encoded).logits
    with pytest.raises(RuntimeError), engine.record_neurons(tiny, layers=[0]):
        assert engine.hook_count(tiny.model) == before + (2 if tiny.arch.flat_ffn else 1)
        raise RuntimeError("boom")
    assert engine.hook_count(tiny.model) == before
    torch.testing.assert_close(tiny.model(**encoded).logits, reference)


def test_dimensions_come_from_the_model(tiny: models.Backbone) -> None:
    assert tiny.n_layers == 2
    assert tiny.ffn_width == 48
    assert tiny.n_neurons == 96
    assert all(not p.requires_grad for p in tiny.model.parameters())
    assert tiny.describe()["neurons"] == 96
    assert len(tiny.ffn_inputs(0)) == (2 if tiny.arch.ffn_in[0].endswith("gate_proj") else 1)


def test_load_backbone_from_local_folder(tmp_path) -> None:
    tiny = models.tiny_backbone("gpt2")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = models.load_backbone(str(tmp_path))
    assert loaded.kind == "decoder" and loaded.ffn_width == 48
    encoded = tiny.tokenizer(["a good movie"], return_tensors="pt")
    torch.testing.assert_close(loaded.model(**encoded).logits, tiny.model(**encoded).logits)


def test_a_local_folder_is_named_by_its_content(tmp_path) -> None:
    first = models.tiny_backbone("llama")
    first.model.save_pretrained(tmp_path)
    first.tokenizer.save_pretrained(tmp_path)
    loaded = models.load_backbone(str(tmp_path))
    assert loaded.name == f"{tmp_path}#{models.folder_digest(tmp_path)}"
    assert models.load_backbone(str(tmp_path)).name == loaded.name  # same files, same name
    # the folder replaced by a model of the same shape: another name, so other keys
    other = models.tiny_backbone("llama")
    with torch.no_grad():
        for parameter in other.model.parameters():
            parameter.add_(0.01)
    other.model.save_pretrained(tmp_path)
    replaced = models.load_backbone(str(tmp_path))
    # every artefact key holds the backbone's name: nothing computed with the old
    # weights is found for the new ones
    assert replaced.name.startswith(f"{tmp_path}#") and replaced.name != loaded.name


def test_a_backbone_in_bfloat16_is_named_apart_and_records_float32(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = models.tiny_backbone("llama")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    full = models.load_backbone(str(tmp_path))
    half = models.load_backbone(str(tmp_path), "bfloat16")
    assert (full.dtype, half.dtype) == (torch.float32, torch.bfloat16)
    assert half.name == f"{full.name}:bfloat16"  # its artefacts never mix with float32's
    assert models.random_like(half).dtype == torch.bfloat16
    encoded = tiny.tokenizer(["a good movie"], return_tensors="pt")
    with engine.record_neurons(half) as low, engine.record_neurons(full) as high:
        half.model(**encoded)
        full.model(**encoded)
    assert low[0].dtype == torch.float32  # recorded in float32 for the statistics
    torch.testing.assert_close(low[0], high[0], atol=0.05, rtol=0.05)
    # "auto" follows the processor: bfloat16 only where it multiplies it in hardware
    for fast, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(models, "bf16_matmul", lambda fast=fast: fast)
        assert models.resolve_precision("auto") == dtype
    with pytest.raises(
        ValueError, match="precision must be one of 'auto', 'float32', 'bfloat16'; got 'half'"
    ):
        models.load_backbone(str(tmp_path), "half")  # type: ignore[arg-type]


def test_unknown_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(models.UnknownModelError, match="unknown model 'no-such-model'"):
        models.load_backbone("no-such-model")
    with pytest.raises(models.UnknownModelError, match="nobody/nothing.*HF_HUB_OFFLINE=0"):
        models.load_backbone("nobody/nothing")
    roberta = models.tiny_backbone("roberta")
    roberta.model.roberta.save_pretrained(tmp_path / "base")  # no masked-LM head
    roberta.tokenizer.save_pretrained(tmp_path / "base")
    with pytest.raises(models.UnknownModelError, match="lacks .* weights .*masked-LM head"):
        models.load_backbone(str(tmp_path / "base"))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(models.UnknownModelError, match="holds no model: it has no config.json"):
        models.load_backbone(str(tmp_path))


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(models.UnknownArchitectureError, match="t5"):
        models.architecture("t5")


@pytest.mark.slow
def test_embedded_backbone_is_smollm2() -> None:
    backbone = models.load_backbone("smollm2-135m")
    summary = backbone.describe()
    assert summary["class"] == "LlamaForCausalLM"
    assert (summary["layers"], summary["ffn_width"], summary["neurons"]) == (30, 1536, 46080)
    assert summary["vocabulary"] == 49152


def test_an_architecture_entry_is_checked_against_the_model() -> None:
    from dataclasses import replace

    tiny = models.tiny_backbone("llama")
    models.check_architecture(tiny.model, tiny.arch)
    wrong_name = replace(tiny.arch, ffn_out="mlp.down")
    with pytest.raises(models.UnknownArchitectureError, match="a named module is missing"):
        models.check_architecture(tiny.model, wrong_name)
    wrong_input = replace(tiny.arch, ffn_in=("self_attn.q_proj",))
    with pytest.raises(models.UnknownArchitectureError, match="makes .* neurons but"):
        models.check_architecture(tiny.model, wrong_input)
    with pytest.raises(models.UnknownArchitectureError, match="To add one.*ARCHITECTURES"):
        models.architecture("xlnet")
