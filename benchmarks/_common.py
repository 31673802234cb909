"""Shared helpers of the benchmark scripts: real item text, result tables."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MMI_SHARED_DATA", REPO.parent / "shared" / "data"))


def amazon_item_texts() -> pd.DataFrame:
    """The 38,396 real Amazon Art + Office items: item_id, title, attribute."""
    folder = SHARED_DATA / "amazon_art_office"
    frames = [pd.read_csv(folder / name, dtype=str, keep_default_na=False)
              for name in ("item_listA_F.csv", "item_listO_AA_F.csv")]
    df = pd.concat(frames, ignore_index=True)
    return pd.DataFrame({"item_id": df["idAfter"], "title": df["item_title"],
                         "attribute": df["item_attribute"]})


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
