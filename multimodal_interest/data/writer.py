"""Writing a dataset folder from in-memory tables: all or nothing, checked before it appears.

Importers build a :class:`DatasetDraft`; :func:`write_dataset` writes it into a temporary
folder beside the destination, loads it back through every check of the loader, adds the
standard cold-start splits, and only then renames it into place.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.manifest import Manifest, PlatformSpec, VectorSpec, write_manifest
from multimodal_interest.data.splits import RATIOS, SEEDS, Split, random_split, save_split
from multimodal_interest.data.tables import write_table


@dataclass
class PlatformDraft:
    items: pd.DataFrame  # item_id, then text / media / other columns
    text: tuple[str, ...] = ()
    image: str | None = None
    audio: str | None = None
    # name -> (modality, [n_items, D] vectors in items order)
    vectors: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class DatasetDraft:
    name: str
    platforms: dict[str, PlatformDraft]
    interactions: pd.DataFrame  # user_id, platform, item_id, timestamp and/or order, ...
    description: str = ""
    provenance: str = ""
    licence: str = ""
    synthetic: bool = False
    user_links: pd.DataFrame | None = None  # platform, user_id, person_id
    splits: list[Split] = field(default_factory=list)
    report: dict[str, int] = field(default_factory=dict)  # what was read, kept and dropped
    media: dict[str, Path] = field(default_factory=dict)  # dataset-relative path -> file to copy
    notes: list[str] = field(default_factory=list)  # what the import decided, for its user


def write_dataset(draft: DatasetDraft, dst: str | Path, standard_splits: bool = True) -> Path:
    """Write ``draft`` as a new dataset folder ``dst`` and return it.

    With ``standard_splits`` (and two or more platforms) the random cold-start splits of
    every ratio in ``RATIOS`` and seed in ``SEEDS`` are saved beside the draft's own.
    """
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; choose a new folder or delete it first")
    _remove_leftovers(dst)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        for rel, source in draft.media.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp / rel)
        platforms = {name: _write_platform(tmp, name, p) for name, p in draft.platforms.items()}
        write_table(draft.interactions, tmp / "interactions.parquet")
        links = None
        if draft.user_links is not None:
            links = "user_links.parquet"
            write_table(draft.user_links, tmp / links)
        write_manifest(Manifest(
            name=draft.name, platforms=platforms, interactions="interactions.parquet",
            synthetic=draft.synthetic, description=draft.description,
            provenance=draft.provenance, licence=draft.licence, user_links=links,
            import_report={k: int(v) for k, v in draft.report.items()}), tmp)
        for split in draft.splits:
            save_split(tmp, split)
        dataset = CrossPlatformDataset.load(tmp)  # the folder must pass its own checks
        if standard_splits and len(platforms) > 1:
            for ratio in RATIOS:
                for seed in SEEDS:
                    save_split(tmp, random_split(dataset, ratio, seed))
        for split in dataset.splits():
            dataset.split(split)  # every saved split names known users and platforms
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _remove_leftovers(dst: Path) -> None:
    """Delete the temporary folders of earlier writes of ``dst`` whose process is gone."""
    for old in dst.parent.glob(f".{dst.name}.tmp-*"):
        pid = old.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def _write_platform(root: Path, name: str, draft: PlatformDraft) -> PlatformSpec:
    items = f"items/{name}.parquet"
    write_table(draft.items.reset_index(drop=True), root / items)
    vectors = {}
    ids = draft.items["item_id"].to_numpy().astype(str)
    for vname, (modality, array) in draft.vectors.items():
        rel = f"vectors/{name}/{vname}.npz"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / rel, item_id=ids, vectors=np.asarray(array, dtype=np.float32))
        vectors[vname] = VectorSpec(rel, modality)
    return PlatformSpec(items, tuple(draft.text), draft.image, draft.audio, vectors)
