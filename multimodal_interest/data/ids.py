"""The one rule for user and item ids, wherever they enter: tables, histories, requests.

An id is kept in Unicode NFC, so the two spellings of ``café`` (``e`` + U+0301, or U+00E9)
are one id. A table's id is refused, naming its file and row, when it holds a control
character (NUL, tab, escape, ...: Unicode category Cc) or is longer than
:data:`MAX_LENGTH` characters after normalisation (such an id could never be asked for over
HTTP). When two different ids of one column become the same id, they are read as one, and a
warning names both rows: the two spellings were most likely one person or item written by
two systems; rename one of them in the file if they are not.
"""
from __future__ import annotations

import logging
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from multimodal_interest.data.errors import Problems
from multimodal_interest.data.tables import ROW_LIMIT, Table

log = logging.getLogger(__name__)

MAX_LENGTH = 256  # characters, after normalisation
CONTROL = r"\p{Cc}"  # RE2: NUL, U+0001..U+001F, U+007F..U+009F


def normal_id(value: str) -> str:
    """``value`` as the toolkit keeps ids: Unicode NFC (an id entering a request or a file)."""
    return unicodedata.normalize("NFC", value)


def id_problem(value: str) -> str | None:
    """Why ``value`` (already :func:`normal_id`) cannot be an id, or None."""
    if len(value) > MAX_LENGTH:
        return f"an id of {len(value)} characters (ids are at most {MAX_LENGTH})"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return f"a control character in the id {value!r} (NUL, tab, newline, ... are not ids)"
    return None


def read_ids(table: Table, column: str, problems: Problems) -> pd.Series:
    """Column ``column`` of ``table`` as ids: NFC; empty, too long or control-character ids
    are problems naming their rows; ids that became equal are warned about (module docstring).
    """
    raw = table.text(column, problems)
    values = pa.array(raw, pa.large_string())
    normal = pc.utf8_normalize(values, "NFC")
    length = pc.utf8_length(normal).to_numpy(False)
    table.flag(problems, length > MAX_LENGTH, column,
               f"an id of {{value}} characters (ids are at most {MAX_LENGTH})", length)
    control = pc.match_substring_regex(normal, CONTROL).to_numpy(False) & (length <= MAX_LENGTH)
    shown = np.empty(len(raw), dtype=object)  # each flagged id
    for row in np.flatnonzero(control)[:ROW_LIMIT]:
        shown[row] = normal[int(row)].as_py()
    table.flag(problems, control, column, "a control character in the id {value} (NUL, tab, "
               "newline, ... are not ids)", shown)
    changed = pc.not_equal(values, normal).to_numpy(False)
    if not changed.any():
        return raw
    out = pd.Series(normal.to_pandas(), dtype="str", index=raw.index)
    _warn_merged(table, column, raw, out, changed)
    return out


def _warn_merged(table: Table, column: str, raw: pd.Series, normal: pd.Series,
                 changed: np.ndarray) -> None:
    """Warn about each id that two different raw ids of the column normalise to."""
    touched = normal.isin(pd.unique(normal[changed]))
    rows = pd.DataFrame({"raw": raw[touched], "id": normal[touched],
                         "row": np.flatnonzero(touched.to_numpy())})
    firsts = rows.drop_duplicates("raw")  # the first row of each spelling
    merged = [s for _, s in firsts.groupby("id", sort=False) if len(s) > 1]
    for spellings in merged[:ROW_LIMIT]:
        (a, ra), (b, rb) = spellings[["raw", "row"]].head(2).itertuples(index=False)
        log.warning("%s and %s: %s %s and %s are the same id in Unicode NFC (%r): read as one",
                    _place(table, int(ra)), _place(table, int(rb)), column, ascii(a), ascii(b),
                    normal_id(a))
    if len(merged) > ROW_LIMIT:
        log.warning("%s: ... and %d more %s ids read as one with another spelling", table.shown,
                    len(merged) - ROW_LIMIT, column)


def _place(table: Table, row: int) -> str:
    where = table.where(row)
    return f"{table.shown}:{where['line']}" if "line" in where else f"{table.shown} row {where['row']}"
