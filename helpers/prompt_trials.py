"""Trials through the artefact store: each task's prompts trained once per seed, saved,
loaded back on a backbone, moved to another backbone, and summarised in rows.

Paper: §4.1, Tab. 1 (prompt tuning over several trials); chapter 01.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from torch import Tensor

from helpers import paper
from helpers.data import TaskData, stable_seed
from helpers.engine import TextCaches
from helpers.models import Backbone
from helpers.prompting import PromptConfig, PromptError, SoftPromptModel
from helpers.store import Artefact, ArtefactStore
from helpers.tuning import TrainConfig, TrainResult, train_prompt, train_prompts


def _trial_config(
    backbone: Backbone, task: TaskData, prompt: PromptConfig, train: TrainConfig, seed: int
) -> dict[str, object]:
    return {
        "backbone": backbone.name,
        "d_model": backbone.model.get_input_embeddings().weight.shape[1],
        "task": task.spec.name,
        "layout": backbone.kind,
        "prompt": asdict(prompt),
        "train": asdict(train),
        "seed": seed,
    }


def _trial_key(
    backbone: Backbone,
    task: TaskData,
    prompt: PromptConfig,
    train: TrainConfig,
    seed: int,
    start: Artefact | None,
) -> tuple[dict[str, object], list[str]]:
    """A trial's config and upstream keys, as its ``prompts`` artefact is keyed."""
    config = _trial_config(backbone, task, prompt, train, seed)
    upstream = [task.key]
    if start is not None:
        started = start.json("config")
        if started["d_model"] != config["d_model"] or started["prompt"]["length"] != prompt.length:
            raise PromptError(
                f"cannot start from prompt {start.key}: it has {started['prompt']['length']} "
                f"vectors of size {started['d_model']}, this trial needs {prompt.length} of "
                f"size {config['d_model']}"
            )
        config["start"] = start.key
        upstream.append(start.key)
    return config, upstream


def _trial_model(
    backbone: Backbone, task: TaskData, prompt: PromptConfig, seed: int, start: Artefact | None
) -> tuple[SoftPromptModel, int]:
    """A trial's prompt model, initialised from its seed or from ``start``."""
    trial_seed = stable_seed("trial", task.spec.seed_name, seed)
    model = SoftPromptModel(backbone, prompt, seed=trial_seed)
    if start is not None:
        with torch.no_grad():
            model.prompt.copy_(start.tensors()["prompt"])
    return model, trial_seed


def trial_metrics(
    model: SoftPromptModel,
    result: TrainResult,
    test: Dataset,
    batch_size: int = 32,
    caches: TextCaches | None = None,
) -> dict[str, float]:
    """A trained model's metrics: its best step and dev accuracy, its test accuracy and
    balanced accuracy (every tuning method reports the same ones), and its outcome on
    each test example (``test_correct``, `zeroshot.outcome_string`), for comparisons
    paired on the same examples."""
    scored = model.evaluate(test, batch_size, caches=caches)
    return {
        "best_step": result.best_step,
        "dev_accuracy": result.best_dev,
        "test_accuracy": scored.accuracy,
        "test_balanced_accuracy": scored.balanced_accuracy,
        "test_correct": scored.outcomes,
    }


def _trial_outputs(
    model: SoftPromptModel,
    result: TrainResult,
    task: TaskData,
    train: TrainConfig,
    config: dict[str, object],
    caches: TextCaches | None,
) -> tuple[dict[str, Tensor], dict[str, object]]:
    """A trained trial's artefact contents: its prompt, config, curve and test metrics."""
    metrics = trial_metrics(model, result, task.test, train.eval_batch_size, caches)
    payloads = {"config": config, "history": result.history, "metrics": metrics}
    return {"prompt": result.prompt}, payloads


def run_trial(
    backbone: Backbone,
    task: TaskData,
    prompt: PromptConfig,
    train: TrainConfig,
    seed: int,
    store: ArtefactStore,
    progress: bool = True,
    caches: TextCaches | None = None,
    start: Artefact | None = None,
) -> Artefact:
    """Train one trial's prompt and score it on test, or load it if already stored.

    The artefact (stage ``prompts``) holds ``tensors.safetensors`` with the prompt and
    ``config.json``, ``history.json`` and ``metrics.json``.

    Args:
        start: a stored prompt to start from instead of ``prompt.init`` (e.g. to
            retrain a prompt on a pruned backbone); it must have the same embedding size.

    Raises:
        PromptError: ``start`` has another embedding size or length.
    """
    config, upstream = _trial_key(backbone, task, prompt, train, seed, start)

    def compute() -> tuple[dict[str, Tensor], dict[str, object]]:
        model, trial_seed = _trial_model(backbone, task, prompt, seed, start)
        result = train_prompt(model, task.train, task.dev, train, trial_seed, progress, caches)
        return _trial_outputs(model, result, task, train, config, caches)

    return store.cached("prompts", config, compute, upstream=upstream)


def run_trials(
    backbone: Backbone,
    task: TaskData,
    prompt: PromptConfig,
    train: TrainConfig,
    seeds: Sequence[int],
    store: ArtefactStore,
    progress: bool = True,
    caches: TextCaches | None = None,
    joint_trials: int = 1,
) -> list[Artefact]:
    """Run (or load) one trial per seed, sharing the texts' caches (train, dev and test).

    Args:
        caches: where the texts are kept; a fresh `engine.TextCaches` with its default
            budget if None (and ``train.reuse_text_cache``).
        joint_trials: trials not yet stored are trained this many at a time with
            `train_prompts` (one forward pass for their steps); each gives the prompt it
            would give alone, up to rounding, and is stored as its own artefact.
    """
    if joint_trials < 1:
        raise PromptError(f"joint_trials must be >= 1, got {joint_trials}")
    if caches is None and train.reuse_text_cache:
        caches = TextCaches()
    keys = {s: _trial_key(backbone, task, prompt, train, s, None) for s in seeds}
    pending = [
        s
        for s in dict.fromkeys(seeds)
        if store.find("prompts", store.key("prompts", *keys[s])) is None
    ]
    for start in range(0, len(pending) if joint_trials > 1 else 0, joint_trials):
        group = pending[start : start + joint_trials]
        begun = time.perf_counter()
        built = [_trial_model(backbone, task, prompt, s, None) for s in group]
        models = [model for model, _ in built]
        results = train_prompts(
            models, task.train, task.dev, train, [s for _, s in built], progress, caches
        )
        seconds = (time.perf_counter() - begun) / len(group)
        for seed, model, result in zip(group, models, results, strict=True):
            config, upstream = keys[seed]
            tensors, payloads = _trial_outputs(model, result, task, train, config, caches)
            store.save("prompts", config, upstream, tensors, payloads, seconds)
    return [run_trial(backbone, task, prompt, train, s, store, progress, caches) for s in seeds]


def on_backbone(
    model: SoftPromptModel, backbone: Backbone, label_words: Sequence[str] | None = None
) -> SoftPromptModel:
    """Return the same prompt on another backbone with the same embeddings (e.g. pruned),
    optionally read through other label words (e.g. a target task's, for transfer).

    Raises:
        PromptError: the other backbone's embedding size differs.
        LabelWordError: a label word is not one token of ``backbone``.
    """
    d_model = backbone.model.get_input_embeddings().weight.shape[1]
    if model.prompt.shape[1] != d_model:
        raise PromptError(
            f"a prompt of size {model.prompt.shape[1]} cannot run on {backbone.name!r} "
            f"(d_model {d_model})"
        )
    config = model.config
    if label_words is not None:
        config = replace(config, label_words=tuple(label_words))
    other = SoftPromptModel(backbone, config, prefix_cache=model.prefix_cache)
    with torch.no_grad():
        other.prompt.copy_(model.prompt)
    return other


def trial_setup(artefact: Artefact) -> tuple[PromptConfig, TrainConfig, int]:
    """Return the prompt config, training config and seed a stored trial was run with.

    Lets a later chapter train more prompts exactly like chapter 01's (e.g. with other
    label words) without repeating its parameters.
    """
    config = artefact.json("config")
    prompt = dict(config["prompt"])
    prompt["label_words"] = tuple(prompt["label_words"])
    train = dict(config["train"])
    train["betas"] = tuple(train["betas"])
    return PromptConfig(**prompt), TrainConfig(**train), int(config["seed"])


def load_prompt(artefact: Artefact, backbone: Backbone) -> SoftPromptModel:
    """Rebuild a trained prompt model from its artefact on ``backbone``.

    Raises:
        PromptError: the prompt was trained for another backbone or embedding size.
    """
    config = artefact.json("config")
    d_model = backbone.model.get_input_embeddings().weight.shape[1]
    if config["backbone"] != backbone.name or config["d_model"] != d_model:
        raise PromptError(
            f"prompt {artefact.key} was trained on {config['backbone']!r} "
            f"(d_model {config['d_model']}); cannot load it on {backbone.name!r} "
            f"(d_model {d_model})"
        )
    model = SoftPromptModel(backbone, trial_setup(artefact)[0])
    with torch.no_grad():
        model.prompt.copy_(artefact.tensors()["prompt"])
    return model


def layout_table(
    model: SoftPromptModel, text: str, text_pair: str | None = None
) -> list[dict[str, object]]:
    """Show where each position of one laid-out example comes from: text, soft prompt, template.

    Returns one row per position: position, token (or ``<soft i>``), role and whether
    neurons are scored there and whether the label is read there.
    """
    batch = model.encode([text], [text_pair], [0])
    layout = model.layout(batch)
    tokens = model.backbone.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    scored = layout.prompt_positions[0].tolist()
    rows = []
    for position in range(int(layout.attention_mask[0].sum())):
        if model.backbone.kind == "encoder":
            role = (
                "mask" if position == 0 else "soft" if position <= model.config.length else "text"
            )
            token = (
                model.backbone.tokenizer.mask_token
                if role == "mask"
                else f"<soft {position}>"
                if role == "soft"
                else tokens[position - model.n_scored]
            )
        else:
            offset = position - int(batch.lengths[0])
            role = "text" if offset < 0 else "soft" if offset < model.config.length else "template"
            template = model.backbone.tokenizer.convert_ids_to_tokens(model.template_ids)
            token = (
                tokens[position]
                if role == "text"
                else f"<soft {offset + 1}>"
                if role == "soft"
                else template[offset - model.config.length]
            )
        rows.append(
            {
                "position": position,
                "token": token,
                "role": role,
                "scored": position in scored,
                "prediction": position == int(layout.predict[0]),
            }
        )
    return rows


def trial_rows(artefacts: Sequence[Artefact]) -> list[dict[str, object]]:
    """Return one row per trial: task, seed, best step, dev and test accuracy (%)."""
    rows = []
    for artefact in artefacts:
        config, metrics = artefact.json("config"), artefact.json("metrics")
        rows.append(
            {
                "task": config["task"],
                "seed": config["seed"],
                "best_step": metrics["best_step"],
                "dev_accuracy": 100 * metrics["dev_accuracy"],
                "test_accuracy": 100 * metrics["test_accuracy"],
                "test_balanced_accuracy": 100 * metrics["test_balanced_accuracy"],
            }
        )
    return rows


def test_outcomes(artefacts: Sequence[Artefact]) -> list[str]:
    """Each trial's outcome on every test example (``test_correct`` of `trial_metrics`), in
    the artefacts' order: the prompt's side of a comparison paired on the same examples."""
    return [str(artefact.json("metrics")["test_correct"]) for artefact in artefacts]


def history_rows(artefacts: Sequence[Artefact]) -> list[dict[str, object]]:
    """Return the training curves: one row per task, seed and evaluation."""
    rows = []
    for artefact in artefacts:
        config = artefact.json("config")
        for point in artefact.json("history"):
            rows.append({"task": config["task"], "seed": config["seed"], **point})
    return rows


def accuracy_table(
    trials: Sequence[dict[str, object]], zero_shot: Sequence[dict[str, object]]
) -> pd.DataFrame:
    """Tab. 1 (first column) form: per task, zero-shot and prompt-tuning test accuracy (%).

    Prompt tuning is mean ± std over trials; zero-shot uses the same label words: the
    shared ones, or the natural ones for a task the shared words do not cover.
    The paper's prompt-tuning accuracy on the task this one stands in for is shown beside,
    from `helpers.paper` (roberta-base, other data: a reference, not a target).
    """
    frame = pd.DataFrame(list(trials))
    natural = {row["task"]: row["accuracy"] for row in zero_shot if row.get("words") == "natural"}
    shared = {
        row["task"]: row["accuracy"] for row in zero_shot if row.get("words", "shared") == "shared"
    }
    shots = natural | shared
    rows = []
    for task, group in frame.groupby("task", sort=False):
        paper_mean, paper_std = paper.TABLE1_PROMPT.get(paper.analogue(str(task)), (np.nan, np.nan))
        rows.append(
            {
                "task": task,
                "trials": len(group),
                "zero_shot": shots.get(task, np.nan),
                "prompt_mean": group["test_accuracy"].mean(),
                "prompt_std": group["test_accuracy"].std(ddof=1) if len(group) > 1 else 0.0,
                "paper_task": paper.analogue(str(task)),
                "paper_prompt": f"{paper_mean:.1f} ± {paper_std:.1f}",
            }
        )
    return pd.DataFrame(rows).set_index("task")
