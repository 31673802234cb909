"""BPR matrix factorisation, the building block of EMCDR, PTUPCDR and CMF.

Implicit feedback: each training interaction (u, i) is paired with one item j drawn
uniformly from the same platform's items, and the loss is BPR's
``-log sigmoid(s(u, i) - s(u, j))`` plus an L2 penalty on the embeddings in the batch.
Scores are ``s(u, i) = <U[u], V[i]> + b[i]``; the item bias learns a popularity prior.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multimodal_interest.baselines.base import seeded
from multimodal_interest.data.task import ColdStartTask


@dataclass
class MFConfig:
    dim: int = 64
    reg: float = 1e-4  # L2 weight on the batch's embeddings
    lr: float = 5e-3  # Adam
    batch_size: int = 8192
    mf_epochs: int = 30  # epochs of each pretrained per-platform factorisation
    seed: int = 0


class MF(nn.Module):
    """User and item factors with an item bias."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.users.weight, std=0.05)
        nn.init.normal_(self.items.weight, std=0.05)
        nn.init.zeros_(self.bias.weight)

    def item_scores(self, user_vectors: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """``[B, hi - lo]`` scores of items ``lo:hi`` for ``user_vectors`` ``[B, dim]``."""
        return user_vectors @ self.items.weight[lo:hi].T + self.bias.weight[lo:hi, 0]


def bpr_loss(user_vectors: torch.Tensor, items: nn.Embedding, bias: nn.Embedding, pos: torch.Tensor,
             neg: torch.Tensor, reg: float) -> torch.Tensor:
    """BPR loss of ``user_vectors`` ``[B, dim]`` preferring items ``pos`` ``[B]`` over ``neg`` ``[B]``."""
    vp, vn = items(pos), items(neg)
    diff = (user_vectors * (vp - vn)).sum(1) + bias(pos)[:, 0] - bias(neg)[:, 0]
    penalty = user_vectors.pow(2).sum(1) + vp.pow(2).sum(1) + vn.pow(2).sum(1)
    return F.softplus(-diff).mean() + reg * penalty.mean()


def train_rows(task: ColdStartTask, platform: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[R]`` users and ``[R]`` items of the distinct (user, item) pairs of ``platform`` in train."""
    rows = task.train.loc[task.train["platform"] == platform, ["user_idx", "item_idx"]].drop_duplicates()
    return (torch.tensor(rows["user_idx"].to_numpy(np.int64)),
            torch.tensor(rows["item_idx"].to_numpy(np.int64)))


def train_bpr(model: MF, users: torch.Tensor, items: torch.Tensor, neg_low: torch.Tensor,
              neg_count: torch.Tensor, cfg: MFConfig, epochs: int,
              after_epoch: Callable[[int], bool] | None = None) -> None:
    """Train ``model`` on pairs ``users``/``items`` ``[R]``; negatives of row r are drawn from
    ``neg_low[r] + [0, neg_count[r])``. ``after_epoch(epoch)`` returning True stops training."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for epoch in range(epochs):
        for b in torch.randperm(len(users), generator=gen).split(cfg.batch_size):
            neg = neg_low[b] + (torch.rand(len(b), generator=gen) * neg_count[b]).long()
            loss = bpr_loss(model.users(users[b]), model.items, model.bias, items[b], neg, cfg.reg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if after_epoch is not None and after_epoch(epoch):
            break
    model.eval()


def platform_mf(task: ColdStartTask, platform: str, cfg: MFConfig) -> MF:
    """A BPR-MF of one platform's training rows (user rows for every user_idx of the task)."""
    users, items = train_rows(task, platform)
    with seeded(cfg.seed):
        model = MF(task.n_users, task.n_items[platform], cfg.dim)
    n = task.n_items[platform]
    train_bpr(model, users, items, torch.zeros_like(items), torch.full_like(items, n), cfg, cfg.mf_epochs)
    return model
