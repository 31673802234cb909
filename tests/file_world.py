"""One small real world of the files the toolkit reads, built once per test session: a
dataset folder (``data``), an embedding store (``store``), a training run (``run``) and a
deployment bundle (``bundle``), each made the way a user makes it (:mod:`serving_world`).
Tests copy a part before they damage it; :func:`rehash` then re-records the hashes, as
anyone who can edit the folder can, so that what lies behind the hash checks is tested."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from fusion.files import sha256_file
from multimodal_interest.bundle import Bundle, model_fingerprint
from serving_world import train_model, write_world

_BUILT: dict[str, Path] = {}


def world(tmp_path_factory) -> dict[str, Path]:
    """The session's world: ``{"data", "store", "run", "bundle"}`` -> folder (do not edit)."""
    if not _BUILT:
        root = tmp_path_factory.mktemp("file-world")
        dataset, store = write_world(root)
        run = train_model(dataset, store, root / "run", epochs=1)
        Bundle.build(run, dataset, store, map_users=0).save(root / "bundle", ("flat",))
        _BUILT.update(data=root / "data", store=root / "store", run=run, bundle=root / "bundle")
    return dict(_BUILT)


def copy(world: dict[str, Path], part: str, dest: Path) -> Path:
    """A copy of one part of the world, to damage."""
    return Path(shutil.copytree(world[part], dest / part, symlinks=True))


def rehash(folder: Path) -> None:
    """Re-record every hash a saved model (``folder`` or ``folder/model``) and a bundle record,
    and the bundle's model fingerprint, from the files as they are now. A manifest that is
    no longer a JSON object is left as it is."""
    model = folder / "model" if (folder / "model" / "manifest.json").exists() else folder
    _record(model)
    if model != folder:
        _record(folder)
        manifest = _json(folder / "manifest.json")
        if isinstance(manifest, dict) and isinstance(manifest.get("model"), dict):
            try:
                manifest["model"]["fingerprint"] = model_fingerprint(model)
            except ValueError:  # the model's manifest is what was damaged
                return
            (folder / "manifest.json").write_text(json.dumps(manifest))


def _record(folder: Path) -> None:
    manifest = _json(folder / "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), dict):
        return
    manifest["sha256"] = {f: sha256_file(folder / f) for f in manifest["sha256"] if (folder / f).is_file()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
