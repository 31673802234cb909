"""Fine-tuning steps, planned per epoch from a seed so that a resumed run sees the same ones.

A step is a batch of training users (they have source history and target items in
``task.train``), one target item per user drawn for the step (the positive), and
``negatives`` target items drawn by training popularity. Plans hold only ids; a step's
tensors are built from the pre-tokenized catalogs (:class:`~.tokens.ItemTokens`) when the
DataLoader asks, with each item's tokens once however many users share it. Served to
accelerate through :class:`~multimodal_interest.training.batches.EpochSteps`, which shards
steps across processes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.batches import Sequences
from multimodal_interest.training.finetune.tokens import ItemTokens


@dataclass
class StepPlan:
    users: np.ndarray  # [B] user_idx
    positives: np.ndarray  # [B] one target item_idx of each user
    negatives: np.ndarray  # [K] target item_idx drawn by popularity


class FinetunePlanner:
    """Plans epochs of :class:`StepPlan` (``batch_size`` users each, one process's share) and
    builds each into tensors.

    ``epoch_steps``: steps per epoch, all processes together (None: one pass over the users).
    """

    def __init__(self, task: ColdStartTask, tokens: dict[str, ItemTokens] | None, batch_size: int,
                 max_len: int, negatives: int, seed: int, epoch_steps: int | None = None):
        self.task, self.tokens, self.batch_size, self.max_len = task, tokens, batch_size, max_len
        self.negatives, self.seed, self.epoch_steps = negatives, seed, epoch_steps
        self.source = Sequences(task.train, task.source, task.n_users)
        self.target = Sequences(task.train, task.target, task.n_users)
        self.users = task.overlap_users()  # [U] the training users: source history and target items
        if len(self.users) == 0:
            raise ValueError(f"{task.label}: no training user has interactions on both {task.source!r} "
                             f"and {task.target!r}; nothing to fine-tune on")
        counts = np.bincount(self.target.items, minlength=task.n_items[task.target]).astype(np.float64)
        self.popularity = counts / counts.sum()  # [N_t] cold items are never drawn

    def plan(self, epoch: int, min_steps: int = 1) -> list[StepPlan]:
        """The steps of ``epoch`` (at least ``min_steps``): the same for the same (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        steps = max(min_steps, self.epoch_steps or 0)
        wanted = steps * self.batch_size if steps else len(self.users)
        passes = max(1, -(-wanted // len(self.users)))
        users = np.concatenate([rng.permutation(self.users) for _ in range(passes)])
        if self.epoch_steps:
            users = users[:wanted]
        plans = []
        for b in range(0, len(users), self.batch_size):
            who = users[b:b + self.batch_size]
            n = self.target.lengths(who)
            pick = self.target.start[who] + (rng.random(len(who)) * n).astype(np.int64)
            negatives = rng.choice(len(self.popularity), size=self.negatives, p=self.popularity) \
                if self.negatives else np.empty(0, np.int64)
            plans.append(StepPlan(who, self.target.items[pick], negatives))
        return plans

    def build(self, step: StepPlan) -> dict[str, torch.Tensor]:
        """One step's tensors (CPU): the token ids of its distinct items, source rows first
        (``input_ids``/``attention_mask`` ``[M, T]``); ``hist [B, L]`` and ``hist_mask [B, L]``:
        each user's history as rows of them; ``cand [C]``: the rows of the distinct candidate
        target items (positives and negatives); ``label [B]``: each user's positive among
        ``cand``; ``exclude [B, C]``: other target items of the user's own, left out of their
        softmax (they are not negatives); ``items [M]`` and ``platform [M]`` (0 source, 1
        target): which item each row is (the key of :mod:`~.lower_cache`). Planned without
        tokens (``tokens=None``: every item encoded from its cache), a step has no token ids."""
        items, mask = self.source.windows(step.users, max_len=self.max_len)  # [B, L]
        sources, inverse = np.unique(items.numpy()[mask.numpy()], return_inverse=True)
        hist = np.zeros(mask.shape, dtype=np.int64)
        hist[mask.numpy()] = inverse
        cands, where = np.unique(np.concatenate([step.positives, step.negatives]), return_inverse=True)
        label = where[:len(step.users)]
        rows, owned = self.target.targets(step.users)  # every (user row, target item) of the users
        n = self.task.n_items[self.task.target]
        exclude = np.isin(np.arange(len(step.users))[:, None] * n + cands[None, :], rows.numpy() * n + owned.numpy())
        exclude[np.arange(len(step.users)), label] = False
        step = {"hist": torch.from_numpy(hist), "hist_mask": mask,
                "cand": torch.arange(len(sources), len(sources) + len(cands)), "label": torch.from_numpy(label),
                "exclude": torch.from_numpy(exclude), "items": torch.from_numpy(np.concatenate([sources, cands])),
                "platform": torch.cat([torch.zeros(len(sources), dtype=torch.int64),
                                       torch.ones(len(cands), dtype=torch.int64)])}
        if self.tokens is not None:  # else every item is encoded from its key (the cache)
            step["input_ids"], step["attention_mask"] = pad_together(
                self.tokens[self.task.source].batch(sources), self.tokens[self.task.target].batch(cands),
                self.tokens[self.task.target].pad_id)
        return step


def pad_together(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor],
                 pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``(input_ids, attention_mask)`` batches stacked into one, padded to the wider."""
    width = max(a[0].shape[1], b[0].shape[1])

    def widen(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return (torch.cat([widen(a[0], pad_id), widen(b[0], pad_id)]),
            torch.cat([widen(a[1], 0), widen(b[1], 0)]))
