"""A catalog's item texts tokenized once, by the model's own preprocessing, for every step.

Training encodes the same items over and over (a user's history, popular negatives); their
token ids never change, so each platform's texts go through the model's ``preprocess`` once
(longest first, in blocks, so padding stays small) and are kept unpadded as one flat array
plus offsets. A step then gathers and pads its items' ids without touching the tokenizer.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_BLOCK = 1024  # texts tokenized per preprocess call


class ItemTokens:
    """Token ids of one platform's items, ``item_idx`` -> ids (special tokens included)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, pad_id: int = 0):
        self.ids, self.offsets, self.pad_id = ids, offsets, pad_id  # [total] int32, [n_items + 1] int64

    @classmethod
    def build(cls, preprocess, texts: Sequence[str], pad_id: int = 0) -> ItemTokens:
        """Tokenize ``texts`` (one per item) with ``preprocess(list[str]) -> {"input_ids",
        "attention_mask"}`` (a SentenceTransformer's, so truncation is the model's own);
        ``pad_id``: the tokenizer's padding id."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows: list[np.ndarray | None] = [None] * len(texts)
        for start in range(0, len(order), _BLOCK):
            block = order[start:start + _BLOCK]
            batch = preprocess([texts[i] for i in block])
            ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy().astype(bool)
            for row, i in enumerate(block):
                rows[i] = ids[row][mask[row]].astype(np.int32)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.concatenate(rows) if rows else np.empty(0, dtype=np.int32)
        return cls(flat, offsets, pad_id)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, items: np.ndarray) -> np.ndarray:
        """``[n]`` int64 tokens of each item."""
        return self.offsets[items + 1] - self.offsets[items]

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids [n, T]`` int64 and ``attention_mask [n, T]`` int64 of ``items``, right-padded
        with the padding id to the longest of them (as the model's preprocess pads)."""
        items = np.asarray(items, dtype=np.int64)
        n = self.lengths(items)
        width = max(int(n.max()) if len(n) else 0, 1)
        col = np.arange(width)
        mask = col[None, :] < n[:, None]
        ids = np.where(mask, self.ids[np.where(mask, self.offsets[items][:, None] + col, 0)] if len(self.ids) else 0,
                       self.pad_id)
        return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
