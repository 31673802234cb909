"""Vectors someone already computed, looked up by item id: bring your own embeddings.

Input: an item id (any value; ids are compared as strings, so ``42`` finds ``"42"``); a
list of ids is a batch. An id that is not in the file, or whose vector holds NaN, is a bad
input (``encode`` raises :class:`~encoders.base.EncoderInputError`, ``encode_with_errors``
records why).

Registered name ``precomputed``. Two file layouts:

* ``.npy`` of shape ``[items, dim]`` plus an ids file, row i of one being row i of the other:
  a ``.csv`` (the ids in column ``id_column``) or a ``.txt`` (one id per line). Last.fm-2K's
  features are read so: ``create_encoder("precomputed", path=".../vggish.npy",
  ids=".../item_ids.csv", id_column="artistID", modality="audio")``.
* ``.parquet`` with the ids in ``id_column`` and the vector either in one list column or
  spread over all the other (numeric) columns, in file order.
* ``.npz`` holding arrays ``item_id`` ``[items]`` and ``vectors`` ``[items, dim]`` (the dataset
  format's vector files; read with ``allow_pickle=False``).

The fingerprint covers the bytes of the vectors and ids files, so changed vectors are never
mixed with old ones. ``modality`` says what the vectors describe (``"vector"`` if unsaid).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.base import Encoder
from encoders.registry import register_encoder
from encoders.weights import require_file

MODALITIES = ("text", "image", "audio", "vector")


@register_encoder("precomputed")
class PrecomputedEncoder(Encoder):
    """Row lookup in a file of vectors keyed by item id (runs on the CPU unless told).

    Args:
        path: the ``.npy`` or ``.parquet`` file of vectors.
        ids: for a ``.npy``, the ``.csv`` or ``.txt`` file of ids (row i = vector i).
        id_column: the id column of the ``.csv`` ids file or of the ``.parquet`` file.
        modality: what the vectors describe: ``text``, ``image``, ``audio`` or ``vector``.
    """

    modality = "vector"
    config_keys = ("path", "ids", "id_column", "modality")
    fingerprint_ignore = ("path", "ids")

    def __init__(self, path: str | os.PathLike, ids: str | os.PathLike | None = None,
                 id_column: str = "item_id", modality: str = "vector",
                 device: str | torch.device | None = None):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
        super().__init__(device if device is not None else "cpu")
        self.path, self.ids = os.fspath(path), None if ids is None else os.fspath(ids)
        self.id_column, self.modality = id_column, modality
        self._files = [require_file(path, "precomputed vectors")]
        suffix = self._files[0].suffix
        if suffix == ".npy":
            if ids is None:
                raise ValueError(f"{path}: a .npy file of vectors needs ids=<.csv or .txt file of item ids>")
            self._files.append(require_file(ids, "precomputed ids"))
            self._vectors = np.load(self._files[0], mmap_mode="r", allow_pickle=False)
            keys = _read_ids(self._files[1], id_column)
        elif suffix == ".parquet":
            self._vectors, keys = _read_parquet(self._files[0], id_column)
        elif suffix == ".npz":
            self._vectors, keys = _read_npz(self._files[0])
        else:
            raise ValueError(f"{path}: precomputed vectors must be a .npy, .parquet or .npz file")
        if self._vectors.ndim != 2 or not np.issubdtype(self._vectors.dtype, np.number):
            raise ValueError(f"{path}: expected a 2-d numeric array, got {self._vectors.dtype} "
                             f"{self._vectors.shape}")
        if len(keys) != len(self._vectors):
            raise ValueError(f"{self._files[-1]}: {len(keys)} ids for {len(self._vectors)} vectors in {path}")
        self._row: dict[str, int] = {}
        for row, key in enumerate(keys):
            if self._row.setdefault(key, row) != row:
                raise ValueError(f"{self._files[-1]}: item id {key!r} appears twice (rows "
                                 f"{self._row[key]} and {row})")

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    @property
    def n_vectors(self) -> int:
        """How many ids the file has a vector for."""
        return len(self._row)

    def has(self, item: Any) -> bool:
        """Whether the file has a vector for item id ``item``."""
        return str(item) in self._row

    def weight_files(self) -> list[Path]:
        return self._files

    @property
    def reads(self) -> str:
        return "item_id"

    def load_item(self, item: Any) -> np.ndarray:
        row = self._row.get(str(item))
        if row is None:
            raise ValueError(f"unknown item id {item!r}: not in {self.path}")
        vector = np.asarray(self._vectors[row], dtype=np.float32)
        if not np.isfinite(vector).all():
            raise ValueError(f"the vector of item {item!r} holds NaN or infinite values")
        return vector

    def collate(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[batch, dim]`` looked-up vectors, as they are."""
        return vectors


def _read_ids(path: Path, id_column: str) -> list[str]:
    if path.suffix == ".txt":
        keys = path.read_text(encoding="utf-8").splitlines()
        blank = next((i for i, k in enumerate(keys) if not k.strip()), None)
        if blank is not None:
            raise ValueError(f"{path}, line {blank + 1}: empty item id")
        return [k.strip() for k in keys]
    if path.suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if id_column not in frame.columns:
            raise ValueError(f"{path}: no column {id_column!r} (columns: {', '.join(frame.columns)}); "
                             f"pass id_column=")
        keys = frame[id_column].str.strip().tolist()
        blank = next((i for i, k in enumerate(keys) if not k), None)
        if blank is not None:
            raise ValueError(f"{path}, line {blank + 2}: empty item id in column {id_column!r}")
        return keys
    raise ValueError(f"{path}: the ids file must be a .csv or .txt file")


def _read_parquet(path: Path, id_column: str) -> tuple[np.ndarray, list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if id_column not in table.column_names:
        raise ValueError(f"{path}: no column {id_column!r} (columns: {', '.join(table.column_names)}); "
                         f"pass id_column=")
    keys = [str(k) for k in table.column(id_column).to_pylist()]
    names = [c for c in table.column_names if c != id_column]
    if len(names) == 1 and (pa.types.is_list(table.column(names[0]).type)
                            or pa.types.is_fixed_size_list(table.column(names[0]).type)):
        rows = table.column(names[0]).to_pylist()
        if any(r is None for r in rows) or len({len(r) for r in rows}) > 1:
            raise ValueError(f"{path}: vectors in column {names[0]!r} are missing or of unequal length")
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1), keys
    bad = [c for c in names if not (pa.types.is_floating(table.column(c).type)
                                     or pa.types.is_integer(table.column(c).type))]
    if not names or bad:
        raise ValueError(f"{path}: expected one list column or numeric columns besides "
                         f"{id_column!r}; not numeric: {', '.join(bad) or '(no other columns)'}")
    return np.column_stack([table.column(c).to_numpy() for c in names]).astype(np.float32), keys


def _read_npz(path: Path) -> tuple[np.ndarray, list[str]]:
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("item_id", "vectors") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: no array {', '.join(missing)} (arrays: {', '.join(z.files)})")
        return np.asarray(z["vectors"]), [str(k) for k in z["item_id"]]
