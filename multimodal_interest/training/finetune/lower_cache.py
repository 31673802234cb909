"""Tuning only the top layers: what the frozen lower layers make of an item, computed once.

With ``train_layers`` N and LoRA off, the embeddings and the lower layers of the encoder never
change, so the hidden states they give an item never change either. :class:`LowerLayerCache`
computes them once, under ``torch.no_grad`` and with the lower layers in eval mode (so **no
dropout in the lower layers**, where the whole encoder in training mode would drop out there
too), and keeps them keyed by the item (platform, ``item_idx``), trimmed to the item's tokens
(``[T_i, H]``) and stored as float16 (BERT hidden states stay far inside its range; item
vectors within 1e-4 of the whole encoder's on the tests' tiny BERT, 4e-5 on MiniLM with 4
layers cached), on the device they were computed on. A step, and validation, then run only
the top N layers and the modules after the transformer (pooling, normalisation: the model's
own) on the cached states, with the attention mask of the items' real tokens.

Items go through the lower layers in fixed blocks: a platform's items in order of token
length, ``block`` at a time (batched, little padding). An item's states therefore depend on
its block alone, never on which step first needed it: a block dropped and computed again, or
a run resumed with an empty cache, gives the very bits the cache held. Memory is bounded:
between steps the cache holds at most ``limit_mb``, the least recently used blocks dropped
first (a step's own items are held while it runs). Each process keeps its own cache (a plain
object, not part of the model: never checkpointed, never synchronised).

The blocks, their memory bound and the keys are :class:`BlockCache`'s, shared with the image
encoder's cache (:mod:`~.image`, the feature maps of its frozen stages).

Only a BERT-style stack splits this way (``model.embeddings`` then ``model.encoder.layer[i]``
called with the hidden states and the attention mask, as MiniLM is); :meth:`for_encoder`
checks that on a few real items and declines any other encoder (MPNet's layers also take a
relative position bias), which then runs whole, as without the cache.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from multimodal_interest.training.finetune.tokens import ItemTokens

logger = logging.getLogger(__name__)

STORAGE = torch.float16
BLOCK = 32  # items through the lower layers at once
_PROBE_ATOL = 1e-4  # the split encoder against the whole one, in float32, on normalised vectors


@contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Run ``modules`` (and everything in them) in eval mode, each put back as it was after."""
    every = [m for module in modules for m in module.modules()]
    was = [m.training for m in every]
    for m in every:
        m.training = False
    try:
        yield
    finally:
        for m, training in zip(every, was):
            m.training = training


class BlockCache:
    """What the frozen lower part of an encoder makes of items, ``(platform, item_idx) ->
    tensor``, computed (:meth:`lower`, by the subclass) and dropped, least recently used first
    past ``limit_mb``, in fixed blocks: block ``b`` of a platform holds ``members[p][b * block:
    (b + 1) * block]``, so an item's tensor depends on its block alone.

    ``platforms``: the platform of each code in a step's ``platform`` field
    (:meth:`~.batches.FinetunePlanner.build`: 0 source, 1 target).
    """

    def __init__(self, members: dict[str, np.ndarray], platforms: Sequence[str], limit_mb: float, block: int):
        self.platforms, self.block, self.members = tuple(platforms), block, members
        self.limit = int(limit_mb * 2 ** 20)
        self.place = {p: np.argsort(m) for p, m in self.members.items()}  # item -> its position in members
        self.entries: OrderedDict[tuple[str, int], list[torch.Tensor]] = OrderedDict()  # (platform, block)
        self.bytes = 0  # held by self.entries
        self.computed = 0  # items run through the lower layers so far (a dropped block counts again)

    def keys(self, platform: torch.Tensor, items: torch.Tensor) -> list[tuple[str, int]]:
        """A step's rows as cache keys: ``platform [M]`` codes into :attr:`platforms`, ``items [M]``."""
        return [(self.platforms[p], i) for p, i in zip(platform.tolist(), items.tolist())]

    def states(self, keys: Sequence[tuple[str, int]]) -> list[torch.Tensor]:
        """The cached tensors (float16) of ``keys``, computing the blocks not held; then the
        least recently used blocks are dropped until the cache fits its limit again."""
        out = []
        for platform, item in keys:
            b, row = divmod(int(self.place[platform][item]), self.block)
            block = self.entries.get((platform, b))
            if block is None:
                block = self.entries[(platform, b)] = self.lower(platform, b)
                self.bytes += sum(s.numel() * s.element_size() for s in block)
            else:
                self.entries.move_to_end((platform, b))
            out.append(block[row])
        while self.bytes > self.limit and self.entries:
            _, block = self.entries.popitem(last=False)
            self.bytes -= sum(s.numel() * s.element_size() for s in block)
        return out

    def lower(self, platform: str, b: int) -> list[torch.Tensor]:
        """Block ``b`` of ``platform`` through the frozen lower part: one tensor per item, in
        block order."""
        raise NotImplementedError


class LowerLayerCache(BlockCache):
    """Lower-layer hidden states of items, ``(platform, item_idx) -> [T_i, H]``, computed and
    dropped (least recently used, past ``limit_mb``) in fixed blocks; and the encoder's top
    layers run on them.

    ``st``: the SentenceTransformer being tuned (its first module the transformer); ``tokens``:
    each platform's item tokens; ``platforms``: as :class:`BlockCache` takes them.
    """

    def __init__(self, st, train_layers: int, tokens: dict[str, ItemTokens], platforms: Sequence[str],
                 limit_mb: float = 1024, block: int = BLOCK):
        self.st, self.model = st, st[0].auto_model
        layers = self.model.encoder.layer
        if not 1 <= train_layers <= len(layers):
            raise ValueError(f"train_layers {train_layers}: the encoder has {len(layers)} layers")
        self.lower_layers, self.top_layers = layers[:len(layers) - train_layers], layers[len(layers) - train_layers:]
        self.after = list(st)[1:]  # pooling, normalisation: what the model runs on the token vectors
        self.tokens = tokens
        # per platform, items in order of length
        super().__init__({p: np.argsort(-t.lengths(np.arange(len(t))), kind="stable") for p, t in tokens.items()},
                         platforms, limit_mb, block)

    @classmethod
    def for_encoder(cls, st, train_layers: int, tokens: dict[str, ItemTokens], platforms: Sequence[str],
                    limit_mb: float = 1024) -> LowerLayerCache | None:
        """The cache for ``st``, or None (logged) when its transformer does not split into
        embeddings + a list of layers that give what the whole model gives."""
        model = st[0].auto_model
        if not (hasattr(model, "embeddings") and isinstance(getattr(getattr(model, "encoder", None), "layer", None),
                                                            torch.nn.ModuleList)):
            logger.warning("train_layers: %s is not an embeddings + encoder.layer stack; the lower layers run "
                           "at every step (no cache)", type(model).__name__)
            return None
        cache = cls(st, train_layers, tokens, platforms, limit_mb)
        gap = cache.probe()
        if not gap <= _PROBE_ATOL:
            logger.warning("train_layers: %s run layer by layer differs from the whole model (%.2g); the lower "
                           "layers run at every step (no cache)", type(model).__name__, gap)
            return None
        return cache

    def embed(self, keys: Sequence[tuple[str, int]], chunk_size: int) -> torch.Tensor:
        """``[n, D]`` the encoder's vectors of the items ``keys``: the top layers (with gradients
        when enabled) on the cached lower states, ``chunk_size`` items at a time in order of
        length (each chunk padded to its own longest), returned in the order of ``keys``."""
        states = self.states(keys)
        lengths = torch.tensor([len(s) for s in states])
        order = torch.argsort(lengths, descending=True, stable=True)
        dtype = self.model.embeddings.word_embeddings.weight.dtype
        parts = []
        for chunk in order.split(chunk_size):
            h = torch.nn.utils.rnn.pad_sequence([states[i] for i in chunk.tolist()], batch_first=True).to(dtype)
            mask = (torch.arange(h.shape[1]) < lengths[chunk, None]).long().to(h.device)
            parts.append(self.top(h, mask))
        return torch.cat(parts)[torch.argsort(order).to(parts[0].device)]

    def top(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``hidden [n, T, H]`` lower-layer states, ``mask [n, T]`` 1 on real tokens -> ``[n, D]``:
        the top layers, then the modules after the transformer, as the model runs them."""
        from transformers.masking_utils import create_bidirectional_mask

        attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.top_layers:
            hidden = layer(hidden, attention)
        features = {"token_embeddings": hidden, "attention_mask": mask}
        for module in self.after:
            features = module(features)
        return features["sentence_embedding"]

    def lower(self, platform: str, b: int) -> list[torch.Tensor]:
        """Block ``b`` of ``platform`` through the embeddings and the lower layers, in eval mode
        (no dropout), without gradients: ``[T_i, H]`` float16 per item, in block order."""
        ids, mask = self.tokens[platform].batch(self.members[platform][b * self.block:(b + 1) * self.block])
        device = self.model.embeddings.word_embeddings.weight.device
        with eval_mode(self.model.embeddings, *self.lower_layers), torch.no_grad():
            hidden = self._lower(ids.to(device), mask.to(device))
        self.computed += len(ids)
        return [h[:n].to(STORAGE, copy=True) for h, n in zip(hidden, mask.sum(1).tolist())]  # trimmed, own memory

    def _lower(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[n, T]`` token ids -> ``[n, T, H]`` float states after the lower layers."""
        from transformers.masking_utils import create_bidirectional_mask

        hidden = self.model.embeddings(input_ids=input_ids)
        attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.lower_layers:
            hidden = layer(hidden, attention)
        return hidden

    def probe(self, n: int = 4) -> float:
        """The largest difference between the whole encoder's vectors and the split one's
        (float32, no cache, eval mode) on the first ``n`` items of the first platform."""
        tokens = self.tokens[self.platforms[0]]
        ids, mask = tokens.batch(np.arange(min(n, len(tokens))))
        device = self.model.embeddings.word_embeddings.weight.device
        ids, mask = ids.to(device), mask.to(device)
        with eval_mode(self.st), torch.no_grad():
            whole = self.st({"input_ids": ids, "attention_mask": mask})["sentence_embedding"]
            split = self.top(self._lower(ids, mask), mask)
        return float((whole - split).abs().max())
