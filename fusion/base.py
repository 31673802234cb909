"""What every fusion module shares: its config, its items and its two files.

A fusion turns histories ``items [B, L]`` int64 with ``mask [B, L]`` bool (and their
platform: a name, or ``[B, L]`` indices into ``config.platforms``) into unit interest
vectors ``[B, D]``. :class:`~fusion.linear.LinearFusion` and
:class:`~fusion.transformer.FusionTransformer` are the two kinds (``FusionConfig.kind``);
each embeds items with an :class:`~fusion.items.ItemEmbedder` and saves itself as a part
(``config.json`` + ``model.safetensors``).
"""
from __future__ import annotations

import os
from typing import ClassVar, Self

import torch
from torch import nn

from fusion import legacy
from fusion.config import FusionConfig, from_dict
from fusion.items import ItemEmbedder
from fusion.saving import CONFIG_FILE, WEIGHTS_FILE, load_part, part_files, read_part_config, save_part


class Fusion(nn.Module):
    """Base of the fusion modules: ``config``, ``items`` (built first), :meth:`save` and
    :meth:`load`. ``kind`` is the ``FusionConfig.kind`` a subclass implements."""

    kind: ClassVar[str] = ""

    def __init__(self, config: FusionConfig):
        super().__init__()
        if config.kind != self.kind:
            raise ValueError(f"a {type(self).__name__} is the {self.kind!r} fusion; the config says "
                             f"kind={config.kind!r}")
        self.config = config
        self.items = ItemEmbedder(config)

    def set_item_features(self, platform: str, features: dict, present: dict | None = None) -> None:
        """See :meth:`fusion.items.ItemEmbedder.set_features`."""
        self.items.set_features(platform, features, present)

    def leave_one_out(self, items: torch.Tensor, mask: torch.Tensor,
                      platform: str | torch.Tensor) -> torch.Tensor:
        """``[B, L, D]``: ``[b, j]`` is the interest vector of history ``b`` without its item
        ``j`` (``mask[b, j]`` set False), 0 where ``mask[b, j]`` is False already. Here each of
        those histories is encoded, one history's rows at a time (all ``B L`` rows at once
        made activations of hundreds of MB, slower than this); a fusion whose interest is a
        sum over the items does it in one pass (:meth:`fusion.linear.LinearFusion.leave_one_out`)."""
        out = None
        for b in range(items.shape[0]):
            j = mask[b].nonzero()[:, 0]  # [n]
            n, L = len(j), items.shape[1]
            if n == 0:
                continue
            rows = mask[b].expand(n, L) & (torch.arange(L, device=mask.device) != j[:, None])  # [n, L]
            u = self(items[b].expand(n, L), rows, platform if isinstance(platform, str) else platform[b].expand(n, L))
            out = u.new_zeros(*items.shape, u.shape[-1]) if out is None else out
            out[b, j] = u
        return out if out is not None else torch.zeros(*items.shape, self.config.dim, device=items.device)

    def save(self, folder: str | os.PathLike) -> None:
        save_part(self, folder, self.config.to_dict())

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Self:
        """The fusion saved in ``folder`` (an older version's too: :mod:`fusion.legacy`)."""
        files = part_files(folder)
        where = files.root / CONFIG_FILE
        config = from_dict(FusionConfig, legacy.fusion_config(read_part_config(files)), str(where))
        names = files.header(WEIGHTS_FILE).keys()
        renames = legacy.fusion_renames(names, config.id_items)
        unrecorded = legacy.unrecorded_presence([renames.get(n, n) for n in names], config.id_items,
                                                files.root / WEIGHTS_FILE)

        def build() -> Self:
            fusion = cls(config)
            for p in unrecorded:
                fusion.items.ids[p].present = None
            return fusion

        return load_part(files, build, renames)
