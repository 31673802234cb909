"""A target's items as a deployment scores them, the catalog's items added after training
included.

The model trained on the first ``n`` items of a target's catalog (their rows in the dataset's
items table). When the catalog has more, because items were appended to the items table and
embedded with ``mmi embed`` after training, the new ones get their vectors from the target's
content head (:mod:`fusion.content`: the fit's map from an item's text and vectors to its
learned vector) and no item bias; the trained items keep exactly their vectors, so their
scores do not change. A new item with no content the head reads (no token of its
vocabulary, no vector of its modalities) gets a zero vector: it is scored as an item nobody
touched in training without content is (0), and a warning counts such items.

A model without a content head (a transformer's, a linear model saved before heads were
written) cannot score items it was not trained on: such a catalog is refused, naming the new
items. So is a catalog whose first ``n`` items are not the ones the model was trained on, in
that order (the head records their fingerprint): new items go at the end of the items table.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from fusion import InterestModel
from fusion.content import catalog_fingerprint
from multimodal_interest.features import ItemFeatures
from multimodal_interest.retrieval import TargetItems

log = logging.getLogger(__name__)

SHOWN = 5  # item ids named in a message


def check_catalogs(model: InterestModel, item_ids: dict[str, Sequence[str]], where: str) -> None:
    """Refuse catalogs ``item_ids`` (platform -> ids in item_idx order) the model cannot serve:
    a history platform's that is not the one its item table was fitted on (only a target's
    catalog may grow), a target's that lost items or whose first rows are not the training
    items in order, or that gained items the model has no content head to score; ``where``
    names the catalogs in errors (the dataset)."""
    for p, n in model.fusion.config.id_items.items():
        if p in item_ids and p not in model.targets and len(item_ids[p]) != n:
            raise ValueError(f"{where}: platform {p!r} has {len(item_ids[p])} items, the model's item table "
                             f"{n}; items a history may hold are fixed at training (only a target's catalog may "
                             f"gain items): serve the training catalog of {p!r}, or re-train")
    for p in model.targets:
        ids, n, head = item_ids[p], model.config.targets[p].n_items, model.content_head(p)
        if len(ids) < n:
            raise ValueError(f"{where}: platform {p!r} has {len(ids)} items, fewer than the {n} the model was "
                             f"trained on; serve it with the training catalog (items may be added, at the end "
                             f"of the items table, not removed)")
        if head is not None and head.config.catalog is not None and catalog_fingerprint(ids[:n]) != head.config.catalog:
            raise ValueError(f"{where}: the first {n} items of platform {p!r} are not the {n} the model was "
                             f"trained on, in that order; items added after training go at the end of the "
                             f"items table")
        if head is None and len(ids) > n:
            added = list(ids[n:])
            raise ValueError(f"{where}: platform {p!r} has {len(added)} item(s) the model was not trained on "
                             f"({_shown(added)}; it was trained on the first {n}); this model has no content "
                             f"head to score items added after training (only a linear model trained by this "
                             f"version has one): re-train it on this catalog, or serve the training catalog")


def _shown(ids: list[str]) -> str:
    return ", ".join(map(repr, ids[:SHOWN])) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def target_items(model: InterestModel, platform: str, item_ids: Sequence[str], features: ItemFeatures,
                 texts: Callable[[], list[str]], where: str) -> TargetItems:
    """What scoring target ``platform`` needs for the catalog ``item_ids`` (item_idx order, one
    :func:`check_catalogs` accepts): vectors ``[N, D_P]``, bias ``[N]`` and scale.
    ``features``: the catalog's item vectors (the store's); ``texts()``: each item's text, read
    only when new items need it; ``where`` names the catalog in the log (the dataset)."""
    n = model.config.targets[platform].n_items
    head = model.content_head(platform)
    with torch.inference_mode():
        vectors = model.item_vectors(platform).float().contiguous()
    bias = model.spaces[platform].bias
    bias = torch.zeros(n) if bias is None else bias.detach().float().clone()
    scale = float(model.spaces[platform].scale)
    if len(item_ids) == n:
        return TargetItems(vectors, bias, scale)
    added = list(item_ids[n:])
    have = features.vectors.get(platform, {})
    vec = {m: have[m][n:] for m in head.modalities if m in have}
    present = {m: features.present[platform][m][n:] for m in vec if m in features.present.get(platform, {})}
    new, has = head.item_vectors(len(added), texts()[n:] if head.reads_text else None, vec, present)
    if not bool(has.all()):
        empty = [x for x, h in zip(added, has.tolist()) if not h]
        log.warning("%s: %d of the %d item(s) added to %r after training have no content the model reads "
                    "(no known token, no vector; first: %s): scored 0, as an untouched training item "
                    "without content", where, len(empty), len(added), platform, _shown(empty))
    log.info("%s: %d item(s) added to %r after training, scored from their content", where, len(added), platform)
    return TargetItems(torch.cat([vectors, new.to(vectors.dtype)]).contiguous(),
                       torch.cat([bias, torch.zeros(len(added))]), scale)
