"""EASE-style closed-form ridge regressions from a user's source items to target items.

Two registered methods, both fitted on the overlapping training users (those with items on
both platforms), with ``X`` ``[U, n_src]`` and ``Y`` ``[U, n_tgt]`` their binary rows:

``ease`` -- the cross block: ``W = argmin ||Y - X W||^2 + lam ||W||^2``, so a cold user
with source row ``x`` gets ``x W``. Closed form in whichever space is smaller:

- primal ``W = (X^T X + lam I)^-1 X^T Y`` (a ``[n_src, n_src]`` Gram), or
- dual ``x W = (x X^T) (X X^T + lam I)^-1 Y`` (a ``[U, U]`` Gram; push-through identity).

On Amazon Art/Office the dual is 7,988^2 where the primal would be 18,639^2 (2.8 GB in
float64): the dual is used there.

``ease-merged`` -- Steck's EASE (WWW 2019) on the merged catalog: one item space of the
source items then the target items, ``Z = [X | Y]`` ``[U, n_src + n_tgt]``, ``B = argmin
||Z - Z B||^2 + lam ||B||^2`` subject to ``diag(B) = 0``, closed form ``B = I - P /
diag(P)`` (column-wise) with ``P = (Z^T Z + lam I)^-1``. A cold user's row is ``z = [x,
0]``, so their target scores are ``x B[src, tgt]``: only the cross block of ``B`` is used.
It does **not** reduce to ``ease``, for two reasons:

1. column j of ``B`` regresses target item j on *every other* item, the other target items
   included, so its source coefficients are partial effects given target co-occurrence
   (an omitted-variable difference: ``ease`` regresses on the source items alone). In the
   dual, the Gram is ``X X^T + Y Y^T`` instead of ``X X^T``;
2. the zero-diagonal constraint divides column j by ``lam P_jj``, a per-item rescaling
   that changes the ranking across items (``ease`` has no such factor).

The cold user's zero target row makes the *input* reduce to the cross block, not the
*fit*. In the dual (Woodbury): ``x B[src, j] = [(x X^T) C Z]_j / (1 - Z_j^T C Z_j)`` with
``C = (Z Z^T + lam I)^-1``.

Within a platform (source = target) the plain ridge ``X -> X`` would learn the identity,
so both methods are Steck's EASE on that platform (zero diagonal), and they coincide.

Scores are the regression output plus a popularity tie-break (:data:`.itemknn.TIE_BREAK`):
a user none of whose source items was seen in training gets the popularity order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.itemknn import (check_options, popularity_prior, source_rows,
                                                   user_item_matrix)
from multimodal_interest.baselines.space import LogUniform

SOLVERS = ("auto", "primal", "dual")
CHUNK = 2048  # rows per block when a [rows, U] dense block is formed


def spd_inverse(gram: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite ``[n, n]`` float64 matrix (LAPACK potrf/potri).

    Overwrites ``gram``. Raises ``ValueError`` when it is not positive definite.
    """
    if gram.shape[0] == 0:  # no user (no shared users at all): nothing to invert, no weights
        return gram
    c, info = lapack.dpotrf(gram, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise ValueError(f"Gram matrix is not positive definite (potrf info {info}); raise lam")
    inv, info = lapack.dpotri(c, lower=1, overwrite_c=1)
    if info != 0:
        raise ValueError(f"inverting the Gram matrix failed (potri info {info})")
    inv = np.tril(inv)
    inv += np.tril(inv, -1).T  # potri fills the lower triangle only
    return inv


@dataclass
class EASEConfig:
    lam: float = 100.0  # L2 penalty (> 0), tuned on valid
    solver: str = "auto"  # "primal", "dual" or "auto": whichever Gram matrix is smaller


@register_baseline
class EASE(Baseline):
    """Ridge from source items to target items, closed form (see the module docstring).

    The grid spans lam over three decades (10, 100, 1000, 10000): item degrees go from a
    handful (Amazon) to thousands (MovieLens), and the best lam grows with them. On Amazon
    Art->Office valid NDCG@10 rises from 0.0326 (lam 1) to 0.0565 (lam 1000) and stays
    there: with so few users per item, heavy shrinkage towards co-occurrence counts wins.
    Beyond the grid (a larger budget): lam log-uniform in [1, 10^5].
    """

    name = "ease"
    Config = EASEConfig
    grid = [{"lam": lam} for lam in (10.0, 100.0, 1000.0, 10000.0)]
    space = {"lam": LogUniform(1.0, 1e5)}
    merged = False  # True: EASE on the merged catalog (zero diagonal)

    def __init__(self, config: object | None = None, **options: object) -> None:
        super().__init__(config, **options)
        c = self.config
        if c.lam is None or not np.isfinite(c.lam) or c.lam <= 0:
            raise ValueError(f"{self.name}: lam must be a finite number > 0; got {c.lam}")
        if c.solver not in SOLVERS:
            raise ValueError(f"{self.name}: solver must be one of {SOLVERS}; got {c.solver!r}")

    def _fit(self, task, item_features):
        lam = float(self.config.lam)
        within = task.source == task.target
        self.zero_diag = self.merged or within
        both = task.overlap_users()
        x = user_item_matrix(task, task.source, both)  # [U, n_src]
        y = x if within else user_item_matrix(task, task.target, both)  # [U, n_tgt]
        z = sp.hstack([x, y], format="csr") if self.zero_diag and not within else x  # [U, n_z]
        n_src, n_tgt = x.shape[1], y.shape[1]
        solver = self.config.solver
        if solver == "auto":
            solver = "primal" if z.shape[1] <= len(both) else "dual"
        self.solver = solver
        self.prior = popularity_prior(task)
        if solver == "primal":
            gram = (z.T @ z).toarray().astype(np.float64)
            gram[np.diag_indices_from(gram)] += lam
            if self.zero_diag:
                p = spd_inverse(gram)  # [n_z, n_z]
                b = -p / np.diag(p)[None, :]
                b[np.diag_indices_from(b)] = 0.0
                w = b[:n_src, z.shape[1] - n_tgt:]  # the cross block (all of B within a platform)
            else:
                c, info = lapack.dpotrf(gram, lower=1, overwrite_a=1)
                if info != 0:
                    raise ValueError(f"{self.name}: Gram matrix is not positive definite; raise lam")
                w, info = lapack.dpotrs(c, (x.T @ y).toarray(), lower=1)
            self.w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))  # [n_src, n_tgt]
            return
        gram = (z @ z.T).toarray().astype(np.float64)  # [U, U]
        gram[np.diag_indices_from(gram)] += lam
        c = spd_inverse(gram)
        self.x = x.tocsr()  # [U, n_src]
        self.yt = y.T.tocsr()  # [n_tgt, U]
        self.c = torch.from_numpy(c)  # [U, U] float64: float32 loses ~1e-4 of the merged scores
        self.scale = None
        if self.zero_diag:
            # 1 - y_j^T C y_j = lam * P_jj for each target column j, in row blocks of Y^T
            quad = np.concatenate([np.asarray(self.yt[lo:lo + CHUNK].multiply(self.yt[lo:lo + CHUNK] @ c).sum(1)).ravel()
                                   for lo in range(0, n_tgt, CHUNK)])
            self.scale = torch.from_numpy(1.0 / np.maximum(1.0 - quad, 1e-12))  # [n_tgt] = 1 / (lam P_jj)

    def _score(self, users):
        rows = source_rows(self.task, users)  # [B, n_src]
        if self.solver == "primal":
            out = torch.from_numpy(rows.toarray().astype(np.float32)) @ self.w
            return out.double() + self.prior
        k = torch.from_numpy((rows @ self.x.T).toarray().astype(np.float64))  # [B, U]
        m = (self.yt @ (k @ self.c).numpy().T).T  # [B, n_tgt]
        out = torch.from_numpy(np.ascontiguousarray(m))
        if self.scale is not None:
            out = out * self.scale
            if self.task.source == self.task.target:  # z_j - (z_j - m_j) / (lam P_jj)
                own = torch.from_numpy(rows.toarray())
                out = out + own * (1.0 - self.scale)
        return out + self.prior


@register_baseline
class EASEMerged(EASE):
    """Steck's EASE on the merged source + target catalog, cold users' target scores from
    its cross block (see the module docstring for why this differs from ``ease``)."""

    name = "ease-merged"
    merged = True
