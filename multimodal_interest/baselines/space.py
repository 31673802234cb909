"""A baseline's documented search space, and the settings a tuning budget draws from it.

Each baseline class declares ``space``: option -> :class:`Uniform`, :class:`LogUniform` or
:class:`Choice` (a choice may hold fixed values and ranges, e.g. item kNN's ``k``: every
neighbour, or a log-uniform integer)::

    space = {"lam": LogUniform(1.0, 1e5), "k": Choice((None, LogUniform(5, 2000, integer=True)))}

:func:`draw_settings` gives a budget of ``n`` settings: the class's grid first (its first
``n`` when ``n`` is no larger), then seeded random draws from the space until ``n`` distinct
settings are found, or the space has no more (a method without options has one setting).
The draws depend on the seed and the method's name only, so a larger budget extends a
smaller one's settings.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Union

import numpy as np

SIGNIFICANT = 3  # significant digits a drawn real is rounded to (a report reads "lam=1230")
ATTEMPTS_PER_SETTING = 50  # draws tried per missing setting before the space counts as exhausted


@dataclass(frozen=True)
class Uniform:
    """A real (or, with ``integer``, an integer) uniform in ``[low, high]``."""

    low: float
    high: float
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Uniform: low {self.low} > high {self.high}")

    def draw(self, rng: np.random.Generator) -> float | int:
        if self.integer:
            return int(rng.integers(math.ceil(self.low), math.floor(self.high) + 1))
        return _round(float(rng.uniform(self.low, self.high)), self.low, self.high)

    def contains(self, value: object) -> bool:
        return (_number(value) and self.low <= value <= self.high
                and (not self.integer or float(value).is_integer()))

    def describe(self) -> str:
        return f"{'integer' if self.integer else 'uniform'} in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LogUniform:
    """A real (or, with ``integer``, an integer) whose log is uniform in ``[log low, log high]``."""

    low: float
    high: float
    integer: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"LogUniform: needs 0 < low <= high; got [{self.low}, {self.high}]")

    def draw(self, rng: np.random.Generator) -> float | int:
        x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        if self.integer:
            return int(min(max(round(x), math.ceil(self.low)), math.floor(self.high)))
        return _round(x, self.low, self.high)

    def contains(self, value: object) -> bool:
        return (_number(value) and self.low <= value <= self.high
                and (not self.integer or float(value).is_integer()))

    def describe(self) -> str:
        kind = "log-uniform integer" if self.integer else "log-uniform"
        return f"{kind} in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice:
    """One of ``options``, each equally likely; an option that is a range is then drawn from."""

    options: tuple

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("Choice: no options")

    def draw(self, rng: np.random.Generator) -> object:
        option = self.options[int(rng.integers(len(self.options)))]
        return option.draw(rng) if isinstance(option, (Uniform, LogUniform)) else option

    def contains(self, value: object) -> bool:
        return any(o.contains(value) if isinstance(o, (Uniform, LogUniform)) else o == value
                   for o in self.options)

    def describe(self) -> str:
        return " or ".join(o.describe() if isinstance(o, (Uniform, LogUniform)) else repr(o)
                           for o in self.options)


Dimension = Union[Uniform, LogUniform, Choice]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _round(x: float, low: float, high: float) -> float:
    """``x`` to :data:`SIGNIFICANT` digits, kept inside ``[low, high]``."""
    if x == 0:
        return 0.0
    digits = SIGNIFICANT - 1 - math.floor(math.log10(abs(x)))
    return min(max(round(x, digits), low), high)


def describe_space(space: dict[str, Dimension]) -> dict[str, str]:
    """option -> its range in words, e.g. ``{"lam": "log-uniform in [1, 1e+05]"}``."""
    return {name: dim.describe() for name, dim in space.items()}


def outside_space(setting: dict, space: dict[str, Dimension]) -> list[str]:
    """The options of ``setting`` that the space does not have or whose value it excludes."""
    return [f"{k}={v!r}" for k, v in setting.items() if k not in space or not space[k].contains(v)]


def method_seed(name: str, seed: int) -> np.random.Generator:
    """The random generator of one method's draws (stable across processes, unlike ``hash``)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw_settings(name: str, grid: list[dict], space: dict[str, Dimension], budget: int,
                  seed: int = 0) -> list[dict]:
    """At most ``budget`` distinct settings of method ``name``: ``grid[:budget]``, then seeded
    random draws of every option of ``space`` (see the module docstring)."""
    if budget < 1:
        raise ValueError(f"tuning budget must be >= 1, got {budget}")
    if budget <= len(grid):
        return [dict(s) for s in grid[:budget]]
    out = [dict(s) for s in grid]
    seen = {_key(s) for s in out}
    rng, misses = method_seed(name, seed), 0
    while space and len(out) < budget and misses < ATTEMPTS_PER_SETTING * budget:
        setting = {option: dim.draw(rng) for option, dim in space.items()}
        key = _key(setting)
        if key in seen:
            misses += 1
            continue
        seen.add(key)
        out.append(setting)
    return out


def _key(setting: dict) -> tuple:
    """What tells two settings apart: every option's value (an option a grid setting leaves
    out, its default, counts as left out)."""
    return tuple(sorted((k, repr(v)) for k, v in setting.items()))
