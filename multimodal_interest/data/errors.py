"""Problems found in a dataset, each naming its file, line (or row) and column."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one place of one file.

    ``line`` is the 1-based physical line of a text file (CSV, TSV, JSONL, YAML); ``row`` the
    1-based data row of a Parquet file, which has no lines.
    """

    file: str
    message: str
    line: int | None = None
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        elif self.row is not None:
            where += f": row {self.row}"
        column = f": column '{self.column}'" if self.column else ""
        return f"{where}{column}: {self.message}"


class DatasetError(ValueError):
    """A dataset (or a file meant to become one) was rejected; ``problems`` lists why."""

    shown = 40  # problems spelt out in the message; all are in ``problems``

    def __init__(self, problems: list[Problem], context: str = "dataset") -> None:
        self.problems = list(problems)
        self.context = context  # what was rejected, e.g. "dataset 'x'"
        n = len(self.problems)
        lines = [f"  {p}" for p in self.problems[:self.shown]]
        if n > self.shown:
            lines.append(f"  ... and {n - self.shown} more")
        super().__init__("\n".join([self.headline, *lines]) if n else context)

    @property
    def headline(self) -> str:
        """``context: N problem(s):``, the line above the problems (``context`` alone if none)."""
        n = len(self.problems)
        return f"{self.context}: {n} problem{'s' * (n != 1)}:" if n else self.context


class Problems:
    """Collects problems so that one run reports all of them, not just the first."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, file: str, message: str, *, line: int | None = None,
            row: int | None = None, column: str | None = None) -> None:
        self.items.append(Problem(file, message, line, row, column))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, context: str) -> None:
        if self.items:
            raise DatasetError(self.items, context)
