"""Scoring cold-start users with a trained model: the scorer the evaluator calls."""
from __future__ import annotations

import numpy as np
import torch

from fusion import InterestModel
from multimodal_interest.data.task import ColdStartTask


class ModelScorer:
    """``scorer(users) -> [len(users), n_target_items]``: target scores from the users' source
    histories alone (a scorer for :func:`multimodal_interest.evaluate.evaluate`). The target's
    item vectors are computed once."""

    def __init__(self, model: InterestModel, task: ColdStartTask, batch_size: int = 512):
        self.model, self.task, self.batch_size = model.eval(), task, batch_size
        with torch.inference_mode():
            self.item_vectors = model.item_vectors(task.target)

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        model, task = self.model, self.task
        out = []
        with torch.inference_mode():
            for b in range(0, len(users), self.batch_size):
                h = task.source_histories(users[b:b + self.batch_size], max_len=model.fusion.config.max_len)
                u = model.encode_users(h.items, h.mask, task.source)
                out.append(model.logits(u, task.target, item_vectors=self.item_vectors).float())
        return torch.cat(out) if out else torch.empty(0, task.n_items[task.target])


def valid_ndcg10(model: InterestModel, task: ColdStartTask, users: np.ndarray, batch_size: int = 512) -> float:
    """Mean NDCG@10 of ``users`` over the full target ranking (the model-selection metric),
    scoring ``batch_size`` users at a time."""
    from multimodal_interest.evaluate import evaluate

    result = evaluate(ModelScorer(model, task, batch_size), task, users, ks=(10,))
    return float(result.values["ndcg@10"].mean())
