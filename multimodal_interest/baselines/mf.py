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

from multimodal_interest.baselines.training import seeded, train_loop
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

    def bpr_loss(self, user_vectors: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                 reg: float) -> torch.Tensor:
        """BPR loss of ``user_vectors`` ``[B, dim]`` preferring items ``pos`` ``[B]`` over ``neg`` ``[B]``."""
        vp, vn = self.items(pos), self.items(neg)
        diff = (user_vectors * (vp - vn)).sum(1) + self.bias(pos)[:, 0] - self.bias(neg)[:, 0]
        penalty = user_vectors.pow(2).sum(1) + vp.pow(2).sum(1) + vn.pow(2).sum(1)
        return F.softplus(-diff).mean() + reg * penalty.mean()


def train_rows(task: ColdStartTask, platform: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[R]`` users and ``[R]`` items of the distinct (user, item) pairs of ``platform`` in train."""
    rows = task.train.loc[task.train["platform"] == platform, ["user_idx", "item_idx"]].drop_duplicates()
    return (torch.tensor(rows["user_idx"].to_numpy(np.int64)),
            torch.tensor(rows["item_idx"].to_numpy(np.int64)))


def bpr_batches(model: MF, users: torch.Tensor, items: torch.Tensor, neg_low: torch.Tensor,
                neg_count: torch.Tensor, reg: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The :func:`train_loop` loss of rows of ``users``/``items`` ``[R]``; the negative of row r
    is drawn from ``neg_low[r] + [0, neg_count[r])``."""
    def loss(b: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        neg = neg_low[b] + (torch.rand(len(b), generator=gen) * neg_count[b]).long()
        return model.bpr_loss(model.users(users[b]), items[b], neg, reg)
    return loss


def platform_mf(task: ColdStartTask, platform: str, cfg: MFConfig) -> MF:
    """A BPR-MF of one platform's training rows (user rows for every user_idx of the task)."""
    users, items = train_rows(task, platform)
    n = task.n_items[platform]
    with seeded(cfg.seed):
        model = MF(task.n_users, n, cfg.dim)
    loss = bpr_batches(model, users, items, torch.zeros_like(items), torch.full_like(items, n), cfg.reg)
    train_loop(model, len(users), loss, cfg.lr, cfg.batch_size, cfg.mf_epochs, cfg.seed)
    return model
