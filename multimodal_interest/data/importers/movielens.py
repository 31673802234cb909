"""RecBole atomic files (typed headers, ``name:type``), and MovieLens split by genre.

``recbole``: ``<name>.inter`` (+ ``<name>.item`` when present) become one platform named
``<name>``. Text fields are the item columns of type ``token`` or ``token_seq`` other than
the id, in file order; ``rating`` and ``timestamp`` are kept.

``movielens-genres``: two *synthetic* platforms cut out of one MovieLens catalog by genre
(default Comedy vs Drama). A movie tagged with exactly one of the two genres becomes an
item of that genre's platform; a movie tagged with both is dropped (were it on both
platforms, a user's source history would contain their target item), as is a movie with
neither. Ratings of dropped movies are dropped. Every drop is counted in the report.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from multimodal_interest.data.errors import DatasetError, Problems
from multimodal_interest.data.importers import register_importer
from multimodal_interest.data.importers._common import add_time_and_rating
from multimodal_interest.data.tables import Table, read_table
from multimodal_interest.data.writer import DatasetDraft, PlatformDraft

GENRE_COLUMNS = ("genre", "class", "genres")
TEXT_TYPES = ("token", "token_seq")
LICENCE = "MovieLens: GroupLens research licence (no redistribution, cite Harper & Konstan 2015)"


@register_importer("recbole")
def import_recbole(src: Path, platform: str | None = None) -> DatasetDraft:
    """RecBole atomic files, one platform (SRC: the folder or its .inter file)."""
    inter_path = src if src.suffix == ".inter" else src / f"{src.name}.inter"
    item_path = inter_path.with_suffix(".item")
    name = inter_path.stem
    problems, report = Problems(), {}
    inter, inter_types = _atomic(inter_path, problems)
    items, item_types = _atomic(item_path, problems) if item_path.is_file() else (None, {})
    problems.raise_if_any(f"recbole import of {src}")
    for table, need in ((inter, ("user_id", "item_id")), (items, ("item_id",))):
        if table is not None:
            table.require(problems, *need)
    problems.raise_if_any(f"recbole import of {src}")

    item_ids = inter.text("item_id", problems)
    catalog = pd.DataFrame({"item_id": pd.unique(item_ids)})
    text: tuple[str, ...] = ()
    if items is not None:
        catalog = pd.DataFrame({"item_id": items.text("item_id", problems)})
        text = tuple(c for c, t in item_types.items() if t in TEXT_TYPES and c != "item_id")
        for column in items.frame.columns.drop("item_id"):
            catalog[column] = (items.text(column, problems, required=False) if column in text
                               else items.number(column, problems))
        inter.flag(problems, ~item_ids.isin(catalog["item_id"]).to_numpy(), "item_id",
                   f"item {{value}} is not in {item_path.name}", item_ids)
    interactions = pd.DataFrame({"user_id": inter.text("user_id", problems),
                                 "platform": platform or name, "item_id": item_ids})
    add_time_and_rating(inter, interactions, problems)
    problems.raise_if_any(f"recbole import of {src}")
    report.update({"users": interactions["user_id"].nunique(), "items": len(catalog),
                   "items with interactions": item_ids.nunique(),
                   "interactions": len(interactions)})
    return DatasetDraft(
        name=name, platforms={platform or name: PlatformDraft(catalog, text)},
        interactions=interactions,
        description=f"RecBole atomic dataset {name}; one platform.",
        provenance=f"RecBole atomic files {inter_path.name}"
                   + (f" and {item_path.name}" if items is not None else ""),
        licence=LICENCE if name.startswith("ml-") else "", report=report)


@register_importer("movielens-genres")
def import_movielens_genres(src: Path, genres: tuple[str, str] = ("Comedy", "Drama"),
                            name: str | None = None) -> DatasetDraft:
    """MovieLens (RecBole atomic) cut into two SYNTHETIC platforms by genre (Comedy, Drama)."""
    if len(genres) != 2 or genres[0] == genres[1]:
        raise ValueError(f"expected two different genres, got {genres}")
    base = import_recbole(src)
    (catalog, text), = ((p.items, p.text) for p in base.platforms.values())
    column = next((c for c in GENRE_COLUMNS if c in catalog.columns), None)
    if column is None:
        raise DatasetError([], f"{src}: the items have no genre column (looked for "
                               f"{', '.join(GENRE_COLUMNS)})")
    tags = catalog[column].str.split(" ")
    known = sorted({g for t in tags for g in t if g})
    member = {}
    for genre in genres:
        if genre not in known:
            raise DatasetError([], f"{src}: no movie has genre {genre!r}; genres: "
                                   f"{', '.join(known)}")
        member[genre] = tags.map(lambda t, g=genre: g in t).to_numpy()
    a, b = genres
    only = {a: member[a] & ~member[b], b: member[b] & ~member[a]}
    report = dict(base.report)
    report[f"movies in both {a} and {b} (dropped)"] = int((member[a] & member[b]).sum())
    report["movies in neither genre (dropped)"] = int((~member[a] & ~member[b]).sum())
    inter = base.interactions
    platform = pd.Series("", index=inter.index, dtype="str")
    platforms = {}
    for genre in genres:
        items = catalog.loc[only[genre]].reset_index(drop=True)
        platforms[genre.lower()] = PlatformDraft(items, text)
        platform[inter["item_id"].isin(items["item_id"]).to_numpy()] = genre.lower()
        report[f"{genre.lower()} items"] = len(items)
    kept = (platform != "").to_numpy()
    report["interactions on dropped movies (dropped)"] = int((~kept).sum())
    report["interactions kept"] = int(kept.sum())
    interactions = inter.loc[kept].assign(platform=platform[kept]).reset_index(drop=True)
    title = name or f"{base.name}-{a.lower()}-{b.lower()}"
    return DatasetDraft(
        name=title, platforms=platforms, interactions=interactions, synthetic=True,
        description=f"SYNTHETIC platforms: {base.name} movies split by genre into {a.lower()} "
                    f"and {b.lower()} (movies of both genres or neither dropped); the same real "
                    "users rate on both. Not a real cross-platform dataset.",
        provenance=f"{base.provenance}; genre split by multimodal-interest",
        licence=base.licence, report=report)


def _atomic(path: Path, problems: Problems) -> tuple[Table | None, dict[str, str]]:
    """A RecBole atomic file with its ``name:type`` header stripped to names; name -> type."""
    table = read_table(path, str(path), problems, fmt="tsv")
    if table is None:
        return None, {}
    types = {}
    for column in table.frame.columns:
        name, sep, kind = column.partition(":")
        if not sep or kind not in ("token", "token_seq", "float", "float_seq"):
            problems.add(str(path), f"header field {column!r}: expected 'name:type' with type "
                                    "token, token_seq, float or float_seq", line=1)
        types[name] = kind
    table.frame.columns = list(types)
    return table, types
