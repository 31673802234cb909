"""Training batches, planned per epoch from a seed so that a resumed run sees the same ones.

An epoch walks the overlapping training users (they have both a source history and target
items) in a seeded order. Each step pairs a *cross* batch (source history -> the user's target
items) with a *within* batch (a prefix of some user's history on one platform -> the item that
followed it); within batches cycle through the platforms. Plans hold only user ids and cut
points; tensors are gathered when a batch is built, without Python loops over rows.
:class:`EpochSteps` serves an epoch's steps to a DataLoader that accelerate shards across
processes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from multimodal_interest.data.task import ColdStartTask


class Sequences:
    """Each user's time-ordered items on one platform, as one flat array plus row offsets."""

    def __init__(self, train: pd.DataFrame, platform: str, n_users: int):
        rows = train[train["platform"] == platform]
        u = rows["user_idx"].to_numpy(np.int64)
        order = np.lexsort((np.arange(len(u)), rows["timestamp"].to_numpy(np.float64), u))
        self.platform = platform
        self.items = rows["item_idx"].to_numpy(np.int64)[order]
        counts = np.bincount(u, minlength=n_users)
        self.stop = np.cumsum(counts)
        self.start = self.stop - counts

    def lengths(self, users: np.ndarray) -> np.ndarray:
        return self.stop[users] - self.start[users]

    def windows(self, users: np.ndarray, ends: np.ndarray | None = None,
                max_len: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``max_len`` items before position ``ends[i]`` (default: the whole history)
        of each user: ``items [B, L]`` int64 and ``mask [B, L]`` bool, left-aligned."""
        stop = self.stop[users] if ends is None else self.start[users] + ends
        start = np.maximum(self.start[users], stop - max_len)
        n = stop - start
        col = np.arange(max(int(n.max()) if len(n) else 0, 1))
        mask = col[None, :] < n[:, None]
        items = np.where(mask, self.items[np.where(mask, start[:, None] + col, 0)] if len(self.items) else 0, 0)
        return torch.from_numpy(items), torch.from_numpy(mask)

    def targets(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item of each user as ``(row [P], item [P])`` pairs (row = position in users)."""
        n = self.lengths(users)
        rows = np.repeat(np.arange(len(users)), n)
        offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        items = self.items[np.repeat(self.start[users], n) + offsets]
        return torch.from_numpy(rows), torch.from_numpy(items)


@dataclass
class StepPlan:
    """One training step: whose histories, and where the within-platform prefixes end."""

    cross_users: np.ndarray  # [B] user_idx
    within_platform: str | None
    within_users: np.ndarray  # [B'] user_idx
    within_ends: np.ndarray  # [B'] prefix length; the target is the item at that position
    seed: int = 0  # for this step's random history dropout


class BatchPlanner:
    """Plans epochs of :class:`StepPlan` and turns each into tensors."""

    def __init__(self, task: ColdStartTask, batch_size: int, max_len: int, within: bool, seed: int,
                 history_dropout: float = 0.0):
        self.task, self.batch_size, self.max_len, self.seed = task, batch_size, max_len, seed
        self.history_dropout = history_dropout
        self.seqs = {p: Sequences(task.train, p, task.n_users) for p in (task.source, task.target)}
        self.cross_users = task.overlap_users()
        if len(self.cross_users) == 0:
            raise ValueError(f"{task.dataset}/{task.split}: no training user has interactions on both "
                             f"{task.source!r} and {task.target!r}; nothing teaches the cross-platform map")
        self.within_users = {}
        if within:
            for p, seq in self.seqs.items():
                users = np.flatnonzero(seq.lengths(np.arange(task.n_users)) >= 2)
                if len(users):
                    self.within_users[p] = users

    def plan(self, epoch: int, min_steps: int = 1) -> list[StepPlan]:
        """The steps of ``epoch``: the same for the same (seed, epoch), whatever ran before.
        An epoch is one pass over the overlapping users, or as many passes as make
        ``min_steps`` steps (small datasets would otherwise validate after every few steps)."""
        rng = np.random.default_rng([self.seed, epoch])
        passes = -(-min_steps * self.batch_size // len(self.cross_users))  # ceil
        users = np.concatenate([rng.permutation(self.cross_users) for _ in range(max(passes, 1))])
        platforms = sorted(self.within_users)
        steps = []
        for s, b in enumerate(range(0, len(users), self.batch_size)):
            cross = users[b:b + self.batch_size]
            if platforms:
                p = platforms[s % len(platforms)]
                who = rng.choice(self.within_users[p], size=len(cross))
                # a prefix of 1 .. len-1 items; the item after it is the target
                ends = 1 + (rng.random(len(who)) * (self.seqs[p].lengths(who) - 1)).astype(np.int64)
                steps.append(StepPlan(cross, p, who, ends, int(rng.integers(1 << 62))))
            else:
                steps.append(StepPlan(cross, None, np.empty(0, np.int64), np.empty(0, np.int64),
                                      int(rng.integers(1 << 62))))
        return steps

    def build(self, step: StepPlan) -> dict:
        """Tensors of one step (on the CPU)."""
        src, tgt = self.seqs[self.task.source], self.seqs[self.task.target]
        items, mask = src.windows(step.cross_users, max_len=self.max_len)
        if self.history_dropout > 0:  # hide random history items; every history keeps one
            keep = torch.from_numpy(np.random.default_rng(step.seed).random(mask.shape) >= self.history_dropout)
            keep |= ~(mask & keep).any(1, keepdim=True) & (torch.arange(mask.shape[1]) == 0)
            mask = mask & keep
        pos_rows, pos_items = tgt.targets(step.cross_users)
        batch = {"src_items": items, "src_mask": mask, "pos_rows": pos_rows, "pos_items": pos_items,
                 "within_platform": step.within_platform}
        if step.within_platform is not None:
            seq = self.seqs[step.within_platform]
            w_items, w_mask = seq.windows(step.within_users, step.within_ends, self.max_len)
            batch.update(w_items=w_items, w_mask=w_mask,
                         w_target=torch.from_numpy(seq.items[seq.start[step.within_users] + step.within_ends]))
        return batch


class EpochSteps(torch.utils.data.Dataset):
    """One epoch's steps as a map-style dataset of built batches, for one DataLoader that
    ``accelerator.prepare`` shards: process r of N gets steps r, r + N, ... (one global batch
    per optimizer step). :meth:`plan_epoch` plans an epoch (at least ``min_steps`` steps) and
    cuts it to a multiple of N, so no process is left without its share of the last round and
    accelerate never pads it with repeated steps (unless an epoch has fewer steps than N)."""

    def __init__(self, planner: BatchPlanner, num_processes: int = 1, min_steps: int = 1):
        self.planner, self.num_processes, self.min_steps = planner, num_processes, min_steps
        self.steps: list[StepPlan] = []

    def plan_epoch(self, epoch: int) -> None:
        steps = self.planner.plan(epoch, self.min_steps)
        self.steps = steps[:len(steps) // self.num_processes * self.num_processes or None]

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict:
        return self.planner.build(self.steps[i])

    def loader(self) -> torch.utils.data.DataLoader:
        """Steps in order, one per batch; the loader has its own generator, so iterating it
        draws nothing from the global RNG (dropout stays reproducible)."""
        return torch.utils.data.DataLoader(self, batch_size=1, collate_fn=_only, generator=torch.Generator())


def _only(batch: list[dict]) -> dict:
    return batch[0]
