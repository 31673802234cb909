"""Saved models of older versions, converted once, here, into what this version writes.

Every older layout a saved model may have, and what loading makes of it:

* a manifest without ``sha256`` (before file hashes): its files load unverified, with a
  warning (:func:`hashes_recorded`);
* a fusion ``config.json`` without ``kind`` (before the linear model): a transformer's
  (:func:`fusion_config`);
* fusion weights with ``items.id_present_<platform>`` (before one id holder per platform):
  the same tensor, now ``items.ids.<platform>.present`` (:func:`fusion_renames`);
* fusion weights without id presence (before it was recorded): every id row is used, the
  model records none (so a bundle refuses it), and a warning says how to re-save it
  (:func:`unrecorded_presence`).

Nothing else in the package knows these layouts.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

OLD_PRESENCE = "items.id_present_"  # + platform: the id presence buffer before IdEmbedding held it


def presence_name(platform: str) -> str:
    """Today's name of ``platform``'s id presence in the fusion's state dict."""
    return f"items.ids.{platform}.present"


def hashes_recorded(manifest: dict[str, Any], path: Path, key: str) -> bool:
    """False, with a warning, for a manifest at ``path`` saved before file hashes (no ``key``)."""
    if manifest.get(key) is not None:
        return True
    warnings.warn(f"{path}: records no file hashes (saved by an older version): the model's files "
                  f"are loaded unverified; save it again to record them", stacklevel=4)
    return False


def fusion_config(config: dict[str, Any]) -> dict[str, Any]:
    """A fusion's saved config as today's: one saved before ``kind`` existed is a transformer's."""
    return {"kind": "transformer", **config}


def fusion_renames(names: Iterable[str], id_platforms: Iterable[str]) -> dict[str, str]:
    """Old tensor name -> today's, for the old names among ``names`` (a fusion's weights)."""
    names = set(names)
    return {OLD_PRESENCE + p: presence_name(p) for p in id_platforms if OLD_PRESENCE + p in names}


def unrecorded_presence(names: Iterable[str], id_platforms: Iterable[str], path: Path) -> list[str]:
    """The platforms whose id presence the fusion weights at ``path`` (tensor ``names``, renamed
    to today's) do not record, with a warning: they load with every id row used, as the version
    that saved them did."""
    names = set(names)
    missing = [p for p in id_platforms if presence_name(p) not in names]
    if missing:
        warnings.warn(f"{path}: records no id presence for {', '.join(missing)} (saved by an older "
                      f"version): every id row is used, trained or not; re-save the model from its run "
                      f"(multimodal_interest.training.load_run(...).save_pretrained) or re-train it",
                      stacklevel=4)
    return missing
