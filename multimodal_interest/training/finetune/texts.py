"""The text an encoder reads for each item of a dataset platform, by ``item_idx``."""
from __future__ import annotations

from multimodal_interest.catalog import Catalog


def item_texts(dataset, platform: str) -> list[str]:
    """``[n_items]`` each item's text fields combined by the catalog's one rule (what
    ``mmi embed`` encodes); '' for an item whose text is missing or unusable."""
    catalog = Catalog.from_dataset(dataset, platform)
    out = [""] * len(catalog.items)
    for row in catalog.usable:
        try:
            out[row] = catalog.text(row)
        except ValueError:
            pass
    return out
