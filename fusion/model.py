"""InterestModel: a fusion module (linear or transformer) plus one named head per target platform.

    u  = fusion(history)                          [B, D]    platform-agnostic, unit length
    q  = normalize(adapters[P](u))                [B, D_P]  the query in P's item space
    v  = normalize(item_adapters[P](items(P)))    [N_P, D]  content space (shared projections)
       | normalize(P's own item vectors)          [N_P, D_P] external space
       | P's learned item vectors                 [N_P, D]  learned space (length = prior)
    logits = scale_P * q @ v.T + bias_P           [B, N_P]

The fusion is a :class:`~fusion.linear.LinearFusion` (pooled item tables and projections,
fitted in closed form) or a :class:`~fusion.transformer.FusionTransformer`, as
``FusionConfig.kind`` says; the manifest records its type.

Heads are routes named by platform (``nn.ModuleDict``s, as sentence-transformers' Router).
``save_pretrained`` writes one folder per part (config.json + model.safetensors) and a
``manifest.json`` naming each part's type, the encoders' fingerprints, library versions and
the sha256 of every file it wrote; ``from_pretrained`` checks each file against its hash
(a changed file is refused, naming it), rebuilds the model from the manifest and refuses a
weight that is NaN or infinite (naming the file and the tensor). A folder saved before the
hashes were recorded still loads, with a warning that it is unverified.

A learned space may have a content head (``content_heads[P]``, :mod:`fusion.content`): the
map from an item's content to its learned vector, which scores items added to ``P``'s
catalog after training; it saves as a part of its own.

A saved folder holds everything scoring needs but the item features: the weights, each
target's item bias and temperature, which items have a trained id row (the id presence,
``set_id_presence``: a bool buffer of each platform's id embedding, saved with the fusion
weights), the encoders' and item spaces' fingerprints, its own type and ``info``
(provenance, e.g. the training task; not part of the model's function). Copied alone
anywhere, it scores as it did in its run. Each part saves and loads itself (``save`` /
``load``); folders of older versions load through :mod:`fusion.legacy` alone. Item features and external vectors are data, not weights: set
them again after loading (``set_item_features`` / ``set_item_vectors``).

Training: call the model itself, ``model(items, mask, platform, target, item_idx)`` ->
logits, so DDP sees the forward. The feature tables are (non-persistent) buffers: under DDP
pass ``DistributedDataParallelKwargs(broadcast_buffers=False)`` to accelerate, or DDP would
copy them from rank 0 at every step. Evaluation: ``v = model.item_vectors(P)`` once, then
``model.logits(model.encode_users(...), P, item_vectors=v)`` per chunk of users, under
``torch.inference_mode()``.
"""
from __future__ import annotations

import os
import platform as _platform
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion import legacy
from fusion.adapters import Adapter, create_adapter, get_adapter_class, list_adapters
from fusion.base import Fusion
from fusion.config import InterestConfig, TargetConfig, check_name
from fusion.content import ContentHead
from fusion.files import FileRefused, Folder, sha256_file, verify_hashes
from fusion.items import ItemSpace
from fusion.linear import LinearFusion
from fusion.saving import CONFIG_FILE, HASHES, MANIFEST, WEIGHTS_FILE, read_manifest, write_json
from fusion.transformer import FusionTransformer

FORMAT = "multimodal-interest/interest-model"
FORMAT_VERSION = 1
TYPE = "InterestModel"  # manifest key "type": the class that loads the folder
FUSIONS: dict[str, type[Fusion]] = {c.kind: c for c in (LinearFusion, FusionTransformer)}  # by FusionConfig.kind
# what each manifest part's "role" holds; an adapter's "type" is a name in fusion.adapters' registry
PART_CLASSES: dict[str, tuple[type[nn.Module], ...]] = {
    "fusion": tuple(FUSIONS.values()), "item_space": (ItemSpace,), "adapter": (Adapter,),
    "item_adapter": (Adapter,), "content_head": (ContentHead,)}


class InterestModel(nn.Module):
    """See the module docstring. Shapes: ``B`` users, ``L`` history length, ``N_P`` items of
    target ``P``, ``D`` the fusion width, ``D_P`` the width of ``P``'s item space."""

    def __init__(self, config: InterestConfig, encoder_fingerprints: dict[str, str] | None = None,
                 info: dict[str, Any] | None = None):
        super().__init__()
        self.fusion = FUSIONS[config.fusion.kind](config.fusion)
        self.adapters = nn.ModuleDict()
        self.item_adapters = nn.ModuleDict()
        self.spaces = nn.ModuleDict()
        self.content_heads = nn.ModuleDict()  # learned spaces: vectors of items added after training
        self.encoder_fingerprints = dict(encoder_fingerprints or {})
        self.info = dict(info or {})  # provenance (JSON), saved in the manifest; no effect on scores
        for p, t in config.targets.items():
            self.add_target(p, t)

    @property
    def config(self) -> InterestConfig:
        return InterestConfig(self.fusion.config, {p: s.config for p, s in self.spaces.items()})

    @property
    def targets(self) -> list[str]:
        return list(self.spaces)

    @property
    def device(self) -> torch.device:
        return next(self.fusion.parameters()).device

    def add_target(self, platform: str, config: TargetConfig) -> None:
        """Add (or replace) the head of target ``platform``: e.g. a new platform scored
        zero-shot from its catalog alone (``TargetConfig(n, adapter="identity")``)."""
        D = self.fusion.config.dim
        adapter = create_adapter(config.adapter, in_dim=D, out_dim=config.external_dim or D,
                                 **config.adapter_kwargs)
        item_adapter = None
        if config.space == "content":
            item_adapter = create_adapter(config.item_adapter, in_dim=D, out_dim=D, **config.item_adapter_kwargs)
        self.set_head(platform, ItemSpace(platform, config, D), adapter, item_adapter)

    def set_head(self, platform: str, space: ItemSpace, adapter: Adapter, item_adapter: Adapter | None = None) -> None:
        """Make these parts the head of target ``platform`` (replacing any): its item space,
        the adapter of its queries and, for a content space (only), the adapter of its items.
        They must fit the fusion; the space's config then names the adapters."""
        check_name("platform", platform)
        config, D = space.config, self.fusion.config.dim
        n_ids = self.fusion.config.id_items.get(platform)
        if config.space == "content" and n_ids is not None and n_ids != config.n_items:
            raise ValueError(f"target {platform!r}: n_items {config.n_items} but its id embedding "
                             f"has {n_ids} items (FusionConfig.id_items)")
        if (item_adapter is None) == (config.space == "content"):
            raise ValueError(f"target {platform!r}: a {config.space} space "
                             f"{'needs an' if config.space == 'content' else 'has no'} item adapter")
        widths = {"adapter": (adapter, config.external_dim or D), "item adapter": (item_adapter, D)}
        for what, (a, out) in widths.items():
            if a is not None and (a.in_dim, a.out_dim) != (D, out):
                raise ValueError(f"target {platform!r}: its {what} maps width {a.in_dim} to {a.out_dim}; "
                                 f"the model needs {D} to {out}")
        named = {"adapter": adapter.registry_name, "adapter_kwargs": _kwargs(adapter.get_config())}
        if item_adapter is not None:
            named.update(item_adapter=item_adapter.registry_name,
                         item_adapter_kwargs=_kwargs(item_adapter.get_config()))
        space.config = replace(config, **named)
        self.adapters[platform] = adapter.to(self.device)
        if item_adapter is not None:
            self.item_adapters[platform] = item_adapter.to(self.device)
        elif platform in self.item_adapters:
            del self.item_adapters[platform]
        self.spaces[platform] = space.to(self.device)
        if platform in self.content_heads:  # it mapped content into the replaced space
            del self.content_heads[platform]

    def set_content_head(self, platform: str, head: ContentHead) -> None:
        """Give target ``platform``'s learned item space the :class:`~fusion.content.ContentHead`
        that scores items added to its catalog after training (saved with the model)."""
        space = self._space(platform)
        if space.config.space != "learned":
            raise ValueError(f"target {platform!r}: a content head maps content to learned item "
                             f"vectors; this target has a {space.config.space} space")
        if head.config.width != self.fusion.config.dim or head.config.n_items != space.config.n_items:
            raise ValueError(f"target {platform!r}: the content head makes vectors of width {head.config.width} "
                             f"for a catalog of {head.config.n_items} items; the model has width "
                             f"{self.fusion.config.dim} and {space.config.n_items} items")
        self.content_heads[platform] = head.to(self.device)

    def content_head(self, platform: str) -> ContentHead | None:
        """Target ``platform``'s content head (None: the model cannot score items added after
        training, e.g. a transformer's or an older linear model's)."""
        self._space(platform)
        return self.content_heads[platform] if platform in self.content_heads else None  # type: ignore[return-value]

    def _space(self, platform: str) -> ItemSpace:
        if platform not in self.spaces:
            raise ValueError(f"no target head for platform {platform!r}; the model has "
                             f"{self.targets} (add one with add_target)")
        return self.spaces[platform]  # type: ignore[return-value]

    # ------------------------------------------------------------------ data, set at run time
    def set_item_features(self, platform: str, features: dict[str, Any],
                          present: dict[str, Any] | None = None) -> None:
        """Register ``platform``'s item features: ``features[modality]`` ``[N_P, d_m]``,
        ``present[modality]`` bool ``[N_P]`` (default all True; ``present["id"]`` marks items
        with a trained id embedding). Checks widths, row counts and NaN in present rows."""
        if platform in self.spaces and self.spaces[platform].config.space == "content":
            n = self.spaces[platform].config.n_items
            rows = {m: len(x) for m, x in features.items() if len(x) != n}
            if rows:
                raise ValueError(f"platform {platform!r}: target has {n} items but features have "
                                 f"rows {rows}")
        self.fusion.set_item_features(platform, features, present)

    def set_id_presence(self, platform: str, present: Any) -> None:
        """Which items of ``platform`` have a trained id row (bool ``[N_P]``): only those use
        their id embedding. Model state, saved with the weights (unlike item features)."""
        self.fusion.items.set_id_presence(platform, present)

    def id_presence(self, platform: str) -> torch.Tensor | None:
        """``[N_P]`` bool: items of ``platform`` with a trained id row (None: no id embedding,
        or a model saved before presence was recorded, whose every row is used)."""
        ids = self.fusion.items.ids
        return ids[platform].present if platform in ids else None

    @property
    def id_presence_recorded(self) -> bool:
        """False for a model loaded from a folder saved before id presence was recorded."""
        return all(ids.present is not None for ids in self.fusion.items.ids.values())

    def set_item_vectors(self, platform: str, vectors: Any) -> None:
        """An external space's item vectors ``[N_P, D_P]`` (from the platform's own recommender)."""
        self._space(platform).set_vectors(vectors)

    # ------------------------------------------------------------------ users, items, scores
    def encode_users(self, items: torch.Tensor, mask: torch.Tensor,
                     platform: str | torch.Tensor) -> torch.Tensor:
        """Interest vectors ``[B, D]`` of histories ``items [B, L]`` int64, ``mask [B, L]``
        bool; ``platform`` a name or int64 ``[B, L]`` indices into ``FusionConfig.platforms``.
        Unit length; exactly 0 for a history with no embeddable item."""
        dev = self.device
        if isinstance(platform, torch.Tensor):
            platform = platform.to(dev)
        return self.fusion(items.to(dev), mask.to(dev), platform)

    def leave_one_out(self, items: torch.Tensor, mask: torch.Tensor,
                      platform: str | torch.Tensor) -> torch.Tensor:
        """``[B, L, D]``: the interest vector of each history of :meth:`encode_users` without
        each of its items (0 on padding): what explanations compare against."""
        dev = self.device
        if isinstance(platform, torch.Tensor):
            platform = platform.to(dev)
        return self.fusion.leave_one_out(items.to(dev), mask.to(dev), platform)

    def query(self, u: torch.Tensor, platform: str) -> torch.Tensor:
        """``u [B, D]`` -> unit queries ``[B, D_P]`` in ``platform``'s item space; 0 for u = 0
        (so an empty history is scored by the item bias alone)."""
        self._space(platform)
        q = F.normalize(self.adapters[platform](u), dim=-1)
        return torch.where((u != 0).any(-1, keepdim=True), q, 0.0)

    def item_vectors(self, platform: str, item_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors ``[N_P, D_P]`` of target ``platform`` (or ``[..., D_P]`` for
        ``item_idx [...]``): unit length (content items with nothing to embed get 0), but a
        learned space's, whose length is part of the score."""
        space = self._space(platform)
        if item_idx is not None:
            item_idx = item_idx.to(self.device)
        if space.config.space == "learned":
            return space.own_vectors(item_idx)
        if space.config.space == "external":
            return F.normalize(space.external(item_idx), dim=-1)
        e, has = self.fusion.items(platform, item_idx)
        v = F.normalize(self.item_adapters[platform](e), dim=-1)
        return torch.where(has[..., None], v, 0.0)

    def logits(self, u: torch.Tensor, platform: str, item_idx: torch.Tensor | None = None,
               item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """``scale * cos(q, v) + bias``: ``[B, N_P]`` over all items, ``[B, K]`` for shared
        candidates ``item_idx [K]`` or per-user candidates ``item_idx [B, K]``.
        ``item_vectors`` (a cached ``item_vectors(platform)``, all items) skips recomputing them."""
        space = self._space(platform)
        q = self.query(u, platform)
        if item_idx is not None:
            item_idx = item_idx.to(self.device)
        if item_vectors is None:
            v = self.item_vectors(platform, item_idx)
        else:
            v = item_vectors if item_idx is None else item_vectors[item_idx]
        return space.logits(q, v, item_idx)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, platform: str | torch.Tensor,
                target: str, item_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Training in one call (so DDP sees it): ``logits(encode_users(...), target, item_idx)``."""
        return self.logits(self.encode_users(items, mask, platform), target, item_idx)

    def score(self, items: torch.Tensor, mask: torch.Tensor, platform: str | torch.Tensor,
              target: str) -> torch.Tensor:
        """Full scores ``[B, N_P]`` of target ``target``'s items for these histories."""
        return self.logits(self.encode_users(items, mask, platform), target)

    # ------------------------------------------------------------------ saving and loading
    def check_fingerprints(self, fingerprints: dict[str, str]) -> None:
        """Refuse item features from other encoders than the ones the model was trained on:
        for every modality both sides name, the fingerprints must be equal."""
        bad = {m: (self.encoder_fingerprints[m], fp) for m, fp in fingerprints.items()
               if m in self.encoder_fingerprints and self.encoder_fingerprints[m] != fp}
        if bad:
            lines = "; ".join(f"{m}: model {a}, given {b}" for m, (a, b) in sorted(bad.items()))
            raise ValueError(f"encoder fingerprints differ ({lines}): the model was trained on "
                             f"item features from other encoders; re-embed the items with the model's "
                             f"encoders or retrain")

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the model to ``folder`` (manifest last: an interrupted save has none)."""
        folder = Path(folder)
        (folder / MANIFEST).unlink(missing_ok=True)
        parts = [{"name": "fusion", "role": "fusion", "type": type(self.fusion).__name__, "path": "fusion"}]
        self.fusion.save(folder / "fusion")
        for p, space in self.spaces.items():
            heads: list[tuple[str, Adapter]] = [("adapter", self.adapters[p])]
            if p in self.item_adapters:
                heads.append(("item_adapter", self.item_adapters[p]))
            space.save(folder / "targets" / p)
            parts.append({"name": f"targets/{p}", "role": "item_space", "type": type(space).__name__,
                          "platform": p, "path": f"targets/{p}"})
            for role, adapter in heads:
                adapter.save(folder / f"{role}s" / p)
                parts.append({"name": f"{role}s/{p}", "role": role, "type": adapter.registry_name,
                              "platform": p, "path": f"{role}s/{p}"})
            if p in self.content_heads:
                self.content_heads[p].save(folder / "content_heads" / p)
                parts.append({"name": f"content_heads/{p}", "role": "content_head", "type": ContentHead.__name__,
                              "platform": p, "path": f"content_heads/{p}"})
        write_json(folder / MANIFEST, {"format": FORMAT, "format_version": FORMAT_VERSION, "type": TYPE,
                                       "info": self.info, "parts": parts, "encoder_fingerprints": self.encoder_fingerprints,
                                       "versions": _versions(), HASHES: _hash_parts(folder, parts)})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike,
                        encoder_fingerprints: dict[str, str] | None = None,
                        device: str | torch.device | None = None, verify: bool = True) -> InterestModel:
        """Load a model written by :meth:`save_pretrained`. With ``encoder_fingerprints``
        (modality -> fingerprint of the vectors you will feed it, e.g. the embedding store's),
        refuse a model trained on other encoders. ``verify=False`` skips the files' hash check:
        only for a caller that has checked every file of :func:`saved_files` itself (a bundle,
        against its own manifest); the weights are checked finite either way."""
        folder = Path(folder)
        path = folder / MANIFEST
        manifest = read_manifest(path, FORMAT, FORMAT_VERSION, "not a saved InterestModel (or its save was interrupted)")
        if manifest.get("type", TYPE) != TYPE:
            raise ValueError(f"{path}: a saved {manifest['type']!r}, not an {TYPE}")
        parts = _parts(manifest, path)
        classes = [part_class(part, path) for part in parts]  # an unknown type is refused before any file is read
        if verify:
            verify_files(folder, manifest)
        files = Folder(folder, "the model folder")
        for part in parts:  # every part lies inside the folder, links followed
            files.file(part["path"], path)
        fusion = next(c.load(folder / p["path"]) for p, c in zip(parts, classes) if p["role"] == "fusion")
        heads: dict[str, dict[str, nn.Module]] = {}
        for part, part_cls in zip(parts, classes):
            where, role = folder / part["path"], part["role"]
            if role != "fusion":
                context = (part["platform"], fusion.config.dim) if role == "item_space" else ()
                heads.setdefault(part["platform"], {})[role] = part_cls.load(where, *context)
        with torch.device("meta"):  # its fusion is replaced at once: build none
            model = cls(InterestConfig(fusion.config, {}), manifest.get("encoder_fingerprints"), manifest.get("info"))
        model.fusion = fusion
        for platform, head in heads.items():
            missing = [r for r in ("item_space", "adapter") if r not in head]
            if missing:
                raise FileRefused(path, f"target {platform!r} has no {' and no '.join(missing)} part", "parts")
            try:
                model.set_head(platform, head["item_space"], head["adapter"], head.get("item_adapter"))
                if "content_head" in head:
                    model.set_content_head(platform, head["content_head"])
            except ValueError as e:
                raise FileRefused(path, str(e), "parts") from None
        if encoder_fingerprints is not None:
            model.check_fingerprints(encoder_fingerprints)
        return model.to(device) if device is not None else model


def _parts(manifest: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The manifest's ``parts``: objects with string ``name``, ``role``, ``type`` and
    ``path`` (and ``platform``, but for the fusion), exactly one of them the fusion."""
    parts = manifest.get("parts")
    keys = ("name", "role", "type", "path")
    if not isinstance(parts, list) or not all(
            isinstance(p, dict) and all(isinstance(p.get(k), str) for k in keys)
            and (p["role"] == "fusion" or isinstance(p.get("platform"), str)) for p in parts):
        raise FileRefused(path, "expected a list of parts, each with string name, role, type, path "
                                "(and platform, but for the fusion)", "parts")
    fusions = sum(p["role"] == "fusion" for p in parts)
    if fusions != 1:
        raise FileRefused(path, f"{fusions} fusion parts; a saved model has exactly one", "parts")
    if len({(p["role"], p.get("platform")) for p in parts}) != len(parts):
        raise FileRefused(path, "two parts of the same role for one platform", "parts")
    return parts


def part_class(part: dict[str, Any], manifest: Path) -> type[nn.Module]:
    """The class that loads a manifest ``part``: the type it records, found in
    :data:`PART_CLASSES` (fusion, item space) or in ``fusion.adapters``' registry (adapters,
    custom ones included once registered). Anything else is refused, naming the file and
    the known types."""
    role, name = part.get("role"), part.get("type")
    if role not in PART_CLASSES:
        raise ValueError(f"{manifest}: part {part.get('name')!r} has role {role!r}; known roles: "
                         f"{', '.join(PART_CLASSES)}")
    classes = PART_CLASSES[role]
    adapter = classes == (Adapter,)
    known = list_adapters() if adapter else [c.__name__ for c in classes]
    if name not in known:
        hint = " (a custom adapter must be registered with register_adapter before loading)" if adapter else ""
        raise ValueError(f"{manifest}: part {part.get('name')!r} has type {name!r}, which this version "
                         f"cannot load; known {role} types: {', '.join(known)}{hint}")
    return get_adapter_class(name) if adapter else next(c for c in classes if c.__name__ == name)


def _part_files(parts: list[dict]) -> list[str]:
    """The files ``from_pretrained`` reads: each part's config and weights."""
    return [f"{p['path']}/{name}" for p in parts for name in (CONFIG_FILE, WEIGHTS_FILE)]


def saved_files(folder: str | os.PathLike) -> list[str]:
    """The files (relative to ``folder``) that ``from_pretrained`` reads: the manifest, and
    each part's config and weights."""
    folder = Path(folder)
    manifest = read_manifest(folder / MANIFEST, FORMAT, FORMAT_VERSION,
                             "not a saved InterestModel (or its save was interrupted)")
    return [MANIFEST, *_part_files(_parts(manifest, folder / MANIFEST))]


def _hash_parts(folder: Path, parts: list[dict]) -> dict[str, str]:
    """``{relative path: sha256}`` of every file in the parts' folders."""
    files = sorted({f for p in parts for f in (folder / p["path"]).iterdir()
                    if f.is_file() and not f.name.startswith(".")})
    return {f.relative_to(folder).as_posix(): sha256_file(f) for f in files}


def verify_files(folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every file the manifest of the model in ``folder`` records against its sha256
    (a changed, missing or unrecorded file is refused, naming it); a manifest without hashes
    (saved by an older version) passes with a warning that the files are unverified."""
    folder = Path(folder)
    if not legacy.hashes_recorded(manifest, folder / MANIFEST, HASHES):
        return
    recorded = manifest[HASHES]
    if not isinstance(recorded, dict):
        raise ValueError(f"{folder / MANIFEST}: {HASHES!r} must map file paths to sha256 hashes")
    verify_hashes(folder, recorded, _part_files(_parts(manifest, folder / MANIFEST)), folder / MANIFEST, "the model",
                  "the model folder", "the file changed after the model was saved (corrupt or edited)",
                  "save or train the model again")


def _kwargs(adapter_config: dict[str, Any]) -> dict[str, Any]:
    """An adapter's own options: its config without the widths the model sets."""
    return {k: v for k, v in adapter_config.items() if k not in ("in_dim", "out_dim")}


def _versions() -> dict[str, str | None]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"python": _platform.python_version(), "torch": torch.__version__,
            "safetensors": version("safetensors"), "multimodal-interest": version("multimodal-interest")}
