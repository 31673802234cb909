"""A tiny, valid dataset folder written by hand, in any table format, for the data tests."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.importers import import_dataset
from multimodal_interest.data.tables import write_table

MANIFEST = """\
name: tiny
synthetic: false
description: a hand-written two-platform dataset
provenance: tests/data_fixtures.py
licence: CC0
interactions: interactions.{ext}
user_links: user_links.{ext}
platforms:
  art:
    items: items/art.{ext}
    text: [title, attributes]
    image: image
  office:
    items: items/office.{ext}
    text: [title]
    vectors:
      clip: {{path: vectors/office_clip.npz, modality: image}}
"""

ART = pd.DataFrame({"item_id": ["a1", "a2", "a3"],
                    "title": ["red paint", "brush", ""],
                    "attributes": ["paint acrylic", "tools", "canvas"],
                    "image": ["media/cat.png", "", "media/cat.png"]})
OFFICE = pd.DataFrame({"item_id": ["o1", "o2"], "title": ["stapler", "pen, blue"]})
# u1, u2 on both platforms (u2 is 'x-u2' on office, linked); u3 art only; u4 office only.
INTERACTIONS = pd.DataFrame({
    "user_id": ["u1", "u1", "u1", "x-u2", "u2", "u2", "u3", "u4", "u1"],
    "platform": ["art", "office", "art", "office", "art", "art", "art", "office", "art"],
    "item_id": ["a2", "o1", "a1", "o2", "a3", "a1", "a2", "o1", "a3"],
    "timestamp": [30.0, 10.0, 20.0, 5.0, 7.0, 7.0, 1.0, 2.0, 40.0],
    "rating": [4.0, 5.0, 3.0, 1.0, 2.0, 5.0, 4.0, 3.0, 1.0],
})
LINKS = pd.DataFrame({"platform": ["office"], "user_id": ["x-u2"], "person_id": ["u2"]})
CLIP = np.arange(6, dtype=np.float32).reshape(2, 3)


def write_tiny(root: Path, ext: str = "csv", media: Path | None = None) -> Path:
    """Write the tiny dataset into ``root`` with tables of extension ``ext``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(MANIFEST.format(ext=ext))
    write_table(ART, root / f"items/art.{ext}")
    write_table(OFFICE, root / f"items/office.{ext}")
    write_table(INTERACTIONS, root / f"interactions.{ext}")
    write_table(LINKS, root / f"user_links.{ext}")
    (root / "media").mkdir(exist_ok=True)
    if media is not None:
        shutil.copy(media, root / "media/cat.png")
    else:
        (root / "media/cat.png").write_bytes(b"\x89PNG not really")
    (root / "vectors").mkdir(exist_ok=True)
    np.savez(root / "vectors/office_clip.npz", item_id=np.array(["o2", "o1"]), vectors=CLIP)
    return root


@functools.cache
def imported(kind: str, src: Path, dst: Path, **options) -> CrossPlatformDataset:
    """``src`` imported with importer ``kind`` into ``dst``, once per test session."""
    return CrossPlatformDataset.load(import_dataset(kind, src, dst, **options))
