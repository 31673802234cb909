"""Last.fm-2K (HetRec 2011) with real audio and text artist vectors (Spillo et al. release).

Layout (``lastfm2k_multimodal/``): ``interactions_og_ids.tsv`` (``userID, itemID, rating,
x_label`` with the authors' labels 0 train / 1 valid / 2 test, kept as ``label``),
``item_ids.csv`` (``row, artistID, name_artist``: row i of every ``.npy`` is that artist),
``artist_tags_text.tsv`` (tag text) and ``vggish.npy`` / ``whisper.npy`` (audio),
``minilm_l6.npy`` (text). One platform, ``lastfm``; no timestamps, ``order`` is file order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.errors import Problems
from multimodal_interest.data.importers import register_importer
from multimodal_interest.data.importers._common import require_files
from multimodal_interest.data.tables import read_table
from multimodal_interest.data.writer import DatasetDraft, PlatformDraft

VECTORS = {"vggish": "audio", "whisper": "audio", "minilm_l6": "text"}
LABELS = {"0": "train", "1": "valid", "2": "test"}


@register_importer("lastfm2k")
def import_lastfm2k(src: Path) -> DatasetDraft:
    """Last.fm-2K artists with VGGish/Whisper audio and MiniLM tag vectors; authors' labels kept."""
    files = ["interactions_og_ids.tsv", "item_ids.csv", "artist_tags_text.tsv",
             *(f"{v}.npy" for v in VECTORS)]
    require_files(src, files, "the Last.fm-2K multimodal folder")
    problems, report = Problems(), {}
    inter = read_table(src / files[0], files[0], problems)
    items = read_table(src / files[1], files[1], problems)
    tags = read_table(src / files[2], files[2], problems)
    problems.raise_if_any(f"lastfm2k import of {src}")
    inter.require(problems, "userID", "itemID", "rating", "x_label")
    items.require(problems, "row", "artistID", "name_artist")
    tags.require(problems, "artistID", "text")
    problems.raise_if_any(f"lastfm2k import of {src}")

    rows = items.number("row", problems, integer=True)
    items.flag(problems, rows != np.arange(len(rows)), "row", "expected rows 0, 1, 2, ... in "
               "file order (row i is row i of every .npy); found {value}", rows)
    artist = items.text("artistID", problems)
    text = pd.Series(tags.text("text", problems, required=False).to_numpy(),
                     index=tags.text("artistID", problems))
    catalog = pd.DataFrame({"item_id": artist, "name": items.text("name_artist", problems,
                                                                  required=False),
                            "tags": text.reindex(artist.to_numpy()).fillna("").to_numpy()})
    report["artists without tag text"] = int((catalog["tags"] == "").sum())
    vectors = {}
    for name, modality in VECTORS.items():
        array = np.load(src / f"{name}.npy", allow_pickle=False)
        if array.ndim != 2 or len(array) != len(catalog):
            problems.add(f"{name}.npy", f"expected [{len(catalog)}, D] (one row per artist of "
                                        f"item_ids.csv), found {list(array.shape)}")
        vectors[name] = (modality, array)
    label = inter.text("x_label", problems)
    inter.flag(problems, ~label.isin(list(LABELS)).to_numpy(), "x_label",
               "expected 0 (train), 1 (valid) or 2 (test), found {value}", label)
    problems.raise_if_any(f"lastfm2k import of {src}")
    interactions = pd.DataFrame({
        "user_id": inter.text("userID", problems), "platform": "lastfm",
        "item_id": inter.text("itemID", problems), "order": np.arange(len(inter)),
        "rating": inter.number("rating", problems), "label": label.map(LABELS)})
    for value in LABELS.values():
        count = int((interactions["label"] == value).sum())
        report[f"{value} interactions (authors' label)"] = count
    return DatasetDraft(
        name="lastfm-2k", platforms={"lastfm": PlatformDraft(catalog, ("name", "tags"),
                                                            vectors=vectors)},
        interactions=interactions,
        description="Last.fm-2K listening (implicit) with real audio (VGGish, Whisper-base) and "
                    "text (MiniLM-L6 of tags) vectors per artist; one platform.",
        provenance="HetRec 2011 Last.fm-2K joined with giuspillo/extending_sota_data_mm_feat "
                   "(Spillo et al., 'See the Movie, Hear the Song, Read the Book')",
        licence="HetRec 2011 Last.fm data: non-commercial research use", report=report)
