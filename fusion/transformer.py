"""The fusion transformer: a user's multimodal item history -> one interest vector.

    token_j = sum_m proj_m(item_j's vector of modality m)     (only the modalities it has)
            + id_embedding(item_j)                            (platforms with learned ids)
            + platform_embedding(platform of item_j)
            + position_embedding(number of items after item_j) (0 = the most recent)
    h = pre-LN transformer blocks over the tokens (padding masked out of attention)
    u = normalize(pool(LayerNorm(h)))                          (attention or mean pooling)

Histories are ``items [B, L]`` int64 item indices with ``mask [B, L]`` bool (True on real
items, anywhere in the row: left- or right-padded alike). Padding never changes ``u``;
an item with no modality at all is dropped from its history. A history with no item left
gives ``u = 0`` exactly (a real history gives ``|u| = 1``), so callers can detect it.
Reads like nanoGPT's ``model.py``: bidirectional attention instead of causal.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fusion.base import Fusion
from fusion.config import FusionConfig


class SelfAttention(nn.Module):
    """Multi-head self-attention in which a token attends only to the kept tokens of its row."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.n_heads, self.dropout = config.n_heads, config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape  # keep: [B, L] bool, at least one True per row
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, L, D)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: FusionConfig):
        super().__init__()
        self.fc = nn.Linear(config.dim, 4 * config.dim)
        self.proj = nn.Linear(4 * config.dim, config.dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), keep)
        return x + self.mlp(self.ln_2(x))


class FusionTransformer(Fusion):
    """``forward(items [B, L], mask [B, L], platform) -> u [B, dim]``, unit length (or 0).

    ``platform`` is the name of the platform all tokens come from, or an int64 tensor
    ``[B, L]`` of indices into ``config.platforms`` for mixed histories. Item features come
    from :meth:`set_item_features` (see :class:`~fusion.items.ItemEmbedder`).
    """

    kind = "transformer"

    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.platform_emb = nn.Embedding(len(config.platforms), config.dim)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.dim)
        self.pool_score = nn.Linear(config.dim, 1) if config.pooling == "attention" else None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled residual projections, as GPT-2
            if name.endswith("proj.weight") and name.startswith("blocks."):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * max(config.n_layers, 1)))
        if config.modalities:  # with content, id embeddings start at 0: a learned residual
            for table in self.items.ids.values():
                nn.init.zeros_(table.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def platform_index(self, platform: str) -> int:
        try:
            return self.config.platforms.index(platform)
        except ValueError:
            raise ValueError(f"platform {platform!r} has no platform embedding; histories may come "
                             f"from {self.config.platforms} (FusionConfig.platforms)") from None

    def tokens(self, items: torch.Tensor, mask: torch.Tensor,
               platform: str | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """History tokens ``[B, L, dim]`` before the blocks, and ``keep [B, L]``: ``mask`` minus
        the items with nothing to embed. Tokens outside ``keep`` are zero."""
        B, L = items.shape
        drop = self.config.modality_dropout
        if isinstance(platform, str):
            index = self.platform_index(platform)
            tok, has = self.items(platform, torch.where(mask, items, 0), drop)
            keep = mask & has
            tok = tok + self.platform_emb.weight[index]
        else:
            if platform.shape != items.shape:
                raise ValueError(f"platform indices {tuple(platform.shape)} do not match items "
                                 f"{tuple(items.shape)}")
            P = len(self.config.platforms)
            if bool((mask & ((platform < 0) | (platform >= P))).any()):
                raise ValueError(f"platform indices must be in [0, {P}) (FusionConfig.platforms)")
            tok, keep = None, torch.zeros_like(mask)
            for i, name in enumerate(self.config.platforms):
                sel = mask & (platform == i)
                if sel.any():
                    e, has = self.items(name, items[sel], drop)
                    tok = e.new_zeros(B, L, e.shape[-1]) if tok is None else tok
                    tok[sel], keep[sel] = e, has
            if tok is None:
                tok = self.pos_emb.weight.new_zeros(B, L, self.config.dim)
            tok = tok + self.platform_emb(platform.clamp(0, P - 1))
        # position = number of kept items after this one (0 = most recent), capped at max_len-1
        pos = (keep.flip(1).cumsum(1).flip(1) - 1).clamp(0, self.config.max_len - 1)
        x = tok + self.pos_emb(pos)
        return torch.where(keep[..., None], x, 0.0), keep

    def forward(self, items: torch.Tensor, mask: torch.Tensor,
                platform: str | torch.Tensor) -> torch.Tensor:
        B, L = items.shape
        if mask.shape != items.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape {tuple(items.shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        if L == 0:
            return self.pos_emb.weight.new_zeros(B, self.config.dim)
        x, keep = self.tokens(items, mask, platform)
        empty = ~keep.any(1)  # [B]
        # an empty row attends to its (zero) first slot, so no softmax runs over nothing
        attend = keep | (empty[:, None] & (torch.arange(L, device=keep.device) == 0))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, attend)
        x = self.ln_f(x)
        if self.pool_score is not None:
            w = self.pool_score(x).squeeze(-1).masked_fill(~attend, float("-inf")).softmax(-1)
            pooled = torch.einsum("bl,bld->bd", w, x)
        else:
            pooled = (x * attend[..., None]).sum(1) / attend.sum(1, keepdim=True)
        return torch.where(empty[:, None], 0.0, F.normalize(pooled, dim=-1))
