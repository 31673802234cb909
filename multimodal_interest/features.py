"""Item features (the encoders' vectors of every platform's items), read from the embedding
store in item order,
and the item spaces platforms bring themselves (a file of item id -> vector): the data a
model is given at run time, by training and by serving alike (:meth:`ItemFeatures.attach`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from encoders.precomputed import PrecomputedEncoder
from fusion import InterestModel
from multimodal_interest.store import EmbeddingStore, StoreError

log = logging.getLogger(__name__)


@dataclass
class ItemFeatures:
    """``vectors[platform][modality]`` ``[N_P, d_m]`` float32 and ``present[...]`` ``[N_P]``
    bool, row ``i`` = item_idx ``i``; ``fingerprints[modality]``: the encoder behind them
    (one encoder per modality across platforms, so their vectors share a space).

    ``item_spaces[platform]`` ``[N_P, D_P]``: a target platform's own item vectors (from its
    recommender, any width), scored as an external space (:meth:`add_item_space`); their
    fingerprint is ``fingerprints["item-space:<platform>"]``.

    ``texts[platform]``: each item's text (``""`` where it has none), for the closed-form fit's
    lexical features (:mod:`multimodal_interest.training.closed_form`, which bakes them into
    the model: a saved model never needs them).

    ``item_ids[platform]``: the ids of those rows (where known), which a model's content head
    records (:func:`fusion.content.catalog_fingerprint`) to recognise its training catalog.
    """

    vectors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    present: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    item_spaces: dict[str, torch.Tensor] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    item_ids: dict[str, list[str]] = field(default_factory=dict)

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
        out = cls(item_ids={p: [str(x) for x in ids] for p, ids in item_ids.items()})
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
            raise StoreError(f"{store.root}: no item features for platforms {sorted(item_ids)}; "
                             f"run `mmi embed` first")
        return out

    @classmethod
    def for_dataset(cls, store: str | Path | None, dataset, platforms: Sequence[str],
                    modalities: str | None = None,
                    item_spaces: dict[str, str] | None = None) -> ItemFeatures:
        """The store's vectors of ``dataset``'s items on ``platforms``; no store: no content
        (the model then learns item id embeddings). ``modalities``: comma-separated names.
        ``item_spaces``: platform -> file of that platform's own item vectors
        (:func:`read_item_space`)."""
        ids = {p: dataset.items[p]["item_id"].astype(str).tolist() for p in platforms}
        names = [m.strip() for m in modalities.split(",")] if modalities else None
        out = cls() if store is None else cls.from_store(EmbeddingStore(store), ids, names)
        out.read_item_spaces(item_spaces or {}, ids)
        out.item_ids = ids
        out.texts = {p: item_texts(dataset, p) for p in platforms if dataset.manifest.platforms[p].text}
        return out

    def read_item_spaces(self, item_spaces: dict[str, str], item_ids: dict[str, Sequence[str]]) -> None:
        """Add each ``platform -> file`` of ``item_spaces`` (:func:`read_item_space`), in the
        item order of ``item_ids[platform]``."""
        for platform, spec in item_spaces.items():
            if platform not in item_ids:
                raise ValueError(f"item vectors {spec} are for platform {platform!r}, which is not "
                                 f"in this task (platforms: {', '.join(item_ids)})")
            self.add_item_space(platform, *read_item_space(spec, item_ids[platform], platform))

    def add_item_space(self, platform: str, vectors: torch.Tensor, fingerprint: str) -> None:
        """Score ``platform`` in its own item space: ``vectors [N_P, D_P]`` in item_idx order."""
        self.item_spaces[platform] = vectors
        self.fingerprints[item_space_key(platform)] = fingerprint

    def attach(self, model: InterestModel, platforms: Sequence[str]) -> None:
        """Give ``model`` the item features of ``platforms``' items, and each target scored in
        its own item space its item vectors. Which items use their id embedding is the model's
        own state (saved with it), never decided here."""
        for p in platforms:
            if not self.vectors.get(p) and p not in model.fusion.config.id_items:
                continue  # nothing to register (a linear model's id-only target: its own item space)
            model.set_item_features(p, self.vectors.get(p, {}), self.present.get(p, {}))
        for p in model.targets:
            own = self.item_spaces.get(p)
            if model.config.targets[p].space == "external":
                if own is None:
                    raise ValueError(f"the model scores {p!r} in that platform's own item space: give "
                                     f"its item vectors (`--item-space {p}=FILE`, the file it was "
                                     f"trained with)")
                model.set_item_vectors(p, own)
            elif own is not None:
                raise ValueError(f"item vectors were given for {p!r}, but the model scores {p!r} from "
                                 f"item content; train a model with them to use them")


def item_texts(dataset, platform: str) -> list[str]:
    """Each item's text in item_idx order, combined as the text encoders read it; ``""`` for
    an item whose text is unusable."""
    from multimodal_interest.catalog import Catalog

    catalog = Catalog.from_dataset(dataset, platform)
    out = []
    for row in range(len(dataset.items[platform])):
        try:
            out.append(catalog.text(row))
        except ValueError:
            out.append("")
    return out


def parse_item_spaces(values: Sequence[str]) -> dict[str, str]:
    """``["office=own.parquet"]`` (``--item-space`` values) -> ``{"office": "own.parquet"}``."""
    out: dict[str, str] = {}
    for value in values:
        platform, eq, spec = value.partition("=")
        if not eq or not platform.strip() or not spec.strip():
            raise ValueError(f"--item-space {value!r}: expected PLATFORM=FILE")
        if out.setdefault(platform.strip(), spec.strip()) != spec.strip():
            raise ValueError(f"--item-space: two files for platform {platform.strip()!r}")
    return out


def item_space_key(platform: str) -> str:
    return f"item-space:{platform}"


def read_item_space(spec: str | Path, item_ids: Sequence[str], platform: str) -> tuple[torch.Tensor, str]:
    """A platform's own item vectors from a file, in the order of ``item_ids``, and their
    fingerprint (which covers the file's bytes).

    ``spec``: a ``.parquet`` (column ``item_id`` and one list column, or numeric columns) or
    an ``.npz`` (arrays ``item_id`` and ``vectors``), or ``VECTORS.npy:IDS`` with IDS a
    ``.txt`` (one id per line) or ``.csv`` (column ``item_id``) — the layouts of the
    ``precomputed`` encoder. Every item of the platform needs a finite vector; ids of the
    file that are not items of the platform are left out (and counted in the log).
    Returns ``([len(item_ids), D] float32, fingerprint)``.
    """
    spec = str(spec)
    path, _, ids = spec.partition(":") if spec.split(":")[0].endswith(".npy") else (spec, "", "")
    where = f"item vectors of platform {platform!r} ({spec})"
    try:
        table = PrecomputedEncoder(path, ids=ids or None)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    rows, missing, bad = [], [], []
    for item in item_ids:
        if not table.has(item):
            missing.append(item)
            continue
        try:
            rows.append(table.load_item(item))
        except ValueError:
            bad.append(item)
    for what, items in (("have no vector in the file", missing), ("have NaN or infinite values", bad)):
        if items:
            raise ValueError(f"{where}: {len(items)} of the platform's {len(item_ids)} items {what} "
                             f"(first: {', '.join(map(repr, items[:5]))}); every item the platform "
                             f"can recommend needs one")
    extra = table.n_vectors - len(item_ids)
    if extra:
        log.info("%s: %d vectors of ids that are not items of %s left out", where, extra, platform)
    return torch.from_numpy(np.stack(rows)), table.fingerprint
