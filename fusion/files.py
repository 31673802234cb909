"""The project's one file hash: model and bundle manifests, dataset downloads and encoder
fingerprints all call :func:`sha256_file`. Standard library only, so any layer may import it
(``fusion`` itself imports neither ``encoders`` nor ``multimodal_interest``)."""
from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks. Never cached, so an integrity check
    always reads the bytes as they are now."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
