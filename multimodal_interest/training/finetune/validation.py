"""Validation of a fine-tuned encoder: the validation users' NDCG@10 over the target catalog.

Every target item and every item of the validation users' source histories is encoded by
the current encoder (the items split among the processes by accelerate's ``prepare``d
loaders, joined by ``gather_for_metrics``, so each process ends with every vector); a user
is the normalised mean of their ``max_len`` most recent source items, scored by cosine
against every target item (:func:`~multimodal_interest.evaluate.evaluate`, the benchmark's
rules). Reported: NDCG@10 of every held-out item and, under the cold-item protocol, of the
validation cold items ranked over the whole catalog (slice "cold") and among the cold items
only (slice "cold-candidates"). The latter selects the encoder when there are cold items:
ranked over the whole catalog, cold items reach no method's top 10 on Amazon Art/Office
(BENCHMARKS.md, ``--cold-items 0.2``: at most 0.0012), and a score that is 0 at every epoch
cannot choose one; otherwise every held-out item's NDCG@10 selects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import ItemSlices, evaluate
from multimodal_interest.training.finetune.model import user_vectors
from multimodal_interest.training.finetune.tokens import ItemTokens


@dataclass
class ValidScore:
    ndcg10: float  # every held-out item
    cold_ndcg10: float | None = None  # the validation cold items over the whole catalog (None: no cold items)
    cold_among_cold_ndcg10: float | None = None  # the same items ranked among the cold items only

    @property
    def selection(self) -> float:
        """What chooses the encoder: the cold items' NDCG@10 among the cold items when there
        are any, else every held-out item's."""
        return self.ndcg10 if self.cold_among_cold_ndcg10 is None else self.cold_among_cold_ndcg10

    def row(self) -> dict[str, float]:
        """The log's fields: ``valid_ndcg10`` (and ``valid_cold_ndcg10``,
        ``valid_cold_among_cold_ndcg10`` under the cold-item protocol)."""
        row = {"valid_ndcg10": self.ndcg10}
        if self.cold_among_cold_ndcg10 is not None:
            row["valid_cold_ndcg10"] = self.cold_ndcg10
            row["valid_cold_among_cold_ndcg10"] = self.cold_among_cold_ndcg10
        return row

    @classmethod
    def from_row(cls, row: dict) -> ValidScore:
        """The score a log row (:meth:`row`'s fields) holds."""
        return cls(row["valid_ndcg10"], row.get("valid_cold_ndcg10"), row.get("valid_cold_among_cold_ndcg10"))


class Validation:
    """The validation users' histories and the items to encode for them, fixed for a run."""

    def __init__(self, task: ColdStartTask, tokens: dict[str, ItemTokens] | None, max_len: int, batch_size: int):
        self.task, self.tokens, self.batch_size = task, tokens, batch_size
        h = task.source_histories(task.valid_users, max_len)
        self.sources, inverse = np.unique(h.items.numpy()[h.mask.numpy()], return_inverse=True)
        hist = np.zeros(h.mask.shape, dtype=np.int64)
        hist[h.mask.numpy()] = inverse
        self.hist, self.mask = torch.from_numpy(hist), h.mask  # [V, L] rows of self.sources
        n = task.n_items[task.target]
        self.items = {task.source: self.sources, task.target: np.arange(n)}
        cold = task.valid_cold_items
        self.slices = ItemSlices(np.asarray(cold, dtype=np.int64), task.cold_items) \
            if cold is not None and len(cold) else None

    def loaders(self) -> list[torch.utils.data.DataLoader]:
        """One loader of positions in :meth:`by_length` order per platform (source, target), to
        pass through ``accelerator.prepare``."""
        return [torch.utils.data.DataLoader(np.arange(len(self.items[p])), batch_size=self.batch_size,
                                            generator=torch.Generator())
                for p in (self.task.source, self.task.target)]

    def by_length(self, platform: str) -> np.ndarray:
        """The items to encode, longest first (in id order without tokens: images)."""
        items = self.items[platform]
        if self.tokens is None:
            return items
        return items[np.argsort(-self.tokens[platform].lengths(items), kind="stable")]

    def score(self, acc, encoder, loaders: list, progress_bar: bool = False, lower=None) -> ValidScore:
        """Encode, rank and measure (on every process; every process gets the same score).
        ``lower``: the run's :class:`~.lower_cache.LowerLayerCache`, when it has one: the items
        are then encoded from their cached lower-layer states, as the steps encode them."""
        src, tgt = (self._vectors(acc, encoder, p, loader, progress_bar, lower) for p, loader in zip(
            (self.task.source, self.task.target), loaders))
        users = user_vectors(src, self.hist, self.mask)  # [V, D]
        items = torch.nn.functional.normalize(tgt, dim=-1)  # [N_t, D]
        row = {int(u): i for i, u in enumerate(self.task.valid_users)}

        def scorer(chunk: np.ndarray) -> torch.Tensor:
            return users[[row[int(u)] for u in chunk]] @ items.T

        result = evaluate(scorer, self.task, self.task.valid_users, ks=(10,), slices=self.slices)
        cold = {name: float(r.values["ndcg@10"].mean()) for name, r in result.slices.items()}
        return ValidScore(float(result.values["ndcg@10"].mean()), cold.get("cold"), cold.get("cold-candidates"))

    def _vectors(self, acc, encoder, platform: str, loader, progress_bar: bool, lower=None) -> torch.Tensor:
        """``[n, D]`` float32 vectors of ``self.items[platform]``, in that order, on the CPU."""
        from tqdm.auto import tqdm

        ordered = self.by_length(platform)
        out, was_training = None, encoder.training
        encoder.eval()
        with torch.no_grad(), acc.autocast():
            for positions in tqdm(loader, desc=f"validate: encode {platform}", leave=False, unit="batch",
                                  disable=not (progress_bar and acc.is_local_main_process)):
                items = ordered[positions.cpu().numpy()]
                if lower is None:
                    ids, mask = self.tokens[platform].batch(items)
                    v = encoder({"input_ids": ids.to(acc.device),
                                 "attention_mask": mask.to(acc.device)})["sentence_embedding"]
                else:
                    v = lower.embed([(platform, int(i)) for i in items], len(items))
                got_pos, got = acc.gather_for_metrics((positions, v.float()))
                if out is None:
                    out = torch.zeros(len(ordered), got.shape[1])
                out[got_pos.cpu()] = got.cpu()
        encoder.train(was_training)
        # rows follow by_length order; put them back in self.items order (sorted item ids)
        where = np.empty(len(ordered), dtype=np.int64)
        where[np.searchsorted(self.items[platform], ordered)] = np.arange(len(ordered))
        return out[torch.from_numpy(where)]
