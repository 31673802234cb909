"""Items in the shared space, and each target platform's item space.

:class:`ItemEmbedder` turns item indices of any platform into vectors of the shared width
``dim``: the sum, over the modalities an item *has*, of that modality's projection of its
item feature, plus the item's learned id embedding where the platform has one and the
item's id row was trained (the id presence: each platform's :class:`IdEmbedding` holds its
rows and which of them are trained, ``present [N]``, saved with the weights, so a saved model
knows it without its training data). A modality an item lacks is left out, never
zero-filled. The item features are registered at run time
(:meth:`ItemEmbedder.set_features`) as non-persistent buffers: they come from the embedding
store, not from the model file.

:class:`ItemSpace` holds what scoring one target platform needs beyond the adapters: the
learned item bias (popularity prior), the temperature, and, for an external space, the
platform's own item vectors.
"""
from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from fusion.adapters import MoEAdapter
from fusion.config import FusionConfig, TargetConfig, check_name, from_dict
from fusion.saving import CONFIG_FILE, load_part, part_files, read_part_config, save_part

ID = "id"  # the name of the learned id embedding where presence masks are given


def _check_vectors(where: str, x: Any, width: int, rows: int | None) -> torch.Tensor:
    """A float matrix ``[rows, width]`` or a clear error naming ``where``."""
    x = torch.as_tensor(x)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{where}: expected a float matrix [n_items, {width}], "
                         f"got {x.dtype} of shape {tuple(x.shape)}")
    if x.shape[1] != width:
        raise ValueError(f"{where}: vectors have width {x.shape[1]}, the model expects {width}")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{where}: {x.shape[0]} rows, the platform has {rows} items")
    return x


def _check_finite(where: str, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Refuse NaN/inf among ``rows`` (all rows when None) of ``x [n, d]``."""
    bad = ~torch.isfinite(x).all(1)
    if rows is not None:
        bad &= rows
    if bad.any():
        first = int(bad.nonzero()[0])
        raise ValueError(f"{where}: {int(bad.sum())} item(s) have NaN or infinite values "
                         f"(first: row {first}); fix them or mark them absent in `present`")


class FeatureTable(nn.Module):
    """One platform's item features per modality, ``x_<m> [N, d_m]`` and ``has_<m> [N]``
    (non-persistent buffers, so they follow ``.to(device)`` but stay out of the model file)."""

    def __init__(self, n_items: int):
        super().__init__()
        self.n_items = n_items
        self.modalities: list[str] = []

    def add(self, name: str, x: torch.Tensor, has: torch.Tensor) -> None:
        self.modalities.append(name)
        self.register_buffer(f"x_{name}", x, persistent=False)
        self.register_buffer(f"has_{name}", has, persistent=False)

    def has(self, name: str) -> torch.Tensor:
        return getattr(self, f"has_{name}")

    def x(self, name: str) -> torch.Tensor:
        return getattr(self, f"x_{name}")


class IdEmbedding(nn.Embedding):
    """One platform's learned item-id rows, ``weight [N, dim]``, and which of them were
    trained, ``present [N]`` bool (a persistent buffer, saved with the weights): only those
    embed their item. ``present`` is None in a model loaded from a file saved before presence
    was recorded (:mod:`fusion.legacy`): every row is then used, and saving records none."""

    def __init__(self, n_items: int, dim: int):
        super().__init__(n_items, dim)
        self.register_buffer("present", torch.ones(n_items, dtype=torch.bool))

    def used(self) -> torch.Tensor:
        """``[N]`` bool: the rows that embed their item (all, where none are recorded)."""
        if self.present is not None:
            return self.present
        return torch.ones(self.num_embeddings, dtype=torch.bool, device=self.weight.device)


class ItemEmbedder(nn.Module):
    """Item indices of a platform -> ``([..., dim] vectors, [...] bool has-something)``.

    Parameters: one projection per modality (a :class:`~fusion.adapters.MoEAdapter`,
    shared by all platforms) and one id embedding table per platform of
    ``config.id_items``. The id embedding alone embeds items of a platform with no content.
    """

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.proj = nn.ModuleDict({m: MoEAdapter(d, config.dim, config.n_experts)
                                   for m, d in config.modalities.items()})
        self.ids = nn.ModuleDict({p: IdEmbedding(n, config.dim) for p, n in config.id_items.items()})
        self.tables = nn.ModuleDict()

    def set_id_presence(self, platform: str, present: Any) -> None:
        """Mark which items of ``platform`` have a trained id row (bool ``[N]``); only those
        use their id embedding. Saved with the model."""
        if platform not in self.ids:
            raise ValueError(f"platform {platform!r} has no id embedding (FusionConfig.id_items)")
        ids = self.ids[platform]
        ids.present = self._present(platform, ID, {ID: present}, ids.num_embeddings).to(ids.weight.device)

    def set_features(self, platform: str, features: dict[str, Any],
                     present: dict[str, Any] | None = None) -> None:
        """Register ``platform``'s item features: ``features[m]`` is ``[N, d_m]`` for modality
        ``m``; ``present[m]`` (bool ``[N]``, default all True) says which items have it.
        ``present["id"]`` may say which items have a trained id embedding (e.g. those seen in
        training). Absent rows may hold anything; present rows must be finite. Replaces what
        was registered for ``platform`` before."""
        check_name("platform", platform)
        present = dict(present or {})
        unknown = (set(features) - set(self.config.modalities)) | (set(present) - set(features) - {ID})
        if unknown:
            raise ValueError(f"platform {platform!r}: unknown modality {sorted(unknown)}; the model "
                             f"has {sorted(self.config.modalities)} (+ 'id' in present)")
        if ID in present and platform not in self.ids:
            raise ValueError(f"platform {platform!r} has no id embedding (FusionConfig.id_items)")
        n = self.ids[platform].num_embeddings if platform in self.ids else None
        if not features and n is None:
            raise ValueError(f"platform {platform!r}: no features and no id embedding to embed items")
        ref = next(iter(self.parameters()))
        table: FeatureTable | None = None
        for m, x in features.items():
            where = f"platform {platform!r}, features[{m!r}]"
            x = _check_vectors(where, x, self.config.modalities[m], n)
            n = x.shape[0]
            has = self._present(platform, m, present, n).to(x.device)
            _check_finite(where, x, has)
            x = torch.where(has[:, None], x, 0.0)  # absent rows: zeros, never NaN
            table = table or FeatureTable(n)
            table.add(m, x.to(device=ref.device, dtype=ref.dtype), has.to(ref.device))
        table = table or FeatureTable(n)  # type: ignore[arg-type]
        self.tables[platform] = table
        if ID in present:
            self.set_id_presence(platform, present[ID])

    @staticmethod
    def _present(platform: str, m: str, present: dict[str, Any], n: int) -> torch.Tensor:
        if m not in present:
            return torch.ones(n, dtype=torch.bool)
        has = torch.as_tensor(present[m])
        if has.dtype != torch.bool or has.shape != (n,):
            raise ValueError(f"platform {platform!r}, present[{m!r}]: expected a bool vector [{n}], "
                             f"got {has.dtype} of shape {tuple(has.shape)}")
        return has.cpu()

    def platforms(self) -> list[str]:
        """Platforms whose items can be embedded (features registered or an id table)."""
        return sorted(set(self.tables) | set(self.ids))

    def n_items(self, platform: str) -> int:
        if platform in self.tables:
            return self.tables[platform].n_items
        if platform in self.ids:
            return self.ids[platform].num_embeddings
        raise ValueError(f"no item features registered for platform {platform!r}; call "
                         f"set_item_features({platform!r}, ...) (registered: {self.platforms()})")

    def forward(self, platform: str, idx: torch.Tensor | None = None,
                modality_dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed items ``idx`` (int64, any shape ``[...]``; None = all items) of ``platform``.

        Returns ``(vectors [..., dim], has [...] bool)``; an item with no modality and no id
        embedding gets a zero vector and ``has=False``. In training, ``modality_dropout``
        drops each source (modality or id) of an item with that probability, keeping at least
        one.
        """
        n = self.n_items(platform)
        if idx is not None and idx.numel() and bool(((idx < 0) | (idx >= n)).any()):
            raise ValueError(f"platform {platform!r}: item index out of range [0, {n}): "
                             f"min {int(idx.min())}, max {int(idx.max())}")

        def rows(t: torch.Tensor) -> torch.Tensor:  # the whole table needs no gather
            return t if idx is None else t[idx]

        table = self.tables[platform] if platform in self.tables else None
        values, has = [], []
        for m in table.modalities if table is not None else []:
            values.append(self.proj[m](rows(table.x(m))))
            has.append(rows(table.has(m)))
        if platform in self.ids:
            values.append(rows(self.ids[platform].weight))
            has.append(rows(self.ids[platform].used()))
        present = torch.stack(has, -1)  # [..., S]
        keep = present
        if self.training and modality_dropout > 0:
            keep = present & (torch.rand(present.shape, device=present.device) >= modality_dropout)
            keep = torch.where(keep.any(-1, keepdim=True), keep, present)
        out = sum(torch.where(keep[..., s, None], v, 0.0) for s, v in enumerate(values))
        return out, present.any(-1)  # type: ignore[return-value]


def logits(q: torch.Tensor, v: torch.Tensor, scale: float | torch.Tensor,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """The one logit formula, ``scale * cos(q, v) + bias``, for unit ``q`` and ``v``.

    ``q [..., d]`` queries; ``v [N, d]`` item vectors shared by all queries (-> ``[..., N]``)
    or ``[B, K, d]`` per query ``q [B, d]`` (-> ``[B, K]``); ``scale`` a number or a 0-d
    tensor (learned); ``bias`` ``[N]`` / ``[B, K]`` or None. The model's training, its
    evaluation, the retrievers and the recommender's explanations all score with it, so
    their scores agree bit for bit on the same inputs.
    """
    s = q @ v.T if v.dim() == 2 else torch.einsum("bd,bkd->bk", q, v)
    s = s * scale
    return s if bias is None else s + bias


class ItemSpace(nn.Module):
    """Scoring of one target platform: ``logit = scale * cos(query, item) + bias[item]``.

    ``scale = 1 / temperature`` (learned in log space when ``learn_temperature``, capped at
    100); ``bias [n_items]`` is the learned popularity prior (zeros at the start). An
    external space also holds the platform's item vectors ``[n_items, external_dim]``
    (non-persistent, given with :meth:`set_vectors`); a learned space its own learned item
    vectors ``learned [n_items, dim]`` (a parameter, saved with the head).
    """

    SAVED_KEYS = ("n_items", "space", "external_dim", "item_bias", "temperature", "learn_temperature")

    def __init__(self, platform: str, config: TargetConfig, dim: int | None = None):
        super().__init__()
        self.platform, self.config = platform, config
        if config.space == "learned":
            if dim is None:
                raise ValueError(f"platform {platform!r}: a learned space needs the fusion width (dim)")
            self.learned = nn.Parameter(torch.zeros(config.n_items, dim))
        self.bias = nn.Parameter(torch.zeros(config.n_items)) if config.item_bias else None
        log_scale = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("vectors", None, persistent=False)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    def set_vectors(self, vectors: Any) -> None:
        """The platform's own item vectors ``[n_items, external_dim]`` (external space only)."""
        cfg, where = self.config, f"item vectors of platform {self.platform!r}"
        if cfg.space != "external":
            raise ValueError(f"{where}: platform {self.platform!r} has a content space; its items "
                             f"come from set_item_features (use space='external' for own vectors)")
        v = _check_vectors(where, vectors, cfg.external_dim, cfg.n_items)  # type: ignore[arg-type]
        _check_finite(where, v)
        self.vectors = v.to(device=self.log_scale.device, dtype=self.log_scale.dtype)

    def own_vectors(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The platform's item vectors of an external or learned space, as they are scored:
        ``[n_items, d_P]`` (or ``[..., d_P]`` for ``idx``)."""
        if self.config.space == "learned":
            return self.learned if idx is None else self.learned[idx]
        return self.external(idx)

    def external(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """External item vectors ``[n_items, d_P]`` (or ``[..., d_P]`` for ``idx``)."""
        if self.vectors is None:
            raise ValueError(f"no item vectors for platform {self.platform!r}; call "
                             f"set_item_vectors({self.platform!r}, vectors)")
        return self.vectors if idx is None else self.vectors[idx]

    def logits(self, q: torch.Tensor, v: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """``q [B, d]`` unit queries, ``v`` unit item vectors ``[N, d]`` (shared candidates)
        or ``[B, K, d]`` (per user); ``idx`` the items of ``v`` (None: all) -> ``[B, N|K]``."""
        bias = None if self.bias is None else (self.bias if idx is None else self.bias[idx])
        return logits(q, v, self.scale, bias)

    def save(self, folder: str | os.PathLike) -> None:
        """``config.json`` (the target's config but its adapters, which save themselves) and
        ``model.safetensors`` (bias, temperature, learned item vectors)."""
        save_part(self, folder, {k: getattr(self.config, k) for k in self.SAVED_KEYS})

    @classmethod
    def load(cls, folder: str | os.PathLike, platform: str, dim: int) -> ItemSpace:
        """The item space of ``platform`` saved in ``folder`` (``dim``: the fusion's width). Its
        config names no adapters: the model sets them (:meth:`InterestModel.set_head`)."""
        files = part_files(folder)
        config = from_dict(TargetConfig, read_part_config(files), str(files.root / CONFIG_FILE))
        return load_part(files, lambda: cls(platform, config, dim))
