"""A team's own data: one long interactions table, one items table per platform, their split.

``mmi import csv interactions.csv DST --items art=items_art.csv --items office=items_office.csv
--split-column split``. Every table may be CSV, TSV, Parquet or JSONL.

Interactions (:data:`COLUMNS`): ``user`` (or ``user_id``), ``platform``, ``item`` (or
``item_id``); optional ``time`` (or ``timestamp``, a number) and ``position`` (or ``order``,
an integer) ordering each user's history (time first, position breaking ties), ``rating``,
``weight``; the split column named by ``--split-column`` (``train``/``valid``/``test``).
Ids follow :mod:`~multimodal_interest.data.ids` (Unicode NFC, at most 256 characters, no
control characters) and numbers :mod:`~multimodal_interest.data.values` (finite times,
integer positions stored as int64, weights >= 0). Any other column is kept as it is, and
said so. Without a time or position column a history follows the file's row order, and the
import says so.

Items (``--items PLATFORM=FILE``): ``item`` (or ``item_id``), optional media path columns
(:data:`MEDIA`, relative to the items file's folder; the files are copied into the
dataset's ``media/PLATFORM/``), and every other column is text, in file order. A platform
without an items table gets a catalog of its item ids only (said so).

The given split becomes the saved split ``given`` (or ``split_name``): from the split column
(a user is a valid or test user when their rows say so; cold on every platform whose rows
carry the role, ``*`` when that is all of theirs) or from user lists (``split_users``:
role -> file, :func:`~multimodal_interest.data.splits.read_user_list`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.errors import Problems
from multimodal_interest.data.ids import read_ids
from multimodal_interest.data.importers import register_importer
from multimodal_interest.data.manifest import PLATFORM_NAME
from multimodal_interest.data.paths import OutsideFolder, media_file
from multimodal_interest.data.splits import ANY, ROLES, Split, given_split
from multimodal_interest.data.tables import Table, read_table
from multimodal_interest.data.values import positions, read_numbers
from multimodal_interest.data.writer import DatasetDraft, PlatformDraft

# column -> (its other accepted name, what it holds); shown by `mmi import --help`
COLUMNS = {
    "user_id": ("user", "required: the user's id"),
    "platform": (None, "required: the platform's name (letters, digits, '_', '.', '-')"),
    "item_id": ("item", "required: the item's id on that platform"),
    "timestamp": ("time", "optional finite number: orders each user's history"),
    "order": ("position", "optional integer: orders the history (after time, if both)"),
    "rating": (None, "optional number, kept"),
    "weight": (None, "optional number >= 0: the interaction's weight (1 when absent)"),
}
MEDIA = {"image": ("image", "image_path"), "audio": ("audio", "audio_path")}
SPLIT_VALUES = ("train", *ROLES)
GIVEN = "given"


@register_importer("csv")
def import_plain_csv(src: Path, name: str | None = None, items: dict[str, Path] | None = None,
                     split_column: str | None = None, split_users: dict[str, Path] | None = None,
                     split_name: str = GIVEN) -> DatasetDraft:
    """Your own data: interactions (user, platform, item, ...), items tables, a given split."""
    problems = Problems()
    context = f"csv import of {src}"
    if split_column and split_users:
        raise ValueError("give the split as a column (--split-column) or as user lists "
                         "(--split-users), not both")
    table = read_table(src, str(src), problems, ("user", "user_id", "platform", "item", "item_id"))
    problems.raise_if_any(context)
    notes: list[str] = []
    frame = _canonical_columns(table, problems)
    if split_column and split_column not in table.frame.columns:
        table.require(problems, split_column)
    problems.raise_if_any(context)
    if len(table) == 0:
        problems.add(table.shown, "no interactions: the file has a header and no rows")
        problems.raise_if_any(context)
    interactions = pd.DataFrame({"user_id": read_ids(table, "user_id", problems),
                                 "platform": table.text("platform", problems),
                                 "item_id": read_ids(table, "item_id", problems)})
    platform = interactions["platform"]
    bad = ~platform.str.fullmatch(PLATFORM_NAME.pattern).to_numpy() & (platform != "").to_numpy()
    table.flag(problems, bad, "platform",
               "platform name {value} is not letters, digits, '_', '.' and '-'", platform)
    for column in ("timestamp", "order", "rating", "weight"):
        if column in frame.columns:
            interactions[column] = (table.number(column, problems) if column == "rating"
                                    else read_numbers(table, column, problems))
    if "timestamp" not in interactions.columns and "order" not in interactions.columns:
        interactions["order"] = np.arange(len(interactions))
        notes.append(f"{src.name} has no time or position column: each user's history follows "
                     "the file's row order (add a 'position' column to say the order)")
    kept = [c for c in frame.columns if c not in interactions.columns]
    for column in kept:
        interactions[column] = frame[column]
    if kept:
        notes.append(f"{src.name}: column(s) {', '.join(kept)} kept as they are")
    problems.raise_if_any(context)
    if "order" in frame.columns:
        interactions["order"] = positions(interactions["order"])

    seen = pd.unique(interactions["platform"])  # platforms: --items order, then first seen
    names = [p for p in (items or {}) if p in seen] + [p for p in seen if p not in (items or {})]
    platforms, media = _platforms(names, items or {}, table, interactions, problems, notes)
    splits = []
    if split_column:
        splits.append(_split_from_column(table, interactions, split_column, split_name, problems))
    elif split_users:
        problems.raise_if_any(context)
        users = pd.Index(pd.unique(interactions["user_id"]), dtype="str")
        splits.append(given_split(split_name, split_users, users, names))
    problems.raise_if_any(context)
    described = "items are ids only" if not items else f"items tables of {', '.join(items)}"
    return DatasetDraft(
        name=name or src.stem, platforms=platforms, interactions=interactions,
        description=f"imported from the interactions table {src.name}; {described}",
        provenance=str(src), splits=splits, media=media, notes=notes,
        report={"rows": len(interactions), "users": interactions["user_id"].nunique()})


def _canonical_columns(table: Table, problems: Problems) -> pd.DataFrame:
    """The table's columns under their canonical names (``user`` -> ``user_id``, ...)."""
    frame = table.frame
    renames = {}
    for column, (alias, _) in COLUMNS.items():
        if alias and alias in frame.columns:
            if column in frame.columns:
                problems.add(table.shown, f"columns '{alias}' and '{column}' both given; they mean "
                                          "the same, keep one", **_header(table))
            else:
                renames[alias] = column
    table.frame = frame = frame.rename(columns=renames)
    table.require(problems, "user_id", "platform", "item_id")
    return frame


def _header(table: Table) -> dict[str, int]:
    return {} if table.fmt == "parquet" else {"line": 1}


def _platforms(names: list[str], items: dict[str, Path], interactions_table: Table,
               interactions: pd.DataFrame, problems: Problems,
               notes: list[str]) -> tuple[dict[str, PlatformDraft], dict[str, Path]]:
    """Each platform's catalog (its items table, or the ids it was seen with) and the media
    files to copy (dataset-relative path -> source file)."""
    for p in items:
        if p not in names:
            problems.add(str(items[p]), f"--items {p}=...: platform '{p}' has no interactions in "
                                        f"{interactions_table.shown} (its platforms: {', '.join(names)})")
    out, media = {}, {}
    for p in names:
        rows = (interactions["platform"] == p).to_numpy()
        if p not in items:
            out[p] = PlatformDraft(pd.DataFrame({"item_id": pd.unique(interactions.loc[rows, "item_id"])}))
            if items:
                notes.append(f"platform {p}: no items table (--items {p}=FILE), so its items are "
                             "ids only")
            continue
        draft = _items_table(p, Path(items[p]), problems, media)
        if draft is None:
            continue
        out[p] = draft
        known = pd.Index(draft.items["item_id"])
        unknown = rows & (known.get_indexer(interactions["item_id"]) < 0)
        interactions_table.flag(problems, unknown, "item_id",
                                f"item {{value}} is not in the items table of platform '{p}' "
                                f"({items[p]})", interactions["item_id"])
        text = f"text column(s) {', '.join(draft.text)}" if draft.text else "no text columns"
        media_note = "".join(f"; {kind} paths in '{col}'" for kind, col in
                             (("image", draft.image), ("audio", draft.audio)) if col)
        notes.append(f"platform {p}: {len(draft.items)} items from {items[p]}, {text}{media_note}")
    return out, media


def _items_table(platform: str, path: Path, problems: Problems,
                 media: dict[str, Path]) -> PlatformDraft | None:
    table = read_table(path, str(path), problems, ("item", "item_id"))
    if table is None:
        return None
    table.alias("item", "item_id")
    if not table.require(problems, "item_id"):
        return None
    frame = table.frame.copy()
    ids = read_ids(table, "item_id", problems)
    table.flag(problems, (ids.duplicated() & (ids != "")).to_numpy(), "item_id",
               "duplicate item {value} (item ids are unique within a platform)", ids)
    frame["item_id"] = ids
    columns = {kind: next((c for c in names if c in frame.columns), None)
               for kind, names in MEDIA.items()}
    for kind, column in columns.items():
        if column:
            frame[column] = _copy_media(platform, table, column, problems, media)
    text = tuple(c for c in frame.columns if c != "item_id" and c not in columns.values()
                 and c not in sum(MEDIA.values(), ()))
    for column in text:
        vectors = frame[column].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).to_numpy()
        table.flag(problems, vectors, column, "a list in a text column: vectors are never text "
                   "(give precomputed vectors to `mmi embed --encoder NAME=precomputed:...`)")
        frame[column] = table.text(column, problems, required=False)
    return PlatformDraft(frame, text, columns["image"], columns["audio"])


def _copy_media(platform: str, table: Table, column: str, problems: Problems,
                media: dict[str, Path]) -> pd.Series:
    """The column's paths inside the new dataset (``media/PLATFORM/...``), each source file
    checked by the path rule (inside the items file's folder, existing)."""
    folder = table.path.parent
    values = table.text(column, problems, required=False)
    out = []
    for row, value in enumerate(values.to_numpy()):
        if not value:
            out.append("")
            continue
        try:
            real = media_file(folder, value)
        except (OutsideFolder, FileNotFoundError) as exc:
            problems.add(table.shown, str(exc), column=column, **table.where(row))
            out.append("")
            continue
        rel = f"media/{platform}/{real.relative_to(folder.resolve()).as_posix()}"
        media[rel] = real
        out.append(rel)
    return pd.Series(out, dtype="str", index=values.index)


def _split_from_column(table: Table, interactions: pd.DataFrame, column: str, name: str,
                       problems: Problems) -> Split | None:
    """Valid and test users from a train/valid/test column (see the module docstring)."""
    values = table.text(column, problems)
    table.flag(problems, ~values.isin(SPLIT_VALUES).to_numpy() & (values != "").to_numpy(), column,
               f"unknown split value {{value}} (expected {', '.join(SPLIT_VALUES)})", values)
    if problems:
        return None
    frame = pd.DataFrame({"user_id": interactions["user_id"], "platform": interactions["platform"],
                          "role": values})
    held = frame[frame["role"] != "train"]
    both = held.groupby("user_id")["role"].nunique()
    table.flag(problems, frame["user_id"].isin(both.index[both > 1]).to_numpy()
               & (frame["role"] != "train").to_numpy(), column,
               "user's rows say both valid and test (a user is in one of them)", values)
    per = frame.groupby(["user_id", "platform"])["role"].nunique()
    mixed = per[per > 1].index
    keys = pd.MultiIndex.from_frame(frame[["user_id", "platform"]])
    table.flag(problems, keys.isin(mixed) & (frame["role"] != "train").to_numpy(), column,
               f"this user has train and {{value}} rows on the same platform: --split-column "
               "names users (all their rows on a platform hidden or none); for a per-interaction "
               "split, name the column 'label' and leave out --split-column", values)
    if problems:
        return None
    roles = held.drop_duplicates(["user_id", "platform"])
    active = frame.groupby("user_id")["platform"].nunique()
    on = roles.groupby("user_id")["platform"].transform("size")
    everywhere = on.to_numpy() == active.reindex(roles["user_id"]).to_numpy()
    users = pd.concat([
        roles.loc[everywhere, ["user_id", "role"]].drop_duplicates().assign(target=ANY),
        roles.loc[~everywhere, ["user_id", "role", "platform"]].rename(columns={"platform": "target"}),
    ], ignore_index=True)
    meta = {"kind": "given", "from": f"column '{column}' of {table.path.name}",
            "rule": "a user is a valid/test user when their rows say so, cold on each platform "
                    "whose rows carry the role ('*' when that is every platform they use)"}
    return Split(name, users.sort_values(["role", "user_id", "target"], ignore_index=True),
                 meta | _counted(users))


def _counted(users: pd.DataFrame) -> dict[str, int]:
    return {role: int(users.loc[users["role"] == role, "user_id"].nunique()) for role in ROLES}

