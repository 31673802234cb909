"""A plain table of interactions: ``user, platform, item[, time, rating]`` (CSV/TSV/Parquet/JSONL).

Column names may be ``user`` or ``user_id``, ``item`` or ``item_id``, ``time`` or
``timestamp``. Each platform's catalog is its distinct items (ids only, first-seen order);
without a time column, each user's history follows file order.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from multimodal_interest.data.errors import Problems
from multimodal_interest.data.importers import register_importer
from multimodal_interest.data.importers._common import add_time_and_rating
from multimodal_interest.data.manifest import PLATFORM_NAME
from multimodal_interest.data.tables import read_table
from multimodal_interest.data.writer import DatasetDraft, PlatformDraft

ALIASES = {"user": "user_id", "item": "item_id", "time": "timestamp"}


@register_importer("csv")
def import_plain_csv(src: Path, name: str | None = None) -> DatasetDraft:
    """Interactions table user, platform, item[, time, rating]; catalogs are the items seen."""
    problems = Problems()
    table = read_table(src, src.name, problems, ("user", "user_id", "platform", "item", "item_id"))
    problems.raise_if_any(f"csv import of {src}")
    table.frame = table.frame.rename(columns={k: v for k, v in ALIASES.items()
                                              if k in table.frame.columns})
    table.require(problems, "user_id", "platform", "item_id")
    problems.raise_if_any(f"csv import of {src}")
    interactions = pd.DataFrame({c: table.text(c, problems)
                                 for c in ("user_id", "platform", "item_id")})
    platform = interactions["platform"]
    bad = ~platform.str.fullmatch(PLATFORM_NAME.pattern).to_numpy() & (platform != "").to_numpy()
    table.flag(problems, bad, "platform",
               "platform name {value} is not letters, digits, '_', '.' and '-'", platform)
    add_time_and_rating(table, interactions, problems)
    problems.raise_if_any(f"csv import of {src}")
    platforms = {p: PlatformDraft(pd.DataFrame({"item_id": pd.unique(g["item_id"])}))
                 for p, g in interactions.groupby("platform", sort=False)}
    return DatasetDraft(
        name=name or src.stem, platforms=platforms, interactions=interactions,
        description=f"imported from the interactions table {src.name}; items are ids only",
        provenance=str(src),
        report={"rows": len(interactions), "users": interactions["user_id"].nunique()})
