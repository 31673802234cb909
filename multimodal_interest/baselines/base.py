"""The baseline interface, its registry, and tuning on the validation users.

Every baseline is configured by a dataclass (a misspelt option is an error), learns from
``task.train`` only, and scores any users it was fitted for::

    model = create_baseline("emcdr", dim=64).fit(task)
    scores = model.score(task.test_users[:128])  # [128, n_target_items]

Tuning budget, the same for every method: at most :data:`MAX_GRID` = 4 configurations
(each class's ``grid``), picked by NDCG@10 on ``task.valid_users``; learned methods also
stop early on that metric (see :mod:`.training`) and keep their best state. The budget is
4 and not more because each configuration of EMCDR, CMF and PTUPCDR is a full training
run: a budget of 8 would double their share of an ``mmi evaluate`` run. Methods with
several knobs (item kNN: neighbourhood size, shrinkage, similarity exponent,
normalisation; user kNN: k, shrinkage; RP3beta: alpha, beta) spend the 4 on well-spread
points of their space, chosen from the literature's ranges, not on a full product; each
class's docstring names its 4. Every method reports its trials (options, valid NDCG@10).
"""
from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import evaluate

logger = logging.getLogger(__name__)

MAX_GRID = 4
SELECT_METRIC = "ndcg@10"


class Baseline:
    """A method that scores a task's target items for users from what ``task.train`` holds."""

    name: ClassVar[str]
    Config: ClassVar[type]  # a dataclass
    grid: ClassVar[list[dict]] = [{}]  # configurations tried on the validation users
    needs_features: ClassVar[bool] = False  # fit() needs item_features
    needs_text: ClassVar[bool] = False  # fit() needs item_texts (kept as self.item_texts)

    def __init__(self, config: object | None = None, **options: object) -> None:
        if config is not None and options:
            raise ValueError("give either a config or options, not both")
        try:
            self.config = config if config is not None else self.Config(**options)
        except TypeError as e:
            names = [f.name for f in dataclasses.fields(self.Config)]
            raise ValueError(f"{self.name}: {e}; options are {names}") from None
        self.task: ColdStartTask | None = None

    def fit(self, task: ColdStartTask, item_features: dict[str, torch.Tensor] | None = None,
            item_texts: dict[str, Sequence[str]] | None = None) -> Baseline:
        """Learn from ``task.train`` (and ``item_features``: platform -> ``[n_items, dim]``;
        ``item_texts``: platform -> ``[n_items]`` strings, row = item_idx)."""
        if self.needs_features:
            for p in (task.source, task.target):
                v = None if item_features is None else item_features.get(p)
                if v is None or v.ndim != 2 or v.shape[0] != task.n_items[p]:
                    got = "nothing" if v is None else tuple(v.shape)
                    raise ValueError(f"{self.name} needs item_features[{p!r}] of shape "
                                     f"[{task.n_items[p]}, dim]; got {got}")
        if self.needs_text:
            for p in task.platforms:
                t = None if item_texts is None else item_texts.get(p)
                if t is None or len(t) != task.n_items[p] or not any(x.strip() for x in t):
                    got = "no item text" if t is None or not any(x.strip() for x in t) else f"{len(t)} texts"
                    raise ValueError(f"{self.name} needs the text of platform {p!r}'s {task.n_items[p]} "
                                     f"items; got {got} (a dataset of ids only has no item text)")
        self.item_texts = item_texts
        self.task = task
        self._fit(task, item_features)
        return self

    def score(self, users: np.ndarray) -> torch.Tensor:
        """``[len(users), n_target_items]`` scores (higher is better)."""
        if self.task is None:
            raise RuntimeError(f"{self.name}: call fit(task) before score(users)")
        with torch.no_grad():
            return self._score(np.asarray(users, dtype=np.int64))

    def _fit(self, task: ColdStartTask, item_features: dict[str, torch.Tensor] | None) -> None:
        raise NotImplementedError

    def _score(self, users: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def valid_score(self) -> float:
        """Mean NDCG@10 on the task's validation users."""
        return float(evaluate(self.score, self.task, self.task.valid_users).values[SELECT_METRIC].mean())


BASELINES: dict[str, type[Baseline]] = {}


def register_baseline(cls: type[Baseline]) -> type[Baseline]:
    """Class decorator: make ``cls`` available to :func:`create_baseline` under ``cls.name``."""
    if cls.name in BASELINES:
        warnings.warn(f"baseline {cls.name!r} registered twice; the later one wins", stacklevel=2)
    if len(cls.grid) > MAX_GRID:
        raise ValueError(f"{cls.name}: grid of {len(cls.grid)} > the budget of {MAX_GRID}")
    BASELINES[cls.name] = cls
    return cls


def list_baselines() -> list[str]:
    return sorted(BASELINES)


def create_baseline(name: str, **options: object) -> Baseline:
    """A baseline by name; ``None`` options take the config's default."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {list_baselines()}")
    return BASELINES[name](**{k: v for k, v in options.items() if v is not None})


@dataclass
class Tuned:
    """The best model of a grid search and what each configuration scored."""

    model: Baseline
    trials: list[tuple[dict, float]]  # (options, valid NDCG@10)
    seconds: float


def tune(name: str, task: ColdStartTask, item_features: dict[str, torch.Tensor] | None = None,
         grid: list[dict] | None = None, item_texts: dict[str, Sequence[str]] | None = None,
         **fixed: object) -> Tuned:
    """Fit ``name`` with each configuration of its grid (or ``grid``), keep the best on valid."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {list_baselines()}")
    grid = BASELINES[name].grid if grid is None else grid
    if len(grid) > MAX_GRID:
        raise ValueError(f"{name}: grid of {len(grid)} > the budget of {MAX_GRID}")
    start = time.perf_counter()
    best, trials = None, []
    for i, options in enumerate(grid, 1):
        logger.info("%s: setting %d/%d %s", name, i, len(grid), options or "defaults")
        model = create_baseline(name, **{**fixed, **options}).fit(task, item_features, item_texts)
        value = model.valid_score()
        trials.append((options, value))
        logger.info("%s: setting %d/%d: valid %s %.4f (%.0fs so far)", name, i, len(grid),
                    SELECT_METRIC, value, time.perf_counter() - start)
        if best is None or value > best[1]:
            best = (model, value)
    return Tuned(best[0], trials, time.perf_counter() - start)
