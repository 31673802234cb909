"""The baseline interface, its registry, and tuning on the validation users.

Every baseline is configured by a dataclass (a misspelt option is an error), learns from
``task.train`` only, and scores any users it was fitted for::

    model = create_baseline("emcdr", dim=64).fit(task)
    scores = model.score(task.test_users[:128])  # [128, n_target_items]

Tuning: a budget of ``n`` settings (``mmi evaluate --tuning-budget``, default
:data:`DEFAULT_BUDGET` = 4), each fitted and judged by NDCG@10 on ``task.valid_users`` alone,
the best kept. Each class documents a search ``space`` (option -> range, :mod:`.space`) and a
``grid`` of at most 4 well-spread points of it, chosen from the literature's ranges; a budget
up to the grid's size tries the grid's first ``n`` (the default: the whole grid), a larger
one the grid and then seeded random draws from the space (:func:`tuning_settings`). Learned
methods (``early_stopping``) also stop each setting early on the validation users' NDCG@10
(see :mod:`.training`) and keep its best state. The default is 4 because each setting of
EMCDR, CMF and PTUPCDR is a full training run. Every method reports its trials (options,
valid NDCG@10). The interest model is tuned otherwise (its own search, judged on the
validation users and fit users left out): the report says how many settings each tried and
what judged them.
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

from multimodal_interest.baselines.space import Dimension, describe_space, draw_settings, outside_space
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import evaluate

logger = logging.getLogger(__name__)

DEFAULT_BUDGET = 4  # settings each baseline tries by default: its whole grid
MAX_GRID = DEFAULT_BUDGET  # the most points a class's grid may hold
TUNING_SEED = 0  # seed of the random settings drawn beyond the grid
SELECT_METRIC = "ndcg@10"


class Baseline:
    """A method that scores a task's target items for users from what ``task.train`` holds."""

    name: ClassVar[str]
    Config: ClassVar[type]  # a dataclass
    grid: ClassVar[list[dict]] = [{}]  # settings tried first on the validation users (<= MAX_GRID)
    space: ClassVar[dict[str, Dimension]] = {}  # option -> its range, drawn from beyond the grid
    early_stopping: ClassVar[bool] = False  # each setting also stops early on the validation users
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
        raise ValueError(f"{cls.name}: grid of {len(cls.grid)} > the default budget of {MAX_GRID}")
    for setting in cls.grid:
        if outside_space(setting, cls.space):
            raise ValueError(f"{cls.name}: grid setting {setting} is outside its space "
                             f"({', '.join(outside_space(setting, cls.space))}); space: {describe_space(cls.space)}")
    BASELINES[cls.name] = cls
    return cls


def list_baselines() -> list[str]:
    return sorted(BASELINES)


def create_baseline(name: str, **options: object) -> Baseline:
    """A baseline by name; ``None`` options take the config's default."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {list_baselines()}")
    return BASELINES[name](**{k: v for k, v in options.items() if v is not None})


def tuning_settings(name: str, budget: int = DEFAULT_BUDGET, seed: int = TUNING_SEED) -> list[dict]:
    """The settings ``name`` tries with a budget of ``budget``: its grid's first ``budget``,
    or, beyond the grid, the grid then seeded random draws from its space (at most
    ``budget``; fewer only when the space has no more, e.g. popularity's one)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {list_baselines()}")
    cls = BASELINES[name]
    return draw_settings(name, cls.grid, cls.space, budget, seed)


def judged_by(name: str, n_valid: int) -> str:
    """What judges a baseline's settings, in words."""
    text = f"NDCG@10 of the {n_valid} validation users"
    if BASELINES[name].early_stopping:
        text += " (each setting also stops early on them)"
    return text


@dataclass
class Tuned:
    """The best model of a search and what each setting scored."""

    model: Baseline
    trials: list[tuple[dict, float]]  # (options, valid NDCG@10)
    seconds: float


def tune(name: str, task: ColdStartTask, item_features: dict[str, torch.Tensor] | None = None,
         grid: list[dict] | None = None, item_texts: dict[str, Sequence[str]] | None = None,
         **fixed: object) -> Tuned:
    """Fit ``name`` with each setting of its grid (or ``grid``, e.g. :func:`tuning_settings`),
    keep the best on valid."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {list_baselines()}")
    grid = BASELINES[name].grid if grid is None else grid
    if not grid:
        raise ValueError(f"{name}: no setting to try")
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
