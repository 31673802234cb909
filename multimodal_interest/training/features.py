"""Item features for training: :class:`~multimodal_interest.features.ItemFeatures` lives in
:mod:`multimodal_interest.features` (serving reads them too, and imports nothing from
``training/``); re-exported here for training code and its users."""
from __future__ import annotations

from multimodal_interest.features import (ItemFeatures, item_space_key, parse_item_spaces,
                                          read_item_space)

__all__ = ["ItemFeatures", "item_space_key", "parse_item_spaces", "read_item_space"]
