"""Encoder vectors of every platform's items, read from the embedding store in item order."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from multimodal_interest.store import EmbeddingStore, StoreError


@dataclass
class ItemFeatures:
    """``vectors[platform][modality]`` ``[N_P, d_m]`` float32 and ``present[...]`` ``[N_P]``
    bool, row ``i`` = item_idx ``i``; ``fingerprints[modality]``: the encoder behind them
    (one encoder per modality across platforms, so their vectors share a space)."""

    vectors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    present: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def dims(self) -> dict[str, int]:
        """modality -> vector width."""
        return {m: x.shape[1] for per in self.vectors.values() for m, x in per.items()}

    @classmethod
    def from_store(cls, store: EmbeddingStore, item_ids: dict[str, Sequence[str]],
                   modalities: Sequence[str] | None = None,
                   fingerprints: dict[str, str] | None = None) -> ItemFeatures:
        """Vectors of ``item_ids[platform]`` (in item_idx order) for each modality the store has
        for that platform (or those named). With ``fingerprints``, only those encoders' vectors
        are accepted (e.g. the ones a saved model was trained on)."""
        out = cls()
        for platform, ids in item_ids.items():
            out.vectors[platform], out.present[platform] = {}, {}
            for m in modalities if modalities is not None else store.modalities(platform):
                if m not in store.modalities(platform):
                    continue  # this platform has no items of that modality
                vs = store.get(platform, m, (fingerprints or {}).get(m))
                if out.fingerprints.setdefault(m, vs.fingerprint) != vs.fingerprint:
                    raise StoreError(f"{store.root}: modality {m!r} of platform {platform!r} comes from "
                                     f"encoder {vs.fingerprint}, other platforms' from "
                                     f"{out.fingerprints[m]}; embed every platform with one encoder")
                got, present = vs.lookup(ids)
                out.vectors[platform][m], out.present[platform][m] = got.vectors, present
        if not out.fingerprints:
            raise StoreError(f"{store.root}: no item vectors for platforms {sorted(item_ids)}; "
                             f"run `mmi embed` first")
        return out

    @classmethod
    def for_dataset(cls, store: str | Path | None, dataset, platforms: Sequence[str],
                    modalities: str | None = None) -> ItemFeatures:
        """The store's vectors of ``dataset``'s items on ``platforms``; no store: no content
        (the model then learns item id embeddings). ``modalities``: comma-separated names."""
        if store is None:
            return cls()
        ids = {p: dataset.items[p]["item_id"].tolist() for p in platforms}
        names = [m.strip() for m in modalities.split(",")] if modalities else None
        return cls.from_store(EmbeddingStore(store), ids, names)
