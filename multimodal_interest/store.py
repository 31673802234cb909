"""The item embedding store: vectors per (platform, modality, encoder fingerprint).

Layout under the store root::

    <platform>/<modality>/<fingerprint>/
        manifest.json                 encoder type, config, dim, library versions
        shard-<time>-r<rank>-<id>.parquet   item_id, content_hash, vector[dim] float32

A shard is written to a temporary name and renamed into place, so a shard that exists is
whole, and a job killed at any point loses only the chunk it was encoding. Rows are keyed by
item id and a hash of the item's content: when an item's content changes, its new row goes
into a newer shard and wins (shard names sort by creation time). Several processes may write
shards into the same folder at once; nothing shared is appended to.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class StoreError(ValueError):
    """The store cannot serve or take these vectors (wrong encoder, missing items, ...)."""


@dataclass
class StoredVectors:
    """Vectors of one (platform, modality, encoder), as one float32 tensor plus an id index."""

    vectors: torch.Tensor  # [N, dim] float32
    ids: list[str]  # row i is item ids[i]
    fingerprint: str

    @property
    def index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "sentence-transformers", "open_clip_torch", "timm",
                 "torchaudio", "multimodal-interest"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


class VectorSet:
    """The shards of one (platform, modality, fingerprint) folder."""

    def __init__(self, folder: Path, platform: str, modality: str, fingerprint: str):
        self.folder, self.platform, self.modality, self.fingerprint = folder, platform, modality, fingerprint

    @property
    def where(self) -> str:
        return f"{self.platform}/{self.modality}/{self.fingerprint}"

    def manifest(self) -> dict[str, Any]:
        path = self.folder / MANIFEST
        if not path.is_file():
            raise StoreError(f"{path}: no manifest; this folder is not a vector set")
        return json.loads(path.read_text())

    @property
    def dim(self) -> int:
        return int(self.manifest()["dim"])

    def shards(self) -> list[Path]:
        """Shard files, oldest first."""
        return sorted(self.folder.glob("shard-*.parquet"))

    def content_hashes(self) -> dict[str, str]:
        """item_id -> content hash of its current row (newest shard wins)."""
        out: dict[str, str] = {}
        for shard in self.shards():
            t = pq.read_table(shard, columns=["item_id", "content_hash"])
            out.update(zip(t.column("item_id").to_pylist(), t.column("content_hash").to_pylist()))
        return out

    def write_shard(self, ids: Sequence[str], hashes: Sequence[str], vectors: np.ndarray,
                    rank: int = 0) -> Path:
        """Atomically add one shard. ``vectors``: [len(ids), dim] float32."""
        dim = self.dim
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), dim) or len(hashes) != len(ids):
            raise StoreError(f"{self.where}: shard of {len(ids)} ids, {len(hashes)} hashes and "
                             f"vectors {tuple(vectors.shape)}; expected [{len(ids)}, {dim}]")
        if not np.isfinite(vectors).all():
            bad = [ids[i] for i in np.flatnonzero(~np.isfinite(vectors).all(1))[:5]]
            raise StoreError(f"{self.where}: non-finite vectors for items {bad}")
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table({"item_id": pa.array(list(ids), pa.string()),
                          "content_hash": pa.array(list(hashes), pa.string()),
                          "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="none")
        name = f"shard-{time.time_ns():020d}-r{rank:03d}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.folder / name
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def load(self, ids: Iterable[str] | None = None) -> StoredVectors:
        """All current vectors, or those of ``ids`` in that order (every id must be present)."""
        if ids is None:
            return self._read(None)[0]
        ids = list(ids)
        got, present = self._read(ids)
        if not present.all():
            missing = [i for i, ok in zip(ids, present.tolist()) if not ok]
            raise StoreError(f"{self.where}: {len(missing)} of {len(ids)} items have no vector "
                             f"(first: {missing[:5]}); run `mmi embed` on their catalog first")
        return got

    def lookup(self, ids: Sequence[str]) -> tuple[StoredVectors, torch.Tensor]:
        """Vectors of ``ids`` in that order and ``present [len(ids)]`` bool; items without a
        vector (their encoding failed, say) get a zero row and ``present`` False."""
        return self._read(list(ids))

    def _read(self, ids: list[str] | None) -> tuple[StoredVectors, torch.Tensor]:
        dim = self.dim
        shard_of: dict[str, tuple[int, int]] = {}  # item_id -> (shard number, row); newest wins
        arrays = []
        for s, shard in enumerate(self.shards()):
            t = pq.read_table(shard, columns=["item_id", "vector"])
            arrays.append(t.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim))
            shard_of.update((item_id, (s, r)) for r, item_id in enumerate(t.column("item_id").to_pylist()))
        if ids is None:
            ids = list(shard_of)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        present = np.zeros(len(ids), dtype=bool)
        for row, item_id in enumerate(ids):
            where = shard_of.get(item_id)
            if where is not None:
                out[row] = arrays[where[0]][where[1]]
                present[row] = True
        return StoredVectors(torch.from_numpy(out), ids, self.fingerprint), torch.from_numpy(present)

    def compact(self) -> None:
        """Rewrite all shards as one holding only the current row of each item."""
        old = self.shards()
        if len(old) <= 1:
            return
        current = self.load()
        hashes = self.content_hashes()
        self.write_shard(current.ids, [hashes[i] for i in current.ids], current.vectors.numpy())
        for path in old:
            path.unlink()


class EmbeddingStore:
    """A folder of vector sets, one per (platform, modality, encoder fingerprint)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def fingerprints(self, platform: str, modality: str) -> list[str]:
        folder = self.root / platform / modality
        return sorted(p.name for p in folder.iterdir() if (p / MANIFEST).is_file()) if folder.is_dir() else []

    def platforms(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def modalities(self, platform: str) -> list[str]:
        folder = self.root / platform
        return sorted(m.name for m in folder.iterdir() if self.fingerprints(platform, m.name)) if folder.is_dir() else []

    def open(self, platform: str, modality: str, encoder: Any) -> VectorSet:
        """The vector set for ``encoder`` (an :class:`encoders.Encoder`), created if new."""
        _check_name("platform", platform)
        _check_name("modality", modality)
        fp = encoder.fingerprint
        vs = VectorSet(self.root / platform / modality / fp, platform, modality, fp)
        doc = {"format": FORMAT_VERSION, "platform": platform, "modality": modality,
               "fingerprint": fp, "dim": encoder.dim, "dtype": "float32",
               "encoder": {"type": encoder.registry_name, "modality": encoder.modality,
                           "config": encoder.get_config()},
               "versions": _library_versions()}
        path = vs.folder / MANIFEST
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("dim") != encoder.dim or old.get("encoder", {}).get("type") != encoder.registry_name:
                raise StoreError(f"{path}: holds {old.get('encoder', {}).get('type')} vectors of dim "
                                 f"{old.get('dim')}, not {encoder.registry_name} of dim {encoder.dim}")
        else:
            atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
        return vs

    def get(self, platform: str, modality: str, fingerprint: str | None = None) -> VectorSet:
        """An existing vector set. With ``fingerprint`` None the one set there must be unique;
        a fingerprint with no vectors is refused, naming the encoders that do have some."""
        have = self.fingerprints(platform, modality)
        where = f"{self.root}/{platform}/{modality}"
        if not have:
            raise StoreError(f"{where}: no vectors; run `mmi embed` for platform {platform!r} first")
        if fingerprint is None:
            if len(have) > 1:
                raise StoreError(f"{where}: vectors from several encoders ({self._describe(platform, modality, have)}); "
                                 f"say which fingerprint to use")
            fingerprint = have[0]
        elif fingerprint not in have:
            raise StoreError(f"{where}: no vectors from encoder {fingerprint}; the store has vectors from "
                             f"{self._describe(platform, modality, have)}. Embed with the same encoder, "
                             f"or re-run `mmi embed` with this one")
        return VectorSet(self.root / platform / modality / fingerprint, platform, modality, fingerprint)

    def load(self, platform: str, modality: str, fingerprint: str | None = None,
             ids: Iterable[str] | None = None) -> StoredVectors:
        """Shortcut: ``get(...).load(ids)``."""
        return self.get(platform, modality, fingerprint).load(ids)

    def _describe(self, platform: str, modality: str, fingerprints: list[str]) -> str:
        parts = []
        for fp in fingerprints:
            enc = VectorSet(self.root / platform / modality / fp, platform, modality, fp).manifest()["encoder"]
            parts.append(f"{fp} ({enc['type']})")
        return ", ".join(parts)


def _check_name(what: str, name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise StoreError(f"{what} name {name!r} cannot be a folder name in the store")
