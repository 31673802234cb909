"""Helpers shared by importers: reading raw headerless files with line-exact errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from multimodal_interest.data.errors import DatasetError, Problems
from multimodal_interest.data.tables import Table
from multimodal_interest.data.values import read_numbers


def read_int_columns(path: Path, names: tuple[str, ...], problems: Problems,
                     sep: str = "\t") -> pd.DataFrame | None:
    """A headerless file of ``len(names)`` integer columns (pyarrow, vectorised).

    On bad input the first offending line is reported (file, line, column).
    """
    if not path.is_file():
        problems.add(str(path), "file not found")
        return None
    try:
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(column_names=list(names)),
            parse_options=pacsv.ParseOptions(delimiter=sep, quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.int64() for n in names}))
    except pa.ArrowInvalid as exc:
        _locate(path, names, sep, problems, exc)
        return None
    return table.to_pandas()


def _locate(path: Path, names: tuple[str, ...], sep: str, problems: Problems, exc) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split(sep)
            if len(fields) != len(names):
                problems.add(str(path), f"expected {len(names)} fields ({', '.join(names)}), "
                                        f"found {len(fields)}", line=i)
                return
            for name, value in zip(names, fields):
                try:
                    int(value)
                except ValueError:
                    problems.add(str(path), f"expected an integer, found {value!r}", line=i,
                                 column=name)
                    return
    problems.add(str(path), f"cannot parse: {exc}")


def require_files(folder: Path, names: list[str], what: str) -> None:
    """Raise one error listing every expected file missing from ``folder``."""
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError([], f"{folder} is not {what}: missing {', '.join(missing)}")


def dedupe_report(frame: pd.DataFrame, keys: list[str], report: dict[str, int],
                  what: str) -> pd.DataFrame:
    """Drop repeated rows of ``keys`` (first kept), counting them in ``report``."""
    dup = frame.duplicated(keys).to_numpy()
    report[f"{what} removed as duplicates"] = int(dup.sum())
    return frame.loc[~dup].reset_index(drop=True) if dup.any() else frame


def order_within(users: np.ndarray) -> np.ndarray:
    """Running position of each row within its user's rows, in table order."""
    return pd.Series(users).groupby(users, sort=False).cumcount().to_numpy(np.int64)


def add_time_and_rating(table: Table, interactions: pd.DataFrame, problems: Problems) -> None:
    """Copy ``timestamp`` and ``rating`` (typed) when present; no timestamp: file ``order``."""
    if "timestamp" in table.frame.columns:
        interactions["timestamp"] = read_numbers(table, "timestamp", problems)
    if "rating" in table.frame.columns:
        interactions["rating"] = table.number("rating", problems)
    if "timestamp" not in interactions.columns:
        interactions["order"] = np.arange(len(interactions))
