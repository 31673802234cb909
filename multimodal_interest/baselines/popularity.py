"""Popularity, zero-shot content nearest-neighbour, and their blend."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.space import Choice, LogUniform
from multimodal_interest.data.task import ColdStartTask


def target_popularity(task: ColdStartTask) -> torch.Tensor:
    """``[n_target]`` float32: distinct training users per target item."""
    rows = task.train.loc[task.train["platform"] == task.target, ["user_idx", "item_idx"]]
    counts = np.bincount(rows.drop_duplicates()["item_idx"].to_numpy(np.int64),
                         minlength=task.n_items[task.target])
    return torch.from_numpy(counts.astype(np.float32))


def mean_source_vectors(task: ColdStartTask, users: np.ndarray, vectors: torch.Tensor) -> torch.Tensor:
    """``[B, dim]``: the normalised mean of each user's source item features.

    ``vectors`` ``[n_source, dim]``, normalised; a user without source items gets a zero vector.
    """
    h = task.source_histories(users)
    v = vectors[h.items] * h.mask[..., None]  # [B, L, dim]
    return F.normalize(v.sum(1), dim=1)


@dataclass
class NoOptions:
    pass


@register_baseline
class Popularity(Baseline):
    """Every user gets the target items ranked by how many training users have them."""

    name = "popularity"
    Config = NoOptions

    def _fit(self, task, item_features):
        self.pop = target_popularity(task)

    def _score(self, users):
        return self.pop.expand(len(users), -1)


@register_baseline
class ContentKNN(Baseline):
    """Zero-shot: cosine between the mean of the user's source item features and each target item's."""

    name = "content-knn"
    Config = NoOptions
    needs_features = True

    def _fit(self, task, item_features):
        self.src = F.normalize(item_features[task.source].float(), dim=1)
        self.tgt = F.normalize(item_features[task.target].float(), dim=1)

    def _score(self, users):
        return mean_source_vectors(self.task, users, self.src) @ self.tgt.T


@dataclass
class BlendConfig:
    weight: float = 1.0  # lambda: weight of the normalised popularity


@register_baseline
class ContentPop(ContentKNN):
    """content-knn + lambda * popularity / max popularity (lambda tuned on valid: the grid
    0.3, 1, 3, 10; beyond it, a larger budget draws 0 or log-uniform in [0.03, 30])."""

    name = "content-pop"
    Config = BlendConfig
    grid = [{"weight": w} for w in (0.3, 1.0, 3.0, 10.0)]
    space = {"weight": Choice((0.0, LogUniform(0.03, 30.0)))}

    def _fit(self, task, item_features):
        super()._fit(task, item_features)
        pop = target_popularity(task)
        self.prior = pop / pop.max().clamp(min=1)

    def _score(self, users):
        return super()._score(users) + self.config.weight * self.prior
