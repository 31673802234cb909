"""Cross-platform item-to-item co-occurrence (item kNN), a simple strong CF baseline."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.popularity import target_popularity
from multimodal_interest.data.task import ColdStartTask

# weight of normalised popularity added to break ties, e.g. for users none of whose source
# items co-occur with any target item (scores are float64, so it only ever breaks ties
# between co-occurrence scores closer than this)
TIE_BREAK = 1e-9


def user_item_matrix(task: ColdStartTask, platform: str, users: np.ndarray) -> sp.csr_matrix:
    """``[len(users), n_items[platform]]`` binary: which items each user has in ``task.train``."""
    rows = task.train[(task.train["platform"] == platform) & task.train["user_idx"].isin(users)]
    r = np.searchsorted(users, rows["user_idx"].to_numpy(np.int64))
    m = sp.csr_matrix((np.ones(len(r)), (r, rows["item_idx"].to_numpy(np.int64))),
                      shape=(len(users), task.n_items[platform]))
    m.data[:] = 1.0  # duplicates count once
    return m


@dataclass
class ItemKNNConfig:
    # sim(i, j) = co(i, j) / (n_i ** source_exp * n_j ** target_exp); (0.5, 0.5) is cosine,
    # (1, 0) is P(j | i), (0, 0) raw counts
    source_exp: float = 0.5
    target_exp: float = 0.0


@register_baseline
class ItemKNN(Baseline):
    """score(u, j) = sum over u's source items i of sim(i, j), co-occurrence in training users.

    Co-occurrence counts the overlapping training users who have source item i and target
    item j; n_i, n_j count those users who have i, j. The exponents (tuned on valid) weigh
    rare source items up and trade popular target items against specific ones.
    """

    name = "item-knn"
    Config = ItemKNNConfig
    grid = [{"source_exp": a, "target_exp": b} for a, b in ((0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (0.5, 0.5))]

    def _fit(self, task, item_vectors):
        both = task.overlap_users()
        s = user_item_matrix(task, task.source, both)  # [U, n_src]
        t = user_item_matrix(task, task.target, both)  # [U, n_tgt]
        a, b = self.config.source_exp, self.config.target_exp
        n_i = np.asarray(s.sum(0)).ravel()
        n_j = np.asarray(t.sum(0)).ravel()
        inv_i = sp.diags(np.where(n_i > 0, np.maximum(n_i, 1) ** -a, 0.0))
        inv_j = sp.diags(np.where(n_j > 0, np.maximum(n_j, 1) ** -b, 0.0))
        self.sim = (inv_i @ (s.T @ t) @ inv_j).tocsr()  # [n_src, n_tgt]
        pop = target_popularity(task).double()
        self.prior = TIE_BREAK * pop / pop.max().clamp(min=1)

    def _score(self, users):
        x = user_item_matrix(self.task, self.task.source, np.unique(users))
        x = x[np.searchsorted(np.unique(users), users)]
        return torch.from_numpy((x @ self.sim).toarray()) + self.prior
