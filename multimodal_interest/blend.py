"""The interest model blended with item kNN: ``z(model) + w * z(item-knn)``.

The two read different evidence: the interest model reads what the items are (their
content, through the encoders), item kNN reads which target items the same training users
had beside the user's source items (co-occurrence). The blend adds them after
standardising each per user (mean 0, standard deviation 1 over the target items, so ``w``
means the same whatever either scorer's scale), with ``w`` picked on the validation users
from :data:`WEIGHTS` -- four weights, the baselines' default budget (``DEFAULT_BUDGET`` settings).
It is reported as its own method, never as the interest model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import Scorer, evaluate

BLEND = "interest-model+item-knn"
PARTS = ("interest-model", "item-knn")
WEIGHTS = (0.25, 0.5, 1.0, 2.0)  # weight of item kNN


def standardize(scores: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` scores -> ``[B, N]`` float32, each row shifted and scaled to mean 0, std 1
    (a constant row becomes 0)."""
    s = scores.double()
    z = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True).clamp(min=1e-12)
    return z.float()


@dataclass
class Blend:
    """``scorer(users) -> [len(users), n_target_items]``: ``z(model) + weight * z(knn)``."""

    model: Scorer
    knn: Scorer
    weight: float

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        return standardize(self.model(users)) + self.weight * standardize(self.knn(users))


def tune_blend(model: Scorer, knn: Scorer, task: ColdStartTask,
               weights: tuple[float, ...] = WEIGHTS) -> tuple[Blend, list[dict]]:
    """The blend whose weight has the best NDCG@10 on ``task.valid_users``, and every trial."""
    trials = []
    for w in weights:
        result = evaluate(Blend(model, knn, w), task, task.valid_users, ks=(10,))
        trials.append({"weight": w, "valid_ndcg10": float(result.values["ndcg@10"].mean())})
    best = max(trials, key=lambda t: t["valid_ndcg10"])
    return Blend(model, knn, best["weight"]), trials
