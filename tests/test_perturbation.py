"""Perturbation hooks: known answers on tiny backbones, and no hook left behind."""

from __future__ import annotations

import pytest
import torch

from helpers import activations, models, perturbation


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
    assert activations.hook_count(tiny.model) == 0


def test_value_replacement_equals_neurons_fixed_by_hand(tiny: models.Backbone) -> None:
    ids, chosen = _ids(tiny), _chosen(tiny)
    values = torch.randn(tiny.n_layers, tiny.ffn_width)
    with (
        perturbation.perturbed(tiny, chosen, "value", values),
        activations.record_neurons(tiny) as acts,
    ):
        out = tiny.model(input_ids=ids).logits
    for layer in range(tiny.n_layers):
        seen = acts[layer][..., chosen[layer]]
        torch.testing.assert_close(seen, values[layer, chosen[layer]].expand_as(seen))
    with perturbation.perturbed(tiny, chosen, "zero"), activations.record_neurons(tiny) as acts:
        tiny.model(input_ids=ids)
    assert all((acts[layer][..., chosen[layer]] == 0).all() for layer in range(tiny.n_layers))
    assert out.shape[:2] == ids.shape


def test_gaussian_noise_is_drawn_per_example_and_shared_by_positions() -> None:
    tiny = models.tiny_backbone("llama")
    ids, chosen = _ids(tiny), _chosen(tiny)
    with activations.record_neurons(tiny) as clean:
        tiny.model(input_ids=ids)
    clean = dict(clean)
    noise_on = perturbation.perturbed(tiny, chosen, "gaussian", sigma=0.1, seed=3)
    with noise_on, activations.record_neurons(tiny, layers=[0]) as noisy:
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
        assert activations.hook_count(tiny.model) > 0
        raise RuntimeError("boom")
    assert activations.hook_count(tiny.model) == 0
    bad = [
        ((torch.ones(1, 3, dtype=torch.bool), "zero"), "shape"),
        ((_chosen(tiny), "value"), "needs values"),
        ((_chosen(tiny), "shuffle"), "unknown perturbation"),
    ]
    for (neurons, how), message in bad:
        with pytest.raises(ValueError, match=message), perturbation.perturbed(tiny, neurons, how):
            pass
