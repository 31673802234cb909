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

A saved folder holds everything scoring needs but the item features: the weights, each
target's item bias and temperature, which items have a trained id row (the id presence,
``set_id_presence``: a bool buffer saved with the fusion weights), the encoders' and item
spaces' fingerprints, its own type and ``info`` (provenance, e.g. the training task; not
part of the model's function). Copied alone anywhere, it scores as it did in its run. A
folder saved before id presence was recorded loads with every id row used (and a warning:
re-save it from its run). Item features and external vectors are data, not weights: set
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
import warnings
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion.files import (MANIFEST_LIMIT, FileRefused, Folder, check_tensors, expect_mapping,
                          safetensors_header, sha256_file, verify_hashes)
from fusion.adapters import Adapter, create_adapter, get_adapter_class, list_adapters
from fusion.config import (CONFIG_FILE, WEIGHTS_FILE, FusionConfig, InterestConfig, TargetConfig,
                           check_name, from_dict, load_weights, read_config, read_json, read_manifest,
                           write_json)
from fusion.items import ID_PRESENT, ItemSpace
from fusion.linear import LinearFusion
from fusion.transformer import FusionTransformer

MANIFEST = "manifest.json"
FORMAT = "multimodal-interest/interest-model"
FORMAT_VERSION = 1
TYPE = "InterestModel"  # manifest key "type": the class that loads the folder
HASHES = "sha256"  # manifest key: relative path -> hex sha256 of every file save_pretrained wrote
# what each manifest part's "role" holds; an adapter's "type" is a name in fusion.adapters' registry
FUSIONS: dict[str, type[nn.Module]] = {"linear": LinearFusion, "transformer": FusionTransformer}  # by kind
PART_CLASSES: dict[str, tuple[type[nn.Module], ...]] = {
    "fusion": tuple(FUSIONS.values()), "item_space": (ItemSpace,), "adapter": (Adapter,),
    "item_adapter": (Adapter,)}


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
        check_name("platform", platform)
        n_ids = self.fusion.config.id_items.get(platform)
        if config.space == "content" and n_ids is not None and n_ids != config.n_items:
            raise ValueError(f"target {platform!r}: n_items {config.n_items} but its id embedding "
                             f"has {n_ids} items (FusionConfig.id_items)")
        D = self.fusion.config.dim
        adapter = create_adapter(config.adapter, in_dim=D, out_dim=config.external_dim or D,
                                 **config.adapter_kwargs)
        self.adapters[platform] = adapter
        config = replace(config, adapter_kwargs=_kwargs(adapter.get_config()))  # with defaults
        if config.space == "content":
            item_adapter = create_adapter(config.item_adapter, in_dim=D, out_dim=D,
                                          **config.item_adapter_kwargs)
            self.item_adapters[platform] = item_adapter
            config = replace(config, item_adapter_kwargs=_kwargs(item_adapter.get_config()))
        elif platform in self.item_adapters:
            del self.item_adapters[platform]
        self.spaces[platform] = ItemSpace(platform, config, D)
        for heads in (self.adapters, self.item_adapters, self.spaces):
            if platform in heads:
                heads[platform].to(self.device)

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
        return self.fusion.items.id_presence(platform)

    @property
    def id_presence_recorded(self) -> bool:
        """False for a model loaded from a folder saved before id presence was recorded."""
        return all(self.id_presence(p) is not None for p in self.fusion.config.id_items)

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
        manifest = read_manifest(folder / MANIFEST, FORMAT, FORMAT_VERSION,
                                 "not a saved InterestModel (or its save was interrupted)")
        parts = _parts(manifest, folder / MANIFEST)
        if manifest.get("type", TYPE) != TYPE:
            raise ValueError(f"{folder / MANIFEST}: a saved {manifest['type']!r}, not an {TYPE}")
        for part in parts:  # an unknown type is refused before any file is read
            part_class(part, folder / MANIFEST)
        if verify:
            verify_files(folder, manifest)
        files = Folder(folder, "the model folder")
        for part in parts:  # every file read lies inside the folder, links followed
            files.file(part["path"], folder / MANIFEST)
        fusion = next(folder / p["path"] for p in parts if p["role"] == "fusion")
        targets = {p["platform"]: _target_config(folder, p, parts) for p in parts
                   if p["role"] == "item_space"}
        config = InterestConfig(_fusion_config(fusion, parts), targets)
        extra = (manifest.get("encoder_fingerprints"), manifest.get("info"))
        _check_weight_shapes(cls, config, files, parts)
        model = cls(config, *extra)
        if encoder_fingerprints is not None:
            model.check_fingerprints(encoder_fingerprints)
        _forget_unsaved_id_presence(model, fusion / WEIGHTS_FILE)
        load_weights(model.fusion, fusion)
        for p in parts:
            if p["role"] != "fusion":
                load_weights(model._head(p), folder / p["path"])
        return model.to(device) if device is not None else model

    def _head(self, part: dict[str, Any]) -> nn.Module:
        """The module of this model that a manifest part (not the fusion) holds."""
        heads = {"item_space": self.spaces, "adapter": self.adapters, "item_adapter": self.item_adapters}
        return heads[part["role"]][part["platform"]]


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
    return parts


def _check_weight_shapes(cls: type[InterestModel], config: InterestConfig, files: Folder,
                         parts: list[dict[str, Any]]) -> None:
    """Every part's weights file holds exactly the tensors, of exactly the shapes, that the
    configs make: compared from the files' headers with a model built on the ``meta``
    device, so sizes written in a config are never allocated before the files back them."""
    fusion = next(p for p in parts if p["role"] == "fusion")
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # from_pretrained warns, once, for the real model
            skeleton = cls(config)
            _forget_unsaved_id_presence(skeleton, files.file(f"{fusion['path']}/{WEIGHTS_FILE}"))
    except (RuntimeError, OverflowError, MemoryError) as e:
        where = files.root / fusion["path"] / CONFIG_FILE
        raise FileRefused(where, f"sizes no model can have ({e})") from None
    for part in parts:
        module = skeleton.fusion if part["role"] == "fusion" else skeleton._head(part)
        relative = f"{part['path']}/{WEIGHTS_FILE}"
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        check_tensors(files.root / relative, files.header(relative), expected,
                      f"{part['path']}/{CONFIG_FILE}")


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


def _fusion_config(folder: Path, parts: list[dict]) -> FusionConfig:
    """The fusion's config; a file saved before ``kind`` was recorded is the transformer's."""
    path = folder / CONFIG_FILE
    d = dict(expect_mapping(read_json(path, MANIFEST_LIMIT), path))
    saved = next(p["type"] for p in parts if p["role"] == "fusion")
    kind = next(k for k, c in FUSIONS.items() if c.__name__ == saved)
    if d.setdefault("kind", kind) != kind:
        raise ValueError(f"{path}: kind {d['kind']!r}, but the manifest records a {saved}")
    return from_dict(FusionConfig, d, str(path))


def _forget_unsaved_id_presence(model: InterestModel, weights: Path) -> None:
    """A fusion weights file saved before id presence was recorded has no presence buffers:
    load it with every id row used (as that version's ``from_pretrained`` did), and warn."""
    if not model.fusion.config.id_items or not weights.is_file():
        return
    saved = set(safetensors_header(weights))
    missing = [p for p in model.fusion.config.id_items if f"items.{ID_PRESENT}{p}" not in saved]
    for p in missing:
        model.fusion.items.forget_id_presence(p)
    if missing:
        warnings.warn(f"{weights}: records no id presence for {', '.join(missing)} (saved by an older "
                      f"version): every id row is used, trained or not; re-save the model from its run "
                      f"(multimodal_interest.training.load_run(...).save_pretrained) or re-train it",
                      stacklevel=3)


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
    recorded = manifest.get(HASHES)
    if recorded is None:
        warnings.warn(f"{folder / MANIFEST}: records no file hashes (saved by an older version): the "
                      f"model's files are loaded unverified; save it again to record them", stacklevel=3)
        return
    if not isinstance(recorded, dict):
        raise ValueError(f"{folder / MANIFEST}: {HASHES!r} must map file paths to sha256 hashes")
    verify_hashes(folder, recorded, _part_files(_parts(manifest, folder / MANIFEST)), folder / MANIFEST, "the model",
                  "the model folder", "the file changed after the model was saved (corrupt or edited)",
                  "save or train the model again")


def _target_config(folder: Path, part: dict, parts: list[dict]) -> TargetConfig:
    """A target's config from its item-space folder and its adapters' folders."""
    own = folder / part["path"] / CONFIG_FILE
    d = dict(expect_mapping(read_json(own, MANIFEST_LIMIT), own))
    for p in parts:
        if p.get("platform") == part["platform"] and p["role"] in ("adapter", "item_adapter"):
            where = folder / p["path"] / CONFIG_FILE
            a = dict(expect_mapping(read_json(where, MANIFEST_LIMIT), where))
            saved = a.pop("type", p["type"])
            if saved != p["type"]:
                raise ValueError(f"{where}: an adapter of type {saved!r}, but {folder / MANIFEST} "
                                 f"records {p['type']!r}")
            d[p["role"]] = p["type"]  # built through the adapter registry by add_target
            d[f"{p['role']}_kwargs"] = _kwargs(a)
    return from_dict(TargetConfig, d, str(folder / part["path"] / CONFIG_FILE))


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
