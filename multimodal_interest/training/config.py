"""The training configuration: one dataclass, loadable from YAML/JSON; a typo is an error."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusion.config import from_dict


@dataclass
class TrainConfig:
    """Everything that shapes a training run (the model's size and the optimisation).

    Objectives: the cross-platform loss (a user's source history must rank their target
    items first: softmax over the target's items, each of the user's target items an equal
    share of the label) plus ``within_weight`` x the within-platform loss (next item of a
    user's own history, for every user and platform). ``num_negatives`` None scores all of a
    platform's items (full softmax); a number samples that many uniform negatives per step
    and scores them with the batch's positives (sampled softmax, for very large catalogs).
    """

    # model
    dim: int = 128
    n_layers: int = 1
    n_heads: int = 4
    max_len: int = 50
    dropout: float = 0.1
    modality_dropout: float = 0.1
    n_experts: int = 1
    pooling: str = "mean"
    item_ids: bool = False  # learned id embeddings for items seen in training (always without content) ...
    id_min_users: int = 1  # ... by at least this many users (rarer items: content only)
    adapter: str = "linear"
    item_bias: bool = True
    temperature: float = 0.05
    learn_temperature: bool = True
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
    patience: int = 4  # epochs without a better validation NDCG@10 before stopping
    eval_batch_size: int = 512  # validation users scored at once (memory, not results)
    checkpoint_every: int = 0  # steps between checkpoints (0: at the end of each epoch only)
    log_with: str | None = None  # an accelerate tracker, e.g. "tensorboard"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), str(f.type)))
        if self.within_weight < 0:
            raise ValueError(f"within_weight must be >= 0, got {self.within_weight}")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ValueError(f"num_negatives must be None (full softmax) or >= 1, got {self.num_negatives}")
        if min(self.epochs, self.batch_size, self.grad_accum, self.patience, self.eval_batch_size) < 1:
            raise ValueError("epochs, batch_size, grad_accum, patience and eval_batch_size must be >= 1")
        if self.trainable not in ("all", "target-head"):
            raise ValueError(f"trainable must be 'all' or 'target-head', got {self.trainable!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "TrainConfig") -> TrainConfig:
        return from_dict(cls, d, where)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read YAML or JSON, then apply ``key=value`` overrides (values parsed as YAML)."""
        path = Path(path)
        d = yaml.safe_load(path.read_text()) or {}
        return cls.from_dict(apply_overrides(d, overrides or []), str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


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


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["lr=3e-4", "item_ids=false"]`` on top of ``d``; each must be ``key=value``."""
    out = dict(d)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"override {item!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out
