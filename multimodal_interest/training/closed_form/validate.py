"""Scoring a setting ``(lam, weights)`` without a refit: validation users and fit users left out.

One Cholesky factor of ``K + lam I`` ``[n, n]`` gives both. A validation user with kernel row
``k_v [n]`` scores ``k_v G Y`` (``G = (K + lam I)^-1``). For ridge, the scores of a group of
fit rows ``I`` fitted without them are ``Y_I - (G_II)^-1 (G Y)_I``, so leaving a user out
costs one ``[s, s]`` solve, not a refit; only the rows ``G[I]`` of a seeded sample of fit
users (:data:`LEFT_OUT_ROWS` rows) are computed, one triangular solve for them and the
validation users together. Within a platform a fit row's items to recall are those its
history left out (its history's items are not ranked, as for a validation user); across
platforms, all of its target items. Every NDCG@10 here is :func:`multimodal_interest.metrics.ndcg_at_k`
of :func:`~multimodal_interest.metrics.top_ranks`: the evaluator's metric and tie rule.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.evaluate import CHUNK_SCORES
from multimodal_interest.metrics import ndcg_at_k, top_ranks
from multimodal_interest.training.closed_form.kernels import combine
from multimodal_interest.training.closed_form.rows import FitRows, whole_users

LEFT_OUT_ROWS = 2000  # fit rows scored left out per setting (whole users, a seeded sample)


def ndcg10(scores: torch.Tensor, truth: sp.csr_matrix, seen: sp.csr_matrix | None = None) -> np.ndarray:
    """``[R]`` NDCG@10 of each row of ``scores`` ``[R, N]`` against the items of ``truth``
    ``[R, N]``, the items of ``seen`` not ranked (set to -inf in ``scores``); NaN for a row
    with no truth."""
    if seen is not None and seen.nnz:
        coo = seen.tocoo()
        scores[torch.from_numpy(coo.row).long(), torch.from_numpy(coo.col).long()] = -torch.inf
    truth = sp.csr_matrix(truth)
    n = np.diff(truth.indptr)
    width = max(int(n.max()) if len(n) else 0, 1)
    col = np.arange(width)
    mask = col[None, :] < n[:, None]  # [R, G]
    idx = np.where(mask, truth.indptr[:-1, None] + col[None, :], 0)
    items = torch.from_numpy(np.where(mask, truth.indices[idx] if truth.nnz else 0, 0)).long()
    mask = torch.from_numpy(mask)
    step = max(1, CHUNK_SCORES // max(scores.shape[1], 1))  # top_ranks copies a row per item in the top 10
    ranks = torch.cat([top_ranks(scores[lo:lo + step], items[lo:lo + step], mask[lo:lo + step], 10)
                       for lo in range(0, len(n), step)]) if len(n) else torch.zeros(0, width, dtype=torch.long)
    out = ndcg_at_k(ranks, torch.from_numpy(n).clamp(min=1), 10).numpy()
    return np.where(n > 0, out, np.nan)


def csr_of(groups: list[np.ndarray], n_cols: int) -> sp.csr_matrix:
    """``[len(groups), n_cols]`` 0/1 with each row's items."""
    rows = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    cols = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(groups), n_cols))


class Validator:
    """``validator(lam, weights) -> (validation users' NDCG@10 [V], left-out fit users' [U])``.

    ``kff`` ``{b: [n, n]}`` and ``kvf`` ``{b: [V, n]}`` block kernels; ``valid_truth`` /
    ``valid_seen`` ``[V, N_t]`` the validation users' hidden items and the items not ranked
    for them (None: none)."""

    def __init__(self, kff: dict, kvf: dict, fit: FitRows, within: bool, valid_truth: sp.csr_matrix,
                 valid_seen: sp.csr_matrix | None, seed: int, left_out_rows: int = LEFT_OUT_ROWS):
        self.kff, self.kvf, self.valid_truth, self.valid_seen = kff, kvf, valid_truth, valid_seen
        y = sp.csr_matrix(fit.targets, dtype=np.float32)
        self.yt = sp.csr_matrix(y.T)  # [N_t, n]
        seen = sp.csr_matrix(fit.bags.sign()) if within else None
        held = sp.csr_matrix(y - y.multiply(seen)) if within else y
        held.eliminate_zeros()
        # a seeded sample of the fit users with something to recall, whole, at most left_out_rows rows
        recall = fit.users[np.diff(held.indptr) > 0]
        take = recall[whole_users(recall, left_out_rows, seed)]
        rows = np.flatnonzero(np.isin(fit.users, take))  # [P] the sampled users' rows
        _, group, sizes = np.unique(fit.users[rows], return_inverse=True, return_counts=True)
        pos = np.argsort(group, kind="stable")
        self.groups = np.full((len(sizes), sizes.max() if len(sizes) else 1), -1)  # [U, s] positions in rows
        self.groups[group[pos], np.arange(len(pos)) - np.repeat(np.cumsum(sizes) - sizes, sizes)] = pos
        self.rows, self.y_rows = rows, y[rows]
        self.held_rows = held[rows]
        self.seen_rows = seen[rows] if seen is not None else None

    def factor(self, lam: float, weights: dict[str, float]) -> torch.Tensor:
        """The Cholesky factor ``L [n, n]`` of ``K + lam I``."""
        k = combine(self.kff, weights)
        k[np.diag_indices_from(k)] += lam
        return torch.linalg.cholesky(torch.from_numpy(k))

    def __call__(self, lam: float, weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        chol = self.factor(lam, weights)
        n, v = chol.shape[0], self.valid_truth.shape[0]
        rhs = torch.zeros(n, v + len(self.rows))
        rhs[:, :v] = torch.from_numpy(np.ascontiguousarray(combine(self.kvf, weights).T))
        rhs[torch.from_numpy(self.rows), v + torch.arange(len(self.rows))] = 1.0
        x = torch.cholesky_solve(rhs, chol).numpy()  # [n, V + P]: G k_v^T and the rows G[rows]
        gy = np.ascontiguousarray((self.yt @ x[:, v:]).T)  # [P, N_t] (G Y)_rows
        g_rows = np.ascontiguousarray(x[self.rows, v:])  # [P, P] G_rows,rows
        return self.valid_ndcg10(x[:, :v]), self.left_out(gy, g_rows)

    def valid_ndcg10(self, gk: np.ndarray) -> np.ndarray:
        """``[V]`` the validation users' NDCG@10 from ``G k_v^T`` ``[n, V]``, scored
        :data:`~multimodal_interest.evaluate.CHUNK_SCORES` scores at a time (never ``[V, N_t]``)."""
        v, n_t = gk.shape[1], self.yt.shape[0]
        step = max(1, CHUNK_SCORES // max(n_t, 1))
        out = [ndcg10(torch.from_numpy(np.ascontiguousarray((self.yt @ gk[:, lo:lo + step]).T)),
                      self.valid_truth[lo:lo + step],
                      self.valid_seen[lo:lo + step] if self.valid_seen is not None else None)
               for lo in range(0, v, step)]
        return np.concatenate(out) if out else np.zeros(0)

    def left_out(self, gy: np.ndarray, g: np.ndarray) -> np.ndarray:
        """``[U]`` each sampled fit user's NDCG@10 (mean over their rows with items to recall),
        their rows left out of the fit; ``gy = (G Y)_rows`` ``[P, N_t]``, ``g = G_rows,rows``."""
        n_t, s = gy.shape[1], self.groups.shape[1]
        chunk = max(1, (1 << 23) // (s * n_t))
        out = []
        for lo in range(0, len(self.groups), chunk):
            idx = self.groups[lo:lo + chunk]  # [c, s]
            flat = np.maximum(idx, 0).reshape(-1)
            scores = self.left_out_scores(gy, g, idx).reshape(len(flat), n_t)
            seen = self.seen_rows[flat] if self.seen_rows is not None else None
            ndcg = ndcg10(scores, self.held_rows[flat], seen).reshape(idx.shape)
            ndcg[idx < 0] = np.nan
            out.append(np.nanmean(ndcg, 1))
        return np.concatenate(out) if out else np.zeros(0)

    def left_out_scores(self, gy: np.ndarray, g: np.ndarray, groups: np.ndarray) -> torch.Tensor:
        """``[c, s, N_t]`` the scores of each group's rows (``groups [c, s]``: positions in the
        sampled rows, -1 padded; padded rows' scores are meaningless) by the fit without them."""
        idx = torch.from_numpy(groups)
        real, safe = idx >= 0, idx.clamp(min=0)
        gt = torch.from_numpy(g)
        block = torch.where(real[:, :, None] & real[:, None, :], gt[safe[:, :, None], safe[:, None, :]],
                            torch.eye(idx.shape[1], dtype=gt.dtype))  # [c, s, s]: padded rows decoupled
        flat = safe.reshape(-1).numpy()
        y = torch.from_numpy(self.y_rows[flat].toarray()).to(gt.dtype).reshape(*idx.shape, -1)
        return y - torch.linalg.solve(block, torch.from_numpy(gy[flat]).to(gt.dtype).reshape(*idx.shape, -1))
