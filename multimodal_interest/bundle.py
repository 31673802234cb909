"""A deployment bundle: one folder with everything serving a trained model needs.

A saved model holds everything scoring needs but data: its item features come from the
embedding store and its item ids from the dataset (which items have a trained id embedding
is saved with the model). :meth:`Bundle.build` gathers them once, from the model folder
alone (nothing beside it is read, nothing from ``training/`` is imported); serving then
needs no encoder, no store and no dataset::

    bundle/
      manifest.json                  format, version, model fingerprint, platforms, indexes
      model/                         the InterestModel as save_pretrained wrote it (copied)
      items/<platform>.json          item ids, row i = item_idx i
      features/<platform>.safetensors  item features of the items a history may hold:
                                     "x.<modality>" [N, d_m], "present.<modality>" [N] bool,
                                     "present.id" [N] bool (the model's id presence, a copy:
                                     checked equal to the model's on load)
      targets/<platform>.safetensors "vectors" [N, D_P] (the model's item_vectors(P), then
                                     the content head's for items added after training:
                                     :mod:`multimodal_interest.new_items`), "bias" [N],
                                     "scale" [1]: score = scale * cos + bias
      index/<platform>.<kind>.faiss  FAISS indexes (flat, ivf, hnsw) over the target items
      titles/<platform>.json         item titles (row i = item_idx i), for people to read
      map.safetensors                a 2-D map of a sample of users' interest vectors and
                                     its projection (:mod:`multimodal_interest.user_map`)

Everything is safetensors or JSON (no pickle); the manifest is written last and the folder
is renamed into place, so a bundle that exists is whole. The manifest records the sha256 of
every file in the bundle (model, items, features, targets, indexes); :meth:`Bundle.load`
checks each one before anything is read, refuses a changed, missing or unrecorded file
naming it, and refuses NaN or infinite item vectors, biases and features naming the file
and the tensor. A bundle written before the hashes were recorded (format version 1) is
refused with the command that re-exports it.

The model fingerprint (:func:`model_fingerprint`) identifies the model's function: a
sha256 over its weights and part configs and the manifest's parts and encoder
fingerprints (not the library versions, so re-saving elsewhere keeps it). Portable interest
vectors carry it, so one model's vector is never read by another.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from fusion import InterestModel
from fusion.config import check_name
from fusion.files import (MANIFEST_LIMIT, FileRefused, Folder, check_tensors, expect_mapping, inside,
                          load_tensors, read_json, safetensors_header, sha256_file, verify_hashes)
from fusion.model import saved_files
from fusion.saving import CONFIG_FILE, HASHES, MANIFEST, check_finite, read_manifest, write_json
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.features import ItemFeatures, item_texts
from multimodal_interest.new_items import check_catalogs, target_items
from multimodal_interest.retrieval import (FAISS_KINDS, ExactRetriever, FaissRetriever, Retriever,
                                           TargetItems, recall_at_k)
from multimodal_interest.run import model_folder
from multimodal_interest.store import EmbeddingStore
from multimodal_interest.titles import dataset_titles
from multimodal_interest.user_map import MIN_USERS, UserMap, sample_vectors

log = logging.getLogger(__name__)

FORMAT = "multimodal-interest/bundle"
FORMAT_VERSION = 2  # 2: the manifest records every file's sha256
MODEL = "model"  # the bundle's copy of the saved model (a bundle's layout, not a run's)
REEXPORT = "re-export it with `mmi export-index` (or Bundle.build(...).save(...))"
ID = "id"
APPROXIMATE = ("ivf", "hnsw")  # index kinds that may miss true top items
RECALL = "recall@10"
MAP = "map.safetensors"
MAP_USERS = 2000  # users sampled for the map at export


def model_fingerprint(folder: str | Path, verified: dict[str, str] | None = None) -> str:
    """``sha256:<hex>`` of a saved InterestModel (see the module docstring). ``verified``:
    sha256 of files already checked (path relative to ``folder``), not read again."""
    folder = Path(folder)
    manifest = expect_mapping(read_json(folder / MANIFEST, MANIFEST_LIMIT), folder / MANIFEST)
    verified = verified or {}
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (path.name.endswith(".safetensors") or path.name == CONFIG_FILE):
            relative = path.relative_to(folder).as_posix()
            h.update(f"{relative}\0{verified.get(relative) or sha256_file(path)}\n".encode())
    kept = {k: manifest.get(k) for k in ("format", "format_version", "parts", "encoder_fingerprints")}
    h.update(json.dumps(kept, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


@dataclass
class Bundle:
    """A loaded (or freshly built) bundle. ``model`` is in eval mode with the history
    platforms' features attached; ``targets[P]`` holds what scoring ``P`` needs."""

    model: InterestModel
    model_dir: Path  # the saved model this bundle serves
    fingerprint: str
    item_ids: dict[str, list[str]]  # platform -> ids in item_idx order
    targets: dict[str, TargetItems]
    info: dict = field(default_factory=dict)  # where it came from: dataset, split, task, created
    folder: Path | None = None  # where it was loaded from
    indexes: list[dict] = field(default_factory=list)  # manifest entries of saved FAISS indexes
    titles: dict[str, list[str]] = field(default_factory=dict)  # platform -> titles in item_idx order
    user_map: UserMap | None = None  # where the users of the training data sit (2-D)
    _built: dict = field(default_factory=dict, repr=False)  # (platform, kind) -> index built here

    @property
    def history_platforms(self) -> list[str]:
        """Platforms whose items a history may hold: those the model can embed (item features
        or an id embedding; a linear model of ids alone embeds its source platform only)."""
        embeddable = set(self.model.fusion.items.platforms())
        return [p for p in self.model.fusion.config.platforms if p in embeddable]

    def target(self, platform: str) -> TargetItems:
        if platform not in self.targets:
            raise ValueError(f"unknown target platform {platform!r}; this model recommends on "
                             f"{sorted(self.targets)}")
        return self.targets[platform]

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, model_dir: str | Path, dataset: CrossPlatformDataset,
              store: EmbeddingStore | None = None, split: str | None = None,
              item_spaces: dict[str, str] | None = None, map_users: int = MAP_USERS) -> Bundle:
        """Gather a saved model's serving data: item ids from ``dataset``, item features
        from ``store`` (the encoders the model was trained on) and, for a target the model
        scores in the platform's own item space, that space's file in ``item_spaces``
        (platform -> file, as in training; another file than the model's is refused).
        A target whose catalog gained items after training scores them from the model's
        content head, its trained items unchanged (:mod:`multimodal_interest.new_items`).
        Everything else scoring needs (which items use their id embedding, item bias,
        temperature, fingerprints) is in the model folder, ``model_dir`` or a run's: a folder
        copied alone builds the same bundle. ``split`` only labels the bundle (default: the
        training split the model records); another split than the recorded one is refused.
        The bundle also keeps ``dataset``'s item titles and a map of up to ``map_users``
        random users' interest vectors (from their histories on the model's source
        platform; 0: no map)."""
        model_dir = model_folder(model_dir)
        model = InterestModel.from_pretrained(model_dir)
        if not model.id_presence_recorded:
            raise ValueError(f"{model_dir}: saved by an older version, which did not record which items "
                             f"have a trained id embedding, so it cannot score on its own; re-save it from "
                             f"its run (multimodal_interest.training.load_run(run, task, features)"
                             f".save_pretrained(folder)) or re-train it")
        source, target, split = _trained_on(model_dir, model, dataset, split)
        platforms = sorted(set(model.fusion.config.platforms) | set(model.targets))
        if len(platforms) != 2:
            raise ValueError(f"{model_dir}: the model has platforms {platforms}; bundles serve "
                             f"two-platform models")
        missing = [p for p in platforms if p not in dataset.items]
        if missing:
            raise ValueError(f"dataset {dataset.name!r} has no platform {missing}; build from the "
                             f"dataset the model was trained on")
        ids = {p: dataset.items[p]["item_id"].astype(str).tolist() for p in platforms}
        check_catalogs(model, ids, f"dataset {dataset.name!r}")
        modalities = list(model.fusion.config.modalities)
        if modalities and store is None:
            raise ValueError(f"the model reads item features ({', '.join(modalities)}): give the "
                             f"embedding store it was trained with")
        features = (ItemFeatures.from_store(store, ids, modalities, model.encoder_fingerprints)
                    if modalities else ItemFeatures())
        features.read_item_spaces(item_spaces or {}, ids)
        model.check_fingerprints(features.fingerprints)
        features.attach(model, platforms)
        model.eval().requires_grad_(False)
        targets = {p: target_items(model, p, ids[p], features, lambda p=p: item_texts(dataset, p),
                                   f"dataset {dataset.name!r}") for p in model.targets}
        info = {"dataset": dataset.name, "split": split, "task": f"{source}->{target}",
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        added = {p: len(ids[p]) - model.config.targets[p].n_items for p in model.targets}
        if any(added.values()):
            info["items_added_after_training"] = {p: k for p, k in added.items() if k}
        titles = {p: t for p in platforms if (t := dataset_titles(dataset, p)) is not None}
        return cls(model, model_dir, model_fingerprint(model_dir), ids, targets, info, titles=titles,
                   user_map=_user_map(model, dataset, source, map_users))

    # ------------------------------------------------------------------ saving and loading
    def save(self, folder: str | Path, indexes: tuple[str, ...] = ("flat",),
             queries: dict[str, torch.Tensor] | None = None, nprobe: int = 32,
             ef_search: int = 128) -> None:
        """Write the bundle to ``folder`` (replacing it whole), with FAISS ``indexes`` for
        every target (those already built by :meth:`retriever` are reused), searching with
        ``nprobe`` (IVF) and ``ef_search`` (HNSW). With ``queries[P]`` (``[Q, D_P]`` unit
        queries, e.g. from :func:`probe_queries`), the recall@10 of each approximate index
        against exact search is measured and recorded in the manifest."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.model_dir, tmp / MODEL, ignore=shutil.ignore_patterns(".*"))
        platforms, entries = {}, []
        for p, ids in self.item_ids.items():
            spec: dict = {"n_items": len(ids), "items": f"items/{p}.json"}
            write_json(tmp / spec["items"], ids)
            features = _feature_tensors(self.model, p) if p in self.history_platforms else {}
            if features:
                spec["features"] = f"features/{p}.safetensors"
                _save(features, tmp / spec["features"])
            if p in self.titles:
                spec["titles"] = f"titles/{p}.json"
                write_json(tmp / spec["titles"], self.titles[p])
            if p in self.targets:
                t = self.targets[p]
                spec["target"] = f"targets/{p}.safetensors"
                _save({"vectors": t.vectors, "bias": t.bias,
                                  "scale": torch.tensor([t.scale], dtype=torch.float64)}, tmp / spec["target"])
                for kind in indexes:
                    if kind not in FAISS_KINDS:
                        raise ValueError(f"unknown FAISS index kind {kind!r}; choose from {FAISS_KINDS}")
                    index = self._index(p, kind)
                    index.set_search_params(nprobe, ef_search)
                    entries.append(_save_index(tmp, p, index, t, (queries or {}).get(p)))
            platforms[p] = spec
        extra = {}
        if self.user_map is not None:
            _save(self.user_map.tensors(), tmp / MAP)
            extra["map"] = {"path": MAP, "source": self.user_map.source, "users": len(self.user_map.points)}
        write_json(tmp / MANIFEST, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                    "model": {"path": MODEL, "fingerprint": self.fingerprint},
                                    "info": self.info, "platforms": platforms, "indexes": entries,
                                    **extra, HASHES: _hash_files(tmp)})
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: str | Path) -> Bundle:
        """Load a bundle written by :meth:`save`; everything it holds is checked."""
        folder = Path(folder)
        manifest = _read_bundle_manifest(folder)
        _verify_files(folder, manifest)
        model_dir = folder / MODEL
        fingerprint = model_fingerprint(model_dir, {k.removeprefix(f"{MODEL}/"): v for k, v in manifest[HASHES].items()
                                                    if k.startswith(f"{MODEL}/")})
        if fingerprint != manifest["model"]["fingerprint"]:
            raise ValueError(f"{model_dir}: the model files do not match the bundle's manifest "
                             f"(fingerprint {fingerprint}, manifest {manifest['model']['fingerprint']}); "
                             f"{REEXPORT}")
        model = InterestModel.from_pretrained(model_dir, verify=False).eval().requires_grad_(False)
        ids, targets, titles = {}, {}, {}
        for p, spec in manifest["platforms"].items():
            check_name("platform", p)
            ids[p] = _read_item_ids(folder, spec)
            if "titles" in spec:
                titles[p] = _read_titles(folder, spec)
            if "features" in spec:
                _attach_features(model, p, _inside(folder, spec["features"]))
            if "target" in spec:
                targets[p] = _read_target(model, p, _inside(folder, spec["target"]), len(ids[p]))
        return cls(model, model_dir, fingerprint, ids, targets, manifest.get("info", {}), folder,
                   manifest.get("indexes", []), titles, _read_map(folder, manifest, model))

    # ------------------------------------------------------------------ retrieval
    def retriever(self, platform: str, kind: str = "exact") -> Retriever:
        """Top-K search over ``platform``'s items: ``exact`` (torch), or a FAISS index (the
        bundle's saved one, else built in memory, once). An approximate index (IVF, HNSW)
        whose recall the manifest does not record is logged as a warning: it may miss true
        top items, and no one has measured how often."""
        index = self._index(platform, kind)
        if kind in APPROXIMATE and self.recall(platform, kind) is None:
            log.warning("%s index of %r (%s) has no recall recorded in the bundle's manifest: it may "
                        "miss true top items unnoticed; measure it (`mmi export-index --index %s` "
                        "records recall@10 against exact search) or serve the exact flat index",
                        kind, platform, _params(index), kind)
        return index

    def saved_index(self, platform: str, kind: str) -> dict | None:
        """The manifest entry of ``platform``'s saved ``kind`` index (None: not in this bundle)."""
        if self.folder is None:
            return None
        return next((e for e in self.indexes if e["platform"] == platform and e["kind"] == kind), None)

    def recall(self, platform: str, kind: str) -> float | None:
        """The recall@10 recorded for ``platform``'s ``kind`` index (None: not measured)."""
        return (self.saved_index(platform, kind) or {}).get(RECALL)

    def index_report(self, platform: str, index: Retriever) -> dict:
        """What serving ``platform`` with ``index`` means: its kind, whether it is exact, its
        search settings, whether it was built in memory (a FAISS index the bundle does not
        hold) and the recall recorded for it in the manifest (None: not measured)."""
        saved = self.saved_index(platform, index.kind)
        return {"platform": platform, "kind": index.kind, "exact": index.kind not in APPROXIMATE,
                "params": _params(index), "built_in_memory": saved is None and index.kind != "exact",
                RECALL: (saved or {}).get(RECALL), "recall_queries": (saved or {}).get("recall_queries")}

    def _index(self, platform: str, kind: str) -> Retriever:
        items = self.target(platform)
        if kind == "exact":
            return ExactRetriever(items)
        saved = self.saved_index(platform, kind)
        if saved is None:
            if (platform, kind) not in self._built:
                log.info("no saved %s index for %r: building one in memory", kind, platform)
                self._built[platform, kind] = FaissRetriever.build(kind, items)
            return self._built[platform, kind]
        path = _inside(self.folder, saved["path"])
        index = FaissRetriever.load(path, kind)
        if index.n_items != len(items) or index.index.d != items.dim + 1:
            raise ValueError(f"{path}: {index.n_items} items of width {index.index.d}; the bundle's "
                             f"targets have {len(items)} of width {items.dim} + 1 (bias)")
        return index


def _save_index(root: Path, platform: str, index: FaissRetriever, items: TargetItems,
                queries: torch.Tensor | None) -> dict:
    path = f"index/{platform}.{index.kind}.faiss"
    (root / "index").mkdir(exist_ok=True)
    index.save(root / path)
    entry = {"platform": platform, "kind": index.kind, "path": path, "params": index.params()}
    if queries is not None and index.kind in APPROXIMATE:
        entry[RECALL] = recall_at_k(index, ExactRetriever(items), queries, 10)
        entry["recall_queries"] = len(queries)
        log.info("%s index of %r: recall@10 %.4f on %d queries", index.kind, platform,
                 entry[RECALL], len(queries))
    return entry


def _params(index: Retriever) -> dict[str, int]:
    """The search settings of ``index`` (none for exact torch search)."""
    return index.params() if isinstance(index, FaissRetriever) else {}


def probe_queries(bundle: Bundle, dataset: CrossPlatformDataset, n: int = 256,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """Realistic queries to measure an index's recall on: for each target ``P``, the
    queries of up to ``n`` random users' histories on another platform (``[Q, D_P]``)."""
    model, out = bundle.model, {}
    rng = np.random.default_rng(seed)
    for p in bundle.targets:
        source = next(s for s in bundle.history_platforms if s != p)
        users = np.flatnonzero(dataset.active_users(source))
        users = np.sort(rng.choice(users, min(n, len(users)), replace=False))
        h = dataset.histories(source, users, max_len=model.fusion.config.max_len)
        with torch.inference_mode():
            u = model.encode_users(h.items, h.mask, source)
            out[p] = model.query(u[(u != 0).any(1)], p).float()
    return out


def _trained_on(model_dir: Path, model: InterestModel, dataset: CrossPlatformDataset,
               split: str | None) -> tuple[str, str, str | None]:
    """(source, target, split) the model was trained on, as its saved ``info`` records them
    (else its platforms in training order, source first, and the given split): labels only.
    A model trained on another dataset or split than the ones given is refused."""
    task = model.info.get("task") or {}
    where = f"{model_dir / MANIFEST} (info.task)"
    if task.get("dataset", dataset.name) != dataset.name:
        raise ValueError(f"{where}: the model was trained on dataset {task['dataset']!r}, "
                         f"not {dataset.name!r}")
    if split is not None and task.get("split", split) != split:
        raise ValueError(f"{where}: the model was trained on split {task['split']!r}, not {split!r}")
    if {"source", "target"} <= set(task):
        return task["source"], task["target"], task.get("split", split)
    source, target = (model.fusion.config.platforms + model.targets)[:2]
    return source, target, split


def _read_bundle_manifest(folder: Path) -> dict:
    """The bundle's manifest; one written before file hashes (version 1) is refused."""
    path = folder / MANIFEST
    if path.is_file():
        old = Folder(folder, "the bundle").json(MANIFEST, MANIFEST_LIMIT)
        if isinstance(old, dict) and old.get("format") == FORMAT and old.get("format_version") == 1:
            raise ValueError(f"{path}: a bundle of format version 1, whose manifest records no file "
                             f"hashes, so its files cannot be verified; {REEXPORT}")
    manifest = read_manifest(path, FORMAT, FORMAT_VERSION, "not a bundle (make one with `mmi export-index`)")
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(manifest: dict, path: Path) -> None:
    """The fields a bundle's manifest must have, of the types loading reads them as; else an
    error naming the file and the field."""
    def refuse(field: str, expected: str) -> None:
        raise FileRefused(path, f"expected {expected}; {REEXPORT}", field)

    def text(value) -> bool:
        return isinstance(value, str)

    if not isinstance(manifest.get(HASHES), dict) or not all(map(text, manifest[HASHES].values())):
        refuse(HASHES, "a mapping of every file of the bundle to its sha256")
    model = manifest.get("model")
    if not isinstance(model, dict) or not text(model.get("fingerprint")):
        refuse("model", "an object with a string 'fingerprint'")
    platforms = manifest.get("platforms")
    if not isinstance(platforms, dict):
        refuse("platforms", "an object mapping each platform to its files")
    for p, spec in platforms.items():
        if (not isinstance(spec, dict) or not text(spec.get("items"))
                or not isinstance(spec.get("n_items"), int) or isinstance(spec["n_items"], bool)
                or spec["n_items"] < 0
                or not all(text(spec[k]) for k in ("features", "target", "titles") if k in spec)):
            refuse(f"platforms.{p}", "an object with 'n_items' (a count), 'items' and optional "
                                     "'features', 'target', 'titles' (paths)")
    indexes = manifest.get("indexes", [])
    if not isinstance(indexes, list) or not all(
            isinstance(e, dict) and all(text(e.get(k)) for k in ("platform", "kind", "path")) for e in indexes):
        refuse("indexes", "a list of objects with string 'platform', 'kind' and 'path'")
    if not isinstance(manifest.get("info", {}), dict):
        refuse("info", "an object")


def _hash_files(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` but the manifest."""
    files = sorted(f for f in root.rglob("*") if f.is_file() and f != root / MANIFEST)
    return {f.relative_to(root).as_posix(): sha256_file(f) for f in files}


def _read_files(folder: Path, manifest: dict) -> list[str]:
    """Every file (relative to ``folder``) that loading and serving the bundle reads."""
    specs = manifest["platforms"].values()
    files = [spec[key] for spec in specs for key in ("items", "features", "target", "titles") if key in spec]
    files += [e["path"] for e in manifest.get("indexes", [])]
    files += [manifest["map"]["path"]] if isinstance(manifest.get("map"), dict) and "path" in manifest["map"] else []
    return files + [f"{MODEL}/{f}" for f in saved_files(folder / MODEL)]


def _verify_files(folder: Path, manifest: dict) -> None:
    """Every file the manifest records has its sha256, and every file the bundle reads is
    recorded; else an error naming the file."""
    verify_hashes(folder, manifest[HASHES], _read_files(folder, manifest), folder / MANIFEST, "the bundle",
                  "the bundle", "its bytes do not match the bundle's manifest (corrupt, or edited after "
                  "export)", REEXPORT)


def _read_item_ids(folder: Path, spec: dict) -> list[str]:
    """A platform's item ids: a list of ``n_items`` distinct strings."""
    path = _inside(folder, spec["items"])
    ids = read_json(path)
    if not isinstance(ids, list) or len(ids) != spec["n_items"] or not all(isinstance(x, str) for x in ids):
        raise ValueError(f"{path}: expected a list of {spec['n_items']} item id strings")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: item ids repeat ({len(ids) - len(set(ids))} duplicate(s))")
    return ids


def _read_titles(folder: Path, spec: dict) -> list[str]:
    """A platform's item titles: a list of ``n_items`` strings."""
    path = _inside(folder, spec["titles"])
    titles = read_json(path)
    if not isinstance(titles, list) or len(titles) != spec["n_items"] or not all(isinstance(x, str) for x in titles):
        raise ValueError(f"{path}: expected a list of {spec['n_items']} title strings")
    return titles


def _user_map(model: InterestModel, dataset: CrossPlatformDataset, source: str, n: int) -> UserMap | None:
    """The map of up to ``n`` users' interest vectors (None: ``n`` is 0, or too few users
    have an embeddable history on ``source``)."""
    if n <= 0:
        return None
    if source not in model.fusion.config.platforms:
        source = model.fusion.config.platforms[0]
    vectors = sample_vectors(model, dataset, source, n)
    if len(vectors) < MIN_USERS:
        log.warning("no user map: %d user(s) with an embeddable history on %r", len(vectors), source)
        return None
    return UserMap.fit(vectors, source)


def _read_tensors(path: str) -> dict[str, torch.Tensor]:
    """The finite tensors of the safetensors file at ``path``, each copied into memory of its
    own: ``load_file`` returns views at the file's byte offsets, and BLAS rounds a product of
    misaligned memory differently, so a loaded bundle would not score bit-identically to the
    one that was saved."""
    tensors = {k: v.clone() for k, v in load_tensors(path).items()}
    check_finite(tensors, path)
    return tensors


def _read_map(folder: Path, manifest: dict, model: InterestModel) -> UserMap | None:
    """The bundle's user map (None: it has none), checked finite and of the model's width."""
    spec = manifest.get("map")
    if spec is None:
        return None
    where = f"{folder / MANIFEST} (map)"
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not isinstance(spec.get("source"), str):
        raise ValueError(f"{where}: expected {{\"path\": ..., \"source\": ..., \"users\": ...}}; {REEXPORT}")
    path = _inside(folder, spec["path"])
    return UserMap.from_tensors(_read_tensors(path), spec["source"], model.fusion.config.dim, path)


def _attach_features(model: InterestModel, platform: str, path: str) -> None:
    """Give ``model`` the history platform's item features from the file at ``path``."""
    vectors, present = _split_features(_read_tensors(path))
    ids = present.pop(ID, None)  # a copy of the model's own id presence: must agree with it
    mine = model.id_presence(platform)
    if (ids is None) != (mine is None) or (ids is not None and not torch.equal(ids.cpu(), mine.cpu())):
        raise ValueError(f"{path}: 'present.id' does not match the model's id presence (which items "
                         f"have a trained id embedding); {REEXPORT}")
    try:
        model.set_item_features(platform, vectors, present)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _read_target(model: InterestModel, platform: str, path: str, n_items: int) -> TargetItems:
    """What scoring ``platform`` needs, from the file at ``path``: finite vectors ``[N, D_P]``
    of the model's query width, bias ``[N]`` and scale."""
    width = model.config.targets[platform].external_dim or model.fusion.config.dim
    check_tensors(path, safetensors_header(path), {"vectors": (n_items, width), "bias": (n_items,),
                                                   "scale": (1,)}, "the bundle's manifest and model")
    t = _read_tensors(path)
    try:
        items = TargetItems(t["vectors"].float(), t["bias"].float(), float(t["scale"].reshape(-1)[0]))
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: {e}") from None
    if len(items) != n_items or items.dim != width:
        raise ValueError(f"{path}: {len(items)} vectors of width {items.dim}; the bundle has {n_items} "
                         f"item ids and the model's queries width {width}")
    return items


def _inside(folder: Path, relative: str) -> str:
    """``folder / relative`` resolved, refusing a manifest path that leads out of the bundle."""
    return str(inside(folder, relative, folder / MANIFEST, "the bundle").resolve())


def _feature_tensors(model: InterestModel, platform: str) -> dict[str, torch.Tensor]:
    """What the model holds for ``platform``'s items: vectors and presence per source ({}
    when it holds neither: a model of item ids alone, whose ids and their presence are in
    its weights)."""
    tables = model.fusion.items.tables
    if platform not in tables:
        return {}
    table = tables[platform]
    out = {f"x.{m}": table.x(m) for m in table.modalities}
    out.update({f"present.{m}": table.has(m) for m in table.modalities})
    if model.id_presence(platform) is not None:
        out[f"present.{ID}"] = model.id_presence(platform)
    return out


def _split_features(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    vectors = {k[2:]: v for k, v in tensors.items() if k.startswith("x.")}
    present = {k[8:]: v for k, v in tensors.items() if k.startswith("present.")}
    return vectors, present


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
