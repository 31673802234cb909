"""The training configuration: one dataclass, loadable from YAML/JSON; a typo is an error.

The model's settings are not repeated here: :attr:`TrainConfig.model` is fusion's own
:class:`~fusion.config.ModelSettings`, whose fields (and their one default each) are those the
saved model's configs are built from. In YAML/JSON and ``--set`` they go under ``model``
(``model.dim=64``); their bare names (``dim=64``, as before they were nested) are read as
the same setting.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fusion.config import ModelSettings, closest_hint
from multimodal_interest.data.yaml_file import load_yaml

MODEL = "model"
MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelSettings)}


@dataclass(init=False)
class TrainConfig:
    """Everything that shapes a training run: the model (:class:`~fusion.config.ModelSettings`),
    which items get id embeddings, the objectives and the optimisation.

    Objectives: the cross-platform loss (a user's source history must rank their target
    items first: softmax over the target's items, each of the user's target items an equal
    share of the label) plus ``within_weight`` x the within-platform loss (next item of a
    user's own history, for every user and platform). ``num_negatives`` None scores all of a
    platform's items (full softmax); a number samples that many uniform negatives per step
    and scores them with the batch's positives (sampled softmax, for very large catalogs).

    ``TrainConfig(model=ModelSettings(dim=64), lr=3e-4)``; a model setting may also be given
    by its own name, ``TrainConfig(dim=64)``, and then replaces that field of ``model``.
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    # id embeddings
    item_ids: bool = False  # learned id embeddings for items seen in training (always without content) ...
    id_min_users: int = 1  # ... by at least this many users (rarer items: content only)
    # objectives
    within_weight: float = 0.5
    num_negatives: int | None = None
    history_dropout: float = 0.0  # share of source-history items hidden in each training example
    # optimisation
    trainable: str = "all"  # "target-head": only the target's adapters, item bias and temperature
    epochs: int = 30
    min_epoch_steps: int = 50  # small datasets: an epoch repeats its pass until this many steps
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_accum: int = 1
    mixed_precision: str = "no"  # "no", "fp16", "bf16"
    seed: int = 0
    # the linear model's closed-form fit (training/closed_form)
    exact_rows: int = 6_000  # fit rows solved exactly ([n, n] kernel); more: the search on a sample this size,
    landmarks: int = 8192  # ... and the solve over every row through this many landmark rows (Nystrom)
    patience: int = 4  # epochs without a better validation NDCG@10 before stopping
    eval_batch_size: int = 512  # validation users scored at once (memory, not results)
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end of each epoch only)
    log_with: str | None = None  # an accelerate tracker, e.g. "tensorboard"

    def __init__(self, model: ModelSettings | None = None, **settings: Any) -> None:
        own = _own_fields()
        unknown = [k for k in settings if k not in own and k not in MODEL_FIELDS]
        if unknown:
            raise TypeError(f"TrainConfig: unknown setting(s) {', '.join(unknown)}"
                            f"{closest_hint([_bare(k) for k in unknown], _valid_names())}")
        if model is None:
            model = ModelSettings()
        if not isinstance(model, ModelSettings):
            raise TypeError(f"TrainConfig: model must be a ModelSettings, got {type(model).__name__}")
        flat = {k: _typed(k, v, str(MODEL_FIELDS[k].type)) for k, v in settings.items() if k in MODEL_FIELDS}
        self.model = dataclasses.replace(model, **flat) if flat else model
        for name, f in own.items():
            if name in settings:
                value = settings[name]
            else:
                value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            setattr(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        for f in _own_fields().values():
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), str(f.type)))
        if self.within_weight < 0:
            raise ValueError(f"within_weight must be >= 0, got {self.within_weight}")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ValueError(f"num_negatives must be None (full softmax) or >= 1, got {self.num_negatives}")
        if min(self.epochs, self.batch_size, self.grad_accum, self.patience, self.eval_batch_size,
               self.exact_rows, self.landmarks) < 1:
            raise ValueError("epochs, batch_size, grad_accum, patience, eval_batch_size, exact_rows and "
                             "landmarks must be >= 1")
        if self.trainable not in ("all", "target-head"):
            raise ValueError(f"trainable must be 'all' or 'target-head', got {self.trainable!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as saved: the model's under ``model``."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every setting by its own name, the model's beside the others (a tracker's
        hyperparameters; what a checkpoint records): no name is both a model setting and a
        training one."""
        return {**self.model.to_dict(), **{k: v for k, v in self.to_dict().items() if k != MODEL}}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "TrainConfig") -> TrainConfig:
        """From what :meth:`to_dict` or :meth:`flat` writes (or a mix: a model setting under
        ``model`` or by its own name, once); an unknown name is an error naming the closest."""
        d = nested(d, where)
        model = d.pop(MODEL, {})
        unknown = [*d.keys() - _own_fields().keys(), *(f"{MODEL}.{k}" for k in model.keys() - MODEL_FIELDS.keys())]
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}"
                             f"{closest_hint(sorted(_bare(k) for k in unknown), _valid_names())} "
                             f"(valid settings: {', '.join(_valid_names().values())})")
        try:
            return cls(ModelSettings(**{k: _typed(k, v, str(MODEL_FIELDS[k].type)) for k, v in model.items()}),
                       **d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read YAML or JSON, then apply ``key=value`` overrides (values parsed as YAML)."""
        path = Path(path)
        d = load_yaml(path).data or {}  # the loader rule: bounded, no alias bombs, no repeated keys
        return cls.from_dict(apply_overrides(d, overrides or [], str(path)), str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _own_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != MODEL}


def _valid_names() -> dict[str, str]:
    """Each setting's bare name -> its name in a file or ``--set`` (``"dim"`` -> ``"model.dim"``)."""
    return {**{k: f"{MODEL}.{k}" for k in MODEL_FIELDS}, **{k: k for k in _own_fields()}}


def _bare(key: str) -> str:
    return key.removeprefix(f"{MODEL}.")


def nested(d: dict[str, Any], where: str = "TrainConfig") -> dict[str, Any]:
    """A copy of ``d`` with every model setting under ``model``: ``{"dim": 64}``,
    ``{"model.dim": 64}`` and ``{"model": {"dim": 64}}`` all become the last; a setting given
    twice is an error. Other names are left as they are (:meth:`TrainConfig.from_dict` judges)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {type(d).__name__}")
    out = {k: v for k, v in d.items() if k != MODEL}
    model = d.get(MODEL, {})
    if not isinstance(model, dict):
        raise ValueError(f"{where}: {MODEL} must be a mapping of model settings, got {model!r}")
    model = dict(model)
    for key in list(out):
        name = _bare(key)
        if key.startswith(f"{MODEL}.") or name in MODEL_FIELDS:
            if name in model:
                raise ValueError(f"{where}: model setting {name} is given twice ({key} and {MODEL}.{name}); "
                                 f"keep one")
            model[name] = out.pop(key)
    if model:
        out[MODEL] = model
    return out


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _typed(name: str, value: Any, annotation: str) -> Any:
    """``value`` as the field's type (``"float"``, ``"int | None"``, ...) or a clear error;
    numbers written as text (YAML reads ``1e-3`` as a string) are accepted."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return None
    kind = kinds[0]
    if kind == "float" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {"bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "str": isinstance(value, str)}[kind]
    if not ok:
        raise ValueError(f"{name} must be {annotation}, got {value!r}")
    return _TYPES[kind](value)


def apply_overrides(d: dict[str, Any], overrides: list[str], where: str = "TrainConfig") -> dict[str, Any]:
    """``["lr=3e-4", "model.dim=64", "item_ids=false"]`` on top of ``d`` (:func:`nested`
    form; a model setting by its bare name too: ``dim=64``); each must be ``key=value``."""
    out = nested(d, where)
    for item in overrides:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"override {item!r} is not key=value")
        name = _bare(key)
        if key.startswith(f"{MODEL}.") or name in MODEL_FIELDS:
            out.setdefault(MODEL, {})[name] = yaml.safe_load(value)
        else:
            out[key] = yaml.safe_load(value)
    return out
