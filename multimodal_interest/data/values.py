"""The rules for the numbers of an interaction, wherever one is read: ``mmi import``, the
dataset loader, ``mmi recommend-batch``.

- ``timestamp``: a finite number (no NaN, no infinity).
- ``order`` (a position): an integer that int64 holds; stored as int64.
- ``weight``: a finite number, 0 or more.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multimodal_interest.data.errors import Problems
from multimodal_interest.data.tables import Table

INT64 = 2.0 ** 63  # int64 holds [-INT64, INT64)


@dataclass(frozen=True)
class Rule:
    expected: str  # what a value must be, as a message says it
    integer: bool = False
    minimum: float | None = None

    def broken(self, values: np.ndarray) -> np.ndarray:
        """[N] bool: the values (float64, NaN included) that break the rule."""
        values = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(values)
        with np.errstate(invalid="ignore"):
            if self.minimum is not None:
                bad |= values < self.minimum
            if self.integer:
                bad |= (values != np.round(values)) | (values < -INT64) | (values >= INT64)
        return bad

    def message(self, value) -> str:
        return f"expected {self.expected}, found {value!r}"


RULES = {
    "timestamp": Rule("a finite number"),
    "order": Rule("an integer within int64 (a position)", integer=True),
    "weight": Rule("a finite number >= 0", minimum=0.0),
}


def read_numbers(table: Table, column: str, problems: Problems) -> np.ndarray:
    """[N] float64 column ``column`` of ``table`` (one of :data:`RULES`); cells that are empty,
    not numbers, or break the column's rule are problems naming their rows."""
    values, text = table.parse_number(column)
    rule = RULES[column]
    empty = np.isnan(values) & (table.frame[column].isna() if text is None else text == "").to_numpy()
    table.flag(problems, empty, column, f"missing value (expected {rule.expected})")
    table.flag(problems, rule.broken(values) & ~empty, column,
               f"expected {rule.expected}, found {{value}}", table.frame[column])
    return values


def positions(values: np.ndarray) -> np.ndarray:
    """Checked positions (:func:`read_numbers` of ``order``, no problems) as int64."""
    return np.asarray(values, dtype=np.float64).astype(np.int64)
