"""Full-ranking evaluation of cold-start users, chunk by chunk.

A *scorer* maps a chunk of users to scores over every target item (``[chunk, n_target]``).
The evaluator asks for one chunk at a time and keeps only the ranks of each user's
ground-truth items, so memory is bounded by the chunk size, not by the number of users,
and the results do not depend on the chunk size.

Rules (the same for every method):
- Ranking is over all target items; ties are ordered by item index (see
  :mod:`multimodal_interest.metrics`).
- Items the user already has on the target in ``task.train`` are removed from the ranking
  (scored -inf), except ground-truth items. Cold-start users have none, so this only
  matters for warm protocols.
- Sampled metrics (optional, for comparison with papers): the user's last target item
  (latest timestamp in ``task.holdout``) against ``n_negatives`` target items drawn
  uniformly without replacement from the items not in the user's target set, seeded per
  user (``seed``, ``user_idx``), with the same tie rule.
- Cold-item slices (with :class:`ItemSlices`, under the ``--cold-items`` protocol): the same
  metrics on (b) ``cold``: the held-out items among the cold items, ranked over the whole
  catalog; (c) ``warm``: the held-out items never made cold, ranked over the whole catalog;
  (d) ``cold-candidates``: the ranking restricted to the cold items, truth = held-out items
  among them (the pure content test). Each slice keeps the users with at least one
  ground-truth item in it; (a), the main result, is every held-out item.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.metrics import compute_metrics, full_ranks, ranks_among
from multimodal_interest.stats import BUCKET_EDGES, Interval, bootstrap, by_bucket, paired_difference
from multimodal_interest.store import atomic_write_bytes

Scorer = Callable[[np.ndarray], torch.Tensor]  # users [B] int64 -> scores [B, n_target]

# scores per chunk: chunk_size defaults to CHUNK_SCORES // n_target users (about 100 MB peak)
CHUNK_SCORES = 1 << 22
# the papers' sampled protocol (CDRIB, DisenCDR): the true item among 999 sampled negatives
SAMPLED_METRICS = ("sampled_hit@1", "sampled_hit@5", "sampled_hit@10", "sampled_ndcg@5",
                   "sampled_ndcg@10", "sampled_mrr")


@dataclass
class EvalResult:
    """Per-user metric values of one method on one set of users."""

    task: str  # "dataset/split source->target"
    users: np.ndarray  # [U] int64 user_idx
    values: dict[str, np.ndarray]  # metric -> [U] float64
    history_len: np.ndarray  # [U] int64 number of source interactions
    seconds: float = 0.0  # wall time of the evaluation (scoring included)
    slices: dict[str, EvalResult] = field(default_factory=dict)  # SLICES name -> its users' values (none: left out)

    def summary(self, seed: int = 0) -> dict[str, Interval]:
        """metric -> mean with its 95% bootstrap interval over users."""
        return {m: bootstrap(v, seed=seed) for m, v in self.values.items()}

    def buckets(self, metric: str, edges: tuple[int, ...] = BUCKET_EDGES) -> dict[str, Interval | None]:
        """Mean of ``metric`` per source history length bucket."""
        return by_bucket(self.values[metric], self.history_len, edges)

    def to_json(self, path: str | Path) -> None:
        """Write the summary and the per-user values, each slice's too (atomically)."""
        atomic_write_bytes(Path(path), json.dumps(self._doc(), indent=1).encode())

    def _doc(self) -> dict:
        doc = {"task": self.task, "seconds": self.seconds,
               "summary": {m: vars(i) for m, i in self.summary().items()},
               "users": self.users.tolist(), "history_len": self.history_len.tolist(),
               "values": {m: v.tolist() for m, v in self.values.items()}}
        if self.slices:
            doc["slices"] = {name: r._doc() for name, r in self.slices.items()}
        return doc

    @classmethod
    def from_json(cls, path: str | Path) -> EvalResult:
        try:
            return cls._from_doc(json.loads(Path(path).read_text()))
        except KeyError as e:
            raise ValueError(f"{path}: not an evaluation result (missing field {e})") from None

    @classmethod
    def _from_doc(cls, doc: dict) -> EvalResult:
        return cls(doc["task"], np.asarray(doc["users"], dtype=np.int64),
                   {m: np.asarray(v, dtype=np.float64) for m, v in doc["values"].items()},
                   np.asarray(doc["history_len"], dtype=np.int64), float(doc["seconds"]),
                   {name: cls._from_doc(d) for name, d in doc.get("slices", {}).items()})


# cold-item slices: name -> what it measures (the main result is (a), every held-out item)
SLICES = {"cold": "(b) cold held-out items, ranked over the whole catalog",
          "warm": "(c) warm held-out items (never made cold), ranked over the whole catalog",
          "cold-candidates": "(d) cold held-out items ranked among the cold items only (the pure content test)"}


@dataclass(frozen=True)
class ItemSlices:
    """Which items the cold-item slices (:data:`SLICES`) look at, for one set of users.

    ``cold``: ``[C]`` int64 the cold items of the users evaluated (the test cold items for
    test users); ``made_cold``: ``[C']`` every item made cold, valid and test (warm items are
    the others).
    """

    cold: np.ndarray
    made_cold: np.ndarray

    @classmethod
    def for_test(cls, task: ColdStartTask) -> ItemSlices | None:
        """The slices of ``task``'s test users (None without the cold-item protocol)."""
        if task.test_cold_items is None:
            return None
        return cls(np.asarray(task.test_cold_items, dtype=np.int64), task.cold_items)


def _csr(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user arrays as (flat values, offsets [U + 1])."""
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(g) for g in groups])
    flat = np.concatenate(groups) if groups else np.empty(0, dtype=np.int64)
    return flat.astype(np.int64), offsets


def _pad(flat: np.ndarray, offsets: np.ndarray, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``lo:hi`` of a CSR array as ``[rows, width]`` int64 (0-padded) and a mask."""
    n = np.diff(offsets[lo:hi + 1])
    width = max(int(n.max()) if len(n) else 0, 1)
    col = np.arange(width)
    mask = col[None, :] < n[:, None]
    idx = np.where(mask, offsets[lo:hi, None] + col[None, :], 0)
    values = np.where(mask, flat[idx] if len(flat) else 0, 0)
    return torch.from_numpy(values), torch.from_numpy(mask)


def seen_on_target(task: ColdStartTask, users: np.ndarray) -> list[np.ndarray]:
    """Each user's target items in ``task.train`` that are not ground truth (to exclude)."""
    empty = np.empty(0, dtype=np.int64)
    rows = task.train[(task.train["platform"] == task.target) & task.train["user_idx"].isin(users)]
    if rows.empty:  # cold-start users
        return [empty] * len(users)
    truth = task.holdout[(task.holdout["platform"] == task.target) & task.holdout["user_idx"].isin(users)]
    rows = rows[["user_idx", "item_idx"]].merge(truth[["user_idx", "item_idx"]].drop_duplicates(),
                                                how="left", indicator=True)
    rows = rows[rows["_merge"] == "left_only"].drop_duplicates()
    grouped = {int(u): g["item_idx"].to_numpy(np.int64) for u, g in rows.groupby("user_idx")}
    return [grouped.get(int(u), empty) for u in users]


def last_target_items(task: ColdStartTask, users: np.ndarray) -> np.ndarray:
    """``[U]`` each user's most recent hidden target item (latest timestamp, then last row)."""
    rows = task.holdout[task.holdout["platform"] == task.target]
    last = rows.iloc[np.lexsort((np.arange(len(rows)), rows["timestamp"].to_numpy()))]
    last = last.groupby("user_idx")["item_idx"].last()
    missing = np.setdiff1d(users, last.index.to_numpy())
    if len(missing):
        raise ValueError(f"{len(missing)} users have no hidden target items (first: {missing[:5].tolist()})")
    return np.array(last.loc[users].to_numpy(np.int64))


def sample_negatives(task: ColdStartTask, users: np.ndarray, n: int = 999, seed: int = 0) -> np.ndarray:
    """``[U, n]`` target items outside each user's target set (hidden + training), seeded per user."""
    n_items = task.n_items[task.target]
    known = [np.union1d(t, s) for t, s in zip(task.target_truth(users), seen_on_target(task, users))]
    out = np.empty((len(users), n), dtype=np.int64)
    for row, (user, mine) in enumerate(zip(users, known)):
        pool = np.setdiff1d(np.arange(n_items), mine, assume_unique=True)
        if len(pool) < n:
            raise ValueError(f"user {user}: only {len(pool)} target items outside their set, "
                             f"fewer than {n} negatives")
        out[row] = np.random.default_rng([seed, int(user)]).choice(pool, n, replace=False)
    return out


def _history_lengths(task: ColdStartTask, users: np.ndarray) -> np.ndarray:
    src = task.train.loc[task.train["platform"] == task.source, "user_idx"]
    return src.value_counts().reindex(users, fill_value=0).to_numpy(np.int64)


def _check_scores(scores: object, rows: int, n_items: int, lo: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (rows, n_items):
        shape = tuple(scores.shape) if hasattr(scores, "shape") else type(scores).__name__
        raise ValueError(f"scorer returned {shape} for users {lo}..{lo + rows - 1}; "
                         f"expected a tensor of shape ({rows}, {n_items}) (users x target items)")
    if torch.isnan(scores).any():
        raise ValueError(f"scorer returned NaN scores for users {lo}..{lo + rows - 1}")
    return scores if scores.is_floating_point() else scores.float()


def evaluate(scorer: Scorer, task: ColdStartTask, users: np.ndarray, ks: tuple[int, ...] = (10, 50),
             chunk_size: int | None = None, sampled: bool = False, n_negatives: int = 999,
             seed: int = 0, slices: ItemSlices | None = None) -> EvalResult:
    """Rank all target items for ``users`` and compute Recall@k, NDCG@k (each k) and MRR.

    ``scorer(users_chunk)`` returns ``[len(users_chunk), task.n_items[task.target]]`` scores
    (any device; ranking happens there). With ``sampled``, also :data:`SAMPLED_METRICS`
    (HR@1/5/10, NDCG@5/10 and MRR of the last target item among ``n_negatives``; see the
    module docstring). With ``slices``, also the cold-item slices (:data:`SLICES`) in
    ``result.slices``, from the same scores.
    """
    users = np.asarray(users, dtype=np.int64)
    if len(np.unique(users)) != len(users):
        raise ValueError("users must be unique")
    n_items = task.n_items[task.target]
    truth, truth_off = _csr(task.target_truth(users))
    empty = np.flatnonzero(np.diff(truth_off) == 0)
    if len(empty):
        raise ValueError(f"{len(empty)} users have no hidden target items to rank "
                         f"(first: {users[empty[:5]].tolist()}); evaluate only users with ground truth")
    seen, seen_off = _csr(seen_on_target(task, users))
    if sampled:
        pos = torch.from_numpy(last_target_items(task, users))
        neg = torch.from_numpy(sample_negatives(task, users, n_negatives, seed))
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")] + ["mrr"]
    chunk_size = chunk_size or max(1, CHUNK_SCORES // n_items)
    parts: dict[str, list[torch.Tensor]] = {}
    sliced: dict[str, tuple[list[np.ndarray], dict[str, list[torch.Tensor]]]] = {s: ([], {}) for s in SLICES}
    start = time.perf_counter()
    for lo in range(0, len(users), chunk_size):
        hi = min(lo + chunk_size, len(users))
        scores = _check_scores(scorer(users[lo:hi]), hi - lo, n_items, lo)
        scores = _exclude(scores, *_pad(seen, seen_off, lo, hi))
        gt, gt_mask = _pad(truth, truth_off, lo, hi)
        ranks = full_ranks(scores, gt.to(scores.device), gt_mask.to(scores.device)).cpu()
        values = compute_metrics(names, ranks, gt_mask.sum(1))
        if sampled:
            values |= _sampled_metrics(scores, pos[lo:hi], neg[lo:hi])
        for m, v in values.items():
            parts.setdefault(m, []).append(v)
        if slices is not None:
            for name, (rows, ranks_in_slice, n_truth) in _slice_ranks(scores, ranks, gt, gt_mask, slices).items():
                sliced[name][0].append(np.arange(lo, hi)[rows.numpy()])
                for m, v in compute_metrics(names, ranks_in_slice, n_truth).items():
                    sliced[name][1].setdefault(m, []).append(v)
    seconds = time.perf_counter() - start
    label = f"{task.dataset}/{task.split} {task.source}->{task.target}"
    lengths = _history_lengths(task, users)
    result = EvalResult(label, users, {m: torch.cat(v).numpy() for m, v in parts.items()}, lengths, seconds)
    if slices is not None:
        for name, (rows, values) in sliced.items():
            at = np.concatenate(rows)
            if not len(at):
                continue  # no user has ground truth in the slice
            result.slices[name] = EvalResult(f"{label} [{name}]", users[at],
                                             {m: torch.cat(v).numpy() for m, v in values.items()},
                                             lengths[at], seconds)
    return result


def _slice_ranks(scores: torch.Tensor, ranks: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor,
                 slices: ItemSlices) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per slice of :data:`SLICES`: (rows with ground truth in it ``[B]`` bool, their ranks
    ``[B', G]`` (0 outside the slice), their number of ground-truth items ``[B']``).

    ``scores`` ``[B, N]`` (seen items already excluded); ``ranks``, ``gt``, ``gt_mask``
    ``[B, G]``: the full ranking's ranks of the ground-truth items ``gt``.
    """
    cold = torch.from_numpy(np.isin(gt.numpy(), slices.cold)) & gt_mask
    warm = torch.from_numpy(~np.isin(gt.numpy(), slices.made_cold)) & gt_mask
    out = {}
    for name, mask in (("cold", cold), ("warm", warm)):
        rows = mask.any(1)
        out[name] = (rows, ranks.masked_fill(~mask, 0)[rows], mask.sum(1)[rows])
    # (d): rank among the cold items only, in their item order (the same tie rule)
    candidates = torch.from_numpy(slices.cold).to(scores.device)
    position = torch.zeros(scores.shape[1], dtype=torch.int64)
    position[torch.from_numpy(slices.cold)] = torch.arange(len(slices.cold))
    rows = cold.any(1)
    among = full_ranks(scores[rows.to(scores.device)][:, candidates],
                       position[gt[rows]].to(scores.device), cold[rows].to(scores.device)).cpu()
    out["cold-candidates"] = (rows, among, cold[rows].sum(1))
    return out


def _exclude(scores: torch.Tensor, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``scores`` ``[B, N]`` with ``items`` ``[B, M]`` (where ``mask``) set to -inf."""
    if not mask.any():
        return scores
    rows = torch.arange(len(items))[:, None].expand_as(items)
    scores = scores.clone()  # the scorer's tensor may be shared or an expanded view
    scores[rows[mask].to(scores.device), items[mask].to(scores.device)] = -torch.inf
    return scores


def _sampled_metrics(scores: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> dict[str, torch.Tensor]:
    """:data:`SAMPLED_METRICS` of ``pos`` ``[B]`` among ``neg`` ``[B, M]``."""
    p, n = pos.to(scores.device), neg.to(scores.device)
    ranks = ranks_among(scores.gather(1, p[:, None])[:, 0], p, scores.gather(1, n), n).cpu()
    one = torch.ones(len(pos), dtype=torch.int64)
    names = [m.removeprefix("sampled_") for m in SAMPLED_METRICS]
    return {f"sampled_{m}": v for m, v in compute_metrics(names, ranks, one).items()}


def summarize(results: list[EvalResult], seed: int = 0) -> dict[str, Interval]:
    """metric -> mean over several splits (seeds) of one method, with a two-level bootstrap
    interval (splits, then users within each split)."""
    return {m: bootstrap([r.values[m] for r in results], seed=seed) for m in results[0].values}


@dataclass
class Table:
    """A results table as data: ``header`` and ``rows`` of formatted cells (one row a method)."""

    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows])


def compare(results: dict[str, EvalResult], metrics: list[str] | None = None,
            with_ci: tuple[str, ...] = ("ndcg@10",), reference: str | None = None) -> str:
    """:func:`compare_table` as Markdown."""
    return compare_table(results, metrics, with_ci, reference).markdown()


def compare_table(results: dict[str, EvalResult], metrics: list[str] | None = None,
                  with_ci: tuple[str, ...] = ("ndcg@10",), reference: str | None = None) -> Table:
    """One row per method: means, with 95% intervals for ``with_ci``.

    With ``reference`` (a method name), one more column: the paired bootstrap difference of
    the first ``with_ci`` metric against that method, on the same users.
    """
    first = next(iter(results.values()))
    metrics = metrics or list(first.values)
    header = ["method"] + metrics
    if reference is not None:
        if reference not in results:
            raise ValueError(f"reference {reference!r} is not among the results {sorted(results)}")
        key = with_ci[0]
        header.append(f"Δ {key} vs {reference} [95%]")
    rows = []
    for name, res in results.items():
        row = [name]
        for m in metrics:
            if m not in res.values:
                row.append("-")
            elif m in with_ci:
                row.append(bootstrap(res.values[m]).format())
            else:
                row.append(f"{res.values[m].mean():.4f}")
        if reference is not None:
            ref = results[reference]
            if not np.array_equal(ref.users, res.users):
                raise ValueError(f"{name} and {reference} were evaluated on different users")
            row.append(paired_difference(res.values[key], ref.values[key]).format())
        rows.append(row)
    return Table(header, rows)


def bucket_table(results: dict[str, EvalResult], metric: str = "ndcg@10",
                 edges: tuple[int, ...] = BUCKET_EDGES) -> Table:
    """``metric`` per source history length bucket, one row per method (users per bucket in
    the header)."""
    first = next(iter(results.values()))
    counts = pd.Series(first.buckets(metric, edges)).map(lambda i: 0 if i is None else i.n)
    header = ["method"] + [f"{label} ({n} users)" for label, n in counts.items()]
    rows = [[name] + ["-" if i is None else i.format() for i in res.buckets(metric, edges).values()]
            for name, res in results.items()]
    return Table(header, rows)
