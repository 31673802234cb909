"""Id-only Amazon pairs of cjx96/CDRIB (ICDE'22) and cjx96/DisenCDR (SIGIR'22), MIT licence.

Both keep each platform of a pair ``x_y`` in its own folder (``x_y`` holds platform x,
``y_x`` platform y); SRC names one of them and the other must sit beside it.

CDRIB: ``train.txt`` / ``valid.txt`` / ``test.txt`` hold ``user<TAB>item``. Users
``0 .. C-1`` are the C overlapping users (C = users of ``common_new_reindex.txt``), the same
person on both sides; higher ids are one platform's own users. ``valid``/``test`` of a
folder are the interactions of the overlapping users who are cold on that platform. The
published split keeps those users: test = users with a line in ``test.txt``, valid = the
others of ``valid.txt`` (CDRIB draws valid/test per interaction, so most cold users have
lines in both files; a user-wise split must give each user one role).

DisenCDR: ``train.txt`` and ``test_original.txt`` hold ``user<TAB>item<TAB>1``, every user
on both platforms; the test file is one held-out (last) item per user, kept as ``label``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.errors import DatasetError, Problems
from multimodal_interest.data.importers import register_importer
from multimodal_interest.data.importers._common import (dedupe_report, order_within,
                                                        read_int_columns, require_files)
from multimodal_interest.data.splits import PUBLISHED, Split
from multimodal_interest.data.writer import DatasetDraft, PlatformDraft

PROVENANCE = {"cdrib": "cjx96/CDRIB (Cao et al., ICDE 2022), Amazon review data",
              "disencdr": "cjx96/DisenCDR (Cao et al., SIGIR 2022), Amazon review data"}
LICENCE = "code and processed files MIT (cjx96); Amazon review data for research use"


@register_importer("cdrib")
def import_cdrib(src: Path) -> DatasetDraft:
    """CDRIB cold-start pair, ids only (SRC: one half, e.g. cdrib/game_video); its split kept."""
    halves = _halves(src, ["train.txt", "valid.txt", "test.txt", "common_new_reindex.txt"])
    problems, report = Problems(), {}
    common = {}
    for platform, folder in halves.items():
        frame = read_int_columns(folder / "common_new_reindex.txt", ("user", "item", "score"),
                                 problems)
        common[platform] = 0 if frame is None else frame["user"].nunique()
    n_common = common[next(iter(halves))]
    if len(set(common.values())) != 1:
        problems.add(str(src), f"the two halves disagree on the overlapping users: {common}")
    report["overlapping users (common_new_reindex.txt)"] = n_common
    tables = _read_halves(halves, ("train", "valid", "test"), ("user", "item"), problems, report)
    problems.raise_if_any(f"cdrib import of {src}")

    events = pd.concat(tables, ignore_index=True)
    events = dedupe_report(events, ["platform", "user", "item"], report, "interactions")
    users = events["user"].to_numpy()
    shared = users < n_common
    user_id = np.where(shared, users.astype(str), events["platform"] + "-" + users.astype(str))
    roles = []
    for platform in halves:  # users cold on `platform`
        held = events[(events["platform"] == platform) & (events["label"] != "train")]
        if (held["user"] >= n_common).any():
            problems.add(str(halves[platform]), "valid/test users must be overlapping users "
                                                f"(ids below {n_common})")
        test = np.unique(held.loc[held["label"] == "test", "user"])
        valid = np.setdiff1d(np.unique(held["user"]), test)
        roles.append(pd.DataFrame({"user_id": np.r_[test, valid].astype(str),
                                   "role": ["test"] * len(test) + ["valid"] * len(valid),
                                   "target": platform}))
    problems.raise_if_any(f"cdrib import of {src}")
    split = Split(PUBLISHED, pd.concat(roles, ignore_index=True),
                  {"kind": "published", "rule": "per target platform: test = users in its "
                   "test.txt, valid = the other users of its valid.txt"})
    return _draft("cdrib", src, halves, events, user_id, report, [split],
                  f"overlapping users are ids 0..{n_common - 1} on both platforms; other users "
                  "are one platform's own ('<platform>-<id>')")


@register_importer("disencdr")
def import_disencdr(src: Path) -> DatasetDraft:
    """DisenCDR pair, ids only, all users overlap (SRC: one half, e.g. disencdr/sport_cloth)."""
    halves = _halves(src, ["train.txt", "test_original.txt"])
    problems, report = Problems(), {}
    tables = _read_halves(halves, ("train", "test_original"), ("user", "item", "weight"),
                          problems, report)
    problems.raise_if_any(f"disencdr import of {src}")
    users = {p: set(t.loc[t["platform"] == p, "user"]) for p, t in zip(halves, tables[::2])}
    if len({frozenset(u) for u in users.values()}) != 1:
        raise DatasetError([], f"disencdr import of {src}: the two halves have different users")
    events = pd.concat(tables, ignore_index=True)
    events["label"] = events["label"].replace({"test_original": "test"})
    events = dedupe_report(events, ["platform", "user", "item"], report, "interactions")
    report["users (all on both platforms)"] = len(next(iter(users.values())))
    return _draft("disencdr", src, halves, events, events["user"].astype(str).to_numpy(), report,
                  [], "every user is on both platforms; label 'test' marks DisenCDR's held-out "
                      "last item of each user (a warm leave-one-out split)")


def _halves(src: Path, files: list[str]) -> dict[str, Path]:
    """Platform name -> folder, SRC's own platform first."""
    parts = src.name.split("_")
    if len(parts) != 2:
        raise DatasetError([], f"{src}: expected a pair folder named '<x>_<y>', e.g. game_video")
    x, y = parts
    partner = src.parent / f"{y}_{x}"
    if not partner.is_dir():
        raise DatasetError([], f"{src}: the other half of the pair, {partner}, is missing; an "
                               "id-only pair needs both folders")
    for folder in (src, partner):
        require_files(folder, files, "a half of an id-only Amazon pair")
    return {x: src, y: partner}


def _read_halves(halves: dict[str, Path], files: tuple[str, ...], columns: tuple[str, ...],
                 problems: Problems, report: dict) -> list[pd.DataFrame]:
    tables = []
    for platform, folder in halves.items():
        for name in files:
            frame = read_int_columns(folder / f"{name}.txt", columns, problems)
            if frame is None:
                continue
            report[f"{platform} {name}.txt rows"] = len(frame)
            tables.append(frame[["user", "item"]].assign(platform=platform, label=name))
    return tables


def _draft(kind: str, src: Path, halves: dict[str, Path], events: pd.DataFrame,
           user_id: np.ndarray, report: dict, splits: list[Split], note: str) -> DatasetDraft:
    platforms = {}
    for platform in halves:
        ids = np.unique(events.loc[events["platform"] == platform, "item"])
        platforms[platform] = PlatformDraft(pd.DataFrame({"item_id": ids.astype(str)}))
        report[f"{platform} items"] = len(ids)
    interactions = pd.DataFrame({
        "user_id": user_id, "platform": events["platform"].to_numpy(),
        "item_id": events["item"].astype(str).to_numpy(),
        "order": order_within(user_id), "label": events["label"].to_numpy()})
    x, y = halves
    return DatasetDraft(
        name=f"{kind}-{x}-{y}", platforms=platforms, interactions=interactions,
        description=f"Amazon {x} and {y}, ids only (no item content); {note}. No timestamps: "
                    "'order' is the order of the published files.",
        provenance=f"{PROVENANCE[kind]}; folders {halves[x].name} and {halves[y].name}",
        licence=LICENCE, splits=splits, report=report)
