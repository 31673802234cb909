"""The project's one file hash: model and bundle manifests, dataset downloads and encoder
fingerprints all call :func:`sha256_file`; a saved model and a bundle check the hashes their
manifests record with :func:`verify_hashes`. Standard library only, so any layer may import it
(``fusion`` itself imports neither ``encoders`` nor ``multimodal_interest``)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks. Never cached, so an integrity check
    always reads the bytes as they are now."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inside(folder: Path, relative: str, manifest: Path, where: str) -> Path:
    """``folder / relative``, refusing a path recorded in ``manifest`` that leads out of
    ``folder`` (``where`` names it in the error: "the bundle", ...)."""
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{manifest}: path {relative!r} leads out of {where}")
    return path



def verify_hashes(folder: Path, recorded: Mapping[str, str], needed: Iterable[str], manifest: Path,
                  owner: str, where: str, changed: str, remedy: str) -> None:
    """Every file ``recorded`` (path relative to ``folder`` -> sha256) lies inside ``folder``,
    exists and has that hash, and every ``needed`` file is recorded; else an error naming the
    file. ``owner`` ("the bundle") and ``where`` ("the bundle", "the model folder") name what
    was saved; ``changed`` says what a mismatch means, ``remedy`` what to do."""
    unrecorded = [f for f in needed if f not in recorded]
    if unrecorded:
        raise ValueError(f"{folder / unrecorded[0]}: not recorded in {manifest}, so it cannot be "
                         f"verified; {remedy}")
    for relative, want in recorded.items():
        path = inside(folder, relative, manifest, where)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (recorded in {manifest}); {remedy}")
        got = sha256_file(path)
        if got != want:
            raise ValueError(f"{path}: sha256 {got} but {owner}'s manifest records {want}: {changed}; {remedy}")
