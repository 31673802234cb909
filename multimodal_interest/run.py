"""A training run folder: the one module that knows its layout.

::

    <run>/
      config.json     the resolved training configuration
      task.json       the task: dataset, split, source, target
      model/          the best model so far (``InterestModel.save_pretrained``), replaced
                      atomically; self-sufficient: copied alone, it scores as it did here
      encoder/        (a fine-tuning run, ``mmi finetune``, instead of model/) the best text
                      encoder so far, a sentence-transformers folder, replaced atomically
      log.jsonl       one line per epoch: losses, validation NDCG@10, time
      checkpoints/    full training states (:mod:`multimodal_interest.training.checkpoint`
                      owns the files inside one)

Training writes a run through :class:`Run`; evaluation and serving read it through
:class:`Run` (serving only its model folder). Nothing here imports ``training/``: the
configuration class is given by the caller.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fusion import InterestModel
from fusion.files import JSON_LIMIT, MANIFEST_LIMIT, expect_mapping, parse_json, read_bytes, read_json
from fusion.saving import MANIFEST as MODEL_MANIFEST
from multimodal_interest.store import atomic_write_bytes

CONFIG_FILE = "config.json"
TASK_FILE = "task.json"
MODEL_DIR = "model"
ENCODER_DIR = "encoder"
LOG_FILE = "log.jsonl"
CHECKPOINTS_DIR = "checkpoints"

C = TypeVar("C", bound="_Config")


class _Config(Protocol):
    @classmethod
    def from_file(cls: type[C], path: str | Path) -> C: ...

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any], where: str) -> C: ...

    def save(self, path: str | Path) -> None: ...


class Run:
    """The run folder ``folder`` (it need not exist yet)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r})"

    @classmethod
    def for_task(cls, output_dir: str | Path, source: str, target: str) -> Run:
        """The run of direction ``source`` -> ``target`` inside an experiment's ``output_dir``."""
        return cls(Path(output_dir) / f"run-{source}-{target}")

    # ------------------------------------------------------------------ paths
    @property
    def config_file(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def task_file(self) -> Path:
        return self.folder / TASK_FILE

    @property
    def model_dir(self) -> Path:
        return self.folder / MODEL_DIR

    @property
    def encoder_dir(self) -> Path:
        return self.folder / ENCODER_DIR

    @property
    def log_file(self) -> Path:
        return self.folder / LOG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS_DIR

    # ------------------------------------------------------------------ configuration and task
    def save_config(self, config: _Config) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config.save(self.config_file)

    def config(self, cls: type[C]) -> C:
        """The resolved configuration, read as ``cls`` (e.g. TrainConfig)."""
        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.config_file}: missing; give the folder `mmi train --output` wrote")
        saved = read_json(self.config_file, MANIFEST_LIMIT)
        if isinstance(saved, dict) and "kind" not in saved and "kind" not in saved.get("model", {}):
            saved["kind"] = "transformer"  # saved before the linear model existed: a transformer's
        return cls.from_dict(saved, str(self.config_file))

    def holds_other_settings(self, config: _Config) -> bool:
        """Whether the folder holds a run whose saved settings differ from ``config`` (one it
        cannot read counts as different); False when it holds none."""
        if not self.config_file.is_file():
            return False
        try:
            return self.config(type(config)) != config
        except ValueError:  # an older version's settings file
            return True

    def save_task(self, identity: dict[str, str]) -> None:
        """``identity``: dataset, split, source, target."""
        atomic_write_bytes(self.task_file, (json.dumps(identity) + "\n").encode())

    def task(self) -> dict[str, str] | None:
        """The recorded task (dataset, split, source, target); None if none was recorded."""
        if not self.task_file.is_file():
            return None
        task = read_json(self.task_file, MANIFEST_LIMIT)
        if not isinstance(task, dict):
            raise ValueError(f"{self.task_file}: expected an object (dataset, split, source, target)")
        return task

    # ------------------------------------------------------------------ log
    def save_log(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.log_file, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def log(self) -> list[dict[str, Any]]:
        """One row per finished epoch (empty before the first)."""
        if not self.log_file.is_file():
            return []
        lines = read_bytes(self.log_file, JSON_LIMIT).splitlines()
        rows = [parse_json(line, f"{self.log_file}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
        for n, row in enumerate(rows, 1):
            expect_mapping(row, self.log_file, f"row {n}")
        return rows

    # ------------------------------------------------------------------ best model
    def has_model(self) -> bool:
        return (self.model_dir / MODEL_MANIFEST).is_file()

    def save_model(self, model: InterestModel) -> None:
        """``save_pretrained`` into a temporary folder, then swap it in (a reader never sees
        half a model; a save killed between the two renames is repaired by the next one)."""
        folder = self.model_dir
        tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
        if old.exists() and not folder.exists():  # killed between the two renames below
            old.rename(folder)
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    def load_model(self, **kwargs: Any) -> InterestModel:
        """The best model (``InterestModel.from_pretrained`` keywords)."""
        return InterestModel.from_pretrained(self.model_dir, **kwargs)


def model_folder(path: str | Path) -> Path:
    """A saved model folder, given it or a run folder (its best model)."""
    path = Path(path)
    for candidate in (path, Run(path).model_dir):
        if (candidate / MODEL_MANIFEST).is_file():
            return candidate
    raise FileNotFoundError(f"{path}: neither a saved model (no {MODEL_MANIFEST}) nor a training run "
                            f"folder (no {MODEL_DIR}/{MODEL_MANIFEST})")
