"""PTUPCDR (Zhu et al., WSDM 2022): a meta network turns each user's source history into a
personal bridge from their source factor to the target item space.

1. BPR-MF per platform, as in EMCDR (frozen afterwards).
2. Characteristic encoder: attention over the user's source item factors,
   ``a_l = softmax_l(w^T relu(W e_l))``, ``p_u = sum_l a_l e_l``.
3. Meta network: ``p_u -> [dim, dim]`` bridge ``W_u``; the transferred factor is
   ``U_source[u] @ W_u``, scored as ``<., V_target[j]> + b[j]``.
4. Task-oriented loss on the overlapping training users' target interactions. The paper
   regresses ratings; for implicit feedback we use BPR with one uniform target negative per
   interaction, through the frozen target factors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.mf import MFConfig, platform_mf, train_rows
from multimodal_interest.baselines.space import Choice, LogUniform
from multimodal_interest.baselines.training import EarlyStopping, seeded, train_loop


@dataclass
class PTUPCDRConfig(MFConfig):
    meta_dim: int = 64  # hidden width of the meta network
    max_history: int = 50  # most recent source items read by the encoder
    meta_epochs: int = 30  # at most; stops early on valid NDCG@10
    meta_lr: float = 1e-3
    eval_every: int = 1


class MetaBridge(nn.Module):
    """Characteristic encoder + meta network -> transferred user factors."""

    def __init__(self, dim: int, meta_dim: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1, bias=False))
        self.meta = nn.Sequential(nn.Linear(dim, meta_dim), nn.ReLU(), nn.Linear(meta_dim, dim * dim))

    def forward(self, user: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``user`` ``[B, dim]``, ``history`` ``[B, L, dim]``, ``mask`` ``[B, L]`` -> ``[B, dim]``."""
        logits = self.attention(history)[..., 0].masked_fill(~mask, -torch.inf)
        weights = torch.nan_to_num(logits.softmax(1))  # a user without history: all zeros
        p = (weights[..., None] * history).sum(1)  # [B, dim]
        bridge = self.meta(p).view(-1, user.shape[1], user.shape[1])  # [B, dim, dim]
        return (user[:, None, :] @ bridge)[:, 0]


@register_baseline
class PTUPCDR(Baseline):
    """Grid: meta_lr 1e-3, 5e-3 x reg 1e-4, 1e-2. Beyond it (a larger budget): meta_lr
    log-uniform in [1e-4, 1e-2], reg log-uniform in [1e-5, 1e-1], dim 16, 32 or 64, meta_dim
    32, 64 or 128; the meta network stops early on valid."""

    name = "ptupcdr"
    Config = PTUPCDRConfig
    grid = [{"meta_lr": lr, "reg": r} for lr in (1e-3, 5e-3) for r in (1e-4, 1e-2)]
    space = {"meta_lr": LogUniform(1e-4, 1e-2), "reg": LogUniform(1e-5, 1e-1), "dim": Choice((16, 32, 64)),
             "meta_dim": Choice((32, 64, 128))}
    early_stopping = True

    def _fit(self, task, item_features):
        cfg = self.config
        self.src = platform_mf(task, task.source, cfg).requires_grad_(False)
        self.tgt = platform_mf(task, task.target, cfg).requires_grad_(False)
        h = task.histories(task.source, np.arange(task.n_users), cfg.max_history)  # row = user_idx
        self.hist_items, self.hist_mask = h.items, h.mask
        with seeded(cfg.seed):
            self.bridge = MetaBridge(cfg.dim, cfg.meta_dim)
        users, items = train_rows(task, task.target)
        keep = torch.from_numpy(np.isin(users.numpy(), task.overlap_users()))
        users, items = users[keep], items[keep]
        n_tgt = task.n_items[task.target]

        def loss(b: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            neg = torch.randint(n_tgt, (len(b),), generator=gen)
            return self.tgt.bpr_loss(self._transfer(users[b].numpy()), items[b], neg, cfg.reg)

        with EarlyStopping(self, self.bridge, cfg.eval_every) as stop:
            train_loop(self.bridge, len(users), loss, cfg.meta_lr, cfg.batch_size, cfg.meta_epochs, cfg.seed, stop)

    def _transfer(self, users: np.ndarray) -> torch.Tensor:
        """``[B, dim]`` transferred target-space factors of ``users``."""
        u = torch.from_numpy(users)
        hist = self.src.items(self.hist_items[u])  # [B, L, dim]
        return self.bridge(self.src.users.weight[u], hist, self.hist_mask[u])

    def _score(self, users):
        return self.tgt.item_scores(self._transfer(users))
