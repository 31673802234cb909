"""Reading and writing the tables of a dataset: CSV, TSV, Parquet or JSONL, chosen by extension.

Reading is vectorised (pyarrow); per-row checks flag the offending rows by their physical
line (text formats) or row (Parquet), which are worked out only when something is wrong.
CSV follows RFC 4180 quoting; TSV has no quoting (a field may not hold a tab or newline).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from fusion.files import DEPTH_LIMIT, FileRefused, lines_nesting_depth, parse_json
from multimodal_interest.data.errors import Problems

SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl")
ROW_LIMIT = 10  # offending rows listed per check; the rest are counted
# CSV/TSV bytes pyarrow parses at a time; a record (a quoted cell may hold newlines) must fit
# in one, so a file up to this size is one block and a 10 MB text cell reads whole.
BLOCK = 1 << 26
csv.field_size_limit(max(csv.field_size_limit(), BLOCK))  # a cell may be as long as pyarrow reads


@dataclass
class Table:
    """A table read from ``path``; ``shown`` names it in messages (relative to the dataset)."""

    path: Path
    shown: str
    frame: pd.DataFrame
    fmt: str  # csv, tsv, parquet or jsonl
    _lines: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    def where(self, row: int) -> dict[str, int]:
        """The line (text formats) or 1-based row (Parquet) of data row ``row``."""
        if self.fmt == "parquet":
            return {"row": row + 1}
        if self._lines is None:
            self._lines = _data_lines(self.path, self.fmt)
        return {"line": int(self._lines[row])} if row < len(self._lines) else {"row": row + 1}

    def flag(self, problems: Problems, bad: np.ndarray, column: str | None, message: str,
             values: pd.Series | np.ndarray | None = None) -> int:
        """Report the rows where ``bad`` holds; ``{value}`` in ``message`` shows the cell."""
        rows = np.flatnonzero(np.asarray(bad))
        for r in rows[:ROW_LIMIT]:
            value = "" if values is None else repr(_plain(values[r]))
            problems.add(self.shown, message.format(value=value), column=column,
                         **self.where(int(r)))
        if len(rows) > ROW_LIMIT:
            problems.add(self.shown, f"... and {len(rows) - ROW_LIMIT} more rows like these",
                         column=column)
        return len(rows)

    def alias(self, short: str, column: str) -> None:
        """Read column ``short`` as ``column`` (``user`` as ``user_id``) when only it is given."""
        if short in self.frame.columns and column not in self.frame.columns:
            self.frame = self.frame.rename(columns={short: column})

    def require(self, problems: Problems, *columns: str) -> bool:
        """True when every column is present; else one problem per missing column."""
        missing = [c for c in columns if c not in self.frame.columns]
        for c in missing:
            have = ", ".join(map(str, self.frame.columns)) or "none"
            problems.add(self.shown, f"missing column '{c}' (columns found: {have})",
                         **({} if self.fmt == "parquet" else {"line": 1}))
        return not missing

    def text(self, column: str, problems: Problems, required: bool = True) -> pd.Series:
        """Column as strings, '' where empty; with ``required``, empty cells are problems."""
        values = self.frame[column]
        if values.dtype != "str":
            values = values.astype("str")
        values = values.fillna("")
        if required:
            self.flag(problems, (values == "").to_numpy(), column, "missing value")
        return values

    def number(self, column: str, problems: Problems, integer: bool = False) -> np.ndarray:
        """Column as float64; cells that are empty or not numbers are problems."""
        out, text = self.parse_number(column)
        kind = "an integer" if integer else "a number"
        if text is None:
            self.flag(problems, np.isnan(out), column, f"missing value (expected {kind})")
        else:
            self.flag(problems, np.isnan(out), column, f"expected {kind}, found {{value}}", text)
        if integer:
            fine = np.isfinite(out)
            self.flag(problems, fine & (out != np.round(out)), column,
                      f"expected {kind}, found {{value}}", self.frame[column])
        return out

    def parse_number(self, column: str) -> tuple[np.ndarray, pd.Series | None]:
        """Column as float64, NaN where a cell is empty or not a number, and the cells as text
        (None when the column is already numeric); nothing is reported."""
        values = self.frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return values.to_numpy(np.float64, na_value=np.nan), None
        text = values.astype("str").fillna("")
        try:  # fast path: every cell parses
            out = pc.cast(pa.array(text, pa.string()), pa.float64()).to_numpy(False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        return out, text


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def read_table(path: Path, shown: str, problems: Problems, text_columns: tuple[str, ...] = (),
               fmt: str | None = None, as_written: bool = False) -> Table | None:
    """Read a table; on failure add a problem naming the place (line, or row, and column)
    and return None. The project's one table reader: datasets, importers and catalogs.

    The format is the extension's unless ``fmt`` names one. CSV and TSV cells are all read
    as strings (typed later, so that a bad cell is reported by its line); in Parquet and
    JSONL, ``text_columns`` are cast to strings. With ``as_written`` (catalogs, whose cells
    may be lists or objects), JSONL values stay as each line wrote them (object columns: no
    int column turned float by a null, no line's type imposed on another).
    """
    fmt = fmt or path.suffix[1:]
    if f".{fmt}" not in SUFFIXES:
        problems.add(shown, f"unsupported file type '.{fmt}' (expected one of "
                            f"{', '.join(SUFFIXES)})")
        return None
    if not path.is_file():
        problems.add(shown, "file not found")
        return None
    try:
        if fmt in ("csv", "tsv"):
            frame = _read_delimited(path, "," if fmt == "csv" else "\t", shown, problems)
        elif fmt == "parquet":
            frame = _to_pandas(pq.read_table(path), text_columns)
        else:
            frame = _read_jsonl(path, shown, problems, text_columns, as_written)
    except VectorColumn as exc:
        problems.add(shown, str(exc), column=exc.column)
        return None
    except (pa.ArrowException, OSError) as exc:
        problems.add(shown, f"cannot read: {exc}")
        return None
    return None if frame is None else Table(path, shown, frame, fmt)


class VectorColumn(ValueError):
    """A column read as text holds numeric vectors."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` in the format its extension names; atomic (temp file + rename)."""
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    elif path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    elif path.suffix == ".tsv":
        text = frame.select_dtypes(exclude="number")
        if text.apply(lambda c: c.astype("str").str.contains("[\t\n\r]", regex=True).any()).any():
            raise ValueError(f"{path}: a cell holds a tab or newline, which TSV cannot carry; "
                             "use .csv or .parquet")
        frame.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE)
    else:
        frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    os.replace(tmp, path)


def numeric_list(kind: pa.DataType) -> bool:
    """A list (or fixed-size list) of numbers: a vector, never text."""
    return ((pa.types.is_list(kind) or pa.types.is_large_list(kind)
             or pa.types.is_fixed_size_list(kind))
            and (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)
                 or pa.types.is_decimal(kind.value_type)))


VECTOR_NOT_TEXT = ("a text column holding lists of numbers ({kind}): vectors are never text; "
                   "give precomputed vectors as an .npz file (docs/dataset_format.md, Vectors)")


def _to_pandas(table: pa.Table, text_columns: tuple[str, ...]) -> pd.DataFrame:
    vectors = [n for n in text_columns
               if n in table.column_names and numeric_list(table.schema.field(n).type)]
    if vectors:
        kind = table.schema.field(vectors[0]).type.value_type
        raise VectorColumn(vectors[0], VECTOR_NOT_TEXT.format(kind=kind))
    for name in text_columns:
        if name in table.column_names and not pa.types.is_string(table.schema.field(name).type):
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).cast(pa.string()))
    return table.to_pandas()


def _read_delimited(path: Path, sep: str, shown: str, problems: Problems) -> pd.DataFrame | None:
    try:
        header = next((rec for _, rec in _records(path, sep)), None)
    except MalformedRecord as bad:
        _add_malformed(bad, sep, shown, problems)
        return None
    except UnicodeDecodeError:
        _add_bad_utf8(path, shown, problems)
        return None
    if header is None:
        problems.add(shown, "empty file (expected a header line)")
        return None
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        problems.add(shown, f"duplicate column names in the header: {', '.join(dupes)}", line=1)
        return None
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1,
                                           block_size=min(max(path.stat().st_size + 1, 1 << 20), BLOCK)),
            parse_options=pacsv.ParseOptions(delimiter=sep, quote_char='"' if sep == "," else False,
                                             newlines_in_values=sep == ","),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        _locate_delimited_error(path, sep, len(header), shown, problems, exc)
        return None
    if sep == ",":  # pyarrow takes a quote left open at the end as a cell running to the end
        try:
            for _ in _records(path, sep):
                pass
        except MalformedRecord as bad:
            _add_malformed(bad, sep, shown, problems)
            return None
    return table.to_pandas()


def _add_malformed(bad: MalformedRecord, sep: str, shown: str, problems: Problems) -> None:
    problems.add(shown, f"malformed {'CSV' if sep == ',' else 'TSV'} record: {bad} (a quote opened "
                        f"and never closed, or text after a closing quote)", line=bad.line)


class MalformedRecord(ValueError):
    """A CSV record that does not parse (a quote opened and never closed, text after a
    closing quote); ``line``: the physical line where the record starts."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(why)
        self.line = line


def _records(path: Path, sep: str) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, fields) of each non-blank record, header included; a malformed
    record raises :class:`MalformedRecord`."""
    quoting = csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep, quoting=quoting, strict=True)
        last = 0
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise MalformedRecord(last + 1, str(err)) from None
            start, last = last + 1, reader.line_num
            if rec:
                yield start, rec


def _data_lines(path: Path, fmt: str) -> np.ndarray:
    """Physical line of each data row (header and blank lines skipped)."""
    if fmt == "jsonl":
        with open(path, "rb") as f:
            return np.array([i for i, raw in enumerate(f, 1) if raw.strip()], dtype=np.int64)
    sep = "," if fmt == "csv" else "\t"
    return np.array([line for line, _ in _records(path, sep)][1:], dtype=np.int64)


@dataclass(frozen=True)
class BadUtf8:
    """Where a file first stops being UTF-8: ``line`` and ``column`` (1-based, the column
    counted in bytes of that line) and ``offset`` (0-based byte of the file)."""

    line: int
    column: int
    offset: int
    byte: int

    def __str__(self) -> str:
        return (f"not valid UTF-8 text: byte 0x{self.byte:02x} at byte {self.column} of the "
                f"line (byte {self.offset} of the file); save the file as UTF-8")


def find_bad_utf8(path: Path) -> BadUtf8 | None:
    """The first byte of ``path`` that is not UTF-8, or None (read line by line)."""
    offset = 0
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return BadUtf8(line, exc.start + 1, offset + exc.start, raw[exc.start])
            offset += len(raw)
    return None


def _add_bad_utf8(path: Path, shown: str, problems: Problems) -> None:
    bad = find_bad_utf8(path)
    problems.add(shown, str(bad) if bad else "not valid UTF-8 text",
                 line=bad.line if bad else None)


def _locate_delimited_error(path: Path, sep: str, width: int, shown: str, problems: Problems,
                            exc: Exception) -> None:
    try:
        for line, rec in _records(path, sep):
            if len(rec) != width:
                problems.add(shown, f"expected {width} fields (as in the header), found {len(rec)}",
                             line=line)
                return
    except UnicodeDecodeError:
        _add_bad_utf8(path, shown, problems)
        return
    except MalformedRecord as bad:
        _add_malformed(bad, sep, shown, problems)
        return
    problems.add(shown, f"cannot parse: {exc}")


def _read_jsonl(path: Path, shown: str, problems: Problems, text_columns: tuple[str, ...],
                as_written: bool = False) -> pd.DataFrame | None:
    if not as_written and lines_nesting_depth(path) <= DEPTH_LIMIT:  # deeper: crashes pyarrow
        try:
            return _to_pandas(pajson.read_json(path), text_columns)
        except pa.ArrowInvalid:
            pass  # mixed types or a bad line: read line by line to say where
    if find_bad_utf8(path):
        _add_bad_utf8(path, shown, problems)
        return None
    records, n_bad = [], 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = parse_json(raw.decode("utf-8-sig" if i == 1 else "utf-8"), shown)  # checked: UTF-8
            except FileRefused as exc:  # the loader rule: bounded depth, a named error
                rec, why = None, exc.reason
            else:
                why = "expected a JSON object, one per line"
            if not isinstance(rec, dict):
                n_bad += 1
                if n_bad <= ROW_LIMIT:
                    problems.add(shown, why, line=i)
                continue
            records.append(rec)
    if n_bad:
        return None
    if as_written:
        return pd.DataFrame(records, dtype=object)
    frame = pd.DataFrame.from_records(records)
    for name in text_columns:
        if name in frame.columns:
            frame[name] = frame[name].map(lambda v: None if v is None or v != v else str(v))
            frame[name] = frame[name].astype("str")
    return frame
