"""Training helpers of the learned baselines: seeded initialisation, a mini-batch loop, and
early stopping on validation NDCG@10 (checked every ``every`` epochs; training stops after
:data:`PATIENCE` checks without improvement and the best state is restored)."""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from multimodal_interest.baselines.base import Baseline

logger = logging.getLogger(__name__)

PATIENCE = 3


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Initialise modules from ``seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def train_loop(module: nn.Module, n_rows: int, batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
               lr: float, batch_size: int, epochs: int, seed: int,
               after_epoch: Callable[[int], bool] | None = None) -> None:
    """Adam on ``module``'s trainable parameters over shuffled batches of rows ``0..n_rows-1``.

    ``batch_loss(rows, generator)`` returns the loss of a ``[batch]`` of row indices (the
    generator draws its negatives); ``after_epoch(epoch)`` returning True stops training.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    for epoch in range(epochs):
        for rows in torch.randperm(n_rows, generator=gen).split(batch_size):
            loss = batch_loss(rows, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if after_epoch is not None and after_epoch(epoch):
            break
    module.eval()


class EarlyStopping:
    """``with EarlyStopping(model, module, every) as stop: train_loop(..., after_epoch=stop)``.

    Keeps ``module``'s state with the best valid NDCG@10 of ``model`` and restores it on
    exit; ``model.valid_history`` gets the value of each check.
    """

    def __init__(self, model: Baseline, module: nn.Module, every: int, patience: int = PATIENCE) -> None:
        self.model, self.module, self.every, self.patience = model, module, every, patience
        self.best, self.best_state, self.bad, self.history = -1.0, None, 0, []

    def __call__(self, epoch: int) -> bool:
        """After ``epoch`` (0-based): True when training should stop."""
        if (epoch + 1) % self.every:
            return False
        self.module.eval()
        value = self.model.valid_score()
        self.module.train()
        self.history.append(value)
        logger.info("%s: epoch %d: valid NDCG@10 %.4f", self.model.name, epoch + 1, value)
        if value > self.best:
            self.best, self.best_state, self.bad = value, copy.deepcopy(self.module.state_dict()), 0
        else:
            self.bad += 1
        return self.bad >= self.patience

    def __enter__(self) -> EarlyStopping:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        self.module.eval()
        self.model.valid_history = self.history
