"""Ranking metrics as pure functions of where each user's ground-truth items rank.

Every metric here is a function of ``ranks`` ``[users, G]`` (the 1-based rank of each of a
user's ground-truth items in the ranking, 0 in padded slots) and ``n_truth`` ``[users]``
(the user's number of ground-truth items), so the evaluator only has to keep those ranks
per chunk of users, never the scores.

Ties: items with equal scores are ordered by item index, lower first (the order of a stable
descending sort). The rule is deterministic and the same for every method; a scorer that
gives many items the same score (popularity does) is ranked among those items by index.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

Metric = Callable[[torch.Tensor, torch.Tensor, int | None], torch.Tensor]


def full_ranks(scores: torch.Tensor, truth: torch.Tensor, truth_mask: torch.Tensor) -> torch.Tensor:
    """Rank of each ground-truth item among all items of its row.

    ``scores`` ``[B, N]``; ``truth`` ``[B, G]`` int64 item indices (padded anywhere in range);
    ``truth_mask`` ``[B, G]`` bool, True on real items. Returns ``[B, G]`` int64 ranks
    (1 = top), 0 where padded.
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # [B, N]
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return ranks.gather(1, truth).masked_fill(~truth_mask, 0)


def ranks_among(pos_scores: torch.Tensor, pos_items: torch.Tensor,
                neg_scores: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
    """Rank of one positive item among it and its sampled negatives (same tie rule).

    ``pos_scores``/``pos_items`` ``[B]``; ``neg_scores``/``neg_items`` ``[B, M]``.
    Returns ``[B, 1]`` int64 ranks in ``1..M+1``.
    """
    p, i = pos_scores[:, None], pos_items[:, None]
    ahead = (neg_scores > p) | ((neg_scores == p) & (neg_items < i))
    return (ahead.sum(1) + 1)[:, None]


def _hits(ranks: torch.Tensor, k: int) -> torch.Tensor:
    return (ranks > 0) & (ranks <= k)


def recall_at_k(ranks: torch.Tensor, n_truth: torch.Tensor, k: int | None) -> torch.Tensor:
    """``[B]`` hits in the top k / |GT| (HR@k when |GT| = 1)."""
    return _hits(ranks, k).sum(1) / n_truth


def hit_at_k(ranks: torch.Tensor, n_truth: torch.Tensor, k: int | None) -> torch.Tensor:
    """``[B]`` 1 if any ground-truth item is in the top k, else 0."""
    return _hits(ranks, k).any(1).to(torch.float64)


def ndcg_at_k(ranks: torch.Tensor, n_truth: torch.Tensor, k: int | None) -> torch.Tensor:
    """``[B]`` binary-gain DCG@k over the ideal DCG of min(k, |GT|) hits at the top."""
    gain = torch.where(_hits(ranks, k), 1.0 / torch.log2(ranks.to(torch.float64) + 1), 0.0)
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    ideal = torch.cumsum(discounts, 0)[(n_truth.clamp(max=k) - 1).long()]
    return gain.sum(1) / ideal


def mrr(ranks: torch.Tensor, n_truth: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """``[B]`` 1 / rank of the first ground-truth item in the full ranking (k is not used)."""
    first = torch.where(ranks > 0, ranks, torch.iinfo(ranks.dtype).max).min(1).values
    return torch.where(first < torch.iinfo(ranks.dtype).max, 1.0 / first.to(torch.float64), 0.0)


# name -> (function, whether it takes "@k")
METRICS: dict[str, tuple[Metric, bool]] = {
    "recall": (recall_at_k, True),
    "hit": (hit_at_k, True),
    "ndcg": (ndcg_at_k, True),
    "mrr": (mrr, False),
}


def parse_metric(name: str) -> tuple[Metric, int | None]:
    """``"ndcg@10"`` -> (ndcg_at_k, 10); ``"mrr"`` -> (mrr, None). Unknown names raise."""
    base, _, k = name.partition("@")
    if base not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)} (with @k where needed)")
    fn, needs_k = METRICS[base]
    if needs_k != bool(k):
        raise ValueError(f"metric {name!r}: {base} {'needs' if needs_k else 'takes no'} @k")
    if needs_k and (not k.isdigit() or int(k) < 1):
        raise ValueError(f"metric {name!r}: k must be a positive integer")
    return fn, int(k) if k else None


def compute_metrics(names: list[str], ranks: torch.Tensor, n_truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named metric, ``[B]`` float64 per user, from ``ranks`` ``[B, G]`` and ``n_truth`` ``[B]``."""
    out = {}
    for name in names:
        fn, k = parse_metric(name)
        out[name] = fn(ranks, n_truth, k).to(torch.float64)
    return out


def top_ranks(scores: torch.Tensor, truth: torch.Tensor, truth_mask: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`full_ranks` for metrics at ``k``: the same ranks where they are at most ``k``,
    ``k + 1`` for the other real items, 0 where padded. Costs a top-``k``, not a sort: only
    items scoring at least the ``k``-th score are ranked exactly (same tie rule)."""
    k = min(k, scores.shape[1])
    kth = torch.topk(scores, k, dim=1).values[:, -1:]  # [B, 1]
    s = scores.gather(1, truth)  # [B, G]
    ranks = torch.where(truth_mask, k + 1, 0)
    rows, cols = torch.nonzero(truth_mask & (s >= kth), as_tuple=True)
    if len(rows):
        row_scores, own = scores[rows], s[rows, cols][:, None]  # [E, N], [E, 1]
        items = torch.arange(scores.shape[1], device=scores.device)[None, :]
        ahead = (row_scores > own) | ((row_scores == own) & (items < truth[rows, cols][:, None]))
        ranks[rows, cols] = torch.clamp(ahead.sum(1) + 1, max=k + 1)
    return ranks
