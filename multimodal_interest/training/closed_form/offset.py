"""An offset for the target items nobody touched in training, chosen on the validation users.

A touched item's score carries its popularity (the learned vector, the blend's popularity
column); an untouched item's comes from its content alone (:mod:`.items`, :mod:`.blend`), so in
a catalog of thousands it never reaches a top 10, however well its content matches. Scaling
its content vector up lifts the noise with the match. The offset adds one constant ``delta``
to every untouched item's score instead: the order among untouched items stays what content
made it, and an untouched item enters a user's top 10 only where its content score is close
to the top warm ones.

``delta`` is tried at quantiles (:data:`SHARES`) of the validation users' gaps between their
10th best score and their best untouched item's: at share ``q`` about ``q`` of them get an
untouched item into their top 10. With validation cold items, the offset that ranks them best
over the whole catalog is kept if it loses no more than noise on every hidden item
(:func:`~.items.not_worse`); without, an offset must beat none on every hidden item
(:meth:`~.search.Trial.beats`). The model holds it as one more column: 1 for an untouched item
(and for an item the catalog gains after training, :mod:`fusion.content`), ``delta`` on the
constant.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.training.closed_form.items import not_worse
from multimodal_interest.training.closed_form.search import MIN_GAIN, Trial
from multimodal_interest.training.closed_form.validate import ndcg10

log = logging.getLogger("multimodal_interest.training.closed_form")

SHARES = (0.05, 0.1, 0.25, 0.5, 0.75)  # of validation users whose top 10 the offset opens to an untouched item


def gaps(scores: np.ndarray, untouched: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """``[V]`` each user's 10th best score less their best untouched item's (items of ``seen``
    not ranked); ``scores [V, N_t]``."""
    s = scores.copy()
    coo = seen.tocoo()
    s[coo.row, coo.col] = -np.inf
    k = min(10, s.shape[1]) - 1
    tenth = -np.partition(-s, k, axis=1)[:, k]
    return tenth - s[:, untouched].max(1)


def choose_offset(scores: np.ndarray, untouched: np.ndarray, truth: sp.csr_matrix, seen: sp.csr_matrix,
                  cold_truth: sp.csr_matrix | None, base: Trial) -> tuple[float | None, Trial, dict, list[Trial]]:
    """``(delta or None, chosen trial, info, trials)`` (see the module docstring). ``scores
    [V, N_t]`` the validation users' scores so far, ``untouched [N_t]`` the items nobody touched,
    ``truth`` / ``seen`` their hidden and their not-ranked items, ``cold_truth`` (None: the task
    has no validation cold items) their hidden cold items, ``base`` the trial of ``scores``."""
    if not untouched.any() or untouched.all():
        return None, base, {"offset": "off", "why": "no untouched target item" if not untouched.any()
                            else "every target item is untouched"}, []
    g = gaps(scores, untouched, seen)
    g = g[np.isfinite(g) & (g > 0)]
    if not len(g):
        return None, base, {"offset": "off", "why": "untouched items already reach every top 10"}, []
    column = untouched.astype(scores.dtype)[None, :]

    def cold_ndcg(delta: float) -> float:
        return float(np.nanmean(ndcg10(torch.from_numpy(scores + delta * column), cold_truth, seen)))

    base_cold = cold_ndcg(0.0) if cold_truth is not None else None
    trials: list[Trial] = []
    chosen, setting, chosen_cold = base, None, base_cold
    for q in SHARES:
        delta = float(np.quantile(g, q))
        t = Trial(base.lam, {**base.weights, "untouched_offset": delta}, ndcg10(torch.from_numpy(scores + delta * column),
                  truth, seen), rank=base.rank, path=f"untouched offset share={q:g}")
        trials.append(t)
        if cold_truth is None:
            log.info("closed form: %s (delta %.4g): validation NDCG@10 %.4f", t.path, delta, t.valid_ndcg10)
            if t.beats(chosen):
                chosen, setting = t, (q, delta)
            continue
        cold = cold_ndcg(delta)
        log.info("closed form: %s (delta %.4g): validation NDCG@10 %.4f, on the cold items over the catalog %.4f",
                 t.path, delta, t.valid_ndcg10, cold)
        if cold > chosen_cold + MIN_GAIN and not_worse(t, base):
            chosen, setting, chosen_cold = t, (q, delta), cold
    if setting is None:
        return None, base, {"offset": "off", "why": "no offset paid on validation"}, trials
    info = {"offset": "on", "share": setting[0], "delta": setting[1]}
    if cold_truth is not None:
        info.update(cold_valid_ndcg10=round(chosen_cold, 6), cold_valid_ndcg10_without=round(base_cold, 6))
    return setting[1], chosen, info, trials
