"""The linear fusion: a user's history -> one interest vector, as a sum of pooled blocks.

    u_raw = sum_{j kept} T_p[item_j] / sqrt(n)          item tables, root-n pooled
          + sum_m mean_{j with m} proj_m(x_m[item_j])    each modality, mean pooled
          + c                                            the population's interest
    u     = normalize(u_raw)                             [B, D]

``T_p [N_p, D]`` is one table per history platform (``FusionConfig.id_items``): each item's
collaborative (id) and lexical (tf-idf tokens of its text) parts, added into one row by the
closed-form fit; ``proj_m`` a whitened linear map of modality ``m``'s item features
(:class:`~fusion.adapters.MoEAdapter` with one expert: ``(x - b) W``); ``c`` a constant.
``n`` counts the kept items: those with a table row in use (the id presence) or a modality.
Every block is linear in the history's bag of items, so the model is a ridge regression from
[ids, tokens, features, 1] to target items whose factors are the interest vector and the
target's learned item vectors (:mod:`multimodal_interest.training.closed_form` fits it).

A history with no kept item gives ``normalize(c)``: the interest of the population, whose
scores are the fit's prior (popularity shrunk by the fit), or 0 when ``c = 0``.
Histories are ``items [B, L]`` int64 with ``mask [B, L]`` bool, as for the transformer;
``platform`` is a name or ``[B, L]`` indices into ``config.platforms``. Padding and order
never change ``u`` (the blocks are bags); the most recent ``max_len`` items are the callers'.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fusion.base import Fusion
from fusion.config import FusionConfig


class LinearFusion(Fusion):
    """See the module docstring. Parameters: ``items`` (an :class:`~fusion.items.ItemEmbedder`
    whose id tables are the item tables ``T_p`` and whose projections are ``proj_m``) and
    ``const [D]``."""

    kind = "linear"

    def __init__(self, config: FusionConfig):
        if config.n_experts != 1:
            raise ValueError(f"a linear fusion projects each modality linearly: n_experts must be 1, "
                             f"got {config.n_experts}")
        super().__init__(config)
        for table in self.items.ids.values():
            nn.init.zeros_(table.weight)
        self.const = nn.Parameter(torch.zeros(config.dim))

    def _platforms(self, items: torch.Tensor, mask: torch.Tensor,
                   platform: str | torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """``(name, sel [B, L] bool)`` for each platform of the history's items."""
        names = self.config.platforms
        if isinstance(platform, str):
            if platform not in names:
                raise ValueError(f"platform {platform!r} cannot appear in histories; histories may come "
                                 f"from {names} (FusionConfig.platforms)")
            return [(platform, mask)]
        if platform.shape != items.shape:
            raise ValueError(f"platform indices {tuple(platform.shape)} do not match items {tuple(items.shape)}")
        if bool((mask & ((platform < 0) | (platform >= len(names)))).any()):
            raise ValueError(f"platform indices must be in [0, {len(names)}) (FusionConfig.platforms)")
        return [(name, mask & (platform == i)) for i, name in enumerate(names)]

    def _shares(self, items: torch.Tensor, mask: torch.Tensor, platform: str | torch.Tensor
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
        """Per platform of the histories, what each item adds (0 where it is not of that
        platform, or masked): its table row ``[B, L, D]`` (where in use; None for a platform
        without a table), whether it is kept
        ``[B, L]`` bool, and per modality its projection ``[B, L, D]`` and whether it has one
        ``[B, L]`` bool."""
        if mask.shape != items.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape {tuple(items.shape)}, got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        for name, sel in self._platforms(items, mask, platform):
            if not bool(sel.any()):
                continue
            n = self.items.n_items(name)
            idx = torch.where(sel, items, 0)
            if bool(((idx < 0) | (idx >= n)).any()):
                raise ValueError(f"platform {name!r}: item index out of range [0, {n})")
            has_any, rooted = torch.zeros_like(sel), None
            if name in self.items.ids:
                use = sel & self.items.ids[name].used()[idx]
                rooted = self.items.ids[name].weight[idx] * use[..., None]
                has_any |= use
            table = self.items.tables[name] if name in self.items.tables else None
            dense = {}
            if table is not None:  # each distinct item projected once (explanations repeat each L-1 times)
                distinct, where = torch.unique(idx, return_inverse=True)
            for m in table.modalities if table is not None else []:
                use = sel & table.has(m)[idx]
                dense[m] = (self.items.proj[m](table.x(m)[distinct])[where] * use[..., None], use)
                has_any |= use
            yield rooted, has_any, dense

    def pooled(self, items: torch.Tensor, mask: torch.Tensor,
               platform: str | torch.Tensor) -> torch.Tensor:
        """``u_raw [B, D]``: the unnormalised interest (before ``normalize``)."""
        B, D = items.shape[0], self.config.dim
        rooted = self.const.new_zeros(B, D)
        dense = {m: (self.const.new_zeros(B, D), self.const.new_zeros(B)) for m in self.config.modalities}
        kept = torch.zeros(B, dtype=torch.long, device=self.const.device)
        for share, has_any, shares in self._shares(items, mask, platform):
            if share is not None:
                rooted += share.sum(1)
            for m, (x, use) in shares.items():
                s, c = dense[m]
                s += x.sum(1)
                c += use.sum(1)
            kept += has_any.sum(1)
        u = rooted / kept.clamp(min=1).sqrt()[:, None] + self.const
        for s, c in dense.values():
            u = u + s / c.clamp(min=1)[:, None]
        return u

    def leave_one_out(self, items: torch.Tensor, mask: torch.Tensor,
                      platform: str | torch.Tensor) -> torch.Tensor:
        """``[B, L, D]``: the interest of each history without each of its items (see
        :meth:`fusion.base.Fusion.leave_one_out`), in one pass: every block is a sum over the
        history's items, so leaving item ``j`` out is the totals less ``j``'s share (equal to
        encoding that history, up to float rounding; a block with nothing left is exactly 0)."""
        B, L, D = *items.shape, self.config.dim
        rooted = self.const.new_zeros(B, L, D)
        kept = torch.zeros(B, L, dtype=torch.long, device=self.const.device)
        dense = {m: (self.const.new_zeros(B, L, D), self.const.new_zeros(B, L)) for m in self.config.modalities}
        for share, has_any, shares in self._shares(items, mask, platform):
            if share is not None:
                rooted += share
            kept += has_any
            for m, (x, use) in shares.items():
                dense[m][0].add_(x)
                dense[m][1].add_(use)

        def without(x: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            left = count.sum(1, keepdim=True) - count  # [B, L]
            rest = x.sum(1, keepdim=True) - x  # [B, L, D]
            return torch.where((left > 0)[..., None], rest, 0.0), left.clamp(min=1)

        rest, n = without(rooted, kept)
        u = rest / n.sqrt()[..., None] + self.const
        for x, use in dense.values():
            rest, c = without(x, use)
            u = u + rest / c[..., None]
        return torch.where(mask[..., None], F.normalize(u, dim=-1), 0.0)

    @property
    def history_platforms(self) -> list[str]:
        """Platforms whose histories the fit learned from: those with an item table."""
        return list(self.items.ids)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, platform: str | torch.Tensor) -> torch.Tensor:
        """Unit interest vectors ``[B, D]`` (see the module docstring)."""
        return F.normalize(self.pooled(items, mask, platform), dim=-1)
