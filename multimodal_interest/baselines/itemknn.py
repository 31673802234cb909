"""Cross-platform item-to-item kNN, the tuned neighbourhood baseline of the literature.

Also the sparse helpers the other collaborative baselines share (:func:`user_item_matrix`,
:func:`source_rows`, :func:`top_k_per_row`, :func:`popularity_prior`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.popularity import target_popularity
from multimodal_interest.baselines.space import Choice, LogUniform, Uniform
from multimodal_interest.data.task import ColdStartTask

# weight of normalised popularity added to break ties, e.g. for users none of whose source
# items co-occur with any target item (scores are float64, so it only ever breaks ties
# between co-occurrence scores closer than this)
TIE_BREAK = 1e-9


def user_item_matrix(task: ColdStartTask, platform: str, users: np.ndarray) -> sp.csr_matrix:
    """``[len(users), n_items[platform]]`` binary: which items each user has in ``task.train``.

    ``users`` must be sorted and unique (see :func:`source_rows` for any order).
    """
    rows = task.train[(task.train["platform"] == platform) & task.train["user_idx"].isin(users)]
    r = np.searchsorted(users, rows["user_idx"].to_numpy(np.int64))
    m = sp.csr_matrix((np.ones(len(r)), (r, rows["item_idx"].to_numpy(np.int64))),
                      shape=(len(users), task.n_items[platform]))
    m.data[:] = 1.0  # duplicates count once
    return m


def source_rows(task: ColdStartTask, users: np.ndarray) -> sp.csr_matrix:
    """``[len(users), n_source]`` binary source histories of ``users`` (any order, repeats allowed)."""
    unique = np.unique(users)
    return user_item_matrix(task, task.source, unique)[np.searchsorted(unique, users)]


def top_k_per_row(m: sp.spmatrix, k: int | None) -> sp.csr_matrix:
    """``m`` (csr) keeping, in each row, its ``k`` largest entries (all when ``k`` is None).

    Ties at the k-th value are broken by the lower column index. Vectorised, no row loop.
    """
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    m.eliminate_zeros()
    if k is None or m.nnz == 0 or np.diff(m.indptr).max() <= k:
        return m
    row = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data, row))  # by row, then value descending
    rank = np.empty(m.nnz, dtype=np.int64)
    rank[order] = np.arange(m.nnz) - m.indptr[row[order]]
    keep = rank < k
    return sp.csr_matrix((m.data[keep], (row[keep], m.indices[keep])), shape=m.shape)


def popularity_prior(task: ColdStartTask) -> torch.Tensor:
    """``[n_target]`` float64 :data:`TIE_BREAK` times popularity / max popularity."""
    pop = target_popularity(task).double()
    return TIE_BREAK * pop / pop.max().clamp(min=1)


def check_options(name: str, **bounds: tuple[float | None, float, float | None]) -> None:
    """Raise ``ValueError`` naming an option whose value is outside ``(value, low, high)``."""
    for option, (value, low, high) in bounds.items():
        if value is None:
            continue
        if not np.isfinite(value) or value < low or (high is not None and value > high):
            where = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{name}: {option} must be {where}; got {value}")


@dataclass
class ItemKNNConfig:
    # sim(i, j) = (co(i, j) / (n_i ** source_exp * n_j ** target_exp + shrink)) ** power;
    # exponents (0.5, 0.5) are cosine, (1, 0) P(j | i), (0, 0) raw counts, (a, 1 - a)
    # the asymmetric cosine of Aiolli (2013)
    source_exp: float = 0.5
    target_exp: float = 0.0
    shrink: float = 0.0  # added to the normaliser: damps pairs of rarely seen items
    power: float = 1.0  # similarity exponent: > 1 sharpens towards the strongest pairs
    k: int | None = None  # source neighbours kept per target item (None: all)


@register_baseline
class ItemKNN(Baseline):
    """score(u, j) = sum over u's source items i among j's k neighbours of sim(i, j).

    Co-occurrence ``co(i, j)`` counts the overlapping training users who have source item i
    and target item j; ``n_i``, ``n_j`` count those users who have i, j. The normalisation
    (the two exponents), the shrinkage, the similarity exponent and the neighbourhood size
    (source items kept per target item, as in Sarwar et al. 2001 and Dacrema et al. 2019's
    ItemKNNCF) are the literature's knobs. Within a platform (source = target) an item is
    not its own neighbour.

    The grid is four well-spread points of that space (the budget, see :mod:`.base`): raw
    co-occurrence counts; source-normalised counts with shrinkage; a sharpened asymmetric
    cosine with shrinkage; and the symmetric cosine over 200 neighbours per target item
    (the classic ItemKNNCF setting, which suits denser data than Amazon's).

    The space a larger budget draws from: both exponents uniform in [0, 1], shrinkage 0 or
    log-uniform in [1, 200], the similarity exponent uniform in [0.5, 3], and k every
    neighbour or a log-uniform integer in [5, 2000].
    """

    name = "item-knn"
    Config = ItemKNNConfig
    grid = [
        {"source_exp": 0.0, "target_exp": 0.0, "shrink": 0.0, "power": 1.0, "k": None},
        {"source_exp": 0.5, "target_exp": 0.0, "shrink": 10.0, "power": 1.0, "k": None},
        {"source_exp": 0.5, "target_exp": 0.25, "shrink": 10.0, "power": 2.0, "k": None},
        {"source_exp": 0.5, "target_exp": 0.5, "shrink": 10.0, "power": 1.0, "k": 200},
    ]
    space = {"source_exp": Uniform(0.0, 1.0), "target_exp": Uniform(0.0, 1.0),
             "shrink": Choice((0.0, LogUniform(1.0, 200.0))), "power": Uniform(0.5, 3.0),
             "k": Choice((None, LogUniform(5, 2000, integer=True)))}

    def __init__(self, config: object | None = None, **options: object) -> None:
        super().__init__(config, **options)
        c = self.config
        check_options(self.name, source_exp=(c.source_exp, 0.0, None), target_exp=(c.target_exp, 0.0, None),
                      shrink=(c.shrink, 0.0, None), power=(c.power, 0.0, None))
        if c.power == 0 or (c.k is not None and (int(c.k) != c.k or c.k < 1)):
            raise ValueError(f"{self.name}: power must be > 0 and k a positive integer or None; "
                             f"got power={c.power}, k={c.k}")

    def _fit(self, task, item_features):
        c = self.config
        both = task.overlap_users()
        s = user_item_matrix(task, task.source, both)  # [U, n_src]
        t = user_item_matrix(task, task.target, both)  # [U, n_tgt]
        n_i = np.asarray(s.sum(0)).ravel()
        n_j = np.asarray(t.sum(0)).ravel()
        co = (s.T @ t).tocoo()  # [n_src, n_tgt]
        if task.source == task.target:
            off = co.row != co.col
            co = sp.coo_matrix((co.data[off], (co.row[off], co.col[off])), shape=co.shape)
        norm = n_i[co.row] ** c.source_exp * n_j[co.col] ** c.target_exp + c.shrink
        sim = sp.csr_matrix(((co.data / norm) ** c.power, (co.col, co.row)), shape=co.shape[::-1])
        self.sim = top_k_per_row(sim, c.k).T.tocsr()  # [n_src, n_tgt]; k per target item
        self.prior = popularity_prior(task)

    def _score(self, users):
        return torch.from_numpy((source_rows(self.task, users) @ self.sim).toarray()) + self.prior
