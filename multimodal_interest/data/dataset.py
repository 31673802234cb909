"""A cross-platform dataset: catalogs per platform, interactions, users, splits, tasks.

>>> ds = CrossPlatformDataset.load("path/to/folder")      # checks everything, loudly
>>> task = ds.cold_start("art", "office", "published")   # -> ColdStartTask
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.loader import Parts, load_parts
from multimodal_interest.data.splits import Split, list_splits, load_split
from multimodal_interest.data.stats import dataset_stats
from multimodal_interest.data.task import (INTERACTION_COLUMNS, ColdStartTask, Histories,
                                           build_histories)

log = logging.getLogger(__name__)

HELD_OUT_SHARE = 0.1  # of a user's interactions: test (the latest), and as many valid before them


@dataclass(frozen=True)
class ItemVectors:
    """Precomputed item features of one platform (one modality's vectors, as an encoder would
    give them), aligned with its ``item_idx``."""

    name: str
    modality: str
    vectors: np.ndarray  # [n_items, D] float32, zeros where absent
    present: np.ndarray  # [n_items] bool


class CrossPlatformDataset:
    """A dataset folder (see ``docs/dataset_format.md``), loaded and checked.

    ``items[p]``: platform ``p``'s catalog, row position = ``item_idx``; ``item_id``, the
    declared text fields ('' where empty) and media columns as absolute paths ('' where
    none). ``interactions``: one row per event, sorted by user then time, with ``user_idx``,
    ``platform``, ``item_idx``, ``timestamp`` (the ``order`` when there is no time),
    ``weight`` (1 unless given), ``user_id``, ``item_id`` and any other columns of the file.
    ``user_ids[user_idx]`` is the user's id after user links are applied.
    """

    def __init__(self, root: Path, parts: Parts) -> None:
        self.root = Path(root)
        self.manifest = parts.manifest
        self.items: dict[str, pd.DataFrame] = parts.items
        self.interactions: pd.DataFrame = parts.interactions
        self.user_ids: np.ndarray = parts.user_ids

    @classmethod
    def load(cls, path: str | Path) -> CrossPlatformDataset:
        """Load and check a dataset folder; raises ``DatasetError`` naming every problem."""
        return cls(Path(path), load_parts(Path(path)))

    def __repr__(self) -> str:
        label = " [synthetic]" if self.synthetic else ""
        return (f"CrossPlatformDataset({self.name!r}{label}, platforms={self.platforms}, "
                f"users={self.n_users}, interactions={len(self.interactions)})")

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def synthetic(self) -> bool:
        return self.manifest.synthetic

    @property
    def platforms(self) -> list[str]:
        return list(self.manifest.platforms)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> dict[str, int]:
        return {p: len(frame) for p, frame in self.items.items()}

    def text_fields(self, platform: str) -> tuple[str, ...]:
        """The platform's text columns, in the order the manifest declares them."""
        return self.manifest.platforms[self._platform(platform)].text

    def item_idx(self, platform: str, item_ids) -> np.ndarray:
        """[N] int64 ``item_idx`` of ``item_ids`` on ``platform``; -1 for unknown ids."""
        index = self._item_indexes[self._platform(platform)]
        return index.get_indexer(pd.Index(item_ids, dtype="str"))

    def user_idx(self, user_ids) -> np.ndarray:
        """[N] int64 ``user_idx`` of ``user_ids``; -1 for unknown ids."""
        return self._user_index.get_indexer(pd.Index(user_ids, dtype="str"))

    def vectors(self, platform: str, name: str) -> ItemVectors:
        """The precomputed vectors ``name`` of ``platform``, one row per ``item_idx``."""
        spec = self.manifest.platforms[self._platform(platform)].vectors.get(name)
        if spec is None:
            have = ", ".join(self.manifest.platforms[platform].vectors) or "none"
            raise ValueError(f"platform {platform!r} has no vectors {name!r} (it has: {have})")
        with np.load(self.root / spec.path, allow_pickle=False) as z:
            ids, raw = z["item_id"].astype(str), z["vectors"]
        rows = self.item_idx(platform, ids)
        out = np.zeros((self.n_items[platform], raw.shape[1]), dtype=np.float32)
        out[rows] = raw
        present = np.zeros(self.n_items[platform], dtype=bool)
        present[rows] = True
        return ItemVectors(name, spec.modality, out, present)

    def active_users(self, platform: str) -> np.ndarray:
        """[n_users] bool: the user has at least one interaction on ``platform``."""
        return self._active[self._platform(platform)]

    def histories(self, platform: str, users: np.ndarray | None = None,
                  max_len: int | None = None) -> Histories:
        """Histories on ``platform`` from all interactions (``users`` None: every active user)."""
        if users is None:
            users = np.flatnonzero(self.active_users(platform))
        return build_histories(self.interactions, self._platform(platform), users, max_len)

    def stats(self) -> dict:
        """Users, items, interactions per platform, overlap, history lengths (JSON-able)."""
        return dataset_stats(self)

    def splits(self) -> list[str]:
        """Names of the splits saved with the dataset."""
        return list_splits(self.root)

    def split(self, name: str) -> Split:
        return load_split(self.root, name, self.platforms, self._user_index)

    def cold_start(self, source: str, target: str, split: str = "published") -> ColdStartTask:
        """The ``source -> target`` task of a saved split.

        Valid and test users are the split's users for this target who have interactions on
        both platforms; their target interactions form ``holdout``, everything else
        (their source interactions included) forms ``train``.
        """
        source, target = self._platform(source), self._platform(target)
        if source == target:
            raise ValueError(f"source and target are both {source!r}; a cold-start task needs two "
                             "platforms (within one platform, see within_platform)")
        users = self.split(split).users
        users = users[users["target"].isin([target, "*"])]
        idx = self.user_idx(users["user_id"])
        both = self.active_users(source)[idx] & self.active_users(target)[idx]
        if not both.all():
            log.warning("split %r: %d of its %d users for target %r lack %s or %s interactions; "
                        "they are left out of the task", split, int((~both).sum()), len(idx),
                        target, source, target)
        roles = users["role"].to_numpy()
        valid = np.unique(idx[both & (roles == "valid")])
        test = np.unique(idx[both & (roles == "test")])
        held = np.zeros(self.n_users, dtype=bool)
        held[valid], held[test] = True, True
        inter = self.interactions
        mask = (inter["platform"] == target).to_numpy() & held[inter["user_idx"].to_numpy()]
        columns = list(INTERACTION_COLUMNS)
        return ColdStartTask(self.name, split, source, target, self.n_items, self.n_users,
                             inter.loc[~mask, columns].reset_index(drop=True),
                             inter.loc[mask, columns].reset_index(drop=True), valid, test,
                             synthetic=self.synthetic)

    def within_platform(self, platform: str, valid_share: float = 0.2, seed: int = 0) -> ColdStartTask:
        """A within-platform task from the ``label`` column (``train``/``valid``/``test``, the
        source's own per-interaction split, e.g. Last.fm-2K's): every user's ``train`` items are
        their history; ``platform`` is both source and target.

        Users are divided, seeded, into valid users (``valid_share`` of those with ``valid``
        rows), whose ``valid`` items are the ground truth for model selection, and test users
        (all others), whose ``test`` items are the ground truth of the benchmark. Rows that are
        neither history nor ground truth (a test user's ``valid`` rows, a valid user's ``test``
        rows) are left out of the task, so no method sees them.

        A dataset without labels (MovieLens) is split by time instead, per user on ``platform``
        (:func:`time_labels`): the latest :data:`HELD_OUT_SHARE` of a user's interactions are
        ``test``, the share before them ``valid``, the rest ``train``; the split's name says so.
        """
        platform = self._platform(platform)
        inter = self.interactions
        inter = inter[(inter["platform"] == platform).to_numpy()]
        if "label" in inter.columns:
            label, name = inter["label"].astype(str).to_numpy(), "labels"
        else:
            label, name = time_labels(inter), f"time{round(100 * HELD_OUT_SHARE)}"
        unknown = sorted(set(np.unique(label)) - {"train", "valid", "test"})
        if unknown:
            raise ValueError(f"dataset {self.name!r}: interaction labels {unknown[:5]} are not "
                             "train, valid or test")
        users = inter["user_idx"].to_numpy()
        with_valid = np.unique(users[label == "valid"])
        rng = np.random.default_rng(seed)
        valid = np.sort(rng.choice(with_valid, size=round(valid_share * len(with_valid)), replace=False))
        is_valid = np.isin(users, valid)
        truth = np.where(is_valid, label == "valid", label == "test")
        test = np.setdiff1d(np.unique(users[truth]), valid)
        columns = list(INTERACTION_COLUMNS)
        return ColdStartTask(self.name, f"{name}-valid{round(100 * valid_share)}_seed{seed}", platform,
                             platform, self.n_items, self.n_users,
                             inter.loc[label == "train", columns].reset_index(drop=True),
                             inter.loc[truth, columns].reset_index(drop=True),
                             valid.astype(np.int64), test.astype(np.int64), synthetic=self.synthetic)

    def _platform(self, platform: str) -> str:
        if platform not in self.manifest.platforms:
            raise ValueError(f"unknown platform {platform!r}; dataset {self.name!r} has "
                           f"{', '.join(self.platforms)}")
        return platform

    @cached_property
    def _item_indexes(self) -> dict[str, pd.Index]:
        return {p: pd.Index(frame["item_id"]) for p, frame in self.items.items()}

    @cached_property
    def _user_index(self) -> pd.Index:
        return pd.Index(self.user_ids, dtype="str")

    @cached_property
    def _active(self) -> dict[str, np.ndarray]:
        inter = self.interactions
        users, codes = inter["user_idx"].to_numpy(), inter["platform"].cat.codes.to_numpy()
        out = {}
        for k, p in enumerate(self.platforms):
            active = np.zeros(self.n_users, dtype=bool)
            active[users[codes == k]] = True
            out[p] = active
        return out


def time_labels(interactions: pd.DataFrame) -> np.ndarray:
    """``[N]`` ``train``/``valid``/``test`` for each row of ``interactions``, split by time per user:
    of a user's ``n`` rows in time order (ties in row order), the latest
    ``max(1, round(HELD_OUT_SHARE * n))`` are ``test`` and as many before them ``valid``; a user
    with fewer than 3 rows keeps them all for ``train``."""
    users = interactions["user_idx"].to_numpy(np.int64)
    order = np.lexsort((np.arange(len(users)), interactions["timestamp"].to_numpy(np.float64), users))
    sorted_users = users[order]
    start = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]  # [U] first row of each user
    n = np.diff(np.r_[start, len(order)])  # [U] rows per user
    held = np.where(n >= 3, np.maximum(1, np.rint(HELD_OUT_SHARE * n)), 0).astype(np.int64)
    from_end = np.repeat(start + n, n) - np.arange(len(order))  # 1 for a user's latest row
    per_row = np.repeat(held, n)
    label = np.where(from_end <= per_row, "test", np.where(from_end <= 2 * per_row, "valid", "train"))
    out = np.empty(len(order), dtype=object)
    out[order] = label
    return out
