"""iALS (Hu, Koren & Volinsky, ICDM 2008) on the merged catalog, with fold-in of cold users.

One implicit-feedback factorisation of the user x (source items + target items) matrix of
``task.train`` (every user's training rows: the overlapping users tie the two item spaces
together), fitted by the ``implicit`` package's alternating least squares. An observed
(user, item) pair has preference 1 and confidence ``alpha`` (implicit's convention, the
interaction counted once), every other pair preference 0 and confidence 1.

A cold user is folded in: with the item factors ``Y`` fixed, their factor is the
regularised weighted least-squares solve over their *source* items alone,
``x_u = (Y^T C_u Y + reg * I)^{-1} Y^T C_u p_u`` (implicit's ``recalculate_user``), and
their score of target item j is ``<x_u, y_j>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from multimodal_interest.baselines.base import MAX_GRID, Baseline, register_baseline
from multimodal_interest.baselines.itemknn import TIE_BREAK
from multimodal_interest.baselines.popularity import target_popularity
from multimodal_interest.baselines.space import LogUniform, Uniform
from multimodal_interest.data.task import ColdStartTask


@dataclass
class IALSConfig:
    factors: int = 32
    regularization: float = 0.1  # L2 weight ``reg`` of every user and item factor
    alpha: float = 10.0  # confidence of an observed pair (unobserved: 1)
    iterations: int = 15  # ALS sweeps (users, then items)
    seed: int = 0
    method: ClassVar[str] = "ials"  # the name errors give (a method built on iALS names itself)

    def __post_init__(self) -> None:
        if not (isinstance(self.factors, int) and self.factors >= 1):
            raise ValueError(f"{self.method}: factors must be a positive integer, got {self.factors!r}")
        if not (isinstance(self.iterations, int) and self.iterations >= 1):
            raise ValueError(f"{self.method}: iterations must be a positive integer, got {self.iterations!r}")
        if not self.regularization > 0:
            raise ValueError(f"{self.method}: regularization must be > 0, got {self.regularization!r}")
        if not self.alpha > 0:
            raise ValueError(f"{self.method}: alpha must be > 0, got {self.alpha!r}")


# tried on the validation users in this order, as many as the tuning budget allows (on
# Art/Office validation users the number of factors mattered most, fewer being better)
_CANDIDATES = [
    {"factors": 32, "regularization": 0.1, "alpha": 10.0},
    {"factors": 16, "regularization": 0.1, "alpha": 10.0},
    {"factors": 64, "regularization": 0.1, "alpha": 10.0},
    {"factors": 32, "regularization": 1.0, "alpha": 10.0},
    {"factors": 32, "regularization": 0.1, "alpha": 5.0},
    {"factors": 32, "regularization": 0.1, "alpha": 10.0, "iterations": 30},
]


def merged_matrix(task: ColdStartTask, users: np.ndarray | None = None,
                  platforms: list[str] | None = None) -> tuple[sp.csr_matrix, dict[str, int]]:
    """``[len(users), sum of n_items]`` binary csr of ``task.train`` rows on ``platforms``
    (default: the task's), columns = each platform's items after the previous ones', and
    each platform's column offset. ``users`` (sorted, unique) default: all ``n_users``."""
    platforms = task.platforms if platforms is None else platforms
    offsets, width = {}, 0
    for p in task.platforms:
        offsets[p], width = width, width + task.n_items[p]
    rows = task.train.loc[task.train["platform"].isin(platforms), ["user_idx", "platform", "item_idx"]]
    u = rows["user_idx"].to_numpy(np.int64)
    if users is None:
        r, n = u, task.n_users
    else:
        keep = np.isin(u, users)
        rows, r, n = rows[keep], np.searchsorted(users, u[keep]), len(users)
    col = rows["item_idx"].to_numpy(np.int64) + rows["platform"].map(offsets).to_numpy(np.int64)
    m = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, col)), shape=(n, width))
    m.data[:] = 1.0  # duplicates count once
    return m, offsets


@register_baseline
class IALS(Baseline):
    """iALS on source + target items; cold users folded in from their source items.

    Tuned over the first :data:`MAX_GRID` of ``_CANDIDATES``: 32, 16 and 64 factors at
    regularization 0.1 and alpha 10, then 32 factors at regularization 1.0 (15 sweeps).
    Beyond the grid (a larger budget): factors a log-uniform integer in [8, 256],
    regularization log-uniform in [10^-3, 10], alpha log-uniform in [1, 100], sweeps an
    integer in [5, 30].
    """

    name = "ials"
    Config = IALSConfig
    grid = _CANDIDATES[:MAX_GRID]
    space = {"factors": LogUniform(8, 256, integer=True), "regularization": LogUniform(1e-3, 10.0),
             "alpha": LogUniform(1.0, 100.0), "iterations": Uniform(5, 30, integer=True)}

    def _fit(self, task, item_features):
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        matrix, offsets = merged_matrix(task)
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads slow it
            self.als = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization,
                                               alpha=cfg.alpha, iterations=cfg.iterations,
                                               random_state=cfg.seed)
            self.als.fit(matrix, show_progress=False)
        lo = offsets[task.target]
        self.target_factors = torch.from_numpy(
            np.ascontiguousarray(self.als.item_factors[lo:lo + task.n_items[task.target]])).double()
        pop = target_popularity(task).double()
        self.prior = TIE_BREAK * pop / pop.max().clamp(min=1)  # orders users without source items

    def fold_in(self, users: np.ndarray) -> np.ndarray:
        """``[len(users), factors]`` float32: each user's factor solved from their source
        training rows alone against the fixed item factors."""
        uniq, back = np.unique(users, return_inverse=True)
        rows, _ = merged_matrix(self.task, uniq, [self.task.source])
        with threadpool_limits(1, "blas"):
            x = self.als.recalculate_user(np.arange(len(uniq)), rows)
        return np.asarray(x).reshape(len(uniq), -1)[back]

    def _score(self, users):
        x = torch.from_numpy(self.fold_in(users)).double()
        return x @ self.target_factors.T + self.prior
