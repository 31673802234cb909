"""Importers: turn a published dataset layout into the toolkit's dataset format.

An importer is a function ``(src: Path, **options) -> DatasetDraft`` registered under a
kind; :func:`import_dataset` writes its draft as a checked dataset folder.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from multimodal_interest.data.writer import DatasetDraft, write_dataset

log = logging.getLogger(__name__)

Importer = Callable[..., DatasetDraft]
_IMPORTERS: dict[str, Importer] = {}


def register_importer(kind: str) -> Callable[[Importer], Importer]:
    def add(fn: Importer) -> Importer:
        if kind in _IMPORTERS:
            log.warning("importer %r registered twice; the later one wins", kind)
        _IMPORTERS[kind] = fn
        return fn
    return add


def list_importers() -> dict[str, str]:
    """Kind -> first line of the importer's docstring."""
    return {k: (fn.__doc__ or "").strip().splitlines()[0] for k, fn in sorted(_IMPORTERS.items())}


def create_draft(kind: str, src: str | Path, **options) -> DatasetDraft:
    if kind not in _IMPORTERS:
        raise ValueError(f"unknown importer {kind!r}; known: {', '.join(sorted(_IMPORTERS))}")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    return _IMPORTERS[kind](src, **{k: v for k, v in options.items() if v is not None})


def import_dataset(kind: str, src: str | Path, dst: str | Path, **options) -> Path:
    """Import ``src`` with importer ``kind`` into the new dataset folder ``dst``."""
    return write_dataset(create_draft(kind, src, **options), dst)


from multimodal_interest.data.importers import (  # noqa: E402  (they register themselves)
    amazon_art_office, amazon_idonly, lastfm, movielens, plain_csv)
