"""Amazon Arts/Crafts & Office Products as published by TingJShen/URLLM (Shen et al. 2024).

Layout: ``item_listA_F.csv``, ``item_listO_AA_F.csv`` (``idBefore, item_title, idAfter,
item_attribute``; ``idAfter`` 0..18638 are art items, 18639..38395 office items) and
``seq_format/{userlist,traindata_new,validdata_new,testdata_new}.txt``. Each user has two
sequence lines, ``uid<TAB>len<TAB>item|pos|pos ...``, with the same history and one target
each. A user's interactions are the union of their two lines, in order (history, then the
two targets), duplicates removed -- the protocol of EVALUATION.md. The published user split
is kept: test = the users of ``testdata_new.txt``, valid = those of ``validdata_new.txt``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.errors import Problems
from multimodal_interest.data.importers import register_importer
from multimodal_interest.data.importers._common import dedupe_report, order_within, require_files
from multimodal_interest.data.splits import ANY, PUBLISHED, Split
from multimodal_interest.data.tables import read_table
from multimodal_interest.data.writer import DatasetDraft, PlatformDraft

ITEM_FILES = {"art": "item_listA_F.csv", "office": "item_listO_AA_F.csv"}
SEQ_FILES = {"train": "traindata_new.txt", "valid": "validdata_new.txt", "test": "testdata_new.txt"}
TEXT = ("item_title", "item_attribute")
FIRST_OFFICE_ID = 18639


@register_importer("amazon-art-office")
def import_amazon_art_office(src: Path) -> DatasetDraft:
    """Amazon Art -> Office (URLLM release): item text, sequences, published user split."""
    seq = src / "seq_format"
    require_files(src, list(ITEM_FILES.values()), "the URLLM Amazon art/office folder")
    require_files(seq, ["userlist.txt", *SEQ_FILES.values()], "the URLLM seq_format folder")
    problems, report = Problems(), {}
    items = {p: _items(src / f, p, problems, report) for p, f in ITEM_FILES.items()}
    users = _userlist(seq / "userlist.txt", problems)
    n_items = sum(len(frame) for frame in items.values())
    rows = [_sequences(seq / f, role, n_items, problems, report) for role, f in SEQ_FILES.items()]
    problems.raise_if_any(f"amazon-art-office import of {src}")

    events = pd.concat(rows, ignore_index=True)  # file order: each user's two lines in turn
    unknown = ~events["uid"].isin(users.index)
    if unknown.any():
        example = events["uid"][unknown].iloc[0]
        problems.add(str(seq / "userlist.txt"), f"{int(unknown.sum())} sequence entries name users "
                                                f"missing from the list, e.g. uid {example}")
        problems.raise_if_any(f"amazon-art-office import of {src}")
    events = dedupe_report(events, ["uid", "item"], report, "entries repeated within a user")
    platform = np.where(events["item"].to_numpy() < FIRST_OFFICE_ID, "art", "office")
    interactions = pd.DataFrame({
        "user_id": users.loc[events["uid"]].to_numpy(),
        "platform": platform,
        "item_id": events["item"].astype(str).to_numpy(),
        "order": order_within(events["uid"].to_numpy()),
        "label": events["role"].to_numpy(),
    })
    roles = events.drop_duplicates("uid")
    roles = roles[roles["role"] != "train"]
    split = Split(PUBLISHED, pd.DataFrame({"user_id": users.loc[roles["uid"]].to_numpy(),
                                           "role": roles["role"].to_numpy(), "target": ANY}),
                  {"kind": "published", "rule": "test = users of testdata_new.txt, valid = users "
                   "of validdata_new.txt; cold on either platform"})
    return DatasetDraft(
        name="amazon-art-office",
        platforms={p: PlatformDraft(frame, TEXT) for p, frame in items.items()},
        interactions=interactions,
        description="Amazon Arts, Crafts & Sewing (art) and Office Products (office): real users "
                    "on both platforms, item titles and category/brand attributes.",
        provenance="TingJShen/URLLM (Shen et al. 2024, 'Exploring User Retrieval Integration "
                   "towards LLMs for Cross-Domain Sequential Recommendation'), built on the "
                   "McAuley lab Amazon review data",
        licence="Amazon review data: research and non-commercial use; cite McAuley et al.",
        splits=[split], report=report)


def _items(path: Path, platform: str, problems: Problems, report: dict) -> pd.DataFrame:
    table = read_table(path, str(path), problems)
    if table is None or not table.require(problems, "idAfter", *TEXT):
        return pd.DataFrame()
    ids = table.number("idAfter", problems, integer=True)
    first = 0 if platform == "art" else FIRST_OFFICE_ID
    table.flag(problems, ids != first + np.arange(len(ids)), "idAfter",
               f"expected the ids of {platform} items to run {first}, {first + 1}, ... in file "
               "order; found {value}", ids)
    frame = pd.DataFrame({"item_id": pd.Series(ids.astype(np.int64)).astype(str)})
    for column in TEXT:
        text = table.text(column, problems, required=False)
        nan = text == "nan"  # how the release writes a missing title
        report[f"{platform} {column} 'nan' read as empty"] = int(nan.sum())
        frame[column] = text.mask(nan, "")
    report[f"{platform} items"] = len(frame)
    return frame


def _userlist(path: Path, problems: Problems) -> pd.Series:
    """uid -> reviewer id."""
    frame = pd.read_csv(path, sep="\t", header=None, names=["user_id", "uid"],
                        dtype={"user_id": str}, keep_default_na=False)
    if frame["uid"].dtype.kind != "i" or frame["uid"].duplicated().any():
        problems.add(str(path), "expected lines '<reviewer id><TAB><unique integer uid>'")
    return pd.Series(frame["user_id"].to_numpy(), index=frame["uid"].to_numpy())


def _sequences(path: Path, role: str, n_items: int, problems: Problems,
               report: dict) -> pd.DataFrame:
    """One row per sequence entry, in file order: uid, item, role."""
    uids, items, lines = [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").rstrip("\t").split("\t")
            if len(fields) < 3:
                if line.strip():
                    problems.add(str(path), "expected 'uid<TAB>len<TAB>item|pos|pos ...'", line=n)
                continue
            try:
                uid, length = int(fields[0]), int(fields[1])
                entries = [int(e.split("|", 1)[0]) for e in fields[2:]]
            except ValueError:
                problems.add(str(path), "expected integers in 'uid<TAB>len<TAB>item|pos|pos ...'",
                             line=n)
                continue
            if length < len(entries) - 1:  # len counts the history before truncation
                problems.add(str(path), f"len field says {length} history items, the line has "
                                        f"{len(entries) - 1}", line=n)
            uids.extend([uid] * len(entries))
            items.extend(entries)
            lines.extend([n] * len(entries))
    frame = pd.DataFrame({"uid": np.array(uids, dtype=np.int64),
                          "item": np.array(items, dtype=np.int64), "role": role})
    bad = np.flatnonzero((frame["item"] < 0) | (frame["item"] >= n_items))
    for i in bad[:10]:
        problems.add(str(path), f"item {frame['item'][i]} is in neither item list (ids run 0.."
                                f"{n_items - 1})", line=lines[i])
    art = frame["item"] < FIRST_OFFICE_ID
    report[f"{path.name} users"] = int(frame["uid"].nunique())
    report[f"{path.name} art entries"] = int(art.sum())
    report[f"{path.name} office entries"] = int((~art).sum())
    return frame
