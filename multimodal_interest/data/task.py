"""What training, baselines and evaluation consume: padded histories and cold-start tasks.

A :class:`ColdStartTask` is one direction (``source -> target``) of one user split of a
dataset. Its ``train`` table holds every interaction a method may learn from: all of them,
minus the target-platform interactions of the split's valid and test users, which are
kept apart in ``holdout`` and used only as ground truth. Users and items are integers:
``user_idx`` indexes the dataset's users, ``item_idx`` indexes the items of one platform.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

INTERACTION_COLUMNS = ("user_idx", "platform", "item_idx", "timestamp", "weight")


@dataclass
class Histories:
    """Time-ordered histories on one platform, left-aligned and padded.

    ``items[u, :lengths[u]]`` are user ``users[u]``'s items, oldest first (the most recent
    ``max_len`` when truncated); padded slots hold item 0 and ``mask`` False.
    """

    platform: str
    users: np.ndarray  # [U] int64 user_idx
    items: torch.Tensor  # [U, L] int64 item_idx within `platform`
    mask: torch.Tensor  # [U, L] bool, True on real items
    timestamps: torch.Tensor  # [U, L] float64, 0 where padded

    @property
    def lengths(self) -> torch.Tensor:
        """[U] int64 number of real items per user."""
        return self.mask.sum(1)

    def __len__(self) -> int:
        return len(self.users)

    def select(self, rows: np.ndarray | torch.Tensor | slice) -> Histories:
        """The histories of a subset of rows (positions, not user ids)."""
        r = rows.numpy() if isinstance(rows, torch.Tensor) else rows
        return Histories(self.platform, self.users[r], self.items[rows], self.mask[rows],
                         self.timestamps[rows])

    def batches(self, batch_size: int) -> Iterator[Histories]:
        """Consecutive row batches, each trimmed to its own longest history."""
        for start in range(0, len(self), batch_size):
            part = self.select(slice(start, start + batch_size))
            width = int(part.lengths.max()) if len(part) else 0
            yield Histories(part.platform, part.users, part.items[:, :width],
                            part.mask[:, :width], part.timestamps[:, :width])


def build_histories(interactions: pd.DataFrame, platform: str, users: np.ndarray,
                    max_len: int | None = None) -> Histories:
    """Histories of ``users`` (user_idx, any order; duplicates allowed) on ``platform``.

    ``interactions`` has at least ``user_idx``, ``platform``, ``item_idx``, ``timestamp``.
    Items are ordered by timestamp, ties keep table order; a user with no interactions there
    gets an empty row. Vectorised: no Python loop over users or rows.
    """
    users = np.asarray(users, dtype=np.int64)
    rows = interactions[interactions["platform"] == platform]
    u = rows["user_idx"].to_numpy(np.int64)
    t = rows["timestamp"].to_numpy(np.float64)
    it = rows["item_idx"].to_numpy(np.int64)
    order = np.lexsort((np.arange(len(u)), t, u))  # by user, then time, then table order
    u, t, it = u[order], t[order], it[order]
    start = np.searchsorted(u, users, side="left")
    stop = np.searchsorted(u, users, side="right")
    n = stop - start
    if max_len is not None:
        start = np.maximum(start, stop - max_len)
        n = stop - start
    width = int(n.max()) if len(n) else 0
    col = np.arange(width)
    mask = col[None, :] < n[:, None]  # [U, L]
    src = np.where(mask, start[:, None] + col[None, :], 0)
    items = np.where(mask, it[src] if len(it) else 0, 0)
    times = np.where(mask, t[src] if len(t) else 0.0, 0.0)
    return Histories(platform, users, torch.from_numpy(items), torch.from_numpy(mask),
                     torch.from_numpy(times))


@dataclass
class ColdStartTask:
    """Score ``target`` items for users whose target interactions are hidden.

    ``train``: interactions a method may use (columns :data:`INTERACTION_COLUMNS`), sorted
    by user and time; it includes the valid/test users' *source* interactions, never their
    target ones. ``holdout``: those hidden target interactions (same columns).

    An evaluation protocol (:mod:`multimodal_interest.data.protocols`) transforms a task
    into another one: ``protocol`` records what it did (empty: none) and ``split`` carries
    its tag, so results and trained runs of the transformed task are keyed by it.
    """

    dataset: str
    split: str
    source: str
    target: str
    n_items: dict[str, int]  # items per platform
    n_users: int
    train: pd.DataFrame
    holdout: pd.DataFrame
    valid_users: np.ndarray  # [V] int64 user_idx
    test_users: np.ndarray  # [T] int64 user_idx
    synthetic: bool = False  # the platforms are made up (e.g. genres of one catalog): say so
    protocol: dict = field(default_factory=dict)  # the protocols applied, e.g. {"overlap_fraction": 0.05, ...}
    valid_cold_items: np.ndarray | None = None
    """[Cv] int64 target item_idx made cold for validation (no training row; the valid users'
    held-out items among them are what a content path can be tuned on); None: no cold items."""
    test_cold_items: np.ndarray | None = None
    """[Ct] int64 target item_idx made cold for the test (no training row; never in the valid
    users' ground truth); None: no cold items."""
    _truth: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        """How to name the task in reports: ``dataset source->target (split)``, synthetic marked."""
        mark = " [synthetic platforms]" if self.synthetic else ""
        return f"{self.dataset}{mark} {self.source}->{self.target} ({self.split})"

    @property
    def cold_items(self) -> np.ndarray:
        """[C] int64 every target item_idx made cold (valid and test, sorted; empty if none)."""
        parts = [c for c in (self.valid_cold_items, self.test_cold_items) if c is not None]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)

    @property
    def platforms(self) -> list[str]:
        """The task's platforms: source and target, once each (one for a within-platform task)."""
        return list(dict.fromkeys((self.source, self.target)))

    def histories(self, platform: str, users: np.ndarray | None = None,
                  max_len: int | None = None) -> Histories:
        """Training histories on ``platform`` (all users who have one when ``users`` is None)."""
        if users is None:
            users = np.unique(self.train.loc[self.train["platform"] == platform, "user_idx"])
        return build_histories(self.train, platform, users, max_len)

    def source_histories(self, users: np.ndarray, max_len: int | None = None) -> Histories:
        """What a cold-start user brings: their source-platform history."""
        return self.histories(self.source, users, max_len)

    def target_truth(self, users: np.ndarray) -> list[np.ndarray]:
        """Each user's hidden target items (unique item_idx, sorted)."""
        if not self._truth and len(self.holdout):
            pairs = np.unique(self.holdout[["user_idx", "item_idx"]].to_numpy(np.int64), axis=0)
            owners, starts = np.unique(pairs[:, 0], return_index=True)
            self._truth.update(zip(owners.tolist(), np.split(pairs[:, 1], starts[1:])))
        empty = np.empty(0, dtype=np.int64)
        return [self._truth.get(int(u), empty) for u in users]

    def overlap_users(self) -> np.ndarray:
        """Users with training interactions on both platforms (they teach the mapping)."""
        by = self.train.groupby("platform", observed=True)["user_idx"]
        on = {p: np.unique(g.to_numpy(np.int64)) for p, g in by}
        empty = np.empty(0, dtype=np.int64)
        return np.intersect1d(on.get(self.source, empty), on.get(self.target, empty))
