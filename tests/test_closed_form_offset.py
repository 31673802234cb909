"""The untouched items' offset (:mod:`multimodal_interest.training.closed_form.offset`): it
lifts items nobody touched into the top 10 when validation cold items say it pays, keeps out
when they do not, and the saved model and its content head carry it."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.training.closed_form.offset import choose_offset, gaps
from multimodal_interest.training.closed_form.search import Trial
from multimodal_interest.training.closed_form.validate import csr_of, ndcg10

V, N, COLD = 400, 300, 60  # validation users, items, the last COLD of them untouched


def world(cold_relevant: bool, seed: int = 0):
    """Scores whose order among the untouched items is right but which sit ``3`` below the
    warm ones; each user's hidden item is warm, or (for half the users when ``cold_relevant``)
    the untouched item content ranks first for them."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(V, N))
    untouched = np.zeros(N, bool)
    untouched[-COLD:] = True
    scores[:, untouched] -= 3.0
    hidden = []
    for u in range(V):
        if cold_relevant and u % 2:
            hidden.append(np.array([N - COLD + int(np.argmax(scores[u, untouched]))]))
        else:
            hidden.append(np.array([int(np.argmax(scores[u, ~untouched]))]))
    truth, seen = csr_of(hidden, N), sp.csr_matrix((V, N))
    mask = sp.diags(untouched.astype(float))
    cold_truth = sp.csr_matrix(truth @ mask)
    cold_truth.eliminate_zeros()
    return scores, untouched, truth, seen, cold_truth


def trial_of(scores, truth, seen) -> Trial:
    return Trial(10.0, {"ids": 1.0}, ndcg10(torch.from_numpy(scores.copy()), truth, seen))


def test_the_gap_is_how_far_the_best_untouched_item_is_below_the_tenth():
    scores = np.array([[5.0, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1, -1, -2]])
    untouched = np.zeros(12, bool)
    untouched[-2:] = True
    seen = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 12))  # the best item is not ranked
    # ranked: 4 .. 0.1 (9 items), then -1: the 10th best is -1 itself, an untouched item
    assert gaps(scores, untouched, seen)[0] == 0.0
    assert gaps(scores, untouched, sp.csr_matrix((1, 12)))[0] == 0.1 - (-1)


def test_an_offset_is_kept_where_the_untouched_items_content_order_is_right():
    scores, untouched, truth, seen, cold_truth = world(cold_relevant=True)
    base = trial_of(scores, truth, seen)
    delta, chosen, info, trials = choose_offset(scores, untouched, truth, seen, cold_truth, base)
    assert delta is not None and delta > 0 and info["offset"] == "on"
    assert info["cold_valid_ndcg10"] > info["cold_valid_ndcg10_without"] + 0.1
    lifted = scores + delta * untouched[None, :]
    assert np.isclose(np.nanmean(ndcg10(torch.from_numpy(lifted), truth, seen)), chosen.valid_ndcg10)
    assert chosen.valid_ndcg10 > base.valid_ndcg10  # half the hidden items are untouched here
    assert len(trials) == 5 and chosen in trials


def test_no_offset_where_no_hidden_item_is_untouched():
    scores, untouched, truth, seen, _ = world(cold_relevant=False)
    base = trial_of(scores, truth, seen)
    delta, chosen, info, _ = choose_offset(scores, untouched, truth, seen, None, base)
    assert delta is None and chosen is base and info == {"offset": "off", "why": "no offset paid on validation"}
    # nothing to offset: every item touched
    delta, _, info, trials = choose_offset(scores, np.zeros(N, bool), truth, seen, None, base)
    assert delta is None and trials == [] and "no untouched" in info["why"]
