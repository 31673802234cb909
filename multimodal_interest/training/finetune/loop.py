"""Fine-tuning a text encoder on a cold-start task with accelerate: the loop.

Shaped as :mod:`multimodal_interest.training.trainer` is: one ``Accelerator`` (bf16 autocast
on CUDA, gradient accumulation), one ``prepare`` (the two towers, the optimizer, the step
loader that accelerate shards across processes, the validation loaders), ``accumulate``
around each step, ``skip_first_batches`` to resume mid-epoch, and the project's own
checkpoints (:mod:`~multimodal_interest.training.checkpoint`: safetensors and JSON, verified,
never a pickle). The validation users are scored (:mod:`~.validation`) before the first
step ("epoch 0", the starting encoder) and after each epoch; the best of those encoders is
saved as a sentence-transformers folder (the starting one, re-saved, when no epoch beats
it), and training stops after ``patience`` epochs without beating the best.

The output folder (:class:`~multimodal_interest.run.Run`)::

    config.json    the FinetuneConfig
    task.json      dataset, split, source, target
    encoder/       the best encoder of epochs 0..N: a sentence-transformers folder (--encoder text=finetuned:PATH),
                   or for an image encoder a finetuned-image folder (--encoder image=finetuned-image:PATH)
    log.jsonl      one line per epoch, from epoch 0 (the starting encoder, no loss): loss, validation
                   NDCG@10 (and of the cold items), the best epoch so far, items/s, seconds
    checkpoints/   full training states, step-N (the newest two)

Re-running into the same folder resumes its last good checkpoint, provided it was trained on
the same task, base encoder and settings (only :data:`~.config.RESUMABLE` may change).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion.files import MANIFEST_LIMIT, read_json
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.parallel import accelerator_for
from multimodal_interest.run import Run
from multimodal_interest.training.batches import EpochSteps
from multimodal_interest.training.checkpoint import resume_point, save_checkpoint
from multimodal_interest.training.finetune.batches import FinetunePlanner
from multimodal_interest.training.finetune.config import RESUMABLE, FinetuneConfig
from multimodal_interest.training.finetune.lower_cache import LowerLayerCache
from multimodal_interest.training.finetune.model import InterestTowers, Tuning, adapt, load_base, save_encoder, \
    trainable
from multimodal_interest.training.finetune.tokens import ItemTokens
from multimodal_interest.training.finetune.validation import Validation, ValidScore
from multimodal_interest.training.record import RECORD_FILE, NotResumable, task_identity
from multimodal_interest.training.trainer import Progress, resume_from

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    encoder_dir: Path  # the best encoder (a sentence-transformers folder, or a finetuned-image one)
    best_epoch: int  # 0: no epoch beat the starting encoder, encoder_dir holds it
    best_valid: float  # its validation NDCG@10 (cold items among cold items under the cold-item protocol)
    start_valid: float | None  # the starting encoder's (None: resumed from a run that did not validate it)
    epochs_run: int  # epochs of training (epoch 0 not counted)
    seconds: float
    history: list[dict]


def finetune(task: ColdStartTask, texts: dict[str, Sequence], base: str, config: FinetuneConfig,
             output_dir: str | Path, resume: bool = True, progress_bar: bool = True,
             accelerator=None) -> FinetuneResult:
    """Fine-tune the encoder ``base`` (an encoder spec: a text encoder, ``sentence-transformer``,
    ``mpnet``, ``finetuned:PATH``, or an image encoder, ``efficientnet-lite0``,
    ``finetuned-image:PATH``: :mod:`~.image`) on ``task``'s training users; ``texts[p][i]`` is
    the text of item ``i`` of platform ``p`` (for an image encoder: its image file, or None).
    Returns where the best encoder is and how it scored. ``resume=False`` deletes the folder's
    checkpoints and starts afresh."""
    from accelerate import DistributedDataParallelKwargs
    from accelerate.utils import GradientAccumulationPlugin, set_seed
    from tqdm.auto import tqdm

    out = Path(output_dir)
    run = Run(out)
    if len(task.valid_users) == 0:
        raise ValueError(f"{task.label}: no validation users to select the encoder on")
    tuner = tuner_for(base)
    acc = accelerator or accelerator_for(
        config.precision(torch.cuda.is_available()),
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=config.grad_accum,
                                                                sync_with_dataloader=False),
        project_dir=str(out), kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    record = {"task": task_identity(task), "encoders": {"base": tuner.fingerprint},
              "config": {k: v for k, v in config.to_dict().items() if k not in RESUMABLE}}
    ckpt = resume_point(acc, run.checkpoints, resume, lambda folder: check_resumable(folder, record))

    set_seed(config.seed)
    tuning = tuner.prepare(task, texts, config)
    towers = InterestTowers(tuning.encoder, config.temperature, config.chunk_size, tuning.lower, tuning.save)
    logger.info("%d of %d weights learn", trainable(towers), sum(p.numel() for p in towers.parameters()))
    planner = FinetunePlanner(task, tuning.tokens, max(1, config.batch_size // acc.num_processes), config.max_len,
                              config.negatives, config.seed,
                              config.epoch_steps * acc.num_processes if config.epoch_steps else None)
    steps = EpochSteps(planner, acc.num_processes)
    valid = Validation(task, tuning.tokens, config.max_len, config.eval_batch_size)
    optimizer = optimizer_for(towers, config)
    towers, optimizer, train_loader, *valid_loaders = acc.prepare(towers, optimizer, steps.loader(),
                                                                  *valid.loaders())
    state = Progress()
    if acc.is_main_process:
        if not resume:
            shutil.rmtree(run.checkpoints, ignore_errors=True)
        run.save_config(config)
        run.save_task(task_identity(task))
    if ckpt is not None:
        resume_from(acc, ckpt, towers, optimizer, state)
    if state.global_step == 0 and not state.history:  # a resumed run has its epoch 0 in its history
        validate_start(acc, towers, valid, valid_loaders, state, run, progress_bar)

    while state.epoch < config.epochs and state.bad_epochs < config.patience:
        t0 = time.perf_counter()
        steps.plan_epoch(state.epoch)
        loader = acc.skip_first_batches(train_loader, state.step_in_epoch) if state.step_in_epoch else train_loader
        towers.train()
        bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{config.epochs}", leave=False, unit="step",
                   disable=not (progress_bar and acc.is_local_main_process))
        for batch in bar:
            with acc.accumulate(towers):
                loss = towers(batch)["loss"]
                acc.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            # the epoch's sums: loss, items encoded with gradients, seconds spent training
            state.loss_sums["loss"] = state.loss_sums.get("loss", 0.0) + float(loss.detach())
            state.loss_sums["items"] = state.loss_sums.get("items", 0.0) + len(batch["items"])
            state.loss_sums["train_seconds"] = state.loss_sums.get("train_seconds", 0.0) + time.perf_counter() - t0
            state.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            state.step_in_epoch += 1
            state.global_step += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
                save_checkpoint(acc, run.checkpoints, state.global_step, towers, optimizer, state.state_dict(),
                                {RECORD_FILE: record})
                t0 = time.perf_counter()
        end_epoch(acc, towers, valid, valid_loaders, state, run, progress_bar)
        save_checkpoint(acc, run.checkpoints, state.global_step, towers, optimizer, state.state_dict(),
                        {RECORD_FILE: record})
    acc.wait_for_everyone()
    start = state.history[0] if state.history and state.history[0]["epoch"] == 0 else None
    if state.best_epoch == 0 and acc.is_main_process:
        logger.warning("fine-tuning did not beat the starting encoder on validation (%.4f); %s holds the "
                       "starting encoder", state.best, run.encoder_dir)
    return FinetuneResult(run.encoder_dir, state.best_epoch, state.best,
                          None if start is None else ValidScore.from_row(start).selection, state.epoch,
                          state.seconds, state.history)


def tuner_for(base: str):
    """The tuner of the encoder spec ``base`` by its modality (:class:`TextTuner`, or
    :class:`~.image.ImageTuner` for an image encoder), its base encoder loaded."""
    from encoders import get_encoder_class
    from multimodal_interest.training.finetune.image import ImageTuner

    return ImageTuner(base) if get_encoder_class(base.partition(":")[0]).modality == "image" else TextTuner(base)


class TextTuner:
    """Tuning a sentence-transformers text encoder: every weight, LoRA adapters, or the top
    layers (their lower layers cached, :mod:`~.lower_cache`)."""

    def __init__(self, base: str):
        self.st, self.fingerprint = load_base(base)

    def prepare(self, task: ColdStartTask, texts: dict[str, Sequence[str]], config: FinetuneConfig) -> Tuning:
        """Tokenize every item once, make only what should learn trainable, and build the cache."""
        st = self.st
        st.max_seq_length = config.max_seq_length
        pad = st.tokenizer.pad_token_id or 0
        t0 = time.perf_counter()
        tokens = {p: ItemTokens.build(st.preprocess, texts[p], pad) for p in task.platforms}
        logger.info("tokenized %s items in %.1fs", " + ".join(str(len(t)) for t in tokens.values()),
                    time.perf_counter() - t0)
        adapt(st, config.lora_rank, config.lora_alpha, config.train_layers)
        lower = LowerLayerCache.for_encoder(st, config.train_layers, tokens, (task.source, task.target),
                                            config.lower_cache_mb) \
            if config.train_layers and not config.lora_rank else None
        return Tuning(st, self.fingerprint, tokens, lower, save_encoder)


def optimizer_for(module: torch.nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW over the weights that learn; no weight decay on biases and norms."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)


def validate_start(acc, towers, valid: Validation, loaders: list, state: Progress, run: Run,
                   progress_bar: bool = False) -> None:
    """Epoch 0: score the starting encoder before the first step; it is the first candidate,
    so the saved encoder is never worse on validation than the one the run started from."""
    row = {"epoch": 0, "step": 0}
    score = _validate(acc, towers, valid, loaders, row, progress_bar)
    row["seconds"] = 0.0
    _keep_best(acc, towers, score, row, state, run)


def end_epoch(acc, towers, valid: Validation, loaders: list, state: Progress, run: Run,
              progress_bar: bool = False) -> None:
    """Validate, keep the best encoder, log, and move to the next epoch."""
    steps = max(state.step_in_epoch, 1)
    sums = torch.tensor([state.loss_sums.get("items", 0.0), state.loss_sums.get("train_seconds", 0.0)],
                        device=acc.device, dtype=torch.float64)
    items, seconds = acc.reduce(sums, reduction="sum").tolist() if acc.num_processes > 1 else sums.tolist()
    row = {"epoch": state.epoch + 1, "step": state.global_step, "loss": state.loss_sums.get("loss", 0.0) / steps}
    score = _validate(acc, towers, valid, loaders, row, progress_bar)
    # items encoded with gradients per second of training, all processes together
    row["train_items_per_s"] = items / (seconds / acc.num_processes) if seconds else 0.0
    row["seconds"] = round(state.seconds, 2)  # training, all epochs so far (validation not counted)
    lower = acc.unwrap_model(towers).lower
    if lower is not None:
        logger.info("lower-layer cache: %d items held (%.0f of %.0f MB), %d computed so far", len(lower.entries),
                    lower.bytes / 2 ** 20, lower.limit / 2 ** 20, lower.computed)
    _keep_best(acc, towers, score, row, state, run)
    state.epoch += 1
    state.step_in_epoch = 0
    state.loss_sums = {}


def _validate(acc, towers, valid: Validation, loaders: list, row: dict, progress_bar: bool) -> ValidScore:
    """Score the encoder now in ``towers`` and add the validation fields to ``row``."""
    t0 = time.perf_counter()
    model = acc.unwrap_model(towers)
    score = valid.score(acc, model.encoder, loaders, progress_bar, model.lower)
    row.update(score.row())
    row["valid_seconds"] = round(time.perf_counter() - t0, 2)
    return score


def _keep_best(acc, towers, score: ValidScore, row: dict, state: Progress, run: Run) -> None:
    """Save the encoder if it beats the best so far (patience counts the epochs that do not),
    note the best epoch in ``row``, and log it."""
    if score.selection > state.best:
        state.best, state.best_epoch, state.bad_epochs = score.selection, row["epoch"], 0
        state.seconds_to_best = state.seconds
        if acc.is_main_process:
            model = acc.unwrap_model(towers)
            model.save_encoder(model.encoder, run.encoder_dir)
    else:
        state.bad_epochs += 1
    row["best_epoch"] = state.best_epoch
    state.history.append(row)
    if acc.is_main_process:
        run.save_log(state.history)
        logger.info("epoch %d: %s", row["epoch"], ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                          if isinstance(v, float)))
    acc.wait_for_everyone()


def check_resumable(checkpoint: Path, current: dict) -> None:
    """Refuse to resume a checkpoint fine-tuned on another task, base encoder or settings."""
    path = checkpoint / RECORD_FILE
    recorded = read_json(path, MANIFEST_LIMIT) if path.is_file() else {}
    was, now = (flat_record(r) for r in (recorded, json.loads(json.dumps(current))))
    diffs = [f"{k} {was.get(k, 'absent')!r} (now {now.get(k, 'absent')!r})"
             for k in dict.fromkeys([*was, *now]) if was.get(k, _ABSENT) != now.get(k, _ABSENT)]
    if diffs:
        raise NotResumable(f"{checkpoint} was fine-tuned with other settings: {'; '.join(diffs)}. Keep its "
                           f"settings, or start afresh (resume=False deletes its checkpoints). Only "
                           f"{', '.join(RESUMABLE)} may change on resume.",
                           f"fine-tuned with other settings: {'; '.join(diffs)}", diffs)


_ABSENT = object()


def flat_record(record: dict) -> dict:
    """A checkpoint's record (task, base encoder fingerprint, settings) as one flat mapping."""
    return {**record.get("task", {}), **{f"{k} encoder": v for k, v in record.get("encoders", {}).items()},
            **record.get("config", {})}
