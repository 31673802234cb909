"""Evaluation protocols: seeded transformations of a :class:`ColdStartTask` into a harder one.

Each protocol returns a new task (the input is left as it was), records itself in
``task.protocol`` and appends its tag to ``task.split`` (so ``task.label``, the result
caches of ``mmi evaluate`` and the task a trained run records all name it). Every method,
baselines included, runs on the transformed task unchanged.

- :func:`unlink_users` (``--overlap-fraction f``): only a seeded fraction ``f`` of the
  overlapping training users stay linked; each other one becomes two single-platform users
  (their source rows under their own id, their target rows under a new id ``>= n_users``),
  as on two platforms whose accounts cannot be matched. Valid and test users are untouched.
  ``f = 1`` is the identity; ``f = 0`` leaves no overlapping training user.
- :func:`make_items_cold` (``--cold-items F``, ColdRec-style): a seeded fraction ``F`` of
  the target's items loses every training row (within-platform rows included); half are
  validation cold items (``task.valid_cold_items``), half test cold items
  (``task.test_cold_items``). The valid users' held-out rows on test cold items are dropped,
  so validation never sees a test cold item (a valid user left with no ground truth is
  dropped from ``valid_users``).

:class:`Protocol` holds the settings of both; :meth:`Protocol.apply` makes items cold first,
then unlinks users (so the same items are cold at every overlap fraction).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from multimodal_interest.data.task import ColdStartTask


@dataclass(frozen=True)
class Protocol:
    """The protocols to apply to a task; the defaults change nothing."""

    overlap_fraction: float = 1.0  # share of overlapping training users that stay linked, 0..1
    cold_items: float | None = None  # share of the target's items made cold, 0 < F < 1 (None: off)
    seed: int = 0

    def __post_init__(self) -> None:
        check_overlap_fraction(self.overlap_fraction)
        if self.cold_items is not None:
            check_cold_items(self.cold_items)

    @property
    def is_identity(self) -> bool:
        return self.overlap_fraction == 1 and self.cold_items is None

    def apply(self, task: ColdStartTask) -> ColdStartTask:
        """``task`` with items made cold (if asked), then users unlinked (if ``f < 1``)."""
        if self.cold_items is not None:
            task = make_items_cold(task, self.cold_items, self.seed)
        return unlink_users(task, self.overlap_fraction, self.seed)

    def to_meta(self) -> dict:
        """The settings as JSON (what ``mmi split`` records in the split's meta)."""
        return {"overlap_fraction": self.overlap_fraction, "cold_items": self.cold_items, "seed": self.seed}

    @classmethod
    def from_meta(cls, meta: dict) -> Protocol:
        unknown = sorted(set(meta) - {"overlap_fraction", "cold_items", "seed"})
        if unknown:
            raise ValueError(f"unknown protocol settings {unknown} (known: overlap_fraction, cold_items, seed)")
        return cls(**meta)

    def tag(self) -> str:
        """What the protocol appends to a split's name: ``+cold-items0.2-seed0+overlap0.05-seed0``."""
        parts = [] if self.cold_items is None else [_tag("cold-items", self.cold_items, self.seed)]
        if self.overlap_fraction != 1:
            parts.append(_tag("overlap", self.overlap_fraction, self.seed))
        return "".join(f"+{p}" for p in parts)


def check_overlap_fraction(f: float) -> float:
    if not 0 <= f <= 1:
        raise ValueError(f"--overlap-fraction {f:g} is out of range: need 0 <= f <= 1 (the share of "
                         "overlapping training users that stay linked)")
    return f


def check_cold_items(fraction: float) -> float:
    if not 0 < fraction < 1:
        raise ValueError(f"--cold-items {fraction:g} is out of range: need 0 < F < 1 (the share of the "
                         "target's items that lose every training interaction)")
    return fraction


def parse_fractions(text: str) -> list[float]:
    """``"0,0.01,0.05,0.2,1"`` -> ``[0.0, 0.01, 0.05, 0.2, 1.0]`` (each checked, no repeats)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--overlap-fraction {text!r}: expected numbers separated by commas, "
                         "e.g. 0,0.01,0.05,0.2,1") from None
    if not values or len(set(values)) != len(values):
        raise ValueError(f"--overlap-fraction {text!r}: give one or more different fractions")
    return [check_overlap_fraction(v) for v in values]


def _tag(name: str, value: float, seed: int) -> str:
    return f"{name}{value:g}-seed{seed}"


def _with_tag(split: str, tag: str) -> str:
    """``split+tag``, unless ``split`` already ends with it (a split saved with its protocol)."""
    return split if split.endswith(f"+{tag}") or f"+{tag}+" in split else f"{split}+{tag}"


def _draw(n: int, fraction: float) -> int:
    """How many of ``n`` a ``fraction`` is, rounded half up (as the user splits round)."""
    return int(np.floor(fraction * n + 0.5))


def unlink_users(task: ColdStartTask, fraction: float, seed: int = 0) -> ColdStartTask:
    """Keep a seeded ``fraction`` of the overlapping training users linked; split every other
    one into a source user (their id) and a target user (a new id ``n_users + j``, ``j`` in
    the order of their ids). Every row is kept; valid and test users are untouched.

    The users kept linked are the first ``round(fraction * K)`` of
    ``numpy.random.default_rng(seed).permutation(K)`` over the ``K`` overlapping training users
    (:meth:`ColdStartTask.overlap_users` that are neither valid nor test users, sorted).
    ``fraction = 1`` returns ``task`` itself.
    """
    check_overlap_fraction(fraction)
    if fraction == 1:
        return task
    if task.source == task.target:
        raise ValueError(f"--overlap-fraction {fraction:g}: {task.label} is a within-platform task, "
                         "whose users are on one platform only; unlinking needs two platforms")
    overlap = np.setdiff1d(task.overlap_users(), np.concatenate([task.valid_users, task.test_users]))  # [K]
    keep = np.random.default_rng(seed).permutation(len(overlap))[:_draw(len(overlap), fraction)]
    unlinked = np.setdiff1d(overlap, overlap[keep])  # [K'] sorted
    new_id = np.full(task.n_users, -1, dtype=np.int64)
    new_id[unlinked] = task.n_users + np.arange(len(unlinked))
    train = task.train.copy()
    users = train["user_idx"].to_numpy(np.int64)
    moves = (train["platform"] == task.target).to_numpy() & (new_id[users] >= 0)
    train.loc[moves, "user_idx"] = new_id[users[moves]]
    train = train.sort_values("user_idx", kind="stable", ignore_index=True)  # time order kept
    record = {"overlap_fraction": fraction, "overlap_seed": seed, "linked_users": len(overlap) - len(unlinked),
              "unlinked_users": len(unlinked)}
    return dataclasses.replace(task, split=_with_tag(task.split, _tag("overlap", fraction, seed)),
                               n_users=task.n_users + len(unlinked), train=train,
                               protocol={**task.protocol, **record}, _truth={})


def make_items_cold(task: ColdStartTask, fraction: float, seed: int = 0) -> ColdStartTask:
    """Make a seeded ``fraction`` of the target's items cold: every training row of theirs on
    the target is removed; the first half (rounded down) become ``valid_cold_items``, the
    others ``test_cold_items``.

    Drawn from the target items with at least one interaction (training or held out), sorted:
    the first ``round(fraction * N)`` of ``numpy.random.default_rng(seed).permutation(N)``.
    The valid users' held-out rows on test cold items are dropped (validation sees only valid
    cold items) and a valid user left without ground truth leaves ``valid_users``; the test
    users' held-out rows are all kept.
    """
    check_cold_items(fraction)
    if task.valid_cold_items is not None:
        raise ValueError(f"{task.label}: its items were already made cold")
    target = task.target
    on_target = [f.loc[f["platform"] == target, "item_idx"].to_numpy(np.int64) for f in (task.train, task.holdout)]
    items = np.unique(np.concatenate(on_target))  # [N]
    n_cold = _draw(len(items), fraction)
    if n_cold < 2:
        raise ValueError(f"--cold-items {fraction:g}: {n_cold} of the {len(items)} {target} items with "
                         "interactions; need at least 2 (one validation and one test cold item)")
    chosen = items[np.random.default_rng(seed).permutation(len(items))[:n_cold]]
    valid_cold, test_cold = np.sort(chosen[:n_cold // 2]), np.sort(chosen[n_cold // 2:])
    train = task.train[~_rows_on(task.train, target, chosen)].reset_index(drop=True)
    holdout = task.holdout
    hidden = _rows_on(holdout, target, test_cold) & holdout["user_idx"].isin(task.valid_users).to_numpy()
    holdout = holdout[~hidden].reset_index(drop=True)
    left = holdout.loc[holdout["platform"] == target, "user_idx"].to_numpy(np.int64)
    valid = task.valid_users[np.isin(task.valid_users, left)]
    record = {"cold_items": fraction, "cold_items_seed": seed, "cold_items_valid": len(valid_cold),
              "cold_items_test": len(test_cold), "valid_users_left_out": len(task.valid_users) - len(valid)}
    return dataclasses.replace(task, split=_with_tag(task.split, _tag("cold-items", fraction, seed)),
                               train=train, holdout=holdout, valid_users=valid,
                               protocol={**task.protocol, **record}, valid_cold_items=valid_cold,
                               test_cold_items=test_cold, _truth={})


def _rows_on(frame: pd.DataFrame, platform: str, items: np.ndarray) -> np.ndarray:
    """[rows] bool: the row is on ``platform`` and its item is one of ``items``."""
    return ((frame["platform"] == platform) & frame["item_idx"].isin(items)).to_numpy()
