"""Reading a dataset folder into typed, indexed tables, checking everything on the way.

Every check is vectorised and reports the offending rows by file, line and column; all
problems of a folder are collected and raised together as one :class:`DatasetError`.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from multimodal_interest.data.errors import Problems
from multimodal_interest.data.ids import read_ids
from multimodal_interest.data.manifest import Manifest, PlatformSpec, read_manifest
from multimodal_interest.data.paths import OutsideFolder, inside, media_file
from multimodal_interest.data.tables import ROW_LIMIT, Table, read_table
from multimodal_interest.data.values import read_numbers

REQUIRED = ("user_id", "platform", "item_id")
TIME_COLUMNS = ("timestamp", "order")


@dataclass
class Parts:
    manifest: Manifest
    items: dict[str, pd.DataFrame]  # per platform; row position = item_idx
    interactions: pd.DataFrame
    user_ids: np.ndarray  # [n_users] str, user_idx -> user id (after links)


def load_parts(root: Path) -> Parts:
    """Read and check the folder; raises :class:`DatasetError` listing every problem."""
    problems = Problems()
    context = f"dataset {root}"
    manifest = read_manifest(root, problems)
    problems.raise_if_any(context)
    items = {p: _items(root, p, spec, problems) for p, spec in manifest.platforms.items()}
    links = _links(root, manifest, problems) if manifest.user_links else None
    loaded = _interactions(root, manifest, items, links, problems)
    problems.raise_if_any(context)
    interactions, user_ids = loaded
    return Parts(manifest, items, interactions, user_ids)


def _inside(root: Path, relative: str, shown: str, problems: Problems) -> Path | None:
    """The real path of ``relative`` if it stays inside ``root`` (:func:`paths.inside`);
    else a problem (and None)."""
    try:
        return inside(root, relative)
    except OutsideFolder as exc:
        problems.add(shown, str(exc))
        return None


def _table(root: Path, relative: str, problems: Problems, text_columns: tuple) -> Table | None:
    path = _inside(root, relative, relative, problems)
    fmt = Path(relative).suffix[1:]  # the name as written decides, not a link's target
    return None if path is None else read_table(path, relative, problems, text_columns, fmt)


def _items(root: Path, platform: str, spec: PlatformSpec,
           problems: Problems) -> pd.DataFrame | None:
    media = tuple(c for c in (spec.image, spec.audio) if c)
    table = _table(root, spec.items, problems, ("item_id", *spec.text, *media))
    if table is None or not table.require(problems, "item_id", *spec.text, *media):
        return None
    if len(table) == 0:
        problems.add(spec.items, f"platform '{platform}' has no items (empty platform)")
    frame = table.frame.copy()
    ids = read_ids(table, "item_id", problems)
    table.flag(problems, (ids.duplicated() & (ids != "")).to_numpy(), "item_id",
               "duplicate item_id {value} (item ids are unique within a platform)", ids)
    frame["item_id"] = ids
    for column in spec.text:
        frame[column] = table.text(column, problems, required=False)
    for column in media:
        frame[column] = _media(root, table, column, problems)
    unique = not ids.duplicated().any()
    for name, vspec in spec.vectors.items():
        _check_vectors(root, platform, name, vspec.path, ids if unique else None, problems)
    return frame


def _media(root: Path, table: Table, column: str, problems: Problems) -> pd.Series:
    """Real paths of a media column ('' where an item has none), each checked by the one
    rule of :func:`paths.media_file` (inside the folder, links followed; the file exists)."""
    values = table.text(column, problems, required=False)
    out = np.full(len(values), "", dtype=object)
    bad: list[tuple[int, str]] = []  # (row, why), in file order
    for row, rel in enumerate(values.to_numpy()):
        if rel:
            try:
                out[row] = str(media_file(root, rel))
            except (OutsideFolder, FileNotFoundError) as exc:
                bad.append((row, str(exc)))
    for row, why in bad[:ROW_LIMIT]:
        problems.add(table.shown, why, column=column, **table.where(row))
    if len(bad) > ROW_LIMIT:
        problems.add(table.shown, f"... and {len(bad) - ROW_LIMIT} more rows like these",
                     column=column)
    return pd.Series(out, dtype="str")


def _check_vectors(root: Path, platform: str, name: str, relative: str, ids: pd.Series | None,
                   problems: Problems) -> None:
    """An ``.npz`` with ``item_id`` [N] and ``vectors`` [N, D]; ids known and unique."""
    path = _inside(root, relative, relative, problems)
    if path is None:
        return
    if Path(relative).suffix != ".npz" or not path.is_file():
        problems.add(relative, f"vectors '{name}' of platform '{platform}': expected an existing "
                               ".npz file holding arrays 'item_id' and 'vectors'")
        return
    try:
        with np.load(path, allow_pickle=False) as z:
            if {"item_id", "vectors"} - set(z.files):
                problems.add(relative, f"expected arrays 'item_id' and 'vectors', found "
                                       f"{', '.join(z.files) or 'none'}")
                return
            vector_ids = z["item_id"]
        shape, dtype = _npz_member_header(path, "vectors")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        problems.add(relative, f"cannot read: {exc}")
        return
    if vector_ids.ndim != 1 or len(shape) != 2 or shape[0] != len(vector_ids):
        problems.add(relative, f"expected item_id [N] and vectors [N, D], found {vector_ids.shape} "
                               f"and {shape}")
        return
    if dtype.kind != "f":
        problems.add(relative, f"expected floating-point vectors, found {dtype}")
    vector_ids = pd.Series(vector_ids.astype(str))
    for bad, message in ((vector_ids.duplicated(), "duplicate item_id {value}"),
                         (None if ids is None else ~vector_ids.isin(ids),
                          f"item_id {{value}} is not an item of platform '{platform}'")):
        if bad is None:
            continue
        for entry in np.flatnonzero(bad.to_numpy())[:10]:
            problems.add(relative, message.format(value=repr(vector_ids[entry])),
                         row=int(entry) + 1, column="item_id")


def _npz_member_header(path: Path, member: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one array of an ``.npz`` without reading its data."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{member}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
    return shape, dtype


def _links(root: Path, manifest: Manifest, problems: Problems) -> pd.DataFrame | None:
    """``platform, user_id, person_id``: that platform's user is the person ``person_id``."""
    table = _table(root, manifest.user_links, problems, ("platform", "user_id", "person_id"))
    if table is None or not table.require(problems, "platform", "user_id", "person_id"):
        return None
    frame = pd.DataFrame({"platform": table.text("platform", problems),
                          **{c: read_ids(table, c, problems) for c in ("user_id", "person_id")}})
    known = list(manifest.platforms)
    table.flag(problems, (~frame["platform"].isin(known) & (frame["platform"] != "")).to_numpy(),
               "platform", f"unknown platform {{value}} (expected one of {', '.join(known)})",
               frame["platform"])
    table.flag(problems, frame.duplicated(["platform", "user_id"]).to_numpy(), "user_id",
               "user {value} is linked twice on the same platform", frame["user_id"])
    return frame


def _interactions(root: Path, manifest: Manifest, items: dict[str, pd.DataFrame | None],
                  links: pd.DataFrame | None, problems: Problems):
    table = _table(root, manifest.interactions, problems, REQUIRED + ("label",))
    if table is None or not table.require(problems, *REQUIRED):
        return None
    shown, frame, names = table.shown, table.frame, list(manifest.platforms)
    times = [c for c in TIME_COLUMNS if c in frame.columns]
    if not times:
        problems.add(shown, "missing column 'timestamp' or 'order' (one of them orders each "
                            "user's history)", **({} if table.fmt == "parquet" else {"line": 1}))
    user, item = read_ids(table, "user_id", problems), read_ids(table, "item_id", problems)
    platform = table.text("platform", problems)
    numbers = {c: read_numbers(table, c, problems) for c in times + ["weight"] if c in frame.columns}
    if "rating" in frame.columns:
        numbers["rating"] = table.number("rating", problems)

    codes = _lookup(platform, names)  # -1: unknown platform
    table.flag(problems, (codes < 0) & (platform != "").to_numpy(), "platform",
               f"unknown platform {{value}} (expected one of {', '.join(names)})", platform)
    item_idx = np.full(len(frame), -1, dtype=np.int64)
    item_values = _arrow(item)
    for k, name in enumerate(names):
        rows = codes == k
        if not rows.any():
            problems.add(shown, f"platform '{name}' has no interactions (empty platform)")
        catalog = items[name]
        if catalog is None or catalog["item_id"].duplicated().any():
            continue  # its items table is already reported
        item_idx[rows] = _lookup(item_values.filter(pa.array(rows)), catalog["item_id"])
        table.flag(problems, rows & (item_idx < 0) & (item != "").to_numpy(), "item_id",
                   f"item_id {{value}} is not in the items of platform '{name}' "
                   f"({manifest.platforms[name].items})", item)
    if problems:
        return None

    if links is not None:
        pos = _lookup(platform + "\x1f" + user, links["platform"] + "\x1f" + links["user_id"])
        user = pd.Series(np.where(pos >= 0, links["person_id"].to_numpy()[pos], user.to_numpy()),
                         dtype="str")
    users = _categorical(user)  # codes = user_idx, in order of first appearance
    user_idx = users.codes.astype(np.int64)
    time = numbers.get("timestamp", numbers.get("order"))
    keys = [np.arange(len(frame))] + [numbers[c] for c in reversed(times)] + [user_idx]
    order = np.lexsort(keys)  # by user, then timestamp, then order, then file order
    out = {
        "user_idx": user_idx,
        "platform": pd.Categorical.from_codes(codes, categories=names),
        "item_idx": item_idx,
        "timestamp": time,
        "weight": numbers.get("weight", np.ones(len(frame))),
        "user_id": users,
        "item_id": _categorical(item),
    }
    for column in frame.columns:
        if column not in out:
            values = frame[column]
            if column in numbers:
                out[column] = numbers[column]
            else:
                out[column] = _categorical(values) if values.dtype == "str" else values.to_numpy()
    out = pd.DataFrame({c: v.take(order) for c, v in out.items()})
    return out, np.asarray(users.categories, dtype=object).astype(str)


def _arrow(values: pd.Series) -> pa.Array:
    array = pa.array(values, type=pa.large_string()) if values.dtype != "str" else pa.array(values)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _lookup(values: pd.Series | pa.Array, keys) -> np.ndarray:
    """[N] int64 position of each value among ``keys`` (unique); -1 where absent (Arrow kernel)."""
    values = values if isinstance(values, pa.Array) else _arrow(values)
    keys = pa.array(list(keys), type=values.type)
    return pc.index_in(values, value_set=keys).fill_null(-1).to_numpy(False).astype(np.int64)


def _categorical(values: pd.Series) -> pd.Categorical:
    """Strings as a categorical, categories in order of first appearance (cheap to reorder)."""
    encoded = pc.dictionary_encode(_arrow(values))
    categories = pd.Index(encoded.dictionary.to_pandas(), dtype="str")
    return pd.Categorical.from_codes(encoded.indices.to_numpy(False), categories=categories)
