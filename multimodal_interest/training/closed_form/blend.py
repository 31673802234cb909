"""The fit's scores plus content similarity: what the items are, for every target item.

With few linked users the fit's vectors are noisy, and an item nobody touched has only the
content map's guess (:mod:`.items`); the zero-shot scores (:mod:`.zero_shot`) need no linked user
at all. The blend adds them to the fit's:

    score(user, j) = u . V_j  +  w (z_user . c_j + gamma pop_j)

``z_user`` the history's content (each chosen block of the :class:`~.items.ContentSpace`
concatenated, root-n pooled as the model's item table pools), ``c_j`` the target item's,
``pop_j`` its popularity among the target's own users (:func:`~.zero_shot.popularity`).
``w`` is relative: times the ratio of the two parts' root mean square scores on the
validation users. Which blocks, ``w`` and ``gamma`` are chosen on the validation users, and
the blend is kept only when it beats the fit alone (:meth:`~.search.Trial.beats`). The model
holds it as extra columns: the source item table's rows gain ``w z_j``, the target's learned
vectors ``[c_j, pop_j]``, the constant ``w gamma`` on the popularity column.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.training.closed_form.items import ContentSpace
from multimodal_interest.training.closed_form.search import Trial
from multimodal_interest.training.closed_form.validate import ndcg10

log = logging.getLogger("multimodal_interest.training.closed_form")

WEIGHTS = (0.1, 0.3, 1.0, 3.0, 10.0)  # the content part's weight, relative to the fit's scores
GAMMAS = (0.0, 0.1, 0.3)  # the popularity column's, relative to the content scores


@dataclass
class ContentColumns:
    """The blend as the model holds it: extra columns of the interest and item vectors."""

    blocks: list[str]  # the content blocks whose columns these are, in order (then popularity)
    source: np.ndarray  # [N_s, e] each source item's row in the item table (weight included)
    target: np.ndarray  # [N_t, e] each target item's content and popularity
    const: np.ndarray  # [e] the constant's part: w gamma on the popularity column


def choose_blend(space: ContentSpace, source: str, target: str, pop: np.ndarray, kept: np.ndarray,
                 u_valid: np.ndarray, v: np.ndarray, bags: sp.csr_matrix, truth: sp.csr_matrix,
                 seen: sp.csr_matrix, base: Trial) -> tuple[ContentColumns | None, Trial, dict, list[Trial]]:
    """``(columns or None, chosen trial, info, trials)`` (see the module docstring).
    ``u_valid [V, r]`` the validation users' interest (unnormalised), ``v [N_t, r]`` the item
    vectors, ``bags [V, N_s]`` their histories, ``kept [N_s]`` the items the model's pooling
    counts, ``base`` the trial of ``u_valid @ v.T``."""
    src, tgt = space.blocks(source), space.blocks(target)
    shared = sorted(b for b in src if b in tgt)
    if not shared:
        return None, base, {"blend": "off", "why": "the platforms share no content block"}, []
    bags = sp.csr_matrix(bags, dtype=np.float64)
    root_n = np.sqrt(np.maximum(bags @ kept.astype(np.float64), 1))[:, None]  # [V, 1]
    fit = u_valid @ v.T  # [V, N_t]
    parts = {b: ((bags @ src[b]) / root_n) @ tgt[b].T for b in shared}  # [V, N_t] each
    fit_rms = float(np.sqrt((fit ** 2).mean()))
    trials: list[Trial] = []
    chosen, setting = base, None
    for on in itertools.product((0, 1), repeat=len(shared)):
        blocks = [b for b, o in zip(shared, on) if o]
        if not blocks:
            continue
        content = sum(parts[b] for b in blocks)
        rms = float(np.sqrt((content ** 2).mean()))
        if rms == 0 or fit_rms == 0:
            continue
        for gamma, w in itertools.product(GAMMAS, WEIGHTS):
            scale = w * fit_rms / rms
            scores = fit + scale * (content + gamma * rms * pop[None, :])
            t = Trial(base.lam, {**base.weights, **{f"blend_{b}": 1.0 for b in blocks}, "blend": w,
                                 "blend_popularity": gamma},
                      ndcg10(torch.from_numpy(scores), truth, seen), rank=base.rank,
                      path=f"content blend {'+'.join(blocks)} w={w:g} gamma={gamma:g}")
            log.info("closed form: %s: validation NDCG@10 %.4f", t.path, t.valid_ndcg10)
            trials.append(t)
            if t.beats(chosen):
                chosen, setting = t, (blocks, scale, gamma * rms, w, gamma)
    if setting is None:
        return None, base, {"blend": "off", "why": "content scores did not pay on validation"}, trials
    blocks, scale, pop_weight, w, gamma = setting
    columns = ContentColumns(
        blocks=blocks,
        source=np.concatenate([src[b] * scale for b in blocks] + [np.zeros((len(src[blocks[0]]), 1))], 1),
        target=np.concatenate([tgt[b] for b in blocks] + [pop[:, None]], 1),
        const=np.r_[np.zeros(sum(tgt[b].shape[1] for b in blocks)), scale * pop_weight])
    return columns, chosen, {"blend": "on", "blocks": blocks, "w": w, "gamma": gamma}, trials
