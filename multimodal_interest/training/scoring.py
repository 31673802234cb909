"""Scoring cold-start users with a trained model: the scorer the evaluator calls, and the
per-user model-selection metric (validation NDCG@10) the trainer averages across processes."""
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


class UserNdcg10:
    """``metric(users) -> [len(users)] float64``: each user's NDCG@10 over the full target
    ranking (the model-selection metric), scoring ``batch_size`` users at a time. A user may
    appear more than once (accelerate pads a process's last batch with repeats): each
    occurrence gets the user's value."""

    def __init__(self, model: InterestModel, task: ColdStartTask, batch_size: int = 512):
        self.scorer = ModelScorer(model, task, batch_size)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        from multimodal_interest.evaluate import evaluate

        users = np.asarray(users, dtype=np.int64)
        _, first = np.unique(users, return_index=True)
        unique = users[np.sort(first)]  # first occurrences, in the given order
        values = evaluate(self.scorer, self.scorer.task, unique, ks=(10,)).values["ndcg@10"]
        if len(unique) == len(users):
            return values
        where = {int(u): i for i, u in enumerate(unique)}
        return values[[where[int(u)] for u in users]]


def valid_ndcg10(model: InterestModel, task: ColdStartTask, users: np.ndarray, batch_size: int = 512) -> float:
    """Mean NDCG@10 of ``users`` over the full target ranking (the model-selection metric),
    scoring ``batch_size`` users at a time, in this process alone."""
    return float(UserNdcg10(model, task, batch_size)(users).mean())
