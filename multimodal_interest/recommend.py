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
would lower its score most, with that drop (``contribution``, in logit units). The interest
of the history without each item comes from :meth:`fusion.model.InterestModel.leave_one_out`:
the transformer re-encodes ``L`` histories (one extra forward pass of ``L`` rows); the linear
model, a sum over items, subtracts each item's share (one pass). A contribution is exact for
that one removal; contributions of several items do not add up (the transformer mixes
items), and an item may contribute nothing or even negatively (then it is not listed). An
interest document has no history, so no explanation.

**Many requests at once**: :meth:`Recommender.recommend_many` scores a list of
:class:`Ask` (the arguments of :meth:`~Recommender.recommend`) together, in three phases:
:meth:`~Recommender.prepare` checks and resolves each request alone (its errors are its
own), :meth:`~Recommender.score` encodes every history in one padded batch ``[B, L]``, makes
the queries and searches once per target platform (each request's own ``k`` and exclusions)
and computes every request's leave-one-out rows in one call. Each answer is the one
:meth:`~Recommender.recommend` gives alone, up to float rounding (``recommend`` is a batch
of one); a request that fails gets its exception in its place. ``mmi serve`` scores
concurrent requests this way (:mod:`multimodal_interest.micro_batch`).
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

    def _lookup(self, pairs: list[tuple[str, str]]) -> list[int]:
        """item_idx of ``(platform, item_id)`` pairs, -1 for unknown ids."""
        out, ids = [], self._ids  # dicts: a 50-item history costs microseconds, not a pandas Index
        for p, i in pairs:
            position = ids.get(p)
            if position is None:
                self._known_platform(p)
            out.append(position.get(i, -1))
        return out

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
        missing = [HistoryItem(*x) for x, j in zip(pairs, idx) if j < 0]
        if missing and not skip_unknown:
            raise UnknownItemsError(missing)
        bad = next((p for p, _ in pairs if p not in self._embeddable), None)
        if bad is not None:
            raise RequestError(f"platform {bad!r} cannot appear in histories; the model reads "
                               f"{sorted(self._embeddable)}")
        usable, not_embeddable = [], []
        for r, ((p, i), j) in enumerate(zip(pairs, idx)):
            if j >= 0:
                if self._embeddable[p][j]:
                    usable.append(r)
                else:
                    not_embeddable.append(HistoryItem(p, i))
        kept = usable[-self.max_len:]
        report = HistoryReport(len(pairs), len(kept), len(usable) - len(kept), missing, not_embeddable)
        seen = {p: np.array([j for (q, _), j in zip(pairs, idx) if q == p and j >= 0], dtype=np.int64)
                for p in self._ids}
        return _History(torch.tensor([idx[r] for r in kept], dtype=torch.int64), [pairs[r][0] for r in kept],
                        kept, report, seen)

    def _resolved(self, history, source, user_id, skip_unknown, target=None) -> _History:
        pairs = self._pairs(history, source, user_id, target)
        if user_id is None:
            return self._resolve(pairs, skip_unknown)
        h = self._resolve([x for x in pairs if x[0] != target], skip_unknown)
        own = self._lookup([x for x in pairs if x[0] == target])  # the user's own target items: seen, not history
        h.seen[target] = np.array([j for j in own if j >= 0], dtype=np.int64)
        return h

    def _history(self, history, source, user_id, skip_unknown) -> tuple[torch.Tensor, _History]:
        h = self._resolved(history, source, user_id, skip_unknown)
        with torch.inference_mode():
            u = self._encode_histories([h])[0]
        if not bool(torch.isfinite(u).all()):
            raise _non_finite(h, self.bundle.folder)
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
        out = self.score([self.prepare(Ask(history, platform=platform, k=k, source=source, user_id=user_id,
                                           interest=interest, exclude_seen=exclude_seen, explain=explain,
                                           skip_unknown=skip_unknown))])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def recommend_many(self, asks: Sequence[Ask]) -> list[Recommendation | Exception]:
        """:meth:`recommend` of each of ``asks``, scored together (one encode, one query and one
        search per target platform, one encode of every leave-one-out row): each answer is what
        :meth:`recommend` answers alone (up to float rounding), or the exception it raises (a
        :class:`RequestError`, ...) in that request's place; one request's error never fails
        the others."""
        out: list[Recommendation | Exception | None] = [None] * len(asks)
        ready, rows = [], []
        for i, ask in enumerate(asks):
            try:
                ready.append(self.prepare(ask))
                rows.append(i)
            except Exception as e:  # noqa: BLE001 -- this request's answer
                out[i] = e
        for i, answer in zip(rows, self.score(ready)):
            out[i] = answer
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ phases
    def prepare(self, ask: Ask) -> Prepared:
        """Check and resolve one request (the history's items looked up, truncated to the
        model's window): what :meth:`score` needs. Raises what :meth:`recommend` raises for a
        request it cannot serve."""
        self._target(ask.platform)
        if ask.k < 1:
            raise RequestError(f"k must be >= 1, got {ask.k}")
        if sum(x is not None for x in (ask.history, ask.user_id, ask.interest)) != 1:
            raise RequestError("give exactly one of a history, a user id and an interest document")
        if ask.interest is not None:
            u = read_interest_document(ask.interest, self.fingerprint, self.dim)
            return Prepared(ask, None, u, np.empty(0, np.int64))
        h = self._resolved(ask.history, ask.source, ask.user_id, ask.skip_unknown, ask.platform)
        exclude = h.seen.get(ask.platform, np.empty(0, np.int64)) if ask.exclude_seen else np.empty(0, np.int64)
        return Prepared(ask, h, None, exclude)

    def score(self, batch: Sequence[Prepared]) -> list[Recommendation | Exception]:
        """The recommendations of prepared requests, computed together (see
        :meth:`recommend_many`). Should the batch fail as a whole, each request is scored
        alone, so that the error is only the answer of the request that causes it."""
        try:
            return self._score(batch)
        except Exception as e:  # noqa: BLE001
            if len(batch) == 1:
                return [e]
            return [_alone(self._score, p) for p in batch]

    def _score(self, batch: Sequence[Prepared]) -> list[Recommendation | Exception]:
        out: list[Recommendation | Exception | None] = [None] * len(batch)
        with torch.inference_mode():
            u = self._interests(batch, out)
            for platform in dict.fromkeys(p.ask.platform for p in batch):
                rows = [i for i, p in enumerate(batch) if p.ask.platform == platform and out[i] is None]
                if rows:
                    self._score_on(platform, [batch[i] for i in rows], u[rows], rows, out)
        return out  # type: ignore[return-value]

    def _interests(self, batch: Sequence[Prepared], out: list) -> torch.Tensor:
        """``[B, D]`` interest vectors: the documents' as read, the histories' in one encode;
        a row whose vector is not finite gets its error in ``out``."""
        u = torch.zeros(len(batch), self.dim, device=self.model.device)
        rows = [i for i, p in enumerate(batch) if p.h is not None]
        if rows:
            u[rows] = self._encode_histories([batch[i].h for i in rows])
        for i, p in enumerate(batch):
            if p.u is not None:
                u[i] = p.u.to(u.device)
            elif not bool(torch.isfinite(u[i]).all()):  # never served as an empty list or a vector of nulls
                out[i] = _non_finite(p.h, self.bundle.folder)
        return u

    def _score_on(self, platform: str, batch: list[Prepared], u: torch.Tensor, rows: list[int],
                  out: list) -> None:
        """Recommendations on ``platform`` for ``batch`` (interests ``u [B, D]``) into ``out[rows]``."""
        items = self.bundle.targets[platform]
        q = self.model.query(u, platform)  # [B, D_P]
        live = (u != 0).any(1).tolist()  # a linear model's empty history is the population's interest: its prior
        found: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(batch)  # type: ignore[list-item]
        searched = [b for b in range(len(batch)) if live[b]]
        if searched:
            k = max(batch[b].ask.k for b in searched)
            scores, idx = self.retrievers[platform].search(q[searched], k, [batch[b].exclude for b in searched])
            for r, b in enumerate(searched):
                n = min(batch[b].ask.k, idx.shape[1])
                found[b] = scores[r, :n], idx[r, :n]
        for b in range(len(batch)):
            if not live[b]:
                found[b] = _popular(items, batch[b].ask.k, batch[b].exclude)
        for b, (s, i) in enumerate(found):
            keep = i >= 0
            found[b] = s[keep], i[keep]
        fallback = [POPULARITY if not live[b] or (p.h is not None and p.h.report.used == 0) else None
                    for b, p in enumerate(batch)]
        explained = [b for b, p in enumerate(batch) if p.h is not None and p.ask.explain > 0 and fallback[b] is None]
        because = dict(zip(explained, self._explain(platform, [batch[b] for b in explained], q[explained],
                                                    [found[b][1] for b in explained])))
        ids = self.bundle.item_ids[platform]
        for b, p in enumerate(batch):
            s, i = found[b]
            why = because.get(b) or [[] for _ in range(len(i))]
            out[rows[b]] = Recommendation(
                platform, [RecommendedItem(ids[x], y, c) for x, y, c in zip(i.tolist(), s.tolist(), why)],
                fallback[b], p.h.report if p.h is not None else None, self.fingerprint,
                self.index if live[b] else "bias")

    def _encode_histories(self, histories: list[_History]) -> torch.Tensor:
        """Interest vectors ``[B, D]`` of resolved histories, in one padded batch ``[B, L]``."""
        return self.model.encode_users(*self._padded(histories))

    def _padded(self, histories: list[_History]) -> tuple[torch.Tensor, torch.Tensor, str | torch.Tensor]:
        """``items [B, L]``, ``mask [B, L]`` and ``platform`` (a name, or ``[B, L]`` indices into
        the model's platforms where the histories mix several) of resolved histories, the
        shorter ones padded (masked) to the longest."""
        L = max(len(h.items) for h in histories)
        items = torch.zeros(len(histories), L, dtype=torch.int64)
        mask = torch.zeros(len(histories), L, dtype=torch.bool)
        names = {p for h in histories for p in h.platforms}
        mixed = torch.zeros(len(histories), L, dtype=torch.int64) if len(names) > 1 else None
        index = {p: i for i, p in enumerate(self.model.fusion.config.platforms)}
        for b, h in enumerate(histories):
            n = len(h.items)
            items[b, :n], mask[b, :n] = h.items, True
            if mixed is not None:
                mixed[b, :n] = torch.tensor([index[p] for p in h.platforms], dtype=torch.int64)
        if mixed is not None:
            return items, mask, mixed
        return items, mask, names.pop() if names else self.bundle.history_platforms[0]

    def _explain(self, platform: str, batch: list[Prepared], q: torch.Tensor,
                 recommended: list[torch.Tensor]) -> list[list[list[Contribution]]]:
        """Leave-one-out contributions of each request's history items to each of its
        recommended items (``q [B, D_P]``: the requests' queries); every request's history
        less each of its items in one call (:meth:`fusion.model.InterestModel.leave_one_out`)."""
        if not batch:
            return []
        items = self.bundle.targets[platform]
        history, mask, platforms = self._padded([p.h for p in batch])
        u_loo = self.model.leave_one_out(history, mask, platforms)[mask]  # [sum of L, D]: each history less one item
        q_loo = self.model.query(u_loo, platform)  # [sum of L, D_P]
        out, r, ids = [], 0, self.bundle.item_ids
        for p, q_b, rec in zip(batch, q, recommended):
            h, n = p.h, len(p.h.items)
            v, bias = items.vectors[rec], items.bias[rec]  # [K, D_P], [K]
            drop = logits(q_b, v, items.scale, bias)[None, :] - logits(q_loo[r:r + n], v, items.scale, bias)  # [L, K]
            r += n
            order = drop.argsort(dim=0, descending=True)[:p.ask.explain].T.tolist()  # [K, top]
            values = drop.T.tolist()
            out.append([[Contribution(h.platforms[j], ids[h.platforms[j]][int(h.items[j])], h.positions[j],
                                      col[j]) for j in top if col[j] > 0] for top, col in zip(order, values)])
        return out


@dataclass
class Ask:
    """The arguments of one :meth:`Recommender.recommend` call."""

    history: Sequence | None = None
    platform: str = ""
    k: int = 10
    source: str | None = None
    user_id: str | None = None
    interest: dict | str | bytes | None = None
    exclude_seen: bool = True
    explain: int = 3
    skip_unknown: bool = False


@dataclass
class Prepared:
    """A request :meth:`Recommender.prepare` checked: its resolved history ``h`` (or the
    interest vector ``u [D]`` of its document) and the target items it excludes."""

    ask: Ask
    h: _History | None
    u: torch.Tensor | None
    exclude: np.ndarray


def _non_finite(h: _History, folder) -> RuntimeError:
    return RuntimeError(f"the model made a non-finite interest vector from {len(h.items)} history "
                        f"item(s); its weights or features are corrupt (bundle {folder})")


def _alone(score, p: Prepared) -> Recommendation | Exception:
    try:
        return score([p])[0]
    except Exception as e:  # noqa: BLE001
        return e


def _popular(items, k: int, exclude: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items by bias alone (the learned popularity prior), ``exclude`` left out."""
    bias = items.bias.clone()
    bias[torch.from_numpy(exclude)] = -torch.inf
    top = bias.topk(min(k, len(bias)))
    return top.values, torch.where(torch.isinf(top.values), -1, top.indices)
