"""The fit's rows: who teaches the mapping, with which history and which targets.

Across platforms a fit row is a training user with items on both platforms: their source
history (the most recent ``max_len`` items) and their target items. Within a platform each
training user gives :data:`WITHIN_FOLDS` rows: their items in random folds, each row's
history all but one fold, its targets all of their items. A target that is in the history is
there to be recalled, not to be scored 0 (a history's own items are excluded when ranking):
labelled 0, each item would teach "not this item" to its own users' rows, against their
co-occurrence. Reconstructing the whole set from a part is a denoising autoencoder's objective.
Every such user gives rows: nothing is sampled here (:mod:`.solve` decides how to fit many).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from multimodal_interest.data.task import ColdStartTask

WITHIN_FOLDS = 5


@dataclass
class FitRows:
    """``users [n]`` (a user repeats once per row within a platform), ``bags [n, N_s]`` counts
    of each row's history items, ``targets [n, N_t]`` 0/1."""

    users: np.ndarray
    bags: sp.csr_matrix
    targets: sp.csr_matrix

    def __len__(self) -> int:
        return len(self.users)

    def select(self, rows: np.ndarray) -> FitRows:
        return FitRows(self.users[rows], self.bags[rows], self.targets[rows])

    def user_rows(self, users: np.ndarray) -> np.ndarray:
        """Positions of every row of ``users`` (sorted)."""
        return np.flatnonzero(np.isin(self.users, users))


def bags(items: torch.Tensor, mask: torch.Tensor, n_items: int) -> sp.csr_matrix:
    """``[U, N]`` counts of each history's items (``items``/``mask`` ``[U, L]``)."""
    rows = np.repeat(np.arange(items.shape[0]), mask.sum(1).numpy())
    cols = items[mask].numpy()
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(items.shape[0], n_items))


def history_bags(task: ColdStartTask, users: np.ndarray, max_len: int) -> sp.csr_matrix:
    """``[U, N_s]`` the source histories of ``users`` as the model pools them."""
    h = task.source_histories(users, max_len)
    return bags(h.items, h.mask, task.n_items[task.source])


def targets(users: np.ndarray, frame: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """``[U, N_t]`` 0/1: each user's items in ``frame`` (columns user_idx, item_idx)."""
    row = {int(u): i for i, u in enumerate(users)}
    r = frame["user_idx"].map(row).to_numpy()
    y = sp.csr_matrix((np.ones(len(r)), (r, frame["item_idx"].to_numpy())), shape=(len(users), n_items))
    y.data[:] = 1.0
    return y


def whole_users(users: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Sorted positions of the rows of a seeded sample of ``users`` (whole users), at most
    ``max_rows`` rows (one user at least)."""
    ids, counts = np.unique(users, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    n = int(np.searchsorted(np.cumsum(counts[order]), max_rows, "right"))
    return np.flatnonzero(np.isin(users, ids[order[:max(n, 1)]]))


def fit_rows(task: ColdStartTask, max_len: int, seed: int) -> FitRows:
    """Every fit row of ``task`` (see the module docstring), histories cut to ``max_len``."""
    users = task.overlap_users()
    if task.source != task.target:
        frame = task.train[(task.train["platform"] == task.target) & task.train["user_idx"].isin(users)]
        return FitRows(users, history_bags(task, users, max_len), targets(users, frame, task.n_items[task.target]))
    rng = np.random.default_rng(seed)
    h = task.source_histories(users, None)  # drop a fold of each user's items, then cut the history
    fold = torch.from_numpy(rng.integers(0, WITHIN_FOLDS, tuple(h.items.shape)))
    n = task.n_items[task.target]
    histories, useful = [], []
    for f in range(WITHIN_FOLDS):
        history = h.mask & (fold != f)
        recent = history.flip(1).cumsum(1).flip(1) <= max_len  # [U, L] the fold's most recent max_len
        histories.append(bags(h.items, history & recent, n))
        useful.append((history.sum(1) > 0) & (history.sum(1) < h.mask.sum(1)))  # a history, something left out
    keep = np.flatnonzero(torch.cat(useful).numpy())
    y = sp.vstack([bags(h.items, h.mask, n).sign()] * WITHIN_FOLDS)
    return FitRows(np.tile(users, WITHIN_FOLDS)[keep], sp.csr_matrix(sp.vstack(histories))[keep],
                   sp.csr_matrix(y)[keep])
