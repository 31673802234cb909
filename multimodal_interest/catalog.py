"""Reading an item catalog: one platform's items, their text fields and media files.

A catalog is a CSV, TSV, Parquet or JSONL table with an ``item_id`` column, any text
columns, and optional image and audio path columns (paths relative to the catalog's folder).
A text cell is text, a number, or (a JSON array, a Parquet list) a list of them, which the
text rule joins with ", ". Problems with single rows (an empty id, a duplicate id, a cell
holding an object or a nested list) are collected as :class:`RowError` with file and row,
and the rest of the catalog goes on; a problem with the whole file (it cannot be parsed, is
not UTF-8, a named column is missing, a text column holds numeric vectors) raises
:class:`CatalogError`. Media paths follow the one rule of :mod:`multimodal_interest.data.paths`
(real path, links followed, inside the catalog's folder); an item's text is cut to
:data:`MAX_TEXT_CHARS` characters, and the cut items are counted (:attr:`Catalog.truncated`).
"""
from __future__ import annotations

import hashlib
import os
import reprlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from encoders.text import combine_text_fields
from fusion.files import sha256_file
from multimodal_interest.data.paths import media_file
from multimodal_interest.data.errors import Problem, Problems
from multimodal_interest.data.tables import read_table

ID_COLUMN = "item_id"
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".jsonl": "jsonl",
           ".ndjson": "jsonl"}  # a catalog's extension -> the table reader's format
# Longest text an item gives its encoder, in characters. The text encoders read at most a
# few hundred tokens (all-MiniLM-L6-v2: 256, CLIP: 77; about 4 characters a token), so
# 20,000 characters is far beyond what any of them sees, yet a 10 MB cell costs no memory.
MAX_TEXT_CHARS = 20_000


class CatalogError(ValueError):
    """The catalog file as a whole cannot be used: a message, or the reader's problems
    (``problems``, each with file, line or row, and column), one a line."""

    def __init__(self, message: str | list[Problem]) -> None:
        self.problems = [] if isinstance(message, str) else list(message)
        super().__init__(message if isinstance(message, str) else
                         "\n".join(_located(p) for p in self.problems))


def _located(p: Problem) -> str:
    """``<file> line 3, column 'title': <message>`` (``row 3`` for Parquet)."""
    where = p.file + (f" line {p.line}" if p.line is not None else
                      f" row {p.row}" if p.row is not None else "")
    return where + (f", column {p.column!r}" if p.column else "") + f": {p.message}"


@dataclass(frozen=True)
class RowError:
    """One item that could not be used, and why."""

    file: str
    row: int  # 1-based data row (CSV/TSV: line = row + 1, after the header)
    item_id: str
    modality: str  # "catalog" for problems with the row itself
    reason: str

    def __str__(self) -> str:
        return f"{self.file} row {self.row} (item {self.item_id!r}, {self.modality}): {self.reason}"


def read_cells(path: Path) -> pd.DataFrame:
    """A CSV/TSV/Parquet/JSONL file, read by the one table reader
    (:func:`~multimodal_interest.data.tables.read_table`), as a DataFrame of cells for
    :class:`Catalog`.

    A cell is a string ('' when empty) or, for a JSON array or Parquet list, a list of
    strings (missing elements left out); numbers become their text. A value that has no
    such form (an object, a nested list) is kept as it was read, for :func:`cell_problem`.
    A file that cannot be read raises :class:`CatalogError` naming its line (or row) and
    column where the reader found them.
    """
    problems = Problems()
    table = read_table(path, str(path), problems, fmt=FORMATS.get(path.suffix.lower()), as_written=True)
    if table is None:
        raise CatalogError(problems.items)
    return table.frame.map(_cell)


_LISTS = (list, tuple, np.ndarray)


def _cell(value: Any) -> Any:
    """``value`` as a string or a list of strings; unchanged when it has no such form (an
    object, a nested list, a list of numbers: a vector, whose NaN must not be dropped)."""
    if isinstance(value, _LISTS):
        if any(isinstance(v, (_LISTS, dict)) for v in value) or numbers(value):
            return value
        return [_scalar(v) for v in value if not _missing(v)]
    return value if isinstance(value, dict) else ("" if _missing(value) else _scalar(value))


def numbers(value: Any) -> bool:
    """A non-empty list of numbers (NaN and None may be among them): a vector, never text."""
    if not isinstance(value, _LISTS):
        return False
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        return value.size > 0
    present = [v for v in value if v is not None]
    return bool(present) and all(isinstance(v, (int, float, np.integer, np.floating))
                                 and not isinstance(v, bool) for v in present)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (_LISTS, dict)) and bool(pd.isna(value)))


def _scalar(value: Any) -> str:
    return str(value.item() if isinstance(value, np.generic) else value)


def cell_problem(value: Any, column: str, lists: bool) -> str | None:
    """Why a cell of ``column`` (as :func:`read_cells` gives it) is unusable, or None.
    A list of strings is usable where ``lists`` (text columns), a string everywhere."""
    if isinstance(value, str) or (lists and isinstance(value, list)
                                  and all(isinstance(v, str) for v in value)):
        return None
    if numbers(value):
        return (f"column {column!r} holds a list of numbers ({reprlib.repr(_plain(value))}): "
                "a vector, which is never text")
    if isinstance(value, _LISTS):
        inner = next((v for v in value if isinstance(v, (_LISTS, dict))), None)
        what = "a list" + ("" if inner is None else f" holding a {_kind(inner)}")
    else:
        what = f"a {_kind(value)}"
    takes = "text, a number or a list of them" if lists else "one value (text or a number)"
    return f"column {column!r} holds {what} ({reprlib.repr(_plain(value))}); it takes {takes}"


def _kind(value: Any) -> str:
    return "list" if isinstance(value, _LISTS) else type(value).__name__


def _plain(value: Any) -> Any:
    """Numpy arrays (Parquet lists) as lists, to be shown as the user wrote them."""
    if isinstance(value, _LISTS):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class Catalog:
    """One platform's items. ``items`` keeps file order; row ``i`` is data row ``i + 1``."""

    path: Path
    items: pd.DataFrame
    text_fields: list[str]
    image_field: str | None = None
    audio_field: str | None = None
    base_dir: Path | None = None  # media paths resolve against it and must stay in it
    errors: list[RowError] = field(default_factory=list)  # row-level problems found on reading
    usable: list[int] = field(default_factory=list)  # rows with a valid, first-seen item id

    def __post_init__(self) -> None:
        self.base_dir = Path(os.path.normpath(self.base_dir or self.path.parent))

    @classmethod
    def read(cls, path: str | Path, text_fields: list[str] | None = None,
             image_field: str | None = None, audio_field: str | None = None) -> Catalog:
        """Read and check a catalog. Without ``text_fields``, every column other than the id
        and media columns is text, in file order. ``image``/``audio`` columns are used when
        present unless other names are given."""
        path = Path(path)
        df = read_cells(path)
        image_field = image_field or ("image" if "image" in df.columns else None)
        audio_field = audio_field or ("audio" if "audio" in df.columns else None)
        if text_fields is None:
            text_fields = [c for c in df.columns if c not in (ID_COLUMN, image_field, audio_field)]
        for col in [ID_COLUMN, *text_fields, image_field, audio_field]:
            if col is not None and col not in df.columns:
                raise CatalogError(f"{path}: missing column {col!r} (columns: {', '.join(df.columns)})")
        _refuse_vector_columns(path, df, text_fields)
        cat = cls(path, df.reset_index(drop=True), list(text_fields), image_field, audio_field)
        cat._check_ids()
        return cat

    @classmethod
    def from_dataset(cls, dataset, platform: str) -> Catalog:
        """The items of one platform of a loaded :class:`CrossPlatformDataset` (already checked)."""
        spec = dataset.manifest.platforms[platform]
        cat = cls(dataset.root / spec.items, dataset.items[platform].astype({"item_id": str}),
                  list(spec.text), spec.image, spec.audio, base_dir=dataset.root)
        cat._check_ids()
        return cat

    @property
    def truncated(self) -> list[int]:
        """Usable rows whose text was longer than :data:`MAX_TEXT_CHARS` and was cut to it."""
        cut = self._texts[2]
        return [row for row in self.usable if row in cut]

    def _check_ids(self) -> None:
        cells = self.items[ID_COLUMN].tolist()
        ids = [c.strip() if isinstance(c, str) else "" for c in cells]
        first_row: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            problem = cell_problem(cells[i], ID_COLUMN, lists=False)
            if problem:
                self.errors.append(RowError(str(self.path), i + 1, "", "catalog", f"{problem}; row skipped"))
            elif not item_id:
                self.errors.append(RowError(str(self.path), i + 1, "", "catalog", "empty item_id"))
            elif item_id in first_row:
                self.errors.append(RowError(str(self.path), i + 1, item_id, "catalog",
                                            f"duplicate item_id (first at row {first_row[item_id]}); row skipped"))
            else:
                first_row[item_id] = i + 1
                self.usable.append(i)
        self.items[ID_COLUMN] = ids

    def item_id(self, row: int) -> str:
        return self._ids[row]

    @cached_property
    def _ids(self) -> list[str]:
        return self.items[ID_COLUMN].tolist()

    def error(self, row: int, modality: str, reason: str) -> RowError:
        return RowError(str(self.path), row + 1, self.item_id(row), modality, reason)

    def modalities(self) -> dict[str, str | None]:
        """Input kinds this catalog has: text, image, audio (the column, or None for text)."""
        out: dict[str, str | None] = {}
        if self.text_fields:
            out["text"] = None
        if self.image_field:
            out["image"] = self.image_field
        if self.audio_field:
            out["audio"] = self.audio_field
        return out

    def text(self, row: int) -> str:
        """The row's text fields combined by the one rule (:func:`combine_text_fields`).
        ValueError naming the column when a text cell is unusable (:func:`cell_problem`)."""
        texts, problems, _ = self._texts
        if row in problems:
            raise ValueError(problems[row])
        return texts[row]

    @cached_property
    def _texts(self) -> tuple[list[str], dict[int, str], set[int]]:
        """Each row's text ('' for an unusable row; at most :data:`MAX_TEXT_CHARS`), the
        unusable rows' reasons, and the rows whose text was cut."""
        texts: list[str] = []
        problems: dict[int, str] = {}
        cut: set[int] = set()
        for row, record in enumerate(self.items[self.text_fields].to_dict("records")):
            problem = next(filter(None, (cell_problem(record[c], c, lists=True)
                                         for c in self.text_fields)), None)
            if problem:
                problems[row] = problem
            text = "" if problem else combine_text_fields(record, self.text_fields)
            if len(text) > MAX_TEXT_CHARS:
                text = text[:MAX_TEXT_CHARS]
                cut.add(row)
            texts.append(text)
        return texts, problems, cut

    def check(self) -> list[RowError]:
        """Every row problem ``mmi embed`` would meet, found without encoding or hashing: the
        reading's, then each usable row's text and media (``mmi validate CATALOG``)."""
        found = list(self.errors)
        kinds = [k for k in ("text", "image", "audio") if k in self.modalities()]
        for row in self.usable:
            for kind in kinds:
                try:
                    self._check_input(row, kind)
                except (ValueError, OSError) as exc:
                    found.append(self.error(row, kind, str(exc)))
        return found

    def _check_input(self, row: int, kind: str) -> None:
        if kind == "text":
            if not self.text(row).strip():
                raise ValueError(f"empty text in {', '.join(self.text_fields)}")
        else:
            self.media_path(row, self.image_field if kind == "image" else self.audio_field)

    def media_path(self, row: int, column: str) -> Path | None:
        """The real path of the file a media cell names ('' -> None), checked by the one rule
        of :func:`~multimodal_interest.data.paths.media_file`: inside :attr:`base_dir`, links
        followed, and there. ValueError (a path that leaves the folder, a cell that is not one
        path) or FileNotFoundError, each naming the column."""
        cell = self.items.at[row, column]
        problem = cell_problem(cell, column, lists=False)
        if problem:
            raise ValueError(problem)
        value = cell.strip()
        if not value:
            return None
        try:
            return media_file(self.base_dir, value)
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"column {column!r}: {exc}") from None


def _refuse_vector_columns(path: Path, df: pd.DataFrame, text_fields: list[str]) -> None:
    """CatalogError for a text field whose filled cells are all lists of numbers (a Parquet
    list<float> column, a JSON array of numbers): vectors are never text."""
    for column in text_fields:
        filled = [v for v in df[column] if not (isinstance(v, str) and v == "")]
        if filled and all(numbers(v) for v in filled):
            raise CatalogError(
                f"{path}: column {column!r} holds lists of numbers (vectors), which are never "
                f"text; leave it out of the text fields (--text-fields), and give vectors as "
                f"precomputed ones (docs/dataset_format.md, 'Catalog files')")


def content_hash(data: str | bytes) -> str:
    """What the store keys an item's content by: sha256, 32 hex digits."""
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:32]


def file_hash(path: Path) -> str:
    """What the store keys a media file's content by: its :func:`~fusion.files.sha256_file`,
    cut to 32 hex digits as :func:`content_hash` is (the same key as hashing its bytes)."""
    return sha256_file(path)[:32]


def encoder_input(cat: Catalog, row: int, kind: str) -> tuple[Any, str] | None:
    """``(input, content hash)`` of one row for an encoder that reads ``kind``
    ("text", "image", "audio" or "item_id"); None when the row has no such content.
    Raises ValueError/OSError with a reason for content that is there but unusable."""
    if kind == "item_id":
        item_id = cat.item_id(row)
        return item_id, content_hash(item_id)
    if kind == "text":
        cat._check_input(row, "text")
        text = cat.text(row)
        return text, content_hash(text)
    column = cat.image_field if kind == "image" else cat.audio_field
    if column is None:
        return None
    path = cat.media_path(row, column)  # the real path that was checked: open that one
    return None if path is None else (str(path), file_hash(path))
