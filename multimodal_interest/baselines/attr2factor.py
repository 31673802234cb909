"""Attribute-to-factor mapping (Gantner et al., ICDM 2010, "Learning attribute-to-feature
mappings for cold-start recommendations") on top of iALS.

The collaborative part is :class:`.ials.IALS` unchanged: one factorisation of the merged
user x (source + target items) matrix of ``task.train``, a cold user's factor folded in from
their source rows. Its factor of a target item with no training row on the target (a cold
item: ``--cold-items``, or an item nobody has yet) is meaningless (all-zero: no row ever
updated it), so such items cannot be ranked. Here a ridge map from item content to item
factors, fitted on the warm target items (those with a training row), gives each cold item
a factor::

    y_j = (c_j - c_mean) W + y_mean,   W = argmin ||(C - c_mean) W - (Y - y_mean)||^2 + map_lam ||W||^2

with ``C`` ``[n_warm, dim]`` the warm items' content (``item_features[target]``, rows
L2-normalised, as content kNN reads them) and ``Y`` ``[n_warm, factors]`` their iALS
factors; the means make an unpenalised intercept. Warm items keep their learned factors,
so on a task where every target item has a training row the method *is* iALS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from multimodal_interest.baselines.base import register_baseline
from multimodal_interest.baselines.ials import IALS, IALSConfig
from multimodal_interest.baselines.space import LogUniform
from multimodal_interest.data.task import ColdStartTask


@dataclass
class Attr2FactorConfig(IALSConfig):
    map_lam: float = 1.0  # L2 weight of the content -> factor map
    method: ClassVar[str] = "attr2factor"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.map_lam, (int, float)) and math.isfinite(self.map_lam) and self.map_lam > 0):
            raise ValueError(f"{self.method}: map_lam must be a finite number > 0, got {self.map_lam!r}")


@dataclass
class RidgeMap:
    """An affine map from content ``[n, dim]`` to factors ``[n, factors]`` (float64)."""

    weight: torch.Tensor  # [dim, factors]
    content_mean: torch.Tensor  # [dim]
    factor_mean: torch.Tensor  # [factors]

    @classmethod
    def fit(cls, content: torch.Tensor, factors: torch.Tensor, lam: float) -> RidgeMap:
        """Ridge regression of ``factors`` ``[n, k]`` on ``content`` ``[n, d]`` with an
        unpenalised intercept, solved in whichever space is smaller: the primal
        ``[d, d]`` Gram, or the dual ``[n, n]`` one (push-through identity)."""
        c_mean, y_mean = content.mean(0), factors.mean(0)
        x, y = content - c_mean, factors - y_mean
        n, d = x.shape
        if d <= n:
            weight = torch.linalg.solve(x.T @ x + lam * torch.eye(d, dtype=x.dtype), x.T @ y)
        else:
            weight = x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(n, dtype=x.dtype), y)
        return cls(weight, c_mean, y_mean)

    def __call__(self, content: torch.Tensor) -> torch.Tensor:
        """``[m, dim]`` -> ``[m, factors]``."""
        return (content - self.content_mean) @ self.weight + self.factor_mean


def warm_target_items(task: ColdStartTask) -> torch.Tensor:
    """``[n_target]`` bool: the target item has at least one training row on the target."""
    items = task.train.loc[task.train["platform"] == task.target, "item_idx"].to_numpy(np.int64)
    return torch.from_numpy(np.bincount(items, minlength=task.n_items[task.target]) > 0)


# iALS's first setting (32 factors, reg 0.1, alpha 10) with the map's strength over two
# decades, then iALS's second (16 factors). The content rows are L2-normalised, so the
# map's Gram has trace about n_warm and eigenvalues about n_warm / dim (a few, for thousands
# of warm items in a few hundred dimensions): lam 0.1 barely shrinks, 10 shrinks hard (a
# cold item's factor towards the mean factor, its scores towards the same for every item)
_GRID = [
    {"factors": 32, "map_lam": 1.0},
    {"factors": 32, "map_lam": 0.1},
    {"factors": 32, "map_lam": 10.0},
    {"factors": 16, "map_lam": 1.0},
]


@register_baseline
class Attr2Factor(IALS):
    """iALS whose target items without a training row get factors mapped from their content
    (see the module docstring); cold users folded in from their source items, as in iALS.

    Tuned over: map_lam 1, 0.1 and 10 at 32 factors, then map_lam 1 at 16 factors (iALS's
    regularization 0.1, alpha 10, 15 sweeps). Beyond the grid (a larger budget): iALS's
    space (factors a log-uniform integer in [8, 256], regularization log-uniform in
    [10^-3, 10], alpha log-uniform in [1, 100], sweeps an integer in [5, 30]) and map_lam
    log-uniform in [10^-2, 10^3].
    """

    name = "attr2factor"
    Config = Attr2FactorConfig
    needs_features = True
    grid = _GRID
    space = {**IALS.space, "map_lam": LogUniform(1e-2, 1e3)}

    def _fit(self, task, item_features):
        super()._fit(task, item_features)  # self.target_factors [n_target, factors] float64
        self.warm = warm_target_items(task)  # [n_target] bool
        self.map = None
        if not self.warm.any() or self.warm.all():
            return  # nothing to learn from, or nothing to map
        content = F.normalize(item_features[task.target].double(), dim=1)  # [n_target, dim]
        self.map = RidgeMap.fit(content[self.warm], self.target_factors[self.warm], float(self.config.map_lam))
        self.target_factors[~self.warm] = self.map(content[~self.warm])
