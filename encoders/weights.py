"""Finding and reading pretrained weights without ever downloading them.

Encoders whose weights no package ships (ResNet, CLIP, PANNs) take a local file, or find
one already in a local cache (torch hub's ``checkpoints/`` folder, the Hugging Face hub
cache). When there is none they raise :class:`MissingWeightsError`, which says which file
is missing and what to pass. Checkpoints are read with ``torch.load(weights_only=True)``
(numpy arrays inside are allowed, nothing else) or safetensors: no pickle of arbitrary code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

# Files of a model folder whose bytes decide its vectors (weights, configs, vocabularies).
_MODEL_FILE_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model"}


class MissingWeightsError(FileNotFoundError):
    """No local weights for an encoder; the message names the file and how to provide it."""


def model_folder_files(folder: str | os.PathLike) -> list[Path]:
    """Weight, config and vocabulary files under a model folder (README and the like excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingWeightsError(f"model folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def torch_hub_checkpoint(filenames: Iterable[str]) -> Path | None:
    """The first of ``filenames`` present in torch hub's cache (``$TORCH_HOME/hub/checkpoints``)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return next((folder / f for f in filenames if (folder / f).is_file()), None)


def hf_cached_file(repo_id: str, filenames: Iterable[str]) -> Path | None:
    """The first of ``filenames`` of a Hugging Face hub repository already in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return Path(found)
    return None


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a file, else :class:`MissingWeightsError` naming ``what``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"{what}: weights file {path} does not exist")
    return path


def _numpy_globals() -> list[Any]:
    """The numpy types that rebuild plain arrays: data, not code (old and new module paths)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    dtypes = {type(np.dtype(t)) for t in "?bhilqBHILQefdgFDGUSO"}
    return [np.ndarray, np.dtype, *dtypes,
            multiarray._reconstruct, (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            multiarray.scalar, (multiarray.scalar, "numpy.core.multiarray.scalar")]


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Read a ``.safetensors`` file or a torch checkpoint with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from e


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path,
                     ignore: tuple[str, ...] = ()) -> None:
    """Refuse a state dict whose keys or shapes differ from ``module``'s, naming the first few.

    Keys starting with one of ``ignore`` are not compared.
    """
    expected = {k: v.shape for k, v in module.state_dict().items()}
    given = {k: v.shape for k, v in state.items() if not k.startswith(ignore)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k]) != tuple(given[k]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(given[k])}, "
                        f"model {tuple(expected[k])})")
    if problems:
        raise ValueError(f"{source}: not a {type(module).__name__} state dict: " + "; ".join(problems))

