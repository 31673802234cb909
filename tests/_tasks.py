"""Small synthetic ColdStartTasks for tests of metrics, the evaluator and baselines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from multimodal_interest.data.task import INTERACTION_COLUMNS, ColdStartTask


def make_task(rows: list[tuple[int, str, int]], n_items: dict[str, int], valid: list[int],
              test: list[int], source: str = "src", target: str = "tgt",
              warm: bool = False) -> ColdStartTask:
    """A task from (user, platform, item) rows in time order; valid/test users' target rows
    are hidden unless ``warm`` (then they are both in train and in holdout)."""
    df = pd.DataFrame(rows, columns=["user_idx", "platform", "item_idx"])
    df["timestamp"] = np.arange(len(df), dtype=np.float64)
    df["weight"] = 1.0
    df = df[list(INTERACTION_COLUMNS)]
    hidden = df["user_idx"].isin(valid + test) & (df["platform"] == target)
    train = df if warm else df[~hidden]
    return ColdStartTask("synthetic", "s0", source, target, dict(n_items), int(df["user_idx"].max()) + 1,
                         train.reset_index(drop=True), df[hidden].reset_index(drop=True),
                         np.asarray(valid, dtype=np.int64), np.asarray(test, dtype=np.int64))


def planted_task(n_users: int = 1200, n_clusters: int = 20, per_cluster: int = 10, seed: int = 0,
                 ) -> tuple[ColdStartTask, dict[str, torch.Tensor]]:
    """Source item i implies target items of i's cluster (items ``i // per_cluster``): each
    user likes one cluster and has 5 of its items on the source and 4 others on the target.
    Clusters have Zipf-like popularity, so popularity is a real (weaker) signal. Item
    vectors: a random vector per cluster plus item noise, on both platforms. The last
    200 users are split into 100 valid and 100 test users; test user ``n_users - 1`` has no
    source rows at all."""
    rng = np.random.default_rng(seed)
    n = n_clusters * per_cluster
    weights = 1.0 / np.arange(1, n_clusters + 1)
    rows = []
    for u in range(n_users):
        c = rng.choice(n_clusters, p=weights / weights.sum())
        items = c * per_cluster + rng.permutation(per_cluster)
        if u != n_users - 1:
            rows += [(u, "src", int(i)) for i in items[:5]]
        rows += [(u, "tgt", int(i)) for i in items[5:9]]
    users = list(range(n_users - 200, n_users))
    task = make_task(rows, {"src": n, "tgt": n}, valid=users[:100], test=users[100:])
    base = torch.randn(n_clusters, 16, generator=torch.Generator().manual_seed(seed))
    base = base.repeat_interleave(per_cluster, 0)  # [n, 16]
    vectors = {p: base + 0.5 * torch.randn(n, 16, generator=torch.Generator().manual_seed(seed + k))
               for k, p in enumerate(("src", "tgt"), 1)}
    return task, vectors
