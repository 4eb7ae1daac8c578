"""Tiny stand-ins for the paper profile's Hub model and data, in the Hugging Face caches.

With ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1``, ``transformers`` resolves
``FacebookAI/roberta-base`` from the Hub cache (``HF_HUB_CACHE``) and ``datasets`` resolves
``load_dataset("glue", "sst2")`` from the datasets cache (``HF_DATASETS_CACHE``), exactly
as they do for a user who downloaded them once. `write_standins` writes a tiny RoBERTa and
tiny versions of the seven datasets there, with the Hub's own columns, label ids and split
names, so a test can run the paper profile's code (``load_backbone("roberta-base")``,
``data.TASKS["sst2"].load()``) end to end without a network.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from datasets import ClassLabel, DatasetInfo, Features, SplitDict, SplitInfo, Value
from datasets.arrow_writer import ArrowWriter

from helpers import models

# The words each label's texts are drawn from, per Hub dataset (label ids as on the Hub).
_SENTIMENT = {0: "bad awful boring hated worst", 1: "good great fun loved best"}
_WORDS = {
    "sst2": _SENTIMENT,
    "imdb": _SENTIMENT,
    "tweet": {0: "bad awful hated", 1: "fine maybe it", 2: "good great loved"},
    "nli": {0: "yes sits runs", 1: "maybe outside inside", 2: "no not sleeps"},
    "qnli": {0: "yes answer sits", 1: "no not sleeps"},
    "ag_news": {
        0: "man woman street",
        1: "team match goal win",
        2: "market shares profit bank",
        3: "a it",
    },
    "dbpedia": {0: "company market profit", 1: "the a", 2: "park street", 3: "team goal athlete"},
}
# Words of the paper tasks' label words and templates that the tiny vocabulary lacks.
EXTRA_WORDS = "company athlete sports Sentiment Topic Premise Hypothesis Relation".split()

# (path, config): columns, label names (Hub order), splits, word table.
DATASETS: dict[tuple[str, str | None], dict] = {
    ("glue", "sst2"): {
        "columns": ("sentence",),
        "labels": ("negative", "positive"),
        "splits": ("train", "validation", "test"),
        "words": "sst2",
    },
    ("imdb", None): {
        "columns": ("text",),
        "labels": ("neg", "pos"),
        "splits": ("train", "test"),
        "words": "imdb",
    },
    ("tweet_eval", "sentiment"): {
        "columns": ("text",),
        "labels": ("negative", "neutral", "positive"),
        "splits": ("train", "validation", "test"),
        "words": "tweet",
    },
    ("glue", "mnli"): {
        "columns": ("premise", "hypothesis"),
        "labels": ("entailment", "neutral", "contradiction"),
        "splits": ("train", "validation_matched", "validation_mismatched"),
        "words": "nli",
    },
    ("glue", "qnli"): {
        "columns": ("question", "sentence"),
        "labels": ("entailment", "not_entailment"),
        "splits": ("train", "validation", "test"),
        "words": "qnli",
    },
    ("ag_news", None): {
        "columns": ("text",),
        "labels": ("World", "Sports", "Business", "Sci/Tech"),
        "splits": ("train", "test"),
        "words": "ag_news",
    },
    ("dbpedia_14", None): {
        "columns": ("title", "content"),
        "labels": ("Company", "EducationalInstitution", "Artist", "Athlete"),
        "splits": ("train", "test"),
        "words": "dbpedia",
    },
}


def _text(rng: random.Random, words: str) -> str:
    shared = "the a it this very and".split()
    return " ".join(rng.choice(words.split() + shared) for _ in range(rng.randint(3, 8)))


def _rows(spec: dict, split: str, n: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    table = _WORDS[spec["words"]]
    labels = [i % len(spec["labels"]) for i in range(n)]
    rng.shuffle(labels)
    rows: dict[str, list] = {column: [] for column in spec["columns"]}
    for label in labels:
        for column in spec["columns"]:
            rows[column].append(_text(rng, table[label]) if column != "title" else "a title")
    rows["label"] = labels
    return rows


def write_dataset(cache: Path, path: str, config: str | None, rows_per_split: int = 64) -> Path:
    """Write one stand-in dataset where ``datasets`` looks for a cached Hub download.

    The layout is ``<cache>/<path>/<config>/0.0.0/<hash>/`` with ``dataset_info.json``
    and one Arrow stream file per split, named ``<path>-<split>.arrow``.
    """
    spec = DATASETS[(path, config)]
    name = config or "default"
    features = Features(
        {column: Value("string") for column in spec["columns"]}
        | {"label": ClassLabel(names=list(spec["labels"]))}
    )
    digest = hashlib.sha256(f"{path}/{name}".encode()).hexdigest()[:16]
    folder = cache / path / name / "0.0.0" / digest
    folder.mkdir(parents=True, exist_ok=True)
    splits = SplitDict(dataset_name=path)
    for index, split in enumerate(spec["splits"]):
        rows = _rows(spec, split, rows_per_split if index == 0 else rows_per_split // 2, index)
        with ArrowWriter(features=features, path=str(folder / f"{path}-{split}.arrow")) as writer:
            writer.write_batch(rows)
            count, size = writer.finalize()
        splits.add(SplitInfo(name=split, num_bytes=size, num_examples=count, dataset_name=path))
    info = DatasetInfo(features=features, config_name=name, dataset_name=path, splits=splits)
    info.write_to_directory(str(folder))
    return folder


def write_model(hub_cache: Path, repo_id: str = "FacebookAI/roberta-base") -> Path:
    """Save a tiny RoBERTa with roberta-base's 512 usable positions as a cached Hub repo."""
    tiny = models.tiny_backbone("roberta", words=[*models.TINY_WORDS, *EXTRA_WORDS], positions=512)
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    tiny.model.save_pretrained(snapshot)
    tiny.tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def write_standins(root: Path, rows_per_split: int = 64) -> dict[str, str]:
    """Write the model and all seven datasets under ``root``; return the environment to set."""
    hub_cache, datasets_cache = root / "hub", root / "datasets"
    write_model(hub_cache)
    for path, config in DATASETS:
        write_dataset(datasets_cache, path, config, rows_per_split)
    return {
        "HF_HUB_CACHE": str(hub_cache),
        "HF_DATASETS_CACHE": str(datasets_cache),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
