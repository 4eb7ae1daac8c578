"""Shared fixtures: tiny in-process backbones and tasks; no download in unit tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

from helpers import models  # noqa: E402

TINY_TYPES = ("roberta", "bert", "gpt2", "llama", "qwen2", "mistral", "opt")


@pytest.fixture(params=TINY_TYPES)
def tiny(request: pytest.FixtureRequest) -> models.Backbone:
    """A tiny randomly initialised backbone of each registered architecture."""
    return models.tiny_backbone(request.param)


@pytest.fixture
def store(tmp_path):
    """An empty artefact store in a temporary folder."""
    from helpers.store import ArtefactStore

    return ArtefactStore(tmp_path / "artefacts")


@pytest.fixture
def tiny_csv(tmp_path):
    """A small bring-your-own sentiment task on disk, built from tiny-vocabulary words."""
    good = ["a good movie", "great fun film", "loved it", "the best story", "very fine plot"]
    bad = ["a bad movie", "awful boring film", "hated it", "the worst story", "very boring plot"]
    lines = ["text,label"]
    for i in range(30):
        tail = f"{i % 3 * 'very '}{'and fun' if i % 2 else ''}"
        lines.append(f"{good[i % 5]} {tail},positive")
        lines.append(f"{bad[i % 5]} {tail},negative")
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
