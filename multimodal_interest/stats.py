"""Means with 95% intervals: percentile bootstrap over users (and seeds), paired differences,
and per-bucket summaries of per-user metric values."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 1000
LEVEL = 0.95
# source history length buckets: 1-5, 6-10, 11-20, 21+
BUCKET_EDGES = (1, 6, 11, 21)


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int  # users (summed over seeds)

    def format(self, digits: int = 4) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap(values: np.ndarray | list[np.ndarray], n_resamples: int = N_RESAMPLES,
              seed: int = 0, level: float = LEVEL) -> Interval:
    """Mean of per-user ``values`` ``[U]`` with a percentile bootstrap interval over users.

    Given a list of arrays (one per seed / split), the mean is the mean over seeds of the
    per-seed means, and each resample draws seeds with replacement, then users with
    replacement within each drawn seed (a two-level bootstrap).
    """
    groups = [np.asarray(v, dtype=np.float64) for v in (values if isinstance(values, list) else [values])]
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("bootstrap needs at least one user in every group")
    rng = np.random.default_rng(seed)
    if len(groups) == 1:
        g = groups[0]
        means = g[rng.integers(0, len(g), (n_resamples, len(g)))].mean(1)
    else:
        picks = rng.integers(0, len(groups), (n_resamples, len(groups)))
        per_group = np.stack([g[rng.integers(0, len(g), (n_resamples, len(g)))].mean(1) for g in groups], 1)
        means = np.take_along_axis(per_group, picks, 1).mean(1)  # [R]
    lo, hi = _percentiles(means, level)
    mean = float(np.mean([g.mean() for g in groups]))
    return Interval(mean, lo, hi, sum(len(g) for g in groups))


def paired_difference(a: np.ndarray, b: np.ndarray, n_resamples: int = N_RESAMPLES,
                      seed: int = 0, level: float = LEVEL) -> Interval:
    """Mean of ``a - b`` over the same users (``[U]`` each, aligned) with a bootstrap interval.

    Resampling the per-user differences keeps each user's two values together, so the
    interval reflects how consistently ``a`` beats ``b`` user by user; a low bound above 0
    says ``a`` is better at the given level.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same users: shapes {a.shape} and {b.shape}")
    return bootstrap(a - b, n_resamples, seed, level)


def bucket_labels(lengths: np.ndarray, edges: tuple[int, ...] = BUCKET_EDGES) -> list[str]:
    """Names of the buckets defined by ``edges`` (lower bounds): "1-5", ..., "21+"."""
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])]
    return labels + [f"{edges[-1]}+"]


def by_bucket(values: np.ndarray, lengths: np.ndarray, edges: tuple[int, ...] = BUCKET_EDGES,
              seed: int = 0) -> dict[str, Interval | None]:
    """Bootstrap mean per history-length bucket (None for an empty bucket).

    ``values`` and ``lengths`` are ``[U]``; users shorter than ``edges[0]`` are in no bucket.
    """
    values, lengths = np.asarray(values), np.asarray(lengths)
    which = np.searchsorted(np.asarray(edges), lengths, side="right") - 1  # -1: below edges[0]
    out = {}
    for i, label in enumerate(bucket_labels(lengths, edges)):
        sel = values[which == i]
        out[label] = bootstrap(sel, seed=seed) if len(sel) else None
    return out
