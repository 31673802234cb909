"""Fitting the linear interest model: rows, features, kernels, the search, the solve, the model.

With at most ``config.exact_rows`` fit rows the fit is exact: the search and the solve use
every row. With more, the search runs exactly on a seeded sample of ``exact_rows`` rows
(whole users), and the solve is the approximate one over every row (:mod:`.solve`) with
``config.landmarks`` landmark rows drawn from that sample; its ``lam`` is chosen again on the
validation users, since a fit on more rows wants less shrinkage per row. The run's log and the
saved model's ``info["fit"]`` say which path ran, on how many rows and users.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from fusion import InterestModel
from fusion.config import DEFAULT_DIMS
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import seen_on_target
from multimodal_interest.run import Run
from multimodal_interest.training.closed_form.blend import choose_blend
from multimodal_interest.training.closed_form.build import build_linear_model
from multimodal_interest.training.closed_form.cooc import choose_smoothing
from multimodal_interest.training.closed_form.features import Featurizer, Rows
from multimodal_interest.training.closed_form.head import attach_head
from multimodal_interest.training.closed_form.items import ContentChoice, ContentSpace, TargetContent, choose, norm_matched
from multimodal_interest.training.closed_form.kernels import block_scales, combine, cross_kernels
from multimodal_interest.training.closed_form.rows import FitRows, fit_rows, history_bags, whole_users
from multimodal_interest.training.closed_form.search import LAMBDAS, Trial, optimism, search
from multimodal_interest.training.closed_form.solve import (NystromSums, coefficients, exact_factors, landmark_factors,
                                                            process_share)
from multimodal_interest.training.closed_form.validate import Validator, csr_of, ndcg10
from multimodal_interest.training.closed_form.zero_shot import (build_zero_shot, fit_zero_shot, popularity,
                                                                zero_shot_trials)
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.record import task_identity
from multimodal_interest.training.result import TrainResult

log = logging.getLogger("multimodal_interest.training.closed_form")

RANK_LAMBDAS = (1.0, 3.0, 10.0)  # the saved rank-r model's lam: the searched one times these
CHUNK_ROWS = 4096  # fit rows featurized at once on the approximate path


@dataclass
class FitResult:
    model: InterestModel
    trials: list[Trial]
    best: Trial
    valid_ndcg10: float  # the saved model's (rank r), as the evaluator scores it
    seconds: float
    info: dict  # the path, rows, users, landmarks and the search's optimism (also in model.info["fit"])


def select(rows: Rows, idx: np.ndarray) -> Rows:
    return Rows(rows.users[idx], {b: z[idx] for b, z in rows.blocks.items()})


def fit_closed_form(task: ColdStartTask, features: ItemFeatures, config: TrainConfig,
                    lam: float | None = None, weights: dict[str, float] | None = None) -> FitResult:
    """Fit the linear model on ``task`` (see the package docstring). ``lam`` and ``weights``
    (block -> weight), when given, are used as they are instead of searched, and no content blend
    is added (:mod:`.blend`)."""
    from multimodal_interest.training.scoring import valid_ndcg10

    t0 = time.perf_counter()
    max_len, seed = config.model.max_len, config.seed
    every = fit_rows(task, max_len, seed)
    feat = Featurizer(task, features, every.bags)
    valid_users = task.valid_users
    n_t = task.n_items[task.target]
    valid_truth = csr_of(task.target_truth(valid_users), n_t)
    valid_seen = csr_of(seen_on_target(task, valid_users), n_t)
    if len(every) == 0:  # nobody teaches the mapping: what the items are must
        model, trials, best = fit_zero_shot(task, features, config, feat, valid_truth, valid_seen)
        info = {"path": "zero-shot", "fit_rows": 0, "fit_users": 0, "weights": best.weights}
        log.info("closed form: no fit row (no training user on both platforms): zero-shot by content, %s", info)
        model.info["fit"] = info
        return FitResult(model, trials, best, valid_ndcg10(model, task, valid_users, config.eval_batch_size),
                         time.perf_counter() - t0, info)
    exact = len(every) <= config.exact_rows
    sample = every if exact else every.select(whole_users(every.users, config.exact_rows, seed))
    fit = feat.rows(sample.users, sample.bags)
    valid_bags = history_bags(task, valid_users, max_len)
    valid = feat.rows(valid_users, valid_bags)
    scale = block_scales(fit)
    kff, kvf = cross_kernels(fit, fit, scale), cross_kernels(valid, fit, scale)
    within = task.source == task.target
    info = {"path": "exact" if exact else "nystrom", "fit_rows": len(every),
            "fit_users": int(len(np.unique(every.users))), "search_rows": len(sample)}
    log.info("closed form: %d fit rows of %d users (%s path; the search on %d rows), %d validation users, "
             "blocks %s", len(every), info["fit_users"], info["path"], len(sample), len(valid_users),
             {b: fit.blocks[b].shape[1] for b in kff})
    validator = Validator(kff, kvf, sample, within, valid_truth, valid_seen, seed)
    info["left_out_users"] = len(validator.groups)
    given = lam is not None or weights is not None
    if given:
        w = {b: 1.0 for b in kff} if weights is None else {b: float(weights.get(b, 0.0)) for b in kff}
        best, trials = Trial(LAMBDAS[3] if lam is None else lam, w, np.zeros(0)), []
    else:
        best, trials = search(validator, list(kff))
        info.update(optimism(trials))
    scorer = Scorer(valid_truth, valid_seen, trials)
    if exact:
        best, alpha, v, u_valid = solve_exact(validator, every, kvf, best, rank_of(config, n_t, len(every)),
                                              refit_lam=not given, scorer=scorer)
        carriers = fit
    else:
        m = min(config.landmarks, len(sample))
        marks = np.sort(np.random.default_rng(seed + 1).permutation(len(sample))[:m])
        carriers = select(fit, marks)
        best, alpha, v, u_valid = solve_nystrom(feat, every, carriers, valid, scale, best, len(sample),
                                                rank_of(config, n_t, m), scorer)
        info["landmarks"] = m
    v, best, info["smoothing"], smoothing_trials = choose_smoothing(
        task, v, lambda vectors: ndcg10(torch.from_numpy(u_valid @ vectors.T), valid_truth, valid_seen), best)
    trials += smoothing_trials
    space = ContentSpace(task, features, feat.vectorizer)
    content = TargetContent(space, task.target)
    choice, content_trials = target_content(task, content, v, every.targets, u_valid, valid_truth, valid_seen, best)
    trials += content_trials
    touched = np.asarray(every.targets.sum(0)).ravel() > 0
    cmap = choice.map or norm_matched(content, v, touched)
    best, v, info["content"] = choice.trial, choice.v, choice.info
    columns = None
    if not given:  # settings given are the ridge they name; the blend is a searched step
        columns, best, info["blend"], blend_trials = choose_blend(
            space, task.source, task.target, popularity(task), feat.kept, u_valid, v, valid_bags, valid_truth,
            valid_seen, best)
        trials += blend_trials
    model = build_linear_model(task, features, config, feat, carriers, scale, best.weights, alpha, v, columns)
    info["content"].update(attach_head(model, task.target, space, cmap, columns, features.item_ids.get(task.target)))
    if not given:  # what the items are alone, as with no linked user: kept where it beats the fit
        zero_shot, zero_trials, zero_best, info["zero_shot"] = zero_shot_candidate(
            task, features, config, feat, valid_truth, valid_seen, space, best)
        trials += zero_trials
        if zero_shot is not None:
            model, best = zero_shot, zero_best
            info = {**info, "path": f"zero-shot (over the {info['path']} fit)", "weights": zero_best.weights}
            log.info("closed form: the zero-shot model beats the fit on validation: %s", info["zero_shot"])
    model.info["fit"] = info
    score = valid_ndcg10(model, task, valid_users, config.eval_batch_size)
    log.info("closed form: %s", info)
    return FitResult(model, trials, best, score, time.perf_counter() - t0, info)


def zero_shot_candidate(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, feat: Featurizer,
                        valid_truth: sp.csr_matrix, valid_seen: sp.csr_matrix, space: ContentSpace,
                        best: Trial) -> tuple[InterestModel | None, list[Trial], Trial | None, dict]:
    """``(model or None, trials, chosen, info)``: the zero-shot model (:mod:`.zero_shot`), kept
    (model not None, and built) only when it beats the fit's ``best`` on validation
    (:meth:`~.search.Trial.beats`)."""
    try:
        trials, chosen = zero_shot_trials(task, config, space, valid_truth, valid_seen)
    except ValueError as e:  # the platforms share no content block
        return None, [], None, {"zero_shot": "not tried", "why": str(e)}
    kept = chosen.beats(best)
    info = {"zero_shot": "chosen" if kept else "not chosen",
            "valid_ndcg10": round(chosen.valid_ndcg10, 6), "fit_valid_ndcg10": round(best.valid_ndcg10, 6)}
    model = build_zero_shot(task, features, config, feat, space, chosen.weights) if kept else None
    return model, trials, chosen, info


def rank_of(config: TrainConfig, n_t: int, rows: int) -> int:
    """The saved model's width: ``dim`` (None: the linear default), at most the fit's rank."""
    return min(config.model.dim or DEFAULT_DIMS["linear"], n_t, rows)


@dataclass
class Scorer:
    """Scores a solve on the validation users and logs it as a trial (appended to ``trials``)."""

    truth: sp.csr_matrix
    seen: sp.csr_matrix
    trials: list[Trial]

    def __call__(self, base: Trial, lam: float, scores: np.ndarray, rank: int | None, path: str) -> Trial:
        t = Trial(lam, base.weights, ndcg10(torch.from_numpy(scores), self.truth, self.seen), rank=rank, path=path)
        log.info("closed form: %s solve, lam %g%s: validation NDCG@10 %.4f", path, lam,
                 f" at rank {rank}" if rank else "", t.valid_ndcg10)
        self.trials.append(t)
        return t


def solve_exact(validator: Validator, every: FitRows, kvf: dict, best: Trial, rank: int, refit_lam: bool,
                scorer: Scorer) -> tuple[Trial, np.ndarray, np.ndarray, np.ndarray]:
    """``(trial, alpha [n, r], V [N_t, r], the validation users' interest [V, r])`` of the exact
    reduced-rank fit. Below full rank, a larger ``lam`` smooths the fit, which a low rank may keep
    better: ``lam`` is chosen again (:data:`RANK_LAMBDAS`, ``V`` kept) for the model that is saved."""
    chol = validator.factor(best.lam, best.weights)
    v = exact_factors(chol, every.targets, best.lam, rank)
    kvf_w = combine(kvf, best.weights)
    full = rank >= min(every.targets.shape)
    chosen = None
    for factor in RANK_LAMBDAS if refit_lam and not full else (1.0,):
        c = chol if factor == 1.0 else validator.factor(best.lam * factor, best.weights)
        alpha = coefficients(c, every.targets, v)
        t = scorer(best, best.lam * factor, (kvf_w @ alpha) @ v.T, rank, "exact")
        if chosen is None or t.beats(chosen[0]):
            chosen = (t, alpha)
    t, alpha = chosen
    return t, alpha, v, kvf_w @ alpha


def solve_nystrom(feat: Featurizer, every: FitRows, carriers: Rows, valid: Rows, scale: dict, best: Trial,
                  searched_rows: int, rank: int, scorer: Scorer) -> tuple[Trial, np.ndarray, np.ndarray, np.ndarray]:
    """``(trial, alpha [m, r], V [N_t, r], the validation users' interest [V, r])`` of the
    approximate fit over every row through the landmark rows ``carriers``; its ``lam`` chosen
    again on the validation users (the search's, and scaled up by the rows it did not see)."""
    kll = combine(cross_kernels(carriers, carriers, scale), best.weights)

    def chunks():
        for lo in process_share(range(0, len(every), CHUNK_ROWS)):  # launched: this process's share
            part = every.select(np.arange(lo, min(lo + CHUNK_ROWS, len(every))))
            yield cross_kernels(feat.rows(part.users, part.bags), carriers, scale), part.targets

    sums = NystromSums(chunks(), best.weights, len(kll), every.targets.shape[1])
    kvl = combine(cross_kernels(valid, carriers, scale), best.weights)
    ratio = len(every) / searched_rows
    chosen = None
    for factor in sorted({1.0, math.sqrt(ratio), ratio}):  # scored on the validation users alone
        chol = sums.factor(kll, best.lam * factor)
        t = scorer(best, best.lam * factor, sums.scores(chol, kvl), None, "nystrom")
        if chosen is None or t.valid_ndcg10 > chosen[0].valid_ndcg10:
            chosen = (t, chol)
    t, chol = chosen
    alpha, v = landmark_factors(kll, sums.beta(chol), rank)
    u_valid = kvl @ alpha
    return scorer(t, t.lam, u_valid @ v.T, rank, "nystrom"), alpha, v, u_valid


def target_content(task: ColdStartTask, content: TargetContent, v: np.ndarray,
                   targets: sp.csr_matrix, u_valid: np.ndarray, valid_truth: sp.csr_matrix,
                   valid_seen: sp.csr_matrix, base: Trial) -> tuple[ContentChoice, list[Trial]]:
    """:func:`.items.choose` for this fit: ``u_valid [V, r]`` the validation users' interest
    (unnormalised), ``targets [n, N_t]`` the fit rows' items (who touched each item)."""
    counts = np.asarray(targets.sum(0)).ravel()
    if (counts > 0).all():  # nothing to map: every item has a learned vector
        return ContentChoice(v, base, {"content": "off", "why": "every target item is touched"}), []

    def ndcg_of(truth: sp.csr_matrix):
        return lambda vectors: ndcg10(torch.from_numpy(u_valid @ vectors.T), truth, valid_seen)

    scores_cold = None
    cold = task.valid_cold_items
    if cold is not None and len(cold):
        among = sp.csr_matrix(valid_truth[:, cold])  # [V, C] the hidden cold items, ranked among the cold
        if among.nnz:
            mask = np.zeros(valid_truth.shape[1])
            mask[cold] = 1.0
            over_all = sp.csr_matrix(valid_truth.multiply(mask[None, :]))  # [V, N_t] the same, in the catalog
            over_all.eliminate_zeros()

            def among_cold(vectors: np.ndarray) -> np.ndarray:
                return ndcg10(torch.from_numpy(u_valid @ vectors[cold].T), among)

            scores_cold = (among_cold, ndcg_of(over_all))
    return choose(content, v, counts, ndcg_of(valid_truth), scores_cold, base)


def train_linear(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, output_dir,
                 resume: bool = True) -> TrainResult:
    """``train`` for ``config.model.kind == "linear"``: fit, save the run (config, task, the
    trials in the log, the model), return a TrainResult. The fit takes minutes and has no
    checkpoints: a killed one is re-run whole. A folder holding a run with other settings is
    refused unless ``resume`` is False (its checkpoints are then deleted). Launched in several
    processes (``accelerate launch``), they share the approximate solve's sums and only the
    main process writes the run folder."""
    from accelerate import PartialState

    from multimodal_interest.parallel import cpu_only

    state = PartialState(cpu=cpu_only())
    run = Run(output_dir)
    if resume and run.holds_other_settings(config):
        raise ValueError(f"{run.folder} holds a run with other settings; use another output folder, "
                         f"or start it afresh (resume=False)")
    if state.is_main_process:
        if not resume:
            shutil.rmtree(run.checkpoints, ignore_errors=True)
        run.folder.mkdir(parents=True, exist_ok=True)
        run.save_config(config)
        run.save_task(task_identity(task))
    result = fit_closed_form(task, features, config)
    history = [t.row() for t in result.trials]
    history.append({"chosen": result.best.row(), "rank": int(result.model.spaces[task.target].learned.shape[1]),
                    "valid_ndcg10": result.valid_ndcg10, "seconds": round(result.seconds, 2), "fit": result.info})
    if state.is_main_process:
        run.save_log(history)
        run.save_model(result.model)
    state.wait_for_everyone()
    return TrainResult(result.model, 1, result.valid_ndcg10, 1, result.seconds, result.seconds, history)
