"""The embedding store: item features per (platform, modality, encoder fingerprint).

Layout under the store root::

    <platform>/<modality>/<fingerprint>/
        manifest.json                 encoder type, config, dim, library versions
        shard-<time>-r<rank>-<sha256>.parquet   item_id, content_hash, vector[dim] float32
        embed.lock                    held by the `mmi embed` job writing this set (flock)
        quarantine/                   bad shards moved aside by `mmi embed`

A shard is written to a temporary name and renamed into place, so a shard that exists is
whole, and a job killed at any point loses only the chunk it was encoding. Rows are keyed by
item id and a hash of the item's content: when an item's content changes, its new row goes
into a newer shard and wins (shard names sort by creation time). Several processes may write
shards into the same folder at once; nothing shared is appended to.

Integrity: a shard's name ends in the sha256 of its bytes, computed before the rename that
makes it visible, so a shard that exists always has its checksum (crash-safe) and no file is
shared between writers (concurrency-safe). Every read (``load``, ``lookup``,
``content_hashes``) hashes each shard once and checks it: checksum, parquet, columns, vector
width, finite values. Readers refuse a bad shard with a :class:`BadShard` error naming it;
the writer (``repair``, called by `mmi embed` under the lock) moves it to ``quarantine/``, so
the items it held have no row and are encoded again. Shards written before checksums
(``shard-<time>-r<rank>-<8 hex>.parquet``) are read with a warning, and the next `mmi embed`
records their checksum by renaming them (same time and rank, so the same order).

Locking: a job that writes a set holds an advisory ``flock`` on its ``embed.lock`` for the
whole run, so a second `mmi embed` on the same set waits, then finds the items done. The
processes of one ``accelerate launch`` are one job: only the main one takes the lock. A
killed job's lock goes with its process (``flock`` is reliable on local disks; on network
file systems it is only as good as the server's lock support). Readers never take it; a
shard renamed or moved while they list the folder makes them list it again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fusion.files import MANIFEST_LIMIT, FileRefused, Folder, real_inside

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent jobs are then not serialised
    fcntl = None

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK_FILE = "embed.lock"
QUARANTINE = "quarantine"
FORMAT_VERSION = 1
REENCODE_HINT = "run `mmi embed` on the catalog to re-encode the affected items"


class StoreError(ValueError):
    """The store cannot serve or take these vectors (wrong encoder, missing items, ...)."""


class BadShard(StoreError):
    """A shard that fails its checks: changed after it was written, cut short, unreadable,
    of another width, or holding non-finite values."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: bad shard: {reason}; {REENCODE_HINT} "
                         f"(it moves this shard to {QUARANTINE}/)")
        self.path, self.reason = path, reason


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


@dataclass
class Shard:
    """One shard's rows, checked."""

    path: Path
    sha256: str  # of the file's bytes
    verified: bool  # False: a legacy shard whose name carries no checksum
    ids: list[str]
    hashes: list[str]  # content hash of each row
    vectors: np.ndarray  # [len(ids), dim] float32


@dataclass
class Repair:
    """What :meth:`VectorSet.repair` found and did."""

    hashes: dict[str, str]  # item_id -> content hash of its current row, good shards only
    quarantined: list[BadShard] = field(default_factory=list)  # .path: where it was
    recorded: list[Path] = field(default_factory=list)  # legacy shards renamed with a checksum


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


def shard_name(rank: int, sha256: str, time_ns: int | None = None) -> str:
    """``shard-<time>-r<rank>-<sha256>.parquet``: sorts by creation time, carries its checksum."""
    return f"shard-{time.time_ns() if time_ns is None else time_ns:020d}-r{rank:03d}-{sha256}.parquet"


def shard_checksum(path: Path) -> str | None:
    """The sha256 a shard's name records, or None for a legacy shard (no checksum)."""
    last = path.stem.rsplit("-", 1)[-1]
    if len(last) == 64 and all(c in "0123456789abcdef" for c in last):
        return last
    return None


def read_shard(path: Path, dim: int) -> Shard:
    """One shard, read once and checked; :class:`BadShard` says what is wrong with it.
    A shard that vanished raises FileNotFoundError (a writer renamed or moved it)."""
    if real_inside(path.parent, path.name) is None:
        raise BadShard(path, "a link that leads out of its vector set's folder (links followed)")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    expected = shard_checksum(path)
    if expected is not None and sha != expected:
        raise BadShard(path, f"checksum mismatch, sha256 {sha[:12]}... but its name records "
                             f"{expected[:12]}...: changed or cut short after it was written")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise BadShard(path, f"not a readable parquet file ({e})") from None
    ids, hashes = _string_column(path, table, "item_id"), _string_column(path, table, "content_hash")
    vectors = _vector_column(path, table, dim)
    if not np.isfinite(vectors).all():
        bad = [ids[i] for i in np.flatnonzero(~np.isfinite(vectors).all(1))[:5]]
        raise BadShard(path, f"non-finite vectors for items {bad}")
    return Shard(path, sha, expected is not None, ids, hashes, vectors)


def _string_column(path: Path, table: pa.Table, name: str) -> list[str]:
    if name not in table.column_names or not pa.types.is_string(table.schema.field(name).type):
        raise BadShard(path, f"no string column {name!r} (columns: {table.column_names})")
    values = table.column(name).to_pylist()
    if None in values:
        raise BadShard(path, f"column {name!r} has empty cells")
    return values


def _vector_column(path: Path, table: pa.Table, dim: int) -> np.ndarray:
    """The ``vector`` column as [rows, dim] float32."""
    if "vector" not in table.column_names:
        raise BadShard(path, f"no column 'vector' (columns: {table.column_names})")
    kind = table.schema.field("vector").type
    if not pa.types.is_fixed_size_list(kind) or not pa.types.is_float32(kind.value_type):
        raise BadShard(path, f"its vector column is {kind}, not fixed_size_list<float>[{dim}]")
    if kind.list_size != dim:
        raise BadShard(path, f"vectors of width {kind.list_size}, but this set's manifest says dim {dim}")
    column = table.column("vector").combine_chunks()
    if column.null_count:
        raise BadShard(path, f"{column.null_count} rows have no vector")
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


_warned_legacy: set[Path] = set()  # legacy shards this process has warned about


class VectorSet:
    """The shards of one (platform, modality, fingerprint) folder."""

    def __init__(self, folder: Path, platform: str, modality: str, fingerprint: str):
        self.folder, self.platform, self.modality, self.fingerprint = folder, platform, modality, fingerprint
        self._locked = False  # this object holds writer_lock()

    @property
    def where(self) -> str:
        return f"{self.platform}/{self.modality}/{self.fingerprint}"

    def manifest(self) -> dict[str, Any]:
        path = self.folder / MANIFEST
        if not path.is_file():
            raise StoreError(f"{path}: no manifest; this folder is not a vector set")
        return read_manifest(path)

    @property
    def dim(self) -> int:
        return int(self.manifest()["dim"])

    def shards(self) -> list[Path]:
        """Shard files, oldest first."""
        return sorted(self.folder.glob("shard-*.parquet"))

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Held by a job writing this set for its whole run: a second one waits (saying so, with
        the holder's pid), then finds the items done. Readers never take it."""
        if self._locked:  # already held through this object (compact() inside a job, say)
            yield
            return
        if fcntl is None:
            logger.warning("%s: no file locks on this system; do not run two `mmi embed` at once",
                           self.folder)
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                logger.warning("%s: another `mmi embed` job (pid %s) is writing these vectors; "
                               "waiting for it to finish", self.folder, holder)
                fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            self._locked = True
            try:
                yield
            finally:
                self._locked = False
                fcntl.flock(f, fcntl.LOCK_UN)

    def content_hashes(self) -> dict[str, str]:
        """item_id -> content hash of its current row (newest shard wins)."""
        return _current_hashes(self._checked_shards(self._refuse))

    def repair(self) -> Repair:
        """The writer's read, under :meth:`writer_lock`: bad shards are moved to ``quarantine/``
        (their items then have no row, so a job encodes them again), legacy shards get their
        checksum recorded in their name; returns the content hashes of the good shards."""
        if not self._locked:
            raise StoreError(f"{self.folder}: repair() needs writer_lock()")
        out = Repair({})
        shards = self._checked_shards(lambda bad: out.quarantined.append(self._quarantine(bad)))
        for shard in shards:
            if not shard.verified:
                out.recorded.append(self._record_checksum(shard))
        out.hashes = _current_hashes(shards)
        return out

    def write_shard(self, ids: Sequence[str], hashes: Sequence[str], vectors: np.ndarray,
                    rank: int = 0) -> Path:
        """Atomically add one shard, named with its checksum. ``vectors``: [len(ids), dim] float32."""
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
        pq.write_table(table, sink, compression="none", use_dictionary=False)  # plain float32 bytes
        data = sink.getvalue().to_pybytes()
        path = self.folder / shard_name(rank, hashlib.sha256(data).hexdigest())
        atomic_write_bytes(path, data)
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
        shards = self._checked_shards(self._refuse)
        return _gather_rows(shards, ids, self.dim, self.fingerprint)

    def compact(self) -> None:
        """Rewrite all shards as one holding only the current row of each item."""
        with self.writer_lock():
            shards = self._checked_shards(self._refuse)
            if len(shards) <= 1:
                return
            current, _ = _gather_rows(shards, None, self.dim, self.fingerprint)
            hashes = _current_hashes(shards)
            self.write_shard(current.ids, [hashes[i] for i in current.ids], current.vectors.numpy())
            for shard in shards:
                shard.path.unlink()

    def _checked_shards(self, on_bad: Callable[[BadShard], Any]) -> list[Shard]:
        """Every shard read and checked, oldest first; a bad one goes to ``on_bad``. A shard
        that vanishes while being read (renamed or moved by a writer) restarts the listing."""
        dim = self.dim
        for _ in range(5):
            try:
                return [s for s in (self._check(path, dim, on_bad) for path in self.shards()) if s]
            except FileNotFoundError:
                continue
        raise StoreError(f"{self.folder}: shards kept changing while being read; try again")

    def _check(self, path: Path, dim: int, on_bad: Callable[[BadShard], Any]) -> Shard | None:
        try:
            shard = read_shard(path, dim)
        except BadShard as bad:
            on_bad(bad)
            return None
        if not shard.verified and not self._locked and path not in _warned_legacy:
            _warned_legacy.add(path)
            logger.warning("%s: shard from before checksums, read unverified; the next `mmi embed` "
                           "on this store records its checksum", path)
        return shard

    @staticmethod
    def _refuse(bad: BadShard) -> None:
        raise bad

    def _quarantine(self, bad: BadShard) -> BadShard:
        """Move a bad shard to ``quarantine/``; the error, naming where it went."""
        folder = self.folder / QUARANTINE
        folder.mkdir(exist_ok=True)
        dest = folder / bad.path.name
        if dest.exists():
            dest = folder / f"{bad.path.stem}.{uuid.uuid4().hex[:8]}{bad.path.suffix}"
        os.replace(bad.path, dest)
        logger.warning("%s: bad shard: %s; moved to %s/, its items will be encoded again",
                       bad.path, bad.reason, QUARANTINE)
        return BadShard(dest, bad.reason)

    def _record_checksum(self, shard: Shard) -> Path:
        """Rename a legacy shard with its checksum, keeping its time and rank (its order)."""
        prefix = shard.path.stem.rsplit("-", 1)[0]
        dest = shard.path.with_name(f"{prefix}-{shard.sha256}.parquet")
        os.replace(shard.path, dest)
        logger.info("%s: shard from before checksums; its sha256 is now recorded in its name %s",
                    shard.path, dest.name)
        return dest


def _current_hashes(shards: Sequence[Shard]) -> dict[str, str]:
    """item_id -> content hash of its newest row."""
    out: dict[str, str] = {}
    for shard in shards:
        out.update(zip(shard.ids, shard.hashes))
    return out


def _gather_rows(shards: Sequence[Shard], ids: list[str] | None, dim: int,
                 fingerprint: str) -> tuple[StoredVectors, torch.Tensor]:
    """The newest row of each of ``ids`` (all items: None) and which ones have a row."""
    shard_of: dict[str, tuple[int, int]] = {}  # item_id -> (shard number, row); newest wins
    for s, shard in enumerate(shards):
        shard_of.update((item_id, (s, r)) for r, item_id in enumerate(shard.ids))
    if ids is None:
        ids = list(shard_of)
    out = np.zeros((len(ids), dim), dtype=np.float32)
    present = np.zeros(len(ids), dtype=bool)
    for row, item_id in enumerate(ids):
        where = shard_of.get(item_id)
        if where is not None:
            out[row] = shards[where[0]].vectors[where[1]]
            present[row] = True
    return StoredVectors(torch.from_numpy(out), ids, fingerprint), torch.from_numpy(present)


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
            old = read_manifest(path)
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


def read_manifest(path: Path) -> dict[str, Any]:
    """A vector set's manifest, read by the loader rule (:mod:`fusion.files`: inside its
    folder, bounded): a JSON object with a positive integer ``dim`` and ``dtype`` float32 (the
    one dtype shards hold); anything else is a :class:`StoreError` naming the file."""
    remedy = "restore it, or delete this vector set's folder and run `mmi embed` again"
    try:
        doc = Folder(path.parent, "its vector set's folder").json(path.name, MANIFEST_LIMIT)
    except FileRefused as e:
        raise StoreError(f"{e.path}: not a valid manifest ({e.reason}); {remedy}") from None
    if not isinstance(doc, dict) or isinstance(doc.get("dim"), bool) or not isinstance(doc.get("dim"), int) \
            or doc["dim"] < 1:
        raise StoreError(f"{path}: not a valid manifest (a JSON object with a positive integer 'dim' "
                         f"expected); {remedy}")
    if doc.get("dtype", "float32") != "float32":
        raise StoreError(f"{path}: dtype: {doc['dtype']!r}, but a vector set holds float32 vectors "
                         f"only (its shards are checked as such); {remedy}")
    return doc


def _check_name(what: str, name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise StoreError(f"{what} name {name!r} cannot be a folder name in the store")
