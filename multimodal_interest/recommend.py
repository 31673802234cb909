"""Recommendations for one person, from a bundle: "what should this newcomer see?"

>>> rec = Recommender.load("bundle/", index="flat")
>>> r = rec.recommend(["a12", "a7"], source="art", platform="office", k=10)
>>> r.items[0].item_id, r.items[0].score, r.items[0].because[0].item_id

**Input**, exactly one of: a *history*, oldest first: item ids of platform ``source``, or
``(platform, item_id)`` pairs (several platforms may mix); a *user id* of the dataset given
to the recommender (their interactions on the other platforms, in time order, are the
history; their items on the target are never recommended again); an *interest* document
(:mod:`multimodal_interest.interest`). Ids are compared in Unicode NFC, as a dataset keeps
them (:mod:`multimodal_interest.data.ids`). Unknown item ids raise :class:`UnknownItemsError`
naming them, or, with ``skip_unknown``, are left out and listed in ``history.unknown``.
Items with nothing to embed (no vector, no trained id) are left out and listed in
``history.not_embeddable``. Of the rest, the most recent ``max_len`` (the model's window,
as in training) make the interest vector; ``history.truncated`` counts the older ones.
A request this deployment cannot serve (unknown platform or user, not exactly one input,
...) raises :class:`RequestError` (a ``ValueError``) saying why; a bad interest document,
:class:`~multimodal_interest.interest.InterestDocumentError`.

**Scores** are the model's logits, ``scale * cos(query, item) + bias``. With ``exclude_seen``
the target items of the history (and, for a user id, the user's target items) are not
recommended.

**Fallback**: when nothing carries interest (an empty history, none of it embeddable, a zero
interest vector) ``fallback`` is ``"popularity"`` and the items are ranked by the model's
popularity prior: a linear model's interest of an empty history is the population's
(:mod:`fusion.linear`), scored as any interest; a transformer's is 0, and the items are
ranked by the learned item bias alone (``index`` ``"bias"``).

**Explanations** (leave-one-out): for each recommended item, the history items whose removal
would lower its score most, with that drop (``contribution``, in logit units). The history
is re-encoded once without each item (one batch of ``L`` histories), so this costs one extra
forward pass of ``L`` rows. A contribution is exact for that one removal; contributions of
several items do not add up (the transformer mixes items), and an item may contribute
nothing or even negatively (then it is not listed). An interest document has no history, so
no explanation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from fusion.items import logits
from multimodal_interest.bundle import Bundle
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.ids import normal_id
from multimodal_interest.interest import interest_document, read_interest_document
from multimodal_interest.retrieval import TargetItems

POPULARITY = "popularity"


@dataclass
class HistoryItem:
    platform: str
    item_id: str


class RequestError(ValueError):
    """A request this deployment cannot serve (unknown platform, items or user, no one to
    recommend for, ...); the message says why. The HTTP service answers it with 422, as it does
    an :class:`~multimodal_interest.interest.InterestDocumentError`; any other error is a bug."""


class UnknownItemsError(RequestError):
    """History items that are not in the bundle's catalogs."""

    def __init__(self, unknown: list[HistoryItem]):
        self.unknown = unknown
        shown = ", ".join(f"{x.platform}:{x.item_id}" for x in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        super().__init__(f"{len(unknown)} unknown item(s) in the history: {shown}{more} "
                         f"(not in the catalog this model serves; pass skip_unknown to leave them out)")


@dataclass
class Contribution:
    """A history item that made a recommended item score higher."""

    platform: str
    item_id: str
    position: int  # index in the history as given (0 = oldest)
    contribution: float  # score drop of the recommended item if this item were left out


@dataclass
class RecommendedItem:
    item_id: str
    score: float
    because: list[Contribution] = field(default_factory=list)


@dataclass
class HistoryReport:
    """What became of the history."""

    given: int
    used: int
    truncated: int  # usable items older than the model's window, left out
    unknown: list[HistoryItem] = field(default_factory=list)
    not_embeddable: list[HistoryItem] = field(default_factory=list)


@dataclass
class Recommendation:
    platform: str
    items: list[RecommendedItem]
    fallback: str | None  # "popularity" when nothing carried interest
    history: HistoryReport | None  # None for an interest document
    model: str
    index: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _History:
    """A resolved history: the items that make the interest vector, in order."""

    items: torch.Tensor  # [L] int64 item_idx within its platform
    platforms: list[str]  # [L]
    positions: list[int]  # [L] index in the history as given
    report: HistoryReport
    seen: dict[str, np.ndarray]  # platform -> item_idx of every known history item on it


class UserHistories:
    """Each user's time-ordered interactions in a dataset, for user-id lookups."""

    def __init__(self, dataset: CrossPlatformDataset):
        inter = dataset.interactions
        order = np.lexsort((np.arange(len(inter)), inter["timestamp"].to_numpy(np.float64),
                            inter["user_idx"].to_numpy(np.int64)))
        users = inter["user_idx"].to_numpy(np.int64)[order]
        self._platform = inter["platform"].astype(str).to_numpy()[order]
        self._item = inter["item_id"].astype(str).to_numpy()[order]
        self._start = np.searchsorted(users, np.arange(dataset.n_users), side="left")
        self._stop = np.searchsorted(users, np.arange(dataset.n_users), side="right")
        self._index = pd.Index(dataset.user_ids.astype(str))
        self.dataset = dataset.name

    def __call__(self, user_id: str) -> list[tuple[str, str]]:
        """``(platform, item_id)`` of every interaction of ``user_id``, oldest first."""
        u = self._index.get_indexer([normal_id(str(user_id))])[0]
        if u < 0:
            raise RequestError(f"unknown user {user_id!r} (not in dataset {self.dataset!r})")
        rows = slice(self._start[u], self._stop[u])
        return list(zip(self._platform[rows].tolist(), self._item[rows].tolist()))


class Recommender:
    """Recommendations from a :class:`~multimodal_interest.bundle.Bundle` (see the module
    docstring). Read-only after construction: safe to share between threads."""

    def __init__(self, bundle: Bundle, index: str = "exact", users: UserHistories | None = None):
        self.bundle, self.index, self.users = bundle, index, users
        self.model = bundle.model
        self.max_len = self.model.fusion.config.max_len
        self.retrievers = {p: bundle.retriever(p, index) for p in bundle.targets}
        self._ids = {p: {x: i for i, x in enumerate(ids)} for p, ids in bundle.item_ids.items()}  # id -> idx
        self._embeddable = {p: self._has_something(p) for p in bundle.history_platforms}

    @classmethod
    def load(cls, folder: str | Path, index: str = "exact",
             dataset: CrossPlatformDataset | None = None) -> Recommender:
        return cls(Bundle.load(folder), index, UserHistories(dataset) if dataset is not None else None)

    def _has_something(self, platform: str) -> np.ndarray:
        with torch.inference_mode():
            return self.model.fusion.items(platform)[1].cpu().numpy()

    @property
    def fingerprint(self) -> str:
        return self.bundle.fingerprint

    @property
    def dim(self) -> int:
        return self.model.fusion.config.dim

    def describe(self) -> dict[str, Any]:
        """The model, the index and the platforms (what ``GET /platforms`` shows); ``indexes``:
        per target, the index it is searched with, its settings and its recorded recall@10."""
        platforms = [{"name": p, "n_items": len(ids), "target": p in self.bundle.targets,
                      "history": p in self._embeddable} for p, ids in self.bundle.item_ids.items()]
        indexes = [self.bundle.index_report(p, r) for p, r in self.retrievers.items()]
        return {"model": self.fingerprint, "index": self.index, "dim": self.dim,
                "max_history_used": self.max_len, "platforms": platforms, "indexes": indexes,
                "info": self.bundle.info}

    # ------------------------------------------------------------------ histories
    def _pairs(self, history: Sequence | None, source: str | None, user_id: str | None,
               target: str | None) -> list[tuple[str, str]]:
        if (history is None) == (user_id is None):
            raise RequestError("give exactly one of a history and a user id")
        if source is not None:
            self._known_platform(source)
        if user_id is not None:
            if self.users is None:
                raise RequestError("user-id lookups need the dataset's interactions; load the "
                                   "recommender with a dataset")
            sources = [source] if source is not None else [p for p in self._embeddable if p != target]
            return [(p, i) for p, i in self.users(user_id) if p in sources or p == target]
        if source is not None:
            bad = [x for x in history if not isinstance(x, str)]
            if bad:
                raise RequestError(f"with a source platform the history is a list of item ids; got {bad[0]!r}")
            return [(source, normal_id(x)) for x in history]
        pairs = []
        for x in history:
            if isinstance(x, str) or not isinstance(x, (tuple, list)) or len(x) != 2:
                raise RequestError(f"history item {x!r}: expected a (platform, item_id) pair, or give "
                                   f"the source platform of plain item ids")
            pairs.append((str(x[0]), normal_id(str(x[1]))))
        return pairs

    def _lookup(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """``[len(pairs)]`` item_idx of ``(platform, item_id)`` pairs, -1 for unknown ids."""
        idx = np.full(len(pairs), -1, dtype=np.int64)
        for p in dict.fromkeys(p for p, _ in pairs):
            self._known_platform(p)
            rows = [r for r, (q, _) in enumerate(pairs) if q == p]
            position = self._ids[p]  # a dict: a 50-item history costs microseconds, not a pandas Index
            idx[rows] = [position.get(pairs[r][1], -1) for r in rows]
        return idx

    def _known_platform(self, platform: str) -> None:
        if platform not in self._ids:
            raise RequestError(f"unknown platform {platform!r}; this model knows {sorted(self._ids)}")

    def _target(self, platform: str) -> TargetItems:
        if platform not in self.bundle.targets:
            raise RequestError(f"unknown target platform {platform!r}; this model recommends on "
                               f"{sorted(self.bundle.targets)}")
        return self.bundle.targets[platform]

    def _resolve(self, pairs: list[tuple[str, str]], skip_unknown: bool) -> _History:
        idx = self._lookup(pairs)
        missing = [HistoryItem(*pairs[i]) for i in np.flatnonzero(idx < 0)]
        if missing and not skip_unknown:
            raise UnknownItemsError(missing)
        bad = next((p for p, _ in pairs if p not in self._embeddable), None)
        if bad is not None:
            raise RequestError(f"platform {bad!r} cannot appear in histories; the model reads "
                               f"{sorted(self._embeddable)}")
        usable = [i for i, j in enumerate(idx.tolist()) if j >= 0 and self._embeddable[pairs[i][0]][j]]
        not_embeddable = [HistoryItem(*pairs[i]) for i, j in enumerate(idx.tolist())
                          if j >= 0 and not self._embeddable[pairs[i][0]][j]]
        kept = usable[-self.max_len:]
        report = HistoryReport(len(pairs), len(kept), len(usable) - len(kept), missing, not_embeddable)
        platforms = np.array([p for p, _ in pairs], dtype=object)
        seen = {p: idx[(platforms == p) & (idx >= 0)] for p in self._ids}
        return _History(torch.from_numpy(idx[kept]), [pairs[i][0] for i in kept], kept, report, seen)

    def _encode(self, items: torch.Tensor, mask: torch.Tensor, platforms: list[str]) -> torch.Tensor:
        """Interest vectors of ``items [B, L]`` whose columns come from ``platforms [L]``."""
        if len(set(platforms)) <= 1:
            platform: str | torch.Tensor = platforms[0] if platforms else self.bundle.history_platforms[0]
        else:
            names = self.model.fusion.config.platforms
            platform = torch.tensor([names.index(p) for p in platforms]).expand_as(items)
        return self.model.encode_users(items, mask, platform)

    def _history(self, history, source, user_id, skip_unknown, target=None) -> tuple[torch.Tensor, _History]:
        pairs = self._pairs(history, source, user_id, target)
        if user_id is not None:  # the user's own target items: seen, not history
            h = self._resolve([x for x in pairs if x[0] != target], skip_unknown)
            own = self._lookup([x for x in pairs if x[0] == target])
            h.seen[target] = own[own >= 0]
        else:
            h = self._resolve(pairs, skip_unknown)
        with torch.inference_mode():
            u = self._encode(h.items[None], torch.ones(1, len(h.items), dtype=torch.bool), h.platforms)[0]
        if not bool(torch.isfinite(u).all()):  # never served as an empty list or a vector of nulls
            raise RuntimeError(f"the model made a non-finite interest vector from {len(h.items)} history "
                               f"item(s); its weights or features are corrupt (bundle {self.bundle.folder})")
        return u, h

    # ------------------------------------------------------------------ public API
    def export_interest(self, history: Sequence | None = None, *, source: str | None = None,
                        user_id: str | None = None, skip_unknown: bool = False) -> dict[str, Any]:
        """The portable interest document of a history or user."""
        u, h = self._history(history, source, user_id, skip_unknown)
        return interest_document(u, self.fingerprint, h.report.used, h.platforms)

    def recommend(self, history: Sequence | None = None, *, platform: str, k: int = 10,
                  source: str | None = None, user_id: str | None = None,
                  interest: dict | str | bytes | None = None, exclude_seen: bool = True,
                  explain: int = 3, skip_unknown: bool = False) -> Recommendation:
        """Top-``k`` items of ``platform`` for one person (see the module docstring)."""
        items = self._target(platform)
        if k < 1:
            raise RequestError(f"k must be >= 1, got {k}")
        if sum(x is not None for x in (history, user_id, interest)) != 1:
            raise RequestError("give exactly one of a history, a user id and an interest document")
        if interest is not None:
            u, h = read_interest_document(interest, self.fingerprint, self.dim), None
        else:
            u, h = self._history(history, source, user_id, skip_unknown, platform)
        exclude = np.empty(0, np.int64)
        if h is not None and exclude_seen:
            exclude = h.seen.get(platform, exclude)
        with torch.inference_mode():
            q = self.model.query(u[None], platform)
        fallback = POPULARITY if h is not None and h.report.used == 0 else None
        if not bool((u != 0).any()):
            scores, idx = _popular(items, k, exclude)
            fallback = POPULARITY
        else:  # a linear model's empty history is the population's interest: its prior
            scores, idx = self.retrievers[platform].search(q, k, [exclude])
            scores, idx = scores[0], idx[0]
        keep = idx >= 0
        scores, idx = scores[keep], idx[keep]
        because = (self._explain(h, q[0], platform, idx, explain)
                   if h is not None and explain > 0 and fallback is None else [[] for _ in idx])
        ids = self.bundle.item_ids[platform]
        out = [RecommendedItem(ids[i], float(s), b) for i, s, b in zip(idx.tolist(), scores.tolist(), because)]
        return Recommendation(platform, out, fallback, h.report if h is not None else None,
                              self.fingerprint, self.index if bool((u != 0).any()) else "bias")

    def _explain(self, h: _History, q: torch.Tensor, platform: str, rec: torch.Tensor,
                 top: int) -> list[list[Contribution]]:
        """Leave-one-out contributions of the history items to each recommended item."""
        L, items = len(h.items), self.bundle.targets[platform]
        v, bias = items.vectors[rec], items.bias[rec]  # [K, D_P], [K]
        with torch.inference_mode():
            mask = ~torch.eye(L, dtype=torch.bool)  # row j: the history without item j
            u_loo = self._encode(h.items.expand(L, L), mask, h.platforms)
            q_loo = self.model.query(u_loo, platform)  # [L, D_P]
            full = logits(q, v, items.scale, bias)  # [K]
            drop = full[None, :] - logits(q_loo, v, items.scale, bias)  # [L, K]
        out = []
        ids = self.bundle.item_ids
        for col in drop.T:
            order = torch.argsort(col, descending=True)[:top]
            out.append([Contribution(h.platforms[j], ids[h.platforms[j]][int(h.items[j])], h.positions[j],
                                     float(col[j])) for j in order.tolist() if col[j] > 0])
        return out


def _popular(items, k: int, exclude: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items by bias alone (the learned popularity prior), ``exclude`` left out."""
    bias = items.bias.clone()
    bias[torch.from_numpy(exclude)] = -torch.inf
    top = bias.topk(min(k, len(bias)))
    return top.values, torch.where(torch.isinf(top.values), -1, top.indices)
