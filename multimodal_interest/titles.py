"""Item titles: what a person reads instead of an item id, and a search over them.

A bundle keeps one title per item (``titles/<platform>.json``, row i = item_idx i): the
dataset's ``title`` text field, else its first declared text field, cut to
:data:`MAX_TITLE_CHARS`. Titles are untrusted text (whatever the catalog held): they are data,
never markup, wherever they are shown.

>>> titles = ItemTitles({"art": ["a1", "a2"]}, {"art": ["Oil paint set", "Brush"]})
>>> titles.search("art", "paint", k=10)   # -> [("a1", "Oil paint set")]
"""
from __future__ import annotations

import numpy as np

MAX_TITLE_CHARS = 200
TITLE_FIELD = "title"


def dataset_titles(dataset, platform: str) -> list[str] | None:
    """``platform``'s item titles from a :class:`~multimodal_interest.data.dataset.CrossPlatformDataset`
    (the ``title`` text field, else the first declared one; '' where empty), or None when the
    platform declares no text field."""
    fields = dataset.text_fields(platform)
    if not fields:
        return None
    name = TITLE_FIELD if TITLE_FIELD in fields else fields[0]
    column = dataset.items[platform][name].fillna("").astype(str)
    return [" ".join(t.split())[:MAX_TITLE_CHARS] for t in column.tolist()]


class ItemTitles:
    """Titles of every platform's items (an item without one is shown by its id), and a
    case-insensitive search over them. Read-only: safe to share between threads."""

    def __init__(self, item_ids: dict[str, list[str]], titles: dict[str, list[str]]):
        self.item_ids = item_ids
        self._titles = {p: [t or i for t, i in zip(titles[p], ids)] if p in titles else list(ids)
                        for p, ids in item_ids.items()}
        self._folded = {p: np.array([t.casefold() for t in ts], dtype=object) for p, ts in self._titles.items()}
        self._row = {p: {i: r for r, i in enumerate(ids)} for p, ids in item_ids.items()}

    def title(self, platform: str, item_id: str) -> str:
        """The title of a known item (its id where it has none)."""
        return self._titles[platform][self._row[platform][item_id]]

    def search(self, platform: str, query: str, k: int) -> tuple[list[tuple[str, str]], int]:
        """Up to ``k`` ``(item_id, title)`` of ``platform`` whose title holds every word of
        ``query`` (case-insensitive), or whose id is ``query``; and how many items match.
        Best first: the id itself, then titles equal to the query, starting with it, holding
        it as one phrase, then holding its words; shorter titles first within each. Cost:
        one pass over the platform's titles per search."""
        phrase = " ".join(query.casefold().split())
        words = phrase.split()
        folded = self._folded[platform]
        ranked = []
        exact = self._row[platform].get(query.strip())
        if exact is not None:
            ranked.append((-1, 0, exact))
        if words:
            for row, title in enumerate(folded):
                if row != exact and all(w in title for w in words):
                    rank = 0 if title == phrase else 1 if title.startswith(phrase) else 2 if phrase in title else 3
                    ranked.append((rank, len(title), row))
        ranked.sort()
        ids, titles = self.item_ids[platform], self._titles[platform]
        return [(ids[r], titles[r]) for _, _, r in ranked[:k]], len(ranked)
