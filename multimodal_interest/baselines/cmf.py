"""CMF (Singh & Gordon, KDD 2008), implicit-feedback form: one user factor shared by both
platforms, one BPR-MF over the union of both platforms' items.

A cold user's factor is learned from their source rows alone; the target items' factors
are learned from the overlapping training users, which ties the two item spaces together.
Negatives are drawn from the positive item's own platform.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.mf import MF, MFConfig, bpr_batches, train_rows
from multimodal_interest.baselines.space import Choice, LogUniform
from multimodal_interest.baselines.training import EarlyStopping, seeded, train_loop


@dataclass
class CMFConfig(MFConfig):
    mf_epochs: int = 60  # at most; stops early on valid NDCG@10
    eval_every: int = 3


@register_baseline
class CMF(Baseline):
    """Grid: lr 1e-3, 5e-3 x reg 1e-3, 1e-2 (64 factors). Beyond it (a larger budget): lr
    log-uniform in [5e-4, 1e-2], reg log-uniform in [1e-4, 1e-1], factors 16, 32, 64 or 128;
    each setting trains at most ``mf_epochs`` epochs, stopped early on valid."""

    name = "cmf"
    Config = CMFConfig
    grid = [{"lr": lr, "reg": r} for lr in (1e-3, 5e-3) for r in (1e-3, 1e-2)]
    space = {"lr": LogUniform(5e-4, 1e-2), "reg": LogUniform(1e-4, 1e-1), "dim": Choice((16, 32, 64, 128))}
    early_stopping = True

    def _fit(self, task, item_features):
        cfg = self.config
        n_src, n_tgt = task.n_items[task.source], task.n_items[task.target]
        su, si = train_rows(task, task.source)
        tu, ti = train_rows(task, task.target)
        users, items = torch.cat([su, tu]), torch.cat([si, ti + n_src])
        low = torch.cat([torch.zeros_like(si), torch.full_like(ti, n_src)])
        count = torch.cat([torch.full_like(si, n_src), torch.full_like(ti, n_tgt)])
        with seeded(cfg.seed):
            self.mf = MF(task.n_users, n_src + n_tgt, cfg.dim)
        self.offset = n_src
        loss = bpr_batches(self.mf, users, items, low, count, cfg.reg)
        with EarlyStopping(self, self.mf, cfg.eval_every) as stop:
            train_loop(self.mf, len(users), loss, cfg.lr, cfg.batch_size, cfg.mf_epochs, cfg.seed, stop)

    def _score(self, users):
        return self.mf.item_scores(self.mf.users.weight[torch.from_numpy(users)], self.offset)
