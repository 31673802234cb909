"""CMF (Singh & Gordon, KDD 2008), implicit-feedback form: one user factor shared by both
platforms, one BPR-MF over the union of both platforms' items.

A cold user's factor is learned from their source rows alone; the target items' factors
are learned from the overlapping training users, which ties the two item spaces together.
Negatives are drawn from the positive item's own platform.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from multimodal_interest.baselines.base import Baseline, EarlyStopping, register_baseline, seeded
from multimodal_interest.baselines.mf import MF, MFConfig, train_bpr, train_rows


@dataclass
class CMFConfig(MFConfig):
    mf_epochs: int = 60  # at most; stops early on valid NDCG@10
    eval_every: int = 3


@register_baseline
class CMF(Baseline):
    name = "cmf"
    Config = CMFConfig
    grid = [{"lr": lr, "reg": r} for lr in (1e-3, 5e-3) for r in (1e-3, 1e-2)]

    def _fit(self, task, item_vectors):
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
        stop = EarlyStopping(self, self.mf)
        train_bpr(self.mf, users, items, low, count, cfg, cfg.mf_epochs,
                  lambda epoch: (epoch + 1) % cfg.eval_every == 0 and stop.step())
        stop.restore()
        self.valid_history = stop.history  # valid NDCG@10 at each check

    def _score(self, users):
        return self.mf.item_scores(self.mf.users.weight[torch.from_numpy(users)], self.offset)
