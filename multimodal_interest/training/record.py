"""What a run folder records about the training behind its model, and the checks that refuse
to mix runs up: resuming a checkpoint under other settings, scoring a run on another task.

A run folder's task (:meth:`Run.task`) names dataset, split, source and target. Each checkpoint
holds ``trained_with.json``: that task, the encoder fingerprints of the item features and the
TrainConfig it was trained with (:meth:`TrainConfig.flat`: each setting by its own name, as
older versions recorded them, so their checkpoints still resume), less the fields in
:data:`RESUMABLE`. Those only say how long to go on, how often to save and how to report, so
they may change when a run is resumed: raising ``epochs`` or ``patience`` continues a finished
run as if it had been started with the new values (epochs are planned from the seed alone);
lowering them stops it sooner but does not undo epochs already trained. Any other difference
is refused, since resuming would return the checkpoint's model under settings it was not
trained with.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.run import Run
from multimodal_interest.training.checkpoint import START_AFRESH, refuse_old_format
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.errors import SettingsError
from multimodal_interest.training.features import ItemFeatures

RECORD_FILE = "trained_with.json"
RESUMABLE = ("epochs", "patience", "checkpoint_every", "eval_batch_size", "log_with")


def task_identity(task: ColdStartTask) -> dict[str, str]:
    return {"dataset": task.dataset, "split": task.split, "source": task.source, "target": task.target}


def trained_with(task: ColdStartTask, features: ItemFeatures, config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint of this training must agree with to be resumed (JSON-ready)."""
    return {"task": task_identity(task), "encoders": dict(sorted(features.fingerprints.items())),
            "config": {k: v for k, v in config.flat().items() if k not in RESUMABLE}}


def check_resumable(checkpoint: Path, current: dict[str, Any]) -> None:
    """Refuse to resume ``checkpoint`` unless it was trained as ``current`` (:func:`trained_with`)
    says; the error names each difference and how to start afresh. A checkpoint in
    accelerate's pickle format (an older version's) is refused too: it is never loaded."""
    try:
        refuse_old_format(checkpoint)
    except ValueError as exc:
        raise NotResumable(str(exc), "a checkpoint in accelerate's pickle format (an older "
                                     "version's)") from None
    record = checkpoint / RECORD_FILE
    afresh = (f"start afresh in a new output folder, or delete {checkpoint.parent} "
              f"(resume=False does that too)")
    if not record.is_file():
        raise NotResumable(f"{checkpoint}: the checkpoint does not record what it was trained with "
                           f"(no {RECORD_FILE}: written by an older version), so it cannot be "
                           f"resumed safely; {afresh}", f"no {RECORD_FILE}: written by an older version")
    diffs = differences(json.loads(record.read_text()), current)
    if diffs:
        raise NotResumable(f"{checkpoint} was trained with other settings: {'; '.join(diffs)}. "
                           f"Resuming it would return its model under the new settings; keep its "
                           f"settings, or {afresh}. Only {', '.join(RESUMABLE)} may change on resume.",
                           f"trained with other settings: {'; '.join(diffs)}", diffs)


class NotResumable(SettingsError):
    """A checkpoint :func:`check_resumable` refuses (``resume=False`` starts afresh). ``reason``:
    why, in a few words, for a caller that says so in its own terms; ``differences``: the
    settings that differ (``"lr 0.005 (now 0.001)"``, empty when the reason is not a difference)."""

    def __init__(self, message: str, reason: str, differences: list[str] | None = None) -> None:
        super().__init__(message, START_AFRESH)
        self.reason, self.differences = reason, list(differences or [])


def check_run_task(run_dir: Path, task: ColdStartTask) -> None:
    """Refuse to score ``task`` with a run trained on another one (its recorded task)."""
    run = Run(run_dir)
    path = run.task_file
    recorded = run.task()
    if recorded is None:
        raise ValueError(f"{run_dir}: no {path.name} says which task the run was trained on; "
                         f"give the folder `mmi train --output` wrote")
    diffs = differences({"task": recorded}, {"task": task_identity(task)})
    if diffs:
        raise ValueError(f"{path}: the run was trained on another task than {task.label}: "
                         f"{'; '.join(diffs)}. A run scores only the task it was trained on: give a "
                         f"run trained on {task.source}->{task.target} (each direction has its own "
                         f"run, so evaluate a run without --both)")


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"lr 0.005 (now 0.001)"`` for each setting in which two records differ."""
    was, now = _flat(recorded), _flat(json.loads(json.dumps(current)))  # JSON: tuples as lists
    return [f"{k} {_show(was, k)} (now {_show(now, k)})"
            for k in dict.fromkeys([*was, *now]) if was.get(k, _ABSENT) != now.get(k, _ABSENT)]


_ABSENT = object()


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint recorded before the linear model existed trained a transformer; a setting
    added since it was recorded had its default (as a run folder's config reads)."""
    return {**record.get("task", {}),
            **{f"{m} encoder": fp for m, fp in record.get("encoders", {}).items()},
            **TrainConfig().flat(), "kind": "transformer", **record.get("config", {})}


def _show(d: dict[str, Any], key: str) -> str:
    return repr(d[key]) if key in d else "absent"
