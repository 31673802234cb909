"""User kNN: a cold user's nearest overlapping training users, by their source histories.

``sim(u, v) = (x_u . x_v / (|x_u| |x_v| + shrink)) ** power`` over binary source rows (cosine
when ``shrink = 0``, ``power = 1``), ``v`` among the training users with items on both
platforms; ``score(u, j) = sum over u's k most similar v of sim(u, v) * [v has target item j]``.
Within a platform (source = target) a user is not their own neighbour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.space import Choice, LogUniform, Uniform
from multimodal_interest.baselines.itemknn import (check_options, popularity_prior, source_rows,
                                                   top_k_per_row, user_item_matrix)


@dataclass
class UserKNNConfig:
    k: int | None = 100  # neighbours per user (None: every overlapping training user)
    shrink: float = 0.0  # added to the cosine's denominator: damps neighbours sharing one item
    power: float = 1.0  # similarity exponent: > 1 weighs the closest neighbours up


@register_baseline
class UserKNN(Baseline):
    """Target items of the cold user's k most similar training users, similarity-weighted.

    The grid (the budget, see :mod:`.base`): (k, shrink) in (50, 0), (200, 5), (1000, 5) and
    every user (k = None) with shrink 10 and power 2 -- from a tight neighbourhood to a
    sharpened weighting of all. Beyond the grid (a larger budget): k every user or a
    log-uniform integer in [5, 2000], shrinkage 0 or log-uniform in [1, 100], the exponent
    uniform in [0.5, 3].
    """

    name = "user-knn"
    Config = UserKNNConfig
    grid = [{"k": 50, "shrink": 0.0, "power": 1.0}, {"k": 200, "shrink": 5.0, "power": 1.0},
            {"k": 1000, "shrink": 5.0, "power": 1.0}, {"k": None, "shrink": 10.0, "power": 2.0}]
    space = {"k": Choice((None, LogUniform(5, 2000, integer=True))),
             "shrink": Choice((0.0, LogUniform(1.0, 100.0))), "power": Uniform(0.5, 3.0)}

    def __init__(self, config: object | None = None, **options: object) -> None:
        super().__init__(config, **options)
        c = self.config
        check_options(self.name, shrink=(c.shrink, 0.0, None), power=(c.power, 0.0, None))
        if c.power == 0 or (c.k is not None and (int(c.k) != c.k or c.k < 1)):
            raise ValueError(f"{self.name}: power must be > 0 and k a positive integer or None; "
                             f"got power={c.power}, k={c.k}")

    def _fit(self, task, item_features):
        self.users = task.overlap_users()  # [U] sorted
        s = user_item_matrix(task, task.source, self.users)  # [U, n_src]
        self.neighbours_t = s.T.tocsr()  # [n_src, U]
        self.norms = np.sqrt(np.asarray(s.sum(1)).ravel())  # [U]
        self.targets = user_item_matrix(task, task.target, self.users)  # [U, n_tgt]
        self.prior = popularity_prior(task)

    def _score(self, users):
        c = self.config
        x = source_rows(self.task, users)  # [B, n_src]
        dots = (x @ self.neighbours_t).tocoo()  # [B, U], sparse: only users sharing an item
        if self.task.source == self.task.target:  # not one's own neighbour
            mine = self.users[dots.col] == users[dots.row]
            dots = sp.coo_matrix((dots.data[~mine], (dots.row[~mine], dots.col[~mine])), shape=dots.shape)
        norm_u = np.sqrt(np.asarray(x.sum(1)).ravel())
        sim = (dots.data / (norm_u[dots.row] * self.norms[dots.col] + c.shrink)) ** c.power
        near = top_k_per_row(sp.csr_matrix((sim, (dots.row, dots.col)), shape=dots.shape), c.k)
        return torch.from_numpy((near @ self.targets).toarray()) + self.prior
