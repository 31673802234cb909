"""A small cross-platform world with planted signal, for training tests.

Users have a taste vector; items of every platform have a content vector in the same latent
space (seen through a different random rotation per platform, as two encoders would) and a
user interacts with the items closest to their taste. So a source history says which target
items a user will like, and a model must learn the mapping from the overlapping users.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.features import ItemFeatures


def synthetic_task(n_users: int = 400, n_items=(120, 100), latent: int = 8, width: int = 16,
                   per_user: int = 8, seed: int = 0, platforms=("a", "b"), source: str = "a",
                   target: str = "b", one_encoder: bool = False) -> tuple[ColdStartTask, ItemFeatures]:
    """The ``source -> target`` task of the world (valid and test users: 60 each, the same
    users whatever the direction), and every platform's item features. ``one_encoder``: every
    platform's content is seen through the same rotation (one encoder for all, so content is
    comparable across platforms)."""
    rng = np.random.default_rng(seed)
    taste = rng.standard_normal((n_users, latent))
    rows, vectors = [], {}
    first = None
    for p, n in zip(platforms, n_items):
        z = rng.standard_normal((n, latent))
        rotation = rng.standard_normal((latent, width))
        first = rotation if first is None else first
        rotation = first if one_encoder else rotation
        vectors[p] = torch.from_numpy((z @ rotation).astype(np.float32))
        affinity = taste @ z.T + rng.gumbel(size=(n_users, n)) * 1.5
        top = np.argsort(-affinity, axis=1)[:, :per_user]
        for u in range(n_users):
            for t, i in enumerate(rng.permutation(top[u])):
                rows.append((u, p, int(i), float(t), 1.0))
    df = pd.DataFrame(rows, columns=["user_idx", "platform", "item_idx", "timestamp", "weight"])
    users = rng.permutation(n_users)
    valid, test = np.sort(users[:60]), np.sort(users[60:120])
    hidden = df["user_idx"].isin(np.concatenate([valid, test])) & (df["platform"] == target)
    task = ColdStartTask("synthetic", "s0", source, target, dict(zip(platforms, n_items)), n_users,
                         df[~hidden].reset_index(drop=True), df[hidden].reset_index(drop=True),
                         valid, test)
    features = ItemFeatures({p: {"text": v} for p, v in vectors.items()},
                            {p: {"text": torch.ones(len(v), dtype=torch.bool)} for p, v in vectors.items()},
                            {"text": "0" * 16})
    return task, features
