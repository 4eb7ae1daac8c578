"""The artefact store: stages hand off tensors and JSON under a key of their config.

Layout: ``<root>/<stage>/<key>/`` holding ``tensors.safetensors`` (optional), any number
of ``<name>.json`` payloads, and ``meta.json`` (stage, config, upstream keys, package
versions, timing, and the sha256 of every other file). The key is a hash of the stage
name, its config and its inputs' keys, so a changed parameter recomputes that stage and
what follows, nothing else. An artefact is written into a temporary folder and renamed
into place in one step; a folder without a valid ``meta.json`` is never trusted.
No pickle anywhere: tensors are safetensors, everything else JSON, so loading an
artefact never runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from helpers.resources import sha256_file

FORMAT = 1


class CorruptArtefactError(RuntimeError):
    """An artefact's files (or a results file) do not match the checksums written with them."""


def canonical_json(value: Any) -> str:
    """Serialise to JSON with sorted keys and no whitespace, for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def versions() -> dict[str, str]:
    """Return the versions of the packages that decide a result."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "datasets", "numpy", "skill-neurons"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def artefact_key(stage: str, config: Mapping[str, Any], upstream: Sequence[str] = ()) -> str:
    """Return the 16-hex-digit key of a stage run with this config and these inputs."""
    blob = canonical_json(
        {"format": FORMAT, "stage": stage, "config": dict(config), "upstream": list(upstream)}
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artefact:
    """A stored stage output: where it lives and what made it."""

    stage: str
    key: str
    path: Path
    meta: dict[str, Any]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Load the safetensors payload (empty if the stage saved none)."""
        file = self.path / "tensors.safetensors"
        return load_file(file) if file.exists() else {}

    def json(self, name: str = "data") -> Any:
        """Load the JSON payload ``<name>.json``."""
        return json.loads((self.path / f"{name}.json").read_text())


class ArtefactStore:
    """Keyed, checksummed, atomically written stage outputs under one folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def texts(self) -> Path:
        """The folder where `engine.TextCaches` keeps texts' keys and values for later chapters."""
        return self.root / "texts"

    def key(self, stage: str, config: Mapping[str, Any], upstream: Sequence[str] = ()) -> str:
        """Return the key of a stage run with this config and these inputs."""
        return artefact_key(stage, config, upstream)

    def path(self, stage: str, key: str) -> Path:
        """Return the folder an artefact lives in (it may not exist)."""
        return self.root / stage / key

    def load(self, stage: str, key: str) -> Artefact:
        """Return a verified artefact.

        Raises:
            FileNotFoundError: no complete artefact with this key.
            CorruptArtefactError: a file is missing or fails its checksum.
        """
        folder = self.path(stage, key)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no artefact {stage}/{key} under {self.root}")
        try:
            meta = json.loads(meta_path.read_text())
            files = meta["files"]
        except (json.JSONDecodeError, KeyError) as error:
            raise CorruptArtefactError(f"artefact {stage}/{key} has a broken meta.json") from error
        for name, digest in files.items():
            file = folder / name
            if not file.exists() or sha256_file(file) != digest:
                raise CorruptArtefactError(
                    f"artefact {stage}/{key}: file {name} is missing or fails its sha256"
                )
        return Artefact(stage, key, folder, meta)

    def find(self, stage: str, key: str) -> Artefact | None:
        """Return the artefact if it exists and verifies; delete it if it is corrupted."""
        try:
            return self.load(stage, key)
        except FileNotFoundError:
            return None
        except CorruptArtefactError:
            shutil.rmtree(self.path(stage, key), ignore_errors=True)
            return None

    def save(
        self,
        stage: str,
        config: Mapping[str, Any],
        upstream: Sequence[str] = (),
        tensors: Mapping[str, torch.Tensor] | None = None,
        payloads: Mapping[str, Any] | None = None,
        seconds: float | None = None,
    ) -> Artefact:
        """Write an artefact atomically and return it.

        Args:
            stage: the stage name, e.g. ``splits`` or ``prompts``.
            config: everything that decides the result; part of the key.
            upstream: keys of the artefacts this one was computed from; part of the key.
            tensors: saved together as ``tensors.safetensors``.
            payloads: each value saved as ``<name>.json``.
            seconds: how long the computation took, recorded in ``meta.json``.
        """
        key = self.key(stage, config, upstream)
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{key}-"))
        try:
            if tensors:
                contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
                save_file(contiguous, tmp / "tensors.safetensors")
            for name, value in (payloads or {}).items():
                (tmp / f"{name}.json").write_text(json.dumps(value, indent=1, default=str))
            meta = {
                "stage": stage,
                "key": key,
                "config": dict(config),
                "upstream": list(upstream),
                "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": seconds,
                "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir())},
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.load(stage, key)

    def write_results(self, chapter: str, results: Mapping[str, Any]) -> Path:
        """Write a chapter's headline numbers to ``results/<chapter>.json`` atomically,
        with their sha256 beside them (``<chapter>.sha256``).

        The reproduction ledger reads these files; no number is typed into the book.
        """
        folder = self.root / "results"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{chapter}.json"
        text = json.dumps(dict(results), indent=1, default=str)
        for path, content in (
            (folder / f"{chapter}.sha256", hashlib.sha256(text.encode()).hexdigest()),
            (final, text),
        ):
            tmp = folder / f".tmp-{path.name}"
            tmp.write_text(content)
            os.replace(tmp, path)
        return final

    def read_results(self, chapter: str) -> dict[str, Any]:
        """Read the headline numbers an earlier chapter wrote, checking their sha256.

        Raises:
            FileNotFoundError: the chapter has not been run with this store.
            CorruptArtefactError: the file was changed after the chapter wrote it, or has
                no checksum (written by an older version): rerun that chapter.
        """
        path = self.root / "results" / f"{chapter}.json"
        if not path.exists():
            raise FileNotFoundError(
                f"no results of {chapter} in {self.root}; run that chapter first"
            )
        text = path.read_text()
        stamp = path.with_suffix(".sha256")
        expected = stamp.read_text().strip() if stamp.exists() else None
        if expected != hashlib.sha256(text.encode()).hexdigest():
            why = "has no checksum" if expected is None else "was changed after it was written"
            raise CorruptArtefactError(f"{path} {why}; rerun chapter {chapter} to write it anew")
        return json.loads(text)

    def cached(
        self,
        stage: str,
        config: Mapping[str, Any],
        compute: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]],
        upstream: Sequence[str] = (),
    ) -> Artefact:
        """Return the stored artefact for this config, computing and saving it if absent.

        ``compute`` returns ``(tensors, payloads)``.
        """
        found = self.find(stage, self.key(stage, config, upstream))
        if found is not None:
            return found
        start = time.perf_counter()
        tensors, payloads = compute()
        return self.save(stage, config, upstream, tensors, payloads, time.perf_counter() - start)
