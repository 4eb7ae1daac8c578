"""Hooks on the neuron site: record FFN neuron activations during a forward pass.

The neuron site of every architecture is the FFN output projection (`models.ARCHITECTURES`);
a forward pre-hook there sees exactly the neuron vector. Hooks are always removed when
the context exits, also on error.

Paper: §2.2 (the activation a = f(x Kᵀ + b1)); official code ``probe`` hooks
``intermediate`` of RoBERTa, which is the same tensor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from jaxtyping import Float
from torch import Tensor, nn

from helpers.models import Backbone


def hook_count(model: nn.Module) -> int:
    """Return how many forward and pre-forward hooks are registered anywhere in a model."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextmanager
def record_neurons(
    backbone: Backbone, layers: Sequence[int] | None = None
) -> Iterator[dict[int, Float[Tensor, "n seq ffn"]]]:
    """Record each chosen layer's neuron activations on the next forward passes.

    Yields a dict that fills as the model runs: layer index -> the activations of the
    latest forward pass, detached, shape ``[n, seq, ffn]``.

    Example:
        >>> with record_neurons(backbone) as acts:
        ...     backbone.model(**batch)
        >>> acts[0].shape[-1] == backbone.ffn_width
        True
    """
    chosen = range(backbone.n_layers) if layers is None else layers
    sites = backbone.neuron_sites()
    recorded: dict[int, Tensor] = {}
    handles = []

    def hook_for(layer: int):  # noqa: ANN202
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            recorded[layer] = args[0].detach()

        return hook

    try:
        for layer in chosen:
            handles.append(sites[layer].register_forward_pre_hook(hook_for(layer)))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
