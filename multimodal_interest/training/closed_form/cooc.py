"""What every user of a platform says about its items: the top directions of the platform's
item co-occurrence, learned from all of its training users (those active on one platform only
included), for the fit's two sides.

``X`` ``[users, N_p]`` 0/1 of every training user's items on the platform, normalised
``D_u^-1/2 X D_i^-1/2``; its top :data:`COOC_DIMS` right singular vectors ``Q`` and values
``s`` give the item-item similarity ``B = Q diag(s^2) Q^T``. The source side reads it as a
feature block (:data:`COOC`: a history's bag through ``Q diag(s)``, root-n pooled, so two
histories are near when their items co-occur among everyone), weighted in the search like
every block; the target side smooths the learned item vectors, ``V + beta B V`` (scaled to
``V``'s norm), ``beta`` chosen on the validation users.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.closed_form.search import Trial

log = logging.getLogger("multimodal_interest.training.closed_form")

COOC_DIMS = 256
BETAS = (0.1, 0.3, 1.0)


def cooc_basis(task: ColdStartTask, platform: str, dims: int = COOC_DIMS, seed: int = 0) -> np.ndarray | None:
    """``[N_p, k]`` ``Q diag(s)`` of the platform's training interactions (None: too few)."""
    from sklearn.utils.extmath import randomized_svd

    rows = task.train[task.train["platform"] == platform].drop_duplicates(["user_idx", "item_idx"])
    n = task.n_items[platform]
    users = np.unique(rows["user_idx"].to_numpy())
    if len(users) < 2 or len(rows) < 2:
        return None
    u = np.searchsorted(users, rows["user_idx"].to_numpy())
    x = sp.csr_matrix((np.ones(len(rows)), (u, rows["item_idx"].to_numpy())), shape=(len(users), n))
    du = 1.0 / np.sqrt(np.maximum(np.asarray(x.sum(1)).ravel(), 1))
    di = 1.0 / np.sqrt(np.maximum(np.asarray(x.sum(0)).ravel(), 1))
    x = sp.csr_matrix(sp.diags(du) @ x @ sp.diags(di))
    k = min(dims, min(x.shape) - 1)
    if k < 1:
        return None
    _, s, vt = randomized_svd(x, k, random_state=seed)
    return vt.T * s  # [N_p, k]


def smooth(v: np.ndarray, basis: np.ndarray, beta: float) -> np.ndarray:
    """``V + beta B V`` with ``B V`` scaled to ``V``'s Frobenius norm (``basis = Q diag(s)``)."""
    bv = basis @ (basis.T @ v)
    norm = float(np.linalg.norm(bv))
    return v if norm == 0 else v + beta * bv * (float(np.linalg.norm(v)) / norm)


def choose_smoothing(task: ColdStartTask, v: np.ndarray, score, base: Trial,
                     seed: int = 0) -> tuple[np.ndarray, Trial, dict, list[Trial]]:
    """``(V, its trial, info, trials)``: ``V`` smoothed by the target's co-occurrence when that
    beats ``base`` (:meth:`Trial.beats`) on the validation users (``score(V') -> [V]``)."""
    basis = cooc_basis(task, task.target, seed=seed)
    if basis is None:
        return v, base, {"smoothing": "off", "why": "too few target interactions"}, []
    chosen, chosen_v, beta_of, trials = base, v, None, []
    for beta in BETAS:
        vb = smooth(v, basis, beta)
        t = Trial(base.lam, dict(base.weights), score(vb), rank=base.rank, path=f"target co-occurrence beta={beta:g}")
        log.info("closed form: %s: validation NDCG@10 %.4f", t.path, t.valid_ndcg10)
        trials.append(t)
        if t.beats(chosen):
            chosen, chosen_v, beta_of = t, vb, beta
    info = {"smoothing": "off"} if beta_of is None else {"smoothing": "on", "beta": beta_of}
    return chosen_v, chosen, info, trials
