"""The fine-tuning configuration: one dataclass, saved as JSON; a typo is an error."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.config import closest_hint
from fusion.files import MANIFEST_LIMIT, read_json

# Settings that only say how long to go on, how often to save and how to validate: a resumed
# run may change them (every other difference is refused, see loop.check_resumable).
RESUMABLE = ("epochs", "patience", "checkpoint_every", "eval_batch_size", "lower_cache_mb")
PRECISIONS = ("auto", "no", "bf16")


@dataclass
class FinetuneConfig:
    """Everything that shapes a fine-tuning run of a text encoder on the interest objective.

    A step takes ``batch_size`` training users (split among the processes): each user's
    ``max_len`` most recent source items, mean-pooled, must pick one of their target items
    (drawn per step) out of the step's positives plus ``negatives`` target items drawn by
    popularity: InfoNCE over cosine similarities divided by ``temperature``. An epoch is one
    pass over the training users, or ``epoch_steps`` steps; validation follows each epoch.
    """

    epochs: int = 1
    epoch_steps: int | None = None  # steps per epoch (None: one pass over the training users)
    batch_size: int = 32  # users per step, all processes together
    grad_accum: int = 1  # steps per optimizer update
    lr: float = 2e-5
    weight_decay: float = 0.01
    temperature: float = 0.05
    negatives: int = 64  # target items drawn by popularity per step, scored by every user of it
    max_len: int = 20  # most recent source items of a user's history
    max_seq_length: int = 64  # tokens of an item's text (saved with the encoder: it encodes so too)
    lora_rank: int = 0  # 0: every weight learns; r > 0: LoRA adapters of rank r, merged when saved
    lora_alpha: float = 16.0  # LoRA scale alpha / r
    train_layers: int | None = None  # only the top N transformer layers learn (None: all of them)
    lower_cache_mb: float = 1024  # with train_layers and no LoRA: memory for the frozen lower layers' states
    mixed_precision: str = "auto"  # "auto": bf16 on CUDA, fp32 elsewhere; "no"; "bf16"
    patience: int = 2  # epochs without a better validation score before stopping
    checkpoint_every: int = 0  # also save the training state every N steps (0: at epoch ends only)
    eval_batch_size: int = 256  # items encoded at once in validation (memory, not results)
    chunk_size: int = 64  # items of a step encoded at once, grouped by length (less padding)
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "max_len", "max_seq_length", "patience",
                    "eval_batch_size", "chunk_size")
        bad = [k for k in positive if getattr(self, k) < 1]
        if self.epoch_steps is not None and self.epoch_steps < 1:
            bad.append("epoch_steps")
        if self.train_layers is not None and self.train_layers < 1:
            bad.append("train_layers")
        if bad:
            raise ValueError(f"{', '.join(bad)} must be >= 1")
        if min(self.negatives, self.lora_rank, self.checkpoint_every, self.lower_cache_mb) < 0:
            raise ValueError("negatives, lora_rank, checkpoint_every and lower_cache_mb must be >= 0")
        if not self.lr > 0 or not self.temperature > 0:
            raise ValueError(f"lr and temperature must be > 0 (got {self.lr}, {self.temperature})")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> FinetuneConfig:
        """From a mapping of field names; an unknown name is an error naming ``where``."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ValueError(f"{where}: unknown fine-tuning setting(s) {', '.join(unknown)}"
                             f"{closest_hint(unknown, names)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> FinetuneConfig:
        doc = read_json(path, MANIFEST_LIMIT)
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected an object of fine-tuning settings")
        return cls.from_dict(doc, str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def precision(self, cuda: bool) -> str:
        """The accelerate mixed precision to run in: bf16 autocast on CUDA only."""
        if self.mixed_precision == "bf16" and not cuda:
            raise ValueError("mixed_precision='bf16' needs a CUDA device (use 'auto' or 'no' on a CPU)")
        return "bf16" if self.mixed_precision == "bf16" or (self.mixed_precision == "auto" and cuda) else "no"
