"""Training an :class:`~fusion.InterestModel` on a cold-start task, with accelerate.

Shaped like accelerate's examples: one ``Accelerator`` (mixed precision, gradient
accumulation, trackers), one ``prepare`` (model, optimizer, the training DataLoader, which
accelerate shards across processes, and the validation DataLoader), ``accumulate`` around
each step and ``skip_first_batches`` to resume mid-epoch. Validation runs on every process,
each scoring its share of the users; ``gather_for_metrics`` joins the per-user values, so
the score equals a single process's. Checkpoints are our own
(:mod:`~multimodal_interest.training.checkpoint`): safetensors and JSON only, verified before
use, never a pickle (accelerate's ``save_state`` pickles the RNG and custom states). After
each epoch the model is scored on the validation users (cold on the target) and the best one
is saved with ``save_pretrained``; training stops after ``patience`` epochs without progress.
Re-running into the same folder resumes its last good checkpoint, provided it was trained on
the same task, item features and settings (see :mod:`~multimodal_interest.training.record`
for the few settings that may change); anything else is refused, never silently resumed.

The output folder is a :class:`~multimodal_interest.run.Run` (resolved config, task, best
model, log, checkpoints: see :mod:`multimodal_interest.run`). Its checkpoints::

      step-N           the full training state: weights.safetensors, optimizer.safetensors +
                       optimizer.json, progress.json, accelerator.json (step counter, fp16
                       scaler), rng-r<rank>.json (one per process), grads-r<rank>.safetensors
                       (only if saved halfway through a gradient accumulation),
                       trained_with.json (task, encoder fingerprints, config) and manifest.json
                       (size and sha256 of each file); the newest two are kept
      tmp-N            a checkpoint being written (removed at start if a save did not finish)
      rejected-step-N  a checkpoint that failed verification on resume (moved aside, not read)
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fusion import InterestModel
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.parallel import accelerator_for
from multimodal_interest.run import Run
from multimodal_interest.training.batches import BatchPlanner, EpochSteps
from multimodal_interest.training.checkpoint import (PROGRESS_FILE, CheckpointError, latest_checkpoint as _latest,
                                                     restore, resume_point, save_checkpoint)
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.errors import SettingsError
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.model import attach_features, build_model, freeze_all_but_target_head
from multimodal_interest.training.objective import Objective
from multimodal_interest.training.result import TrainResult
from multimodal_interest.training.record import RECORD_FILE, check_resumable, task_identity, trained_with
from multimodal_interest.training.scoring import UserNdcg10

logger = logging.getLogger(__name__)

# (model, task) -> metric(users [B] int64) -> [B] float64: the per-user model-selection score
UserMetric = Callable[[InterestModel, ColdStartTask], Callable[[np.ndarray], np.ndarray]]


def optimizer_for(module: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and embeddings only, never on biases, norms, the item
    bias (the popularity prior) or the temperature."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


@dataclass
class Progress:
    """What a checkpoint must remember beyond model and optimizer."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    seconds: float = 0.0  # training wall time so far, across resumes
    seconds_to_best: float = 0.0
    loss_sums: dict[str, float] = field(default_factory=dict)  # this epoch's, per loss
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Raises ValueError unless ``state`` has exactly this dataclass's fields."""
        names = {f.name for f in fields(self)}
        if set(state) != names:
            raise ValueError(f"progress fields differ: missing {sorted(names - set(state))}, "
                             f"unknown {sorted(set(state) - names)}")
        for k, v in state.items():
            setattr(self, k, v)


def train(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, output_dir: str | Path,
          user_metric: UserMetric | None = None, accelerator=None, resume: bool = True,
          progress_bar: bool = True, init: InterestModel | None = None) -> TrainResult:
    """Train on ``task`` and return the best model on its validation users. A linear model
    (``config.model.kind``, the default) is fitted in closed form
    (:func:`~multimodal_interest.training.closed_form.train_linear`; the gradient settings
    below do not apply to it); a transformer is trained by gradient, as follows.

    ``user_metric``: the model-selection score of each validation user, averaged over them
    (default: NDCG@10, scoring ``config.eval_batch_size`` users at a time). ``init``: start
    from this model (e.g. one given a new platform with :func:`add_platform`) instead of a
    fresh one. With
    ``config.trainable == "target-head"`` only the target's adapters, item bias and temperature
    learn (and no within-platform loss is used). Re-running with the same ``output_dir``
    resumes from its last checkpoint (``resume``), and refuses one trained otherwise;
    ``resume=False`` deletes the folder's checkpoints and starts afresh.
    """
    if config.model.kind == "linear":
        from multimodal_interest.training.closed_form import train_linear

        if init is not None or features.item_spaces:
            what = "start from a given model" if init is not None else "score a platform's own item space"
            raise SettingsError(f"the linear model is fitted in closed form, from scratch, in its own item "
                                f"space; to {what}, train the transformer (kind='transformer')",
                                {"kind": "transformer"})
        return train_linear(task, features, config, output_dir, resume)
    from accelerate import DistributedDataParallelKwargs
    from accelerate.utils import GradientAccumulationPlugin, set_seed
    from tqdm.auto import tqdm

    out = Path(output_dir)
    run = Run(out)
    acc = accelerator or accelerator_for(
        config.mixed_precision,
        # accumulation runs on across epoch ends, as the step counter in checkpoints expects
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=config.grad_accum,
                                                                sync_with_dataloader=False),
        log_with=config.log_with, project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False, find_unused_parameters=True)])
    check_trackers(acc, config)
    record = trained_with(task, features, config)
    ckpt = resume_point(acc, run.checkpoints, resume, lambda folder: check_resumable(folder, record))
    user_metric = user_metric or partial(UserNdcg10, batch_size=config.eval_batch_size)
    set_seed(config.seed)
    if len(task.valid_users) == 0:
        raise ValueError(f"{task.dataset}/{task.split}: no validation users to select the model on")
    if init is None:
        model = build_model(task, features, config)
    else:
        model = init
        attach_features(model, task, features)  # its id presence is its own (saved with it)
    head_only = config.trainable == "target-head"
    if head_only:
        freeze_all_but_target_head(model, task.target)
    planner = BatchPlanner(task, max(1, config.batch_size // acc.num_processes), config.model.max_len,
                           config.within_weight > 0 and not head_only, config.seed, config.history_dropout)
    objective = Objective(model, task.source, task.target, 0.0 if head_only else config.within_weight,
                          config.num_negatives)
    optimizer = optimizer_for(objective, config)
    steps = EpochSteps(planner, acc.num_processes, config.min_epoch_steps * acc.num_processes)
    objective, optimizer, train_loader, valid_loader = acc.prepare(
        objective, optimizer, steps.loader(), validation_loader(task.valid_users, config.eval_batch_size))
    state = Progress()
    if acc.is_main_process:
        if not resume:
            shutil.rmtree(run.checkpoints, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        run.save_config(config)
        run.save_task(task_identity(task))
    if ckpt is not None:
        resume_from(acc, ckpt, objective, optimizer, state)
    if config.log_with:
        acc.init_trackers(out.name, config=config.flat())

    while state.epoch < config.epochs and state.bad_epochs < config.patience:
        t0 = time.perf_counter()
        steps.plan_epoch(state.epoch)
        loader = acc.skip_first_batches(train_loader, state.step_in_epoch) if state.step_in_epoch else train_loader
        objective.train()
        bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{config.epochs}", leave=False,
                   disable=not (progress_bar and acc.is_local_main_process))
        for batch in bar:  # on acc.device already
            with acc.accumulate(objective):
                losses = objective(batch)
                acc.backward(losses["loss"])
                optimizer.step()
                optimizer.zero_grad()
            for k, v in losses.items():
                state.loss_sums[k] = state.loss_sums.get(k, 0.0) + float(v.detach())
            state.step_in_epoch += 1
            state.global_step += 1
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}")
            if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
                state.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                save_checkpoint(acc, run.checkpoints, state.global_step, objective, optimizer,
                                state.state_dict(), {RECORD_FILE: record})
        state.seconds += time.perf_counter() - t0
        _end_epoch(acc, objective, task, partial(validate, acc, valid_loader, user_metric), state, run, config)
        save_checkpoint(acc, run.checkpoints, state.global_step, objective, optimizer, state.state_dict(),
                        {RECORD_FILE: record})

    acc.wait_for_everyone()
    if config.log_with:
        acc.end_training()
    best = run.load_model()  # scores alone: its id presence is saved with it
    attach_features(best, task, features)  # features are data, not weights
    return TrainResult(best, state.best_epoch, state.best, state.epoch, state.seconds,
                       state.seconds_to_best, state.history)


def check_trackers(acc, config: TrainConfig) -> None:
    """accelerate drops a tracker whose package is missing (a debug log only): refuse instead."""
    if config.log_with and not acc.log_with:
        package = "a tracker package, e.g. tensorboard" if config.log_with == "all" else config.log_with
        raise ValueError(f"log_with={config.log_with!r}: accelerate found no such tracker installed; "
                         f"pip install {package}, or leave log_with unset")


def validation_loader(users: np.ndarray, batch_size: int) -> torch.utils.data.DataLoader:
    """``users`` [U] in order, ``batch_size`` at a time (to pass through ``accelerator.prepare``);
    its own generator: iterating draws nothing from the global RNG."""
    return torch.utils.data.DataLoader(users, batch_size=batch_size, generator=torch.Generator())


def validate(acc, loader, user_metric: UserMetric, model: InterestModel, task: ColdStartTask) -> np.ndarray:
    """``[U]`` ``user_metric`` of every user of ``loader`` (a prepared :func:`validation_loader`),
    in its order. Every process scores its share; ``gather_for_metrics`` joins the values and
    drops the repeats accelerate padded the last round with, so all processes get the values a
    single process would compute."""
    metric, parts = user_metric(model, task), []
    for users in loader:
        values = torch.from_numpy(np.asarray(metric(users.cpu().numpy()))).to(acc.device)
        parts.append(acc.gather_for_metrics(values).cpu())
    return torch.cat(parts).numpy()


def _end_epoch(acc, objective, task: ColdStartTask, validate_model: Callable[..., np.ndarray], state: Progress,
               run: Run, config: TrainConfig) -> None:
    """Validate (``validate_model(model, task)`` -> per-user values, on every process), keep the
    best model, log, and move to the next epoch."""
    model = acc.unwrap_model(objective).model
    steps = max(state.step_in_epoch, 1)
    score = float(validate_model(model, task).mean())
    row = {"epoch": state.epoch + 1, "step": state.global_step, **{k: v / steps for k, v in state.loss_sums.items()},
           "valid_ndcg10": score, "seconds": round(state.seconds, 2)}
    state.history.append(row)
    if score > state.best:
        state.best, state.best_epoch, state.bad_epochs = score, state.epoch + 1, 0
        state.seconds_to_best = state.seconds
        if acc.is_main_process:
            run.save_model(model)  # replaced atomically
    else:
        state.bad_epochs += 1
    if acc.is_main_process:
        run.save_log(state.history)
        logger.info("epoch %d: %s", state.epoch + 1, ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                                 if isinstance(v, float)))
    if config.log_with:
        acc.log({k: v for k, v in row.items() if k != "epoch"}, step=state.epoch + 1)
    state.epoch += 1
    state.step_in_epoch = 0
    state.loss_sums = {}


def latest_checkpoint(out: Path) -> Path | None:
    """The run folder ``out``'s newest checkpoint ``step-N``, unverified (None if none)."""
    return _latest(Run(out).checkpoints)


def resume_from(acc, ckpt, objective, optimizer, state: Progress) -> None:
    """Load a verified checkpoint into the prepared objective and optimizer, the RNGs and ``state``."""
    restore(acc, ckpt, objective, optimizer)
    try:
        state.load_state_dict(ckpt.progress)
    except ValueError as exc:
        raise CheckpointError(ckpt.folder / PROGRESS_FILE, str(exc)) from None
    logger.info("resumed from %s (epoch %d, step %d)", ckpt.folder, state.epoch, state.step_in_epoch)
