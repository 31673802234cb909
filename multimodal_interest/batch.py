"""Every user of a histories file scored at once, locally or on Ray (``engine="ray"``): the
library behind ``mmi recommend-batch --model BUNDLE --histories FILE --platform P --output DIR``.

The histories file (CSV, TSV or Parquet) has a row per interaction: ``user_id``, ``item_id``,
and optionally ``platform`` (else ``--source`` names the platform of every item) and
``timestamp`` (the order of a user's items; else the file's order). A user's rows must be
together (the file grouped by user): it is read as a stream, ``--users-per-part`` users at a
time, so memory does not grow with the file.

Each group of users becomes one Parquet part, ``DIR/part-<n>.parquet``, with a row per user:
``user_id``, ``interest`` (the portable interest vector, float32 [D]), ``history_used``,
``item_ids`` and ``scores`` (the top ``k``), ``because`` (with ``--explain N``: the history
items behind each recommended item), ``fallback`` and ``error`` (why this user got nothing:
unknown items, say). Every user of the file has a row. Scoring is :class:`Recommender`'s,
so a row equals ``mmi recommend --history`` for that user. A part is written to a temporary
name and renamed; its footer records a hash of its users' rows and the settings, so a
rerun after a kill skips the parts already done and verified, and redoes the rest: no user
is lost or written twice. ``DIR/manifest.json``, written last, lists the parts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from multimodal_interest.data.errors import DatasetError, Problem
from multimodal_interest.data.ids import id_problem, normal_id
from multimodal_interest.data.values import RULES
from multimodal_interest.store import atomic_write_bytes

log = logging.getLogger(__name__)

FORMAT = "multimodal-interest/recommend-batch"
META_KEY = b"mmi.recommend_batch"
MANIFEST = "manifest.json"
READ_ROWS = 65536  # rows read from the histories file at a time


@dataclass(frozen=True)
class Settings:
    """What a part's rows depend on besides its users (recorded in each part)."""

    model: str  # the bundle's model fingerprint
    platform: str
    k: int
    source: str | None
    index: str
    explain: int
    include_seen: bool
    skip_unknown: bool


@dataclass
class Chunk:
    """``users_per_part`` consecutive users of the file: ``(user_id, history)``, history oldest
    first: item ids of ``source``, or ``(platform, item_id)`` pairs."""

    number: int
    users: list[tuple[str, list]]
    digest: str  # sha256 of the users' rows as read


# ---------------------------------------------------------------------- reading
def read_chunks(path: Path, users_per_part: int, source: str | None) -> Iterator[Chunk]:
    """The file's users in groups, streamed. Refuses (:class:`DatasetError`, naming the line
    or row and column) empty ids, a non-number timestamp and a user whose rows are not together."""
    if users_per_part < 1:
        raise ValueError(f"users_per_part must be >= 1, got {users_per_part}")
    seen: set[int] = set()  # 64-bit hashes of the users already finished
    users: list[tuple[str, list]] = []
    digest = hashlib.sha256()
    number, current, rows, first = 0, None, [], 0
    for offset, batch in _batches(path, source):
        columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        platforms = columns.get("platform") or [source] * batch.num_rows
        for i in range(batch.num_rows):
            where = _where(path, offset + i)
            user, item = (_id(path, columns[name][i], name, where) for name in ("user_id", "item_id"))
            if user != current:
                if current is not None:
                    users.append((current, _history(path, rows, first)))
                    seen.add(_key(current))
                    if len(users) == users_per_part:
                        yield Chunk(number, users, digest.hexdigest())
                        number, users, digest = number + 1, [], hashlib.sha256()
                if _key(user) in seen:
                    raise DatasetError([Problem(str(path), f"user {user!r} again, after other users' rows: "
                                                           f"a user's rows must be together (sort the file "
                                                           f"by user_id)", column="user_id", **where)],
                                       f"histories {path}")
                current, rows, first = user, [], offset + i
            row = (item, platforms[i],
                   columns["timestamp"][i] if "timestamp" in columns else None)
            rows.append(row)
            digest.update(json.dumps([user, *row]).encode() + b"\n")
    if current is not None:
        users.append((current, _history(path, rows, first)))
    if users:
        yield Chunk(number, users, digest.hexdigest())


def _id(path: Path, value: str | None, column: str, where: dict[str, int]) -> str:
    """A cell of the id column ``column``, in NFC; refused when empty or not an id
    (:mod:`~multimodal_interest.data.ids`)."""
    value = normal_id(value) if value else ""
    why = "empty" if not value else id_problem(value)
    if why:
        raise DatasetError([Problem(str(path), why, column=column, **where)], f"histories {path}")
    return value


def _key(user: str) -> int:
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "little")


def _where(path: Path, row: int) -> dict[str, int]:
    """Problem location of data row ``row`` (0-based): a text file's line, a Parquet row."""
    return {"row": row + 1} if path.suffix == ".parquet" else {"line": row + 2}


def _history(path: Path, rows: list[tuple], first: int) -> list:
    """A user's rows as a history, oldest first (by timestamp when there is one, stable)."""
    if rows[0][2] is not None or any(r[2] is not None for r in rows):
        stamps = np.array([_number(r[2]) for r in rows], dtype=np.float64)
        bad = np.flatnonzero(RULES["timestamp"].broken(stamps))
        if len(bad):
            n = int(bad[0])
            raise DatasetError([Problem(str(path), RULES["timestamp"].message(rows[n][2]),
                                        column="timestamp", **_where(path, first + n))],
                               f"histories {path}")
        rows = [rows[i] for i in np.argsort(stamps, kind="stable")]
    if rows[0][1] is None:  # no platform column: plain ids of --source
        return [r[0] for r in rows]
    return [(r[1], r[0]) for r in rows]


def _number(value) -> float:
    """A timestamp cell as a float; NaN when it is not a number (then refused by the rule)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _batches(path: Path, source: str | None) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(row offset, batch)`` of the file's columns user_id, item_id [, platform] [, timestamp]."""
    import pyarrow.csv as pcsv

    shown = str(path)
    if not path.is_file():
        raise DatasetError([Problem(shown, "file not found")], f"histories {path}")
    try:
        if path.suffix == ".parquet":
            names = pq.ParquetFile(path).schema_arrow.names
            columns = _columns(path, names, source)
            reader = pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=columns)
            batches = (b.cast(pa.schema([pa.field(c, pa.string() if c != "timestamp" else b.schema.field(c).type)
                                         for c in columns])) for b in reader)
        elif path.suffix in (".csv", ".tsv"):
            parse = pcsv.ParseOptions(delimiter="," if path.suffix == ".csv" else "\t")
            with pcsv.open_csv(path, parse_options=parse) as probe:
                names = probe.schema.names
            columns = _columns(path, names, source)
            convert = pcsv.ConvertOptions(include_columns=columns,
                                          column_types={c: pa.string() for c in columns})
            batches = pcsv.open_csv(path, parse_options=parse, convert_options=convert,
                                    read_options=pcsv.ReadOptions(block_size=1 << 22))
        else:
            raise DatasetError([Problem(shown, f"unsupported file type {path.suffix!r} (expected .csv, "
                                               f".tsv or .parquet)")], f"histories {path}")
        offset = 0
        for batch in batches:
            yield offset, batch
            offset += batch.num_rows
    except pa.ArrowException as e:
        raise DatasetError([Problem(shown, f"cannot read: {e}")], f"histories {path}") from None


def _columns(path: Path, names: list[str], source: str | None) -> list[str]:
    missing = [c for c in ("user_id", "item_id") if c not in names]
    if missing:
        raise DatasetError([Problem(str(path), f"missing column(s) {missing} (columns: {names})")],
                           f"histories {path}")
    if "platform" not in names and source is None:
        raise DatasetError([Problem(str(path), "no platform column: give --source, the platform of "
                                               "its item ids")], f"histories {path}")
    return ["user_id", "item_id"] + [c for c in ("platform", "timestamp") if c in names]


# ---------------------------------------------------------------------- scoring
def score_users(rec, users: list[tuple[str, list]], s: Settings) -> pa.Table:
    """One row per user (see the module docstring), by ``rec`` (a :class:`Recommender`)."""
    from multimodal_interest.recommend import RequestError

    rows = {n: [] for n in ("user_id", "interest", "history_used", "item_ids", "scores", "because",
                            "fallback", "error")}
    for user, history in users:
        source = s.source if all(isinstance(x, str) for x in history) else None
        person = dict(source=source, skip_unknown=s.skip_unknown)
        try:
            doc = rec.export_interest(history, **person)
            r = rec.recommend(history, platform=s.platform, k=s.k, exclude_seen=not s.include_seen,
                              explain=s.explain, **person)
        except RequestError as e:
            doc, r, error = None, None, str(e)
        else:
            error = None
        rows["user_id"].append(user)
        rows["interest"].append(doc["vector"] if doc else None)
        rows["history_used"].append(r.history.used if r else None)
        rows["item_ids"].append([x.item_id for x in r.items] if r else None)
        rows["scores"].append([x.score for x in r.items] if r else None)
        rows["because"].append([[asdict(c) for c in x.because] for x in r.items] if r else None)
        rows["fallback"].append(r.fallback if r else None)
        rows["error"].append(error)
    return pa.table({name: pa.array(values, type=_schema(rec.dim).field(name).type)
                     for name, values in rows.items()}, schema=_schema(rec.dim))


def _schema(dim: int) -> pa.Schema:
    because = pa.struct([("platform", pa.string()), ("item_id", pa.string()), ("position", pa.int32()),
                         ("contribution", pa.float32())])
    return pa.schema([("user_id", pa.string()), ("interest", pa.list_(pa.float32(), dim)),
                      ("history_used", pa.int32()), ("item_ids", pa.list_(pa.string())),
                      ("scores", pa.list_(pa.float32())), ("because", pa.list_(pa.list_(because))),
                      ("fallback", pa.string()), ("error", pa.string())])


# ---------------------------------------------------------------------- parts
def part_path(output: Path, number: int) -> Path:
    return output / f"part-{number:06d}.parquet"


def _meta(chunk: Chunk, s: Settings) -> dict:
    return {"format": FORMAT, "input": chunk.digest, "users": len(chunk.users), "settings": asdict(s)}


def part_done(path: Path, chunk: Chunk, s: Settings) -> bool:
    """True when ``path`` is a whole part of these users under these settings."""
    if not path.is_file():
        return False
    try:
        f = pq.ParquetFile(path)
        meta = json.loads((f.schema_arrow.metadata or {}).get(META_KEY, b"null"))
    except (pa.ArrowException, OSError, ValueError):
        return False
    return meta == _meta(chunk, s) and f.metadata.num_rows == len(chunk.users)


def write_part(path: Path, table: pa.Table, chunk: Chunk, s: Settings) -> None:
    table = table.replace_schema_metadata({META_KEY: json.dumps(_meta(chunk, s)).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


@dataclass
class BatchSummary:
    users: int = 0
    errors: int = 0  # users with an error row
    parts_written: int = 0
    parts_skipped: int = 0  # done by an earlier run, verified
    seconds: float = 0.0

    def format(self, output: Path) -> str:
        rate = self.users / self.seconds if self.seconds > 0 else 0.0
        return (f"{output}: {self.users} users in {self.parts_written + self.parts_skipped} part(s) "
                f"({self.parts_written} written, {self.parts_skipped} already done) in "
                f"{self.seconds:.1f}s ({rate:.1f} users/s); {self.errors} user(s) with an error row")


def recommend_batch(bundle: Path, histories: Path, output: Path, s: Settings, users_per_part: int,
                    engine: str = "local", address: str | None = None, workers: int | None = None,
                    show_progress: bool = True) -> BatchSummary:
    """Score every user of ``histories`` into ``output`` (see the module docstring)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary()
    parts: list[dict] = []

    def todo() -> Iterator[Chunk]:
        for chunk in read_chunks(histories, users_per_part, s.source):
            summary.users += len(chunk.users)
            bar.update(len(chunk.users))
            parts.append({"file": part_path(output, chunk.number).name, "users": len(chunk.users)})
            if part_done(part_path(output, chunk.number), chunk, s):
                summary.parts_skipped += 1
                continue
            yield chunk

    def done(chunk: Chunk, table: pa.Table) -> None:
        write_part(part_path(output, chunk.number), table, chunk, s)
        summary.parts_written += 1

    with tqdm(desc=f"users -> {output}", unit="user", disable=not show_progress) as bar:
        if engine == "ray":
            from multimodal_interest.distributed import score_on_ray

            score_on_ray(bundle, todo(), s, done, address, workers)
        else:
            from multimodal_interest.recommend import Recommender

            rec = Recommender.load(bundle, s.index)
            _check_model(rec, s, bundle)
            for chunk in todo():
                done(chunk, score_users(rec, chunk.users, s))
    _finish(output, parts, s, summary)
    summary.seconds = time.perf_counter() - start
    return summary


def _check_model(rec, s: Settings, bundle: Path) -> None:
    if rec.fingerprint != s.model:
        raise ValueError(f"{bundle}: its model changed during the job ({rec.fingerprint} != {s.model})")


def _finish(output: Path, parts: list[dict], s: Settings, summary: BatchSummary) -> None:
    """Count error rows, drop parts of an earlier, longer input, write the manifest."""
    keep = {p["file"] for p in parts}
    for path in sorted(output.glob("part-*.parquet")):
        if path.name not in keep:
            log.warning("%s: a part of an earlier run on a longer input; removed", path)
            path.unlink()
    for p in parts:
        errors = pq.read_table(output / p["file"], columns=["error"]).column("error")
        p["errors"] = len(errors) - errors.null_count
        summary.errors += p["errors"]
    doc = {"format": FORMAT, "settings": asdict(s), "users": summary.users, "parts": parts}
    atomic_write_bytes(output / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())
