"""iALS (fold-in of cold users) and BM25 lexical kNN: known answers on tiny tasks, bad
settings, and a dataset without item text."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from _tasks import make_task, planted_task

from multimodal_interest.baselines import BASELINES, create_baseline, tune
from multimodal_interest.baselines.base import MAX_GRID
from multimodal_interest.baselines.bm25knn import bm25_weights
from multimodal_interest.evaluate import evaluate
from multimodal_interest.experiment import run_methods
from multimodal_interest.features import ItemFeatures


@pytest.fixture(scope="module")
def planted():
    return planted_task()[0]


def test_ials_fold_in_solves_the_weighted_least_squares(planted):
    model = create_baseline("ials", factors=8, regularization=0.5, alpha=7.0, iterations=5).fit(planted)
    users = np.array([planted.test_users[0], planted.valid_users[3], planted.test_users[0]])
    got = model.fold_in(users)
    y = model.als.item_factors.astype(np.float64)  # [n_src + n_tgt, 8]; source items first
    for row, u in zip(got, users):
        seen = np.unique(planted.train.query("user_idx == @u and platform == 'src'")["item_idx"])
        c = np.ones(len(y))
        c[seen] = 7.0  # confidence alpha on the observed pairs, 1 elsewhere
        p = np.zeros(len(y))
        p[seen] = 1.0
        want = np.linalg.solve(y.T @ (c[:, None] * y) + 0.5 * np.eye(8), y.T @ (c * p))
        np.testing.assert_allclose(row, want, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(got[0], got[2])


def test_ials_fold_in_recovers_trained_factors_of_source_only_users(planted):
    # trained on source rows only, a training user's factor is the fold-in of their source rows
    src = planted.train.query("platform == 'src'")
    rows = list(zip(src["user_idx"], src["platform"], src["item_idx"]))
    task = make_task(rows + [(0, "tgt", 0)], planted.n_items, valid=[1100, 1101], test=[1102, 1103])
    model = create_baseline("ials", factors=8, regularization=1.0, iterations=40).fit(task)
    users = np.arange(0, 1000, 37)
    trained = model.als.user_factors[users]
    folded = model.fold_in(users)
    cos = (trained * folded).sum(1) / np.linalg.norm(trained, axis=1) / np.linalg.norm(folded, axis=1)
    assert cos.min() > 0.99, cos.min()
    np.testing.assert_allclose(folded, trained, rtol=0.05, atol=0.02)


def test_ials_beats_popularity_and_scores_users_without_history(planted):
    pop = evaluate(create_baseline("popularity").fit(planted).score, planted, planted.test_users)
    model = create_baseline("ials", factors=16).fit(planted)
    res = evaluate(model.score, planted, planted.test_users)
    assert res.values["ndcg@10"].mean() > pop.values["ndcg@10"].mean() + 0.3
    lonely = model.score(np.array([planted.n_users - 1]))  # no source rows: popularity order
    assert torch.isfinite(lonely).all()
    assert torch.equal(lonely[0].argsort(descending=True)[:5],
                       pop_scores(planted).argsort(descending=True)[:5])


def pop_scores(task):
    return create_baseline("popularity").fit(task).score(np.array([0]))[0]


def test_grids_fit_the_tuning_budget():
    for name in ("ials", "bm25-knn"):
        assert 1 < len(BASELINES[name].grid) <= MAX_GRID


@pytest.mark.parametrize("name, options, match", [
    ("ials", {"factors": 0}, "factors must be a positive integer"),
    ("ials", {"regularization": -1.0}, "regularization must be > 0"),
    ("ials", {"alpha": 0.0}, "alpha must be > 0"),
    ("ials", {"iterations": 2.5}, "iterations must be a positive integer"),
    ("ials", {"factor": 8}, r"ials: .*unexpected keyword.*options are \["),
    ("bm25-knn", {"weighting": "bm52"}, "weighting must be one of"),
    ("bm25-knn", {"b": 1.5}, r"b must be in \[0.0, 1.0\]"),
    ("bm25-knn", {"k1": float("nan")}, "k1 must be >= 0"),
    ("bm25-knn", {"pop_weight": -0.1}, "pop_weight must be >= 0"),
    ("bm25-knn", {"min_df": 0}, "min_df must be an integer >= 1"),
])
def test_bad_settings_are_refused(name, options, match):
    with pytest.raises(ValueError, match=match):
        create_baseline(name, **options)


# a tiny catalog: the user's history shares the rare words "sable" and "kolinsky" with
# target item 2, and only the common word "set" with the others
SOURCE_TEXTS = ["Kolinsky sable watercolor brush set", "Sable round brush", "Canvas panel set"]
TARGET_TEXTS = ["Stapler set", "Paper clips set, large", "Kolinsky sable desk duster",
                "Pen set", "Sticky notes set"]


def catalog_task():
    rows = [(u, "src", 2) for u in range(4)] + [(u, "tgt", t) for u in range(4) for t in (0, 1, 3, 4)]
    rows += [(4, "src", 0), (4, "src", 1), (4, "src", 2), (4, "tgt", 2),
             (5, "src", 2), (5, "tgt", 0)]
    task = make_task(rows, {"src": 3, "tgt": 5}, valid=[5], test=[4])
    return task, {"src": SOURCE_TEXTS, "tgt": TARGET_TEXTS}


@pytest.mark.parametrize("weighting", ["bm25", "tfidf"])
def test_bm25_knn_ranks_the_item_sharing_rare_words_first(weighting):
    task, texts = catalog_task()
    model = create_baseline("bm25-knn", weighting=weighting).fit(task, item_texts=texts)
    scores = model.score(np.array([4, 5]))
    assert scores.shape == (2, 5)
    assert int(scores[0].argmax()) == 2  # the duster, despite its popularity of zero
    assert scores[0, 2] > 2 * scores[0, [0, 1, 3, 4]].max()
    # user 5 has only the canvas panel set: "set" items beat the duster
    assert scores[1, 2] < scores[1, [0, 1, 3, 4]].min()
    # a heavy popularity prior overrides the words
    heavy = create_baseline("bm25-knn", weighting=weighting, pop_weight=100.0).fit(task, item_texts=texts)
    assert int(heavy.score(np.array([4]))[0].argmax()) != 2


def test_bm25_weights_follow_the_formula():
    import scipy.sparse as sp
    counts = sp.csr_matrix(np.array([[2, 0, 1], [0, 1, 1], [0, 0, 3]], dtype=float))
    w = bm25_weights(counts, k1=1.2, b=0.75).toarray()
    length, avg = np.array([3, 2, 3]), 8 / 3
    df = np.array([1, 1, 3])
    idf = np.log(1 + (3 - df + 0.5) / (df + 0.5))
    tf = counts.toarray()
    want = idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length[:, None] / avg))
    np.testing.assert_allclose(w, want)


def test_tune_runs_bm25_knn_within_the_budget():
    task, texts = catalog_task()
    tuned = tune("bm25-knn", task, item_texts=texts)
    assert len(tuned.trials) == len(BASELINES["bm25-knn"].grid)


def test_a_dataset_without_text_is_refused_clearly(planted, tmp_path, caplog):
    with pytest.raises(ValueError, match=r"bm25-knn needs the text of platform 'src'.*no item text"):
        create_baseline("bm25-knn").fit(planted)
    blank = {"src": [""] * 200, "tgt": ["pen"] * 200}
    with pytest.raises(ValueError, match=r"platform 'src'.*no item text"):
        create_baseline("bm25-knn").fit(planted, item_texts=blank)
    with pytest.raises(ValueError, match=r"platform 'tgt'.*got 3 texts"):
        create_baseline("bm25-knn").fit(planted, item_texts={"src": ["a"] * 200, "tgt": ["b"] * 3})
    with caplog.at_level(logging.WARNING, logger="multimodal_interest.experiment"):
        runs = run_methods(planted, ["bm25-knn", "popularity"], ItemFeatures(), tmp_path,
                           sampled=False, progress=False)
    assert set(runs) == {"popularity"}
    assert "bm25-knn skipped: it needs item text, and there is none on src or tgt" in caplog.text
