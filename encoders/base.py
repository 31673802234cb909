"""The one base class of item encoders, and the ``encode()`` contract they all share.

A concrete encoder implements four small hooks and inherits everything else:

* ``load_item(x)`` -- read and check one raw input on the CPU (decode an image file, read a
  clip, strip a string). Raises :class:`ValueError` or :class:`OSError` with a short reason
  for a bad input; :meth:`Encoder.encode` turns that into an :class:`EncoderInputError`
  naming the item, and :meth:`Encoder.encode_with_errors` records it and goes on.
* ``collate(items)`` -- turn a list of loaded items into the model's batch (tensors).
* ``forward(batch)`` -- ``[batch, dim]`` float vectors.
* ``dim`` -- the output width.

Optional: ``sort_key(x)`` (inputs are encoded longest-first, as sentence-transformers does,
and returned in input order), ``weight_files()`` (hashed into :attr:`Encoder.fingerprint`)
and ``parallel_decode = True`` (inputs are files worth decoding in DataLoader workers).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fusion.files import sha256_file

logger = logging.getLogger(__name__)

CONFIG_NAME = "encoder_config.json"


class EncoderInputError(ValueError):
    """A raw input an encoder cannot read; names the item by its position and value."""

    def __init__(self, index: int, item: Any, reason: str):
        self.index, self.item, self.reason = index, item, reason
        shown = repr(os.fspath(item) if isinstance(item, os.PathLike) else item)
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        super().__init__(f"input {index} ({shown}): {reason}")


@dataclass
class EncodeResult:
    """What :meth:`Encoder.encode_with_errors` returns.

    ``vectors[j]`` is the vector of input ``ok[j]``; ``errors`` maps every input that could not
    be read to the reason. ``len(ok) + len(errors)`` is the number of inputs.
    """

    vectors: torch.Tensor  # [len(ok), dim] float32, on the CPU
    ok: list[int]
    errors: dict[int, str] = field(default_factory=dict)


def best_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def auto_workers(device: torch.device) -> int:
    """Decoding processes for file inputs when the caller does not choose: beside an
    accelerator the CPUs are free to decode (all but one, at most 8); when the network runs
    on the CPU it needs them, so one worker per four CPUs (none on a 2-CPU machine, where
    measured serial decoding was faster)."""
    cpus = os.cpu_count() or 1
    return min(8, cpus - 1) if device.type != "cpu" else min(8, cpus // 4)


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """:func:`~fusion.files.sha256_file`, cached per process by (path, size, mtime): for
    fingerprinting large pretrained weights often, not for integrity checks."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class _BatchLoader(torch.utils.data.Dataset):
    """Loads and collates one batch per index; lets a DataLoader's workers do the decoding."""

    def __init__(self, encoder: Encoder, inputs: Sequence[Any], batches: list[list[int]]):
        self.encoder, self.inputs, self.batches = encoder, inputs, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[list[int], dict[int, str], Any]:
        good, loaded, errors = [], [], {}
        for i in self.batches[b]:
            try:
                loaded.append(self.encoder.load_item(self.inputs[i]))
                good.append(i)
            except (ValueError, OSError, RuntimeError) as e:
                errors[i] = str(e) or type(e).__name__
        return good, errors, (self.encoder.collate(loaded) if loaded else None)


class Encoder(nn.Module):
    """Base of every item encoder: a frozen pretrained network plus its preprocessing.

    Subclasses set ``modality`` (``"text"``, ``"image"``, ``"audio"`` or ``"vector"``) and
    ``config_keys`` (constructor arguments that define the encoder; they are saved and are
    the keyword arguments :func:`~encoders.registry.create_encoder` accepts, with ``device``).
    Keys in ``fingerprint_ignore`` (file locations, say) do not enter the fingerprint: the
    weight files' contents do.
    """

    modality: ClassVar[str] = ""
    config_keys: ClassVar[tuple[str, ...]] = ()
    fingerprint_ignore: ClassVar[tuple[str, ...]] = ()
    registry_name: ClassVar[str] = ""
    parallel_decode: ClassVar[bool] = False

    def __init__(self, device: str | torch.device | None = None):
        super().__init__()
        self._target_device = torch.device(device) if device is not None else best_device()
        self._fingerprint: str | None = None

    # ----------------------------------------------------------------- hooks for subclasses
    @property
    def dim(self) -> int:
        raise NotImplementedError

    def load_item(self, item: Any) -> Any:
        """Read and check one raw input (CPU). Raise ValueError/OSError with a reason."""
        return item

    def collate(self, items: list[Any]) -> Any:
        """Loaded items -> the batch ``forward`` takes."""
        raise NotImplementedError

    def sort_key(self, item: Any) -> float:
        """Inputs are encoded in descending ``sort_key`` order (length), then put back."""
        return 0.0

    def weight_files(self) -> list[Path]:
        """Files whose bytes define the weights; their digests enter the fingerprint."""
        return []

    @property
    def reads(self) -> str:
        """What an input is: ``"text"``, ``"image"`` or ``"audio"`` content, or ``"item_id"``."""
        return self.modality

    # ----------------------------------------------------------------- identity and saving
    def get_config(self) -> dict[str, Any]:
        return {k: _jsonable(getattr(self, k)) for k in self.config_keys}

    @property
    def fingerprint(self) -> str:
        """16 hex digits that change whenever the vectors could: encoder type, the
        configuration that shapes them, and the weight files' bytes."""
        if self._fingerprint is None:
            cfg = {k: v for k, v in self.get_config().items() if k not in self.fingerprint_ignore}
            blob = json.dumps({"encoder": self.registry_name, "config": cfg,
                               "weights": [file_digest(p) for p in self.weight_files()]},
                              sort_keys=True)
            self._fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return self._fingerprint

    def save(self, path: str | os.PathLike) -> None:
        """Write ``encoder_config.json`` (type, config, dim, fingerprint) into folder ``path``.
        Weights are not copied: they come from their package or local file."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        doc = {"type": self.registry_name, "modality": self.modality, "dim": self.dim,
               "fingerprint": self.fingerprint, "config": self.get_config()}
        (path / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")

    @staticmethod
    def load(path: str | os.PathLike, device: str | torch.device | None = None) -> Encoder:
        """Rebuild an encoder saved with :meth:`save`; refuses one whose weights changed."""
        from encoders.registry import create_encoder

        doc = json.loads((Path(path) / CONFIG_NAME).read_text())
        enc = create_encoder(doc["type"], device=device, **doc["config"])
        if doc.get("fingerprint") and enc.fingerprint != doc["fingerprint"]:
            raise ValueError(f"{Path(path) / CONFIG_NAME}: encoder {doc['type']!r} was saved with "
                             f"fingerprint {doc['fingerprint']} but its weights now give "
                             f"{enc.fingerprint}; the weight files changed")
        return enc

    # ----------------------------------------------------------------- encoding
    @property
    def device(self) -> torch.device:
        return self._target_device

    def encode(
        self,
        inputs: Any,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = False,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Encode one input (-> ``[dim]``) or a list of inputs (-> ``[n, dim]``), float32.

        Inputs are sorted by ``sort_key`` (longest first), encoded in batches of
        ``batch_size`` on ``device`` (default: the encoder's, CUDA when present), moved to
        the CPU batch by batch and returned in input order, as a numpy array or, with
        ``convert_to_tensor``, a torch tensor. ``normalize_embeddings`` gives unit length.
        ``num_workers > 0`` decodes inputs in that many DataLoader worker processes; ``None``
        lets the encoder choose (image and audio files over several batches:
        :func:`auto_workers`, or, where that is none, one thread loading the next batch
        while the network runs; otherwise none). ``0``: everything in the calling thread.
        A bad input raises :class:`EncoderInputError` naming it.
        """
        single = not isinstance(inputs, (list, np.ndarray)) and not _is_series(inputs)
        items = [inputs] if single else list(inputs)
        result = self._encode(items, batch_size, show_progress_bar, normalize_embeddings,
                              device, num_workers, strict=True)
        out = result.vectors
        if single:
            out = out[0]
        return out if convert_to_tensor else out.numpy()

    def encode_with_errors(
        self,
        inputs: Sequence[Any],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
    ) -> EncodeResult:
        """Like :meth:`encode` on a list, but a bad input is recorded and skipped."""
        return self._encode(list(inputs), batch_size, show_progress_bar, normalize_embeddings,
                            device, num_workers, strict=False)

    def _encode(self, items: list[Any], batch_size: int, show_progress_bar: bool | None,
                normalize: bool, device: str | torch.device | None, num_workers: int | None,
                strict: bool) -> EncodeResult:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        dev = torch.device(device) if device is not None else self._target_device
        if next(self.parameters(), torch.empty(0)).device != dev:
            self.to(dev)
        self._target_device = dev
        self.eval()
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        order = sorted(range(len(items)), key=lambda i: -self.sort_key(items[i]))
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        vectors: list[torch.Tensor | None] = [None] * len(items)
        errors: dict[int, str] = {}
        for good, bad, batch in tqdm(self._batches(items, batches, num_workers), total=len(batches),
                                     desc=f"encode {self.modality}", disable=not show_progress_bar):
            if strict and bad:
                i = min(bad)
                raise EncoderInputError(i, items[i], bad[i])
            errors.update(bad)
            if not good:
                continue
            with torch.inference_mode():
                out = self(_to_device(batch, dev)).float()
                if normalize:
                    out = nn.functional.normalize(out, dim=-1)
                out = out.cpu()
            for row, i in enumerate(good):
                vectors[i] = out[row]
        ok = [i for i, v in enumerate(vectors) if v is not None]
        stacked = torch.stack([vectors[i] for i in ok]) if ok else torch.empty(0, self.dim)
        return EncodeResult(stacked, ok, errors)

    def _batches(self, items: list[Any], batches: list[list[int]],
                 num_workers: int | None) -> Iterable[tuple[list[int], dict[int, str], Any]]:
        data = _BatchLoader(self, items, batches)
        auto = num_workers is None and self.parallel_decode and len(batches) > 1
        if num_workers is None:
            num_workers = auto_workers(self._target_device) if auto else 0
        if num_workers <= 0:
            return _prefetched(data) if auto else (data[b] for b in range(len(data)))
        return torch.utils.data.DataLoader(data, batch_size=None, shuffle=False,
                                           num_workers=num_workers,
                                           pin_memory=self._target_device.type == "cuda")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())


def _prefetched(data: _BatchLoader) -> Iterable[tuple[list[int], dict[int, str], Any]]:
    """``data``'s batches in order, each loaded in a background thread while the caller
    runs the network on the one before (decoding and resampling release the GIL)."""
    with ThreadPoolExecutor(1, thread_name_prefix="encoder-prefetch") as pool:
        ahead = pool.submit(data.__getitem__, 0)
        for b in range(1, len(data) + 1):
            batch = ahead.result()
            if b < len(data):
                ahead = pool.submit(data.__getitem__, b)
            yield batch


def _is_series(x: Any) -> bool:
    return type(x).__name__ in ("Series", "Index") and hasattr(x, "tolist")


def _jsonable(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, tuple):
        return list(v)
    return v

