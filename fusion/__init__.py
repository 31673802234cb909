"""Fusion of a user's multimodal history into one interest vector, and per-platform heads.

>>> from fusion import FusionConfig, InterestConfig, InterestModel, TargetConfig
>>> cfg = InterestConfig(FusionConfig(modalities={"text": 384}, platforms=["art", "office"]),
...                      targets={"office": TargetConfig(n_items=19757)})
>>> model = InterestModel(cfg)
>>> model.set_item_features("art", {"text": art_text})          # [18639, 384]
>>> model.set_item_features("office", {"text": office_text})    # [19757, 384]
>>> model.score(items, mask, "art", "office").shape              # items, mask: [B, L]
torch.Size([B, 19757])

Pure torch: importable without ``multimodal_interest`` or accelerate.
"""
from __future__ import annotations

from fusion.adapters import Adapter, create_adapter, get_adapter_class, list_adapters, register_adapter
from fusion.config import FusionConfig, FusionSettings, HeadSettings, InterestConfig, ModelSettings, TargetConfig
from fusion.files import sha256_file
from fusion.items import ItemEmbedder, ItemSpace, logits
from fusion.linear import LinearFusion
from fusion.model import InterestModel
from fusion.transformer import FusionTransformer

__all__ = ["Adapter", "FusionConfig", "FusionSettings", "FusionTransformer", "HeadSettings", "InterestConfig",
           "InterestModel", "ItemEmbedder", "ItemSpace", "LinearFusion", "ModelSettings", "TargetConfig", "create_adapter",
           "get_adapter_class", "list_adapters", "logits", "register_adapter", "sha256_file"]
