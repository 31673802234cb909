"""With no fit row (no training user active on both platforms, e.g. ``--overlap-fraction 0``),
or where validation prefers it to the fit (a few linked users fit noise), the model scores by
what the items are. A history's content (its items' LSA tokens root-n
pooled and each modality's whitened vector mean pooled, in the :class:`~.items.ContentSpace`
the platforms share) against each target item's content, plus the item's popularity among
the target's own users (``log(1 + users)``, scaled to mean square 1); each part's weight is
chosen on the validation users. Built as the same :class:`~fusion.InterestModel` as the fit:
the source item table holds the tokens part, each modality's projection its whitening, the
constant the popularity weight; the target's learned item vectors are
``[tokens, modalities..., popularity]``, and those of items its catalog gains after training
(the model's content head) ``[tokens, modalities..., 0]``.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch

from fusion import InterestConfig, InterestModel
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.closed_form.features import TOKENS, Featurizer
from multimodal_interest.training.closed_form.head import content_head
from multimodal_interest.training.closed_form.items import ContentSpace
from multimodal_interest.training.closed_form.rows import history_bags
from multimodal_interest.training.closed_form.search import Trial
from multimodal_interest.training.closed_form.validate import ndcg10
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.record import task_identity

log = logging.getLogger("multimodal_interest.training.closed_form")

POPULARITY = "popularity"
WEIGHTS = (0.0, 1.0)  # each content block off or on
POP_WEIGHTS = (0.0, 0.03, 0.1, 0.3, 1.0)  # the popularity column's weight


def history_content(space: ContentSpace, platform: str, bags: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per block ``[R, d_b]``: tokens root-n pooled over the history, modalities mean pooled
    over the items that have them (as :class:`~fusion.linear.LinearFusion` pools)."""
    bags = sp.csr_matrix(bags, dtype=np.float64)
    blocks = space.blocks(platform)
    kept = np.zeros(bags.shape[1])  # [N_s] items with some content: those the model's pooling counts
    for c in blocks.values():
        kept = np.maximum(kept, (np.abs(c).sum(1) > 0).astype(np.float64))
    n = np.maximum(bags @ kept, 1)
    out = {}
    for b, c in blocks.items():
        if b == TOKENS:
            out[b] = (bags @ c) / np.sqrt(n)[:, None]
        else:
            has = (np.abs(c).sum(1) > 0).astype(np.float64)
            count = np.maximum(bags @ has, 1)
            out[b] = (bags @ c) / count[:, None]
    return out


def popularity(task: ColdStartTask) -> np.ndarray:
    """``[N_t]`` ``log(1 + users)`` of each target item in training, scaled to mean square 1."""
    rows = task.train[task.train["platform"] == task.target].drop_duplicates(["user_idx", "item_idx"])
    pop = np.log1p(np.bincount(rows["item_idx"].to_numpy(), minlength=task.n_items[task.target]).astype(np.float64))
    sq = float((pop ** 2).mean())
    return pop / np.sqrt(sq) if sq > 0 else pop


def fit_zero_shot(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, feat: Featurizer,
                  valid_truth: sp.csr_matrix, valid_seen: sp.csr_matrix) -> tuple[InterestModel, list[Trial], Trial]:
    """``(model, trials, chosen)`` (see the module docstring)."""
    space = ContentSpace(task, features, feat.vectorizer)
    trials, best = zero_shot_trials(task, config, space, valid_truth, valid_seen)
    return build_zero_shot(task, features, config, feat, space, best.weights), trials, best


def zero_shot_trials(task: ColdStartTask, config: TrainConfig, space: ContentSpace, valid_truth: sp.csr_matrix,
                     valid_seen: sp.csr_matrix) -> tuple[list[Trial], Trial]:
    """``(trials, chosen)``: every weighting of the shared content blocks and the popularity
    column, scored on the validation users, and the best (the model is :func:`build_zero_shot`'s)."""
    src, tgt = space.blocks(task.source), space.blocks(task.target)
    shared = [b for b in src if b in tgt]
    if not shared:
        raise ValueError(f"{task.label}: no training user has items on both {task.source} and {task.target}, "
                         f"and the two platforms' items share no content (text or a modality) to score by")
    users = task.valid_users
    z = history_content(space, task.source, history_bags(task, users, config.model.max_len))
    pop = popularity(task)
    trials: list[Trial] = []
    for on in itertools.product(WEIGHTS, repeat=len(shared)):
        for gamma in POP_WEIGHTS:
            w = {**dict(zip(shared, on)), POPULARITY: gamma}
            if not any(w.values()):
                continue
            scores = sum((z[b] * w[b]) @ tgt[b].T for b in shared) + gamma * pop[None, :]
            t = Trial(0.0, w, ndcg10(torch.from_numpy(np.asarray(scores, dtype=np.float64)), valid_truth, valid_seen),
                      path="zero-shot")
            log.info("closed form, zero-shot: weights %s: validation NDCG@10 %.4f", w, t.valid_ndcg10)
            trials.append(t)
    return trials, max(trials, key=lambda t: t.valid_ndcg10)


def build_zero_shot(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, feat: Featurizer,
                    space: ContentSpace, weights: dict[str, float]) -> InterestModel:
    """The :class:`~fusion.InterestModel` whose scores are the zero-shot scores of ``weights``
    (a shared content block -> its weight, and :data:`POPULARITY`'s)."""
    src, tgt = space.blocks(task.source), space.blocks(task.target)
    shared = [b for b in src if b in tgt]
    pop = popularity(task)
    widths = {b: tgt[b].shape[1] for b in shared}
    width = sum(widths.values()) + 1
    settings = replace(config.model, kind="linear", dim=width)
    fusion = settings.fusion_config(features.dims, task.platforms, {task.source: task.n_items[task.source]})
    head = replace(settings, adapter="identity", item_bias=False, temperature=1.0, learn_temperature=False)
    targets = {task.target: head.target_config(task.n_items[task.target], space="learned")}
    model = InterestModel(InterestConfig(fusion, targets), features.fingerprints, info={"task": task_identity(task)})
    table = np.zeros((task.n_items[task.source], width))
    items = np.zeros((task.n_items[task.target], width))
    lin, col = model.fusion, 0
    with torch.no_grad():
        for m in features.dims:
            lin.items.proj[m].weight.zero_()
        for b in shared:
            cols = slice(col, col + widths[b])
            items[:, cols] = tgt[b]
            if b == TOKENS:
                table[:, cols] = src[b] * weights[b]
            else:  # the modality's projection: its whitening in the shared space, then its columns
                mu, w = space.whitening[b]
                proj = np.zeros((w.shape[0], width))
                proj[:, cols] = w * (weights[b] / space.scale[b])
                lin.items.proj[b].weight[0].copy_(torch.from_numpy(proj))
                lin.items.proj[b].whiten[0].copy_(torch.from_numpy(mu))
            col += widths[b]
        items[:, -1] = pop
        lin.items.ids[task.source].weight.copy_(torch.from_numpy(table))
        lin.const.copy_(torch.from_numpy(np.eye(width)[-1] * weights[POPULARITY]))
        model.spaces[task.target].learned.copy_(torch.from_numpy(items))
    model.set_id_presence(task.source, torch.from_numpy(np.abs(src.get(TOKENS, np.zeros((len(table), 1)))).sum(1) > 0))
    features.attach(model, task.platforms)
    # an item the catalog gains later: its content columns, no popularity
    n = model.config.targets[task.target].n_items
    model.set_content_head(task.target, content_head(space, [(tuple(shared), np.eye(width - 1), 0)], width, n,
                                                     features.item_ids.get(task.target)))
    return model
