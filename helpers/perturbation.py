"""Perturbing chosen neurons: noise, zero or a fixed value in place of their activations.

A forward pre-hook on each layer's neuron site (the FFN output projection) rewrites the
chosen entries of the neuron vector before the projection reads it, at every position
the forward pass computes. Hooks are always removed when the context exits, also on
error.

Paper: §4.2 (Gaussian noise, σ = 0.1); official code ``src/mask.py``: ``gaussian``
(noise drawn once per example and broadcast to every position), ``zero`` and ``mean``
(a constant per neuron). §6.1 fixes the pruned neurons at their baseline the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from helpers.models import Backbone

How = Literal["gaussian", "zero", "value"]


def _check(backbone: Backbone, mask: Tensor, name: str) -> None:
    expected = (backbone.n_layers, backbone.ffn_width)
    if tuple(mask.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} (layer, ffn), got {tuple(mask.shape)}")


@contextmanager
def perturbed(
    backbone: Backbone,
    neurons: Bool[Tensor, "layer ffn"],
    how: How = "gaussian",
    values: Float[Tensor, "layer ffn"] | None = None,
    sigma: float = 0.1,
    seed: int = 0,
) -> Iterator[None]:
    """Perturb the chosen neurons on every forward pass inside the context.

    Args:
        neurons: which neurons to perturb, one row per layer.
        how: ``gaussian`` adds N(0, σ²) noise drawn once per example and shared by every
            position (the official code); ``zero`` sets them to 0; ``value`` sets them to
            ``values`` (e.g. their baselines, as pruning does).
        values: the replacement per neuron, for ``how="value"``.
        sigma: the noise's standard deviation, for ``how="gaussian"``.
        seed: seed of the noise; the same seed gives the same noise for the same batches.
    """
    _check(backbone, neurons, "neurons")
    if how == "value":
        if values is None:
            raise ValueError("how='value' needs values, one per neuron")
        _check(backbone, values, "values")
    elif how not in ("gaussian", "zero"):
        raise ValueError(f"unknown perturbation {how!r}; use 'gaussian', 'zero' or 'value'")
    generator = torch.Generator().manual_seed(seed)
    handles = []

    def hook_for(layer: int):  # noqa: ANN202
        chosen = neurons[layer].bool()

        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            x = args[0]
            if how == "gaussian":
                noise = torch.randn(x.shape[0], 1, x.shape[-1], generator=generator) * sigma
                x = x + noise.to(x.dtype) * chosen.to(x.dtype)
            else:
                fill = torch.zeros(()) if how == "zero" else values[layer].to(x.dtype)
                x = torch.where(chosen, fill, x)
            return (x, *args[1:])

        return hook

    sites = backbone.neuron_sites()
    try:
        for layer in range(backbone.n_layers):
            if neurons[layer].any():
                handles.append(sites[layer].register_forward_pre_hook(hook_for(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()
