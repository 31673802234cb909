"""EMCDR (Man et al., IJCAI 2017): per-platform BPR-MF, then an MLP mapping user factors.

1. BPR-MF on the source platform's training rows (every user with source rows, cold users
   included) and on the target platform's (training users only).
2. An MLP ``f`` (tanh hidden layer) learns ``U_target[u] ~ f(U_source[u])`` by squared error
   on the overlapping training users.
3. A cold user is scored with the *mapped* source factor: ``<f(U_source[u]), V_target[j]> + b[j]``.
   (A toolkit that scores source-only users with their untrained target row instead scores
   noise; see EVALUATION.md.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.mf import MFConfig, platform_mf
from multimodal_interest.baselines.space import Choice, LogUniform
from multimodal_interest.baselines.training import EarlyStopping, seeded, train_loop


@dataclass
class EMCDRConfig(MFConfig):
    map_epochs: int = 200
    map_lr: float = 1e-3
    map_batch: int = 256
    eval_every: int = 10  # epochs of the mapping between validation checks


@register_baseline
class EMCDR(Baseline):
    """Grid: dim 32, 64 x reg 1e-4, 1e-2. Beyond it (a larger budget): dim 16, 32, 64 or
    128, reg log-uniform in [1e-5, 1e-1], the MF's lr log-uniform in [1e-3, 1e-2], the
    mapping's lr log-uniform in [1e-4, 1e-2]; the mapping stops early on valid."""

    name = "emcdr"
    Config = EMCDRConfig
    grid = [{"dim": d, "reg": r} for d in (32, 64) for r in (1e-4, 1e-2)]
    space = {"dim": Choice((16, 32, 64, 128)), "reg": LogUniform(1e-5, 1e-1), "lr": LogUniform(1e-3, 1e-2),
             "map_lr": LogUniform(1e-4, 1e-2)}
    early_stopping = True

    def _fit(self, task, item_features):
        cfg = self.config
        self.src = platform_mf(task, task.source, cfg)
        self.tgt = platform_mf(task, task.target, cfg)
        with seeded(cfg.seed):
            self.map = nn.Sequential(nn.Linear(cfg.dim, 2 * cfg.dim), nn.Tanh(), nn.Linear(2 * cfg.dim, cfg.dim))
        both = torch.from_numpy(task.overlap_users())
        x, y = self.src.users.weight.detach()[both], self.tgt.users.weight.detach()[both]
        with EarlyStopping(self, self.map, cfg.eval_every) as stop:
            train_loop(self.map, len(both), lambda b, gen: F.mse_loss(self.map(x[b]), y[b]),
                       cfg.map_lr, cfg.map_batch, cfg.map_epochs, cfg.seed, stop)

    def _score(self, users):
        u = self.map(self.src.users.weight[torch.from_numpy(users)])
        return self.tgt.item_scores(u)
