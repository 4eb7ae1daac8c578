"""Other tuning methods than prompt tuning: LoRA and BitFit, with the same verbalizer.

Paper: §5, Figs. 7-8. The paper trains adapters and BitFit, then perturbs their models in
the *prompt-tuning* predictivity order: if the same neurons matter, skill neurons belong
to the backbone, not to the prompt. Both methods keep the FFN weights (the neurons' K and
V) fixed. The official classes for them do not run (their ``embed`` refers to an attribute
that does not exist); LoRA (low-rank updates of the attention projections, Hu et al. 2021) comes from PEFT, and
BitFit is "train every bias".

A method model is a `SoftPromptModel` whose prompt is the task's hand-written words
(frozen), so the text, the prompt positions where neurons are read, and the verbalizer are
those of prompt tuning; only what is trained differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from helpers.checks import check_choice
from helpers.data import TaskData, stable_seed
from helpers.models import Backbone
from helpers.prompt_trials import trial_metrics
from helpers.prompting import PromptConfig, SoftPromptModel, hand_written_config
from helpers.store import Artefact, ArtefactStore
from helpers.tuning import TrainConfig, train_prompt

Method = Literal["lora", "bitfit"]

# Attention projections LoRA adapts, by the last part of their module name.
LORA_TARGETS = ("q_proj", "v_proj", "query", "value", "c_attn")


class MethodError(ValueError):
    """A tuning method cannot be applied to this backbone."""


def add_lora(
    backbone: Backbone, rank: int = 4, alpha: float = 8.0, seed: int = 0
) -> list[nn.Parameter]:
    """Add LoRA to every attention projection named in `LORA_TARGETS`, in place, with
    PEFT (`peft.inject_adapter_in_model`): ``W x + (α/r) B A x`` with ``B`` at zero, so a
    fresh LoRA model computes exactly what the backbone does. GPT-2's ``Conv1D``, which
    stores its weight transposed, is adapted as PEFT's ``fan_in_fan_out``.

    PEFT adapts the backbone's modules and leaves the input layout alone, so LoRA composes
    with this project's soft-prompt layouts; ``A`` is drawn from ``seed``.

    Returns the new trainable parameters (everything else stays frozen).

    Raises:
        MethodError: no attention projection of a known name was found.
    """
    found = {
        name.split(".")[-1]: module
        for block in backbone.layers()
        for name, module in block.named_modules()
        if name.split(".")[-1] in LORA_TARGETS
    }
    if not found:
        raise MethodError(f"no attention projection named one of {LORA_TARGETS} in {backbone.name}")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=sorted(found),
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in found.values()),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, backbone.model)
    added = [p for name, p in backbone.model.named_parameters() if ".lora_" in name]
    for parameter in added:
        parameter.requires_grad_(True)
    return added


def bias_parameters(backbone: Backbone) -> list[nn.Parameter]:
    """BitFit: every bias of the backbone (attention, FFN, normalisation, head), unfrozen.

    Raises:
        MethodError: the backbone has no bias terms (Llama-family models such as the
            embedded SmolLM2 have none, so BitFit does not apply to them).
    """
    found = [p for name, p in backbone.model.named_parameters() if name.endswith("bias")]
    if not found:
        raise MethodError(f"{backbone.name} has no bias parameters; BitFit does not apply")
    for parameter in found:
        parameter.requires_grad_(True)
    return found


@dataclass(frozen=True)
class MethodConfig:
    """A tuning method and its size.

    Attributes:
        method: ``lora`` (attention projections, rank ``rank``, scale ``alpha / rank``)
            or ``bitfit`` (every bias).
    """

    method: Method = "lora"
    rank: int = 4
    alpha: float = 8.0

    def __post_init__(self) -> None:
        check_choice("method", self.method, Method, MethodError)
        if self.rank < 1:
            raise MethodError(f"rank must be >= 1, got {self.rank}")


def method_model(
    backbone: Backbone, task: TaskData, prompt: PromptConfig, config: MethodConfig, seed: int = 0
) -> tuple[SoftPromptModel, list[nn.Parameter]]:
    """A model for the method: the task's hand-written words as a frozen prompt on
    ``backbone`` (changed in place: give it a copy), and the parameters to train.

    The hand-written words take the soft prompt's place, so neurons are read at the same
    kind of position (the prompt's positions, up to the prediction).
    """
    fixed = hand_written_config(backbone, task.spec.hand_prompt, prompt)
    model = SoftPromptModel(backbone, fixed)
    model.prompt.requires_grad_(False)
    if config.method == "lora":
        parameters = add_lora(backbone, config.rank, config.alpha, seed)
    else:
        parameters = bias_parameters(backbone)
    return model, parameters


def trainable_state(model: SoftPromptModel) -> dict[str, Tensor]:
    """The backbone's trained tensors (those that require grad), by parameter name."""
    return {
        name: p.detach().clone()
        for name, p in model.backbone.model.named_parameters()
        if p.requires_grad
    }


def run_method(
    backbone_factory: Callable[[], Backbone],
    task: TaskData,
    prompt: PromptConfig,
    config: MethodConfig,
    train: TrainConfig,
    seed: int,
    store: ArtefactStore,
    progress: bool = False,
) -> tuple[SoftPromptModel, Artefact]:
    """Train (or load) one method on one task; return the trained model and its artefact.

    ``backbone_factory()`` returns a fresh copy of the backbone (the method changes it).
    The artefact (stage ``methods``) holds the trained tensors and the dev/test accuracy.
    """
    backbone = backbone_factory()
    trial_seed = stable_seed("method", config.method, task.spec.seed_name, seed)
    model, parameters = method_model(backbone, task, prompt, config, trial_seed)
    settings = {
        "backbone": backbone.name,
        "task": task.spec.name,
        "method": asdict(config),
        "prompt": asdict(model.config),
        "train": asdict(train),
        "seed": seed,
        "implementation": "peft" if config.method == "lora" else "bias",
    }

    def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
        result = train_prompt(
            model, task.train, task.dev, train, trial_seed, progress, parameters=parameters
        )
        metrics = trial_metrics(model, result, task.test, train.eval_batch_size)
        return trainable_state(model), {
            "config": settings,
            "history": result.history,
            "metrics": metrics,
        }

    artefact = store.cached("methods", settings, compute, upstream=[task.key])
    state = artefact.tensors()
    named = dict(model.backbone.model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            named[name].copy_(value)
    for parameter in parameters:
        parameter.requires_grad_(False)
    model.backbone.name = f"{backbone.name}+{config.method}:{artefact.key}"
    return model, artefact
