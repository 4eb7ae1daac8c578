"""The artefact store: keys, round trips, atomic writes, corruption."""

from __future__ import annotations

import pytest
import torch

from helpers.store import ArtefactStore, CorruptArtefactError


def test_round_trip_of_tensors_and_json(store: ArtefactStore) -> None:
    tensors = {"baseline": torch.arange(6.0).reshape(2, 3)}
    saved = store.save("probe", {"task": "rt"}, ["abc"], tensors, {"data": {"acc": 0.5}}, 1.5)
    loaded = store.load("probe", saved.key)
    torch.testing.assert_close(loaded.tensors()["baseline"], tensors["baseline"])
    assert loaded.json() == {"acc": 0.5}
    assert loaded.meta["upstream"] == ["abc"] and loaded.meta["seconds"] == 1.5
    assert "torch" in loaded.meta["versions"]


def test_key_depends_on_stage_config_and_upstream(store: ArtefactStore) -> None:
    key = store.key("probe", {"task": "rt", "n": 1})
    assert key == store.key("probe", {"n": 1, "task": "rt"})
    assert key != store.key("probe", {"task": "rt", "n": 2})
    assert key != store.key("train", {"task": "rt", "n": 1})
    assert key != store.key("probe", {"task": "rt", "n": 1}, ["upstream"])


def test_cached_computes_once(store: ArtefactStore) -> None:
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.ones(2)}, {}

    first = store.cached("s", {"a": 1}, compute)
    second = store.cached("s", {"a": 1}, compute)
    assert first.key == second.key and calls == [1]


def test_corrupted_artefact_is_detected_and_recomputed(store: ArtefactStore) -> None:
    saved = store.save("s", {"a": 1}, tensors={"x": torch.ones(3)})
    (saved.path / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(CorruptArtefactError, match="fails its sha256"):
        store.load("s", saved.key)
    assert store.find("s", saved.key) is None
    again = store.cached("s", {"a": 1}, lambda: ({"x": torch.zeros(3)}, {}))
    torch.testing.assert_close(again.tensors()["x"], torch.zeros(3))


def test_failed_computation_leaves_nothing(store: ArtefactStore) -> None:
    def broken():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.cached("s", {"a": 2}, broken)
    assert store.find("s", store.key("s", {"a": 2})) is None
    assert not list((store.root).glob("s/.tmp-*"))


def test_results_files_are_checked_against_their_sha256(store: ArtefactStore) -> None:
    path = store.write_results("00_chapter", {"accuracy": 0.8, "rows": [1, 2]})
    assert store.read_results("00_chapter") == {"accuracy": 0.8, "rows": [1, 2]}
    path.write_text(path.read_text().replace("0.8", "0.9"))  # a hand-edited number
    with pytest.raises(CorruptArtefactError, match="was changed after it was written"):
        store.read_results("00_chapter")
    path.with_suffix(".sha256").unlink()
    with pytest.raises(CorruptArtefactError, match="has no checksum; rerun chapter 00_chapter"):
        store.read_results("00_chapter")
    store.write_results("00_chapter", {"accuracy": 0.9})
    assert store.read_results("00_chapter") == {"accuracy": 0.9}
    with pytest.raises(FileNotFoundError, match="run that chapter first"):
        store.read_results("01_other")
