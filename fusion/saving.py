"""The files of a saved part and of a saved folder's manifest: their names, and how they are
written and read.

A part (a fusion, an item space, an adapter) is a folder of two files: ``config.json`` (what
builds it) and ``model.safetensors`` (its state dict). Each part class pairs ``save(folder)``
with a ``load(folder)`` classmethod, as sentence-transformers' modules do; all of them load
through :func:`load_part`, so every part gets the loader rule of :mod:`fusion.files`. A
composite folder (a saved model, a bundle) names its parts and their hashes in
``manifest.json`` (:func:`read_manifest`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from fusion import files
from fusion.files import MANIFEST_LIMIT, FileRefused, Folder, check_tensors, expect_mapping

M = TypeVar("M", bound=nn.Module)

CONFIG_FILE = "config.json"  # a part's config
WEIGHTS_FILE = "model.safetensors"  # a part's state dict
MANIFEST = "manifest.json"  # a saved model's or a bundle's: its format, parts and files
HASHES = "sha256"  # manifest key: relative path -> hex sha256 of every file the folder holds


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike, fmt: str, version: int, what: str) -> dict[str, Any]:
    """The JSON manifest at ``path``, which must be an object declaring ``format`` ``fmt``
    and ``format_version`` ``version``; ``what`` says what a missing one means."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {what}")
    manifest = expect_mapping(files.read_json(path, MANIFEST_LIMIT), path)
    if manifest.get("format") != fmt or manifest.get("format_version") != version:
        raise ValueError(f"{path}: format {manifest.get('format')!r} version "
                         f"{manifest.get('format_version')!r}; expected {fmt!r} {version}")
    return manifest


# ------------------------------------------------------------------ a part's two files
def save_part(module: nn.Module, folder: str | os.PathLike, config: dict[str, Any]) -> None:
    """``folder/config.json`` (``config``) and ``folder/model.safetensors`` (``module``'s
    state dict), each written atomically; no pickle."""
    from safetensors.torch import save_file

    write_json(Path(folder) / CONFIG_FILE, config)
    path = Path(folder) / WEIGHTS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def part_files(folder: str | os.PathLike) -> Folder:
    """The files of the part saved in ``folder``: reads stay inside it, links followed."""
    return Folder(Path(folder), f"the part folder {folder}")


def read_part_config(folder: Folder) -> dict[str, Any]:
    """A part's ``config.json``, which must be a JSON object."""
    return dict(expect_mapping(folder.json(CONFIG_FILE, MANIFEST_LIMIT), folder.root / CONFIG_FILE))


def load_part(folder: Folder, build: Callable[[], M], renames: dict[str, str] | None = None) -> M:
    """The part that ``build()`` makes, holding the weights of ``folder/model.safetensors``.

    ``build()`` runs on the ``meta`` device first (an error there is the config's, named so);
    the file's header must hold exactly its
    tensors, of exactly its shapes, before anything of their size is allocated; the tensors
    must be finite; they then become the module's own (``load_state_dict(assign=True)``:
    nothing is initialised only to be overwritten). ``renames`` maps a tensor name an older
    version wrote to today's (:mod:`fusion.legacy`)."""
    config, weights = folder.root / CONFIG_FILE, folder.root / WEIGHTS_FILE
    renames = renames or {}
    try:
        with torch.device("meta"):
            module = build()
    except (RuntimeError, OverflowError, MemoryError) as e:
        raise FileRefused(config, f"sizes no model can have ({e})") from None
    except (TypeError, ValueError) as e:  # what the config says builds no part
        raise FileRefused(config, str(e)) from None
    header = {renames.get(k, k): v for k, v in folder.header(WEIGHTS_FILE).items()}
    check_tensors(weights, header, {k: tuple(v.shape) for k, v in module.state_dict().items()}, str(config))
    state = {renames.get(k, k): v for k, v in files.load_tensors(folder.file(WEIGHTS_FILE), weights).items()}
    check_finite(state, weights)
    module.load_state_dict(state, strict=True, assign=True)
    return module


def check_finite(tensors: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse NaN or an infinity in any floating tensor of ``tensors``, read from ``path``:
    the error names the file and the tensor (a weight like that turns every score it
    touches into NaN, which ranks as nothing)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = ~torch.isfinite(t)
            kinds = [k for k, hit in (("nan", torch.isnan(t).any()), ("+inf", (t == torch.inf).any()),
                                      ("-inf", (t == -torch.inf).any())) if bool(hit)]
            raise ValueError(f"{path}: tensor {name!r} has {int(bad.sum())} non-finite value(s) "
                             f"({', '.join(kinds)}) of {t.numel()}; the file is corrupt or the model "
                             f"diverged in training")
