"""The closed-form and neighbourhood baselines (ease, ease-merged, rp3beta, user-knn,
item-knn) on tiny hand-made tasks whose right answer is known, against scikit-learn where
it computes the same thing, and their errors on bad settings."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _tasks import make_task, planted_task
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import cosine_similarity

from multimodal_interest.baselines import BASELINES, create_baseline, tune
from multimodal_interest.baselines.base import MAX_GRID
from multimodal_interest.baselines.itemknn import TIE_BREAK, top_k_per_row, user_item_matrix
from multimodal_interest.evaluate import evaluate

CF = ["ease", "ease-merged", "rp3beta", "user-knn", "item-knn"]


def tiny() -> tuple:
    """Six training users with items on both platforms, one cold test user (6) and one cold
    valid user (7). Source items 0..3, target items 0..4; chosen so that user 6's
    co-occurrence counts and cosine user-kNN scores have no ties."""
    src = {0: [0, 1], 1: [0], 2: [1, 2], 3: [2, 3], 4: [0, 3], 5: [1], 6: [0, 1], 7: [2]}
    tgt = {0: [0, 1], 1: [2], 2: [1, 3], 3: [3, 4], 4: [0, 3], 5: [1], 6: [1], 7: [3]}
    rows = [(u, "src", i) for u, items in src.items() for i in items]
    rows += [(u, "tgt", j) for u, items in tgt.items() for j in items]
    task = make_task(rows, {"src": 4, "tgt": 5}, valid=[7], test=[6])
    return task, src, tgt


def dense(task, platform, users) -> np.ndarray:
    return user_item_matrix(task, platform, np.asarray(users)).toarray()


@pytest.mark.parametrize("name", ["ease", "ease-merged"])
def test_primal_and_dual_give_the_same_scores(name):
    task, _ = planted_task(n_users=300)
    users = np.concatenate([task.test_users, task.valid_users[:10]])
    for lam in (0.5, 30.0):
        primal = create_baseline(name, lam=lam, solver="primal").fit(task)
        dual = create_baseline(name, lam=lam, solver="dual").fit(task)
        torch.testing.assert_close(primal.score(users), dual.score(users), rtol=1e-4, atol=1e-5)
    # auto takes the smaller Gram: 200 source (+200 target) items vs 100 overlapping users
    assert create_baseline(name, lam=1.0).fit(task).solver == "dual"


def test_ease_equals_scikit_learn_ridge():
    task, src, tgt = tiny()
    train = list(range(6))
    x, y = dense(task, "src", train), dense(task, "tgt", train)
    for lam in (0.3, 4.0):
        ridge = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(x, y)
        want = ridge.predict(dense(task, "src", [6, 7]))  # [2, n_tgt]
        for solver in ("primal", "dual"):
            got = create_baseline("ease", lam=lam, solver=solver).fit(task).score(np.array([6, 7]))
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_ease_merged_is_stecks_closed_form_on_the_merged_catalog():
    task, _, _ = tiny()
    train = list(range(6))
    z = np.hstack([dense(task, "src", train), dense(task, "tgt", train)])  # [6, 4 + 5]
    lam = 2.0
    p = np.linalg.inv(z.T @ z + lam * np.eye(z.shape[1]))
    b = np.eye(z.shape[1]) - p / np.diag(p)  # Steck (2019), eq. 8
    x = np.hstack([dense(task, "src", [6]), np.zeros((1, 5))])  # a cold user: no target items
    want = (x @ b)[:, 4:]
    for solver in ("primal", "dual"):
        got = create_baseline("ease-merged", lam=lam, solver=solver).fit(task).score(np.array([6]))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # ... and it is not the cross-block ridge
    ridge = create_baseline("ease", lam=lam).fit(task).score(np.array([6]))
    assert not np.allclose(ridge.numpy(), want, atol=1e-3)


@pytest.mark.parametrize("name", ["ease", "ease-merged"])
def test_ease_with_huge_lambda_ranks_by_co_occurrence(name):
    # lam -> infinity: W -> X^T Y / lam, so a user's scores are the counts of training users
    # who share one of their source items and have the target item
    task, src, tgt = tiny()
    got = create_baseline(name, lam=1e6).fit(task).score(np.array([6]))[0].numpy()
    counts = np.zeros(5)
    for v in range(6):
        counts[tgt[v]] += len(set(src[v]) & set(src[6]))  # user 6 has source items 0, 1
    pop = np.bincount(np.concatenate([tgt[v] for v in range(6)]), minlength=5)  # the tie-break
    assert np.lexsort((-pop, -counts)).tolist() == np.argsort(-got, kind="stable").tolist()
    np.testing.assert_allclose(got * 1e6, counts, rtol=1e-3, atol=1e-3)


def test_rp3beta_alpha_one_beta_zero_is_the_plain_random_walk():
    task, src, tgt = tiny()
    walk = np.zeros(5)  # user 6 -> source item i -> training user v -> target item j
    holders = {i: [v for v in range(6) if i in src[v]] for i in range(4)}
    for i in src[6]:
        for v in holders[i]:
            for j in tgt[v]:
                walk[j] += 1 / len(src[6]) * 1 / len(holders[i]) * 1 / len(tgt[v])
    got = create_baseline("rp3beta", alpha=1.0, beta=0.0).fit(task).score(np.array([6]))[0].numpy()
    np.testing.assert_allclose(got, walk, atol=2 * TIE_BREAK)
    assert got.sum() == pytest.approx(1.0, abs=1e-6)  # a walk: probabilities
    # beta divides by the target item's degree ** beta; alpha raises every step
    deg = np.bincount(np.concatenate([tgt[v] for v in range(6)]), minlength=5).astype(float)
    penalised = create_baseline("rp3beta", alpha=1.0, beta=0.5).fit(task).score(np.array([6]))[0].numpy()
    np.testing.assert_allclose(penalised, walk / deg ** 0.5, atol=2 * TIE_BREAK)
    # alpha = 0 counts paths: item kNN's raw co-occurrence
    paths = create_baseline("rp3beta", alpha=0.0).fit(task).score(np.array([6, 7]))
    counts = create_baseline("item-knn", source_exp=0.0, target_exp=0.0).fit(task).score(np.array([6, 7]))
    torch.testing.assert_close(paths, counts)


def test_user_knn_over_all_users_ranks_a_twins_target_items_first():
    task, src, tgt = tiny()  # cold user 6 has source items {0, 1}: user 0's exactly
    model = create_baseline("user-knn", k=None, shrink=0.0).fit(task)
    scores = model.score(np.array([6]))[0].numpy()
    top = set(np.argsort(-scores)[:2].tolist())
    assert top == set(tgt[0])
    # with shrink 0 and power 1 the weights are scikit-learn's cosine similarities
    train = list(range(6))
    sim = cosine_similarity(dense(task, "src", [6]), dense(task, "src", train))  # [1, 6]
    np.testing.assert_allclose(scores, (sim @ dense(task, "tgt", train))[0], atol=2 * TIE_BREAK)
    # k = 1 keeps the twin alone
    one = create_baseline("user-knn", k=1).fit(task).score(np.array([6]))[0].numpy()
    assert set(np.flatnonzero(one > 1e-6).tolist()) == set(tgt[0])


def test_item_knn_cosine_equals_scikit_learn_and_k_keeps_neighbours_per_target_item():
    task, src, tgt = tiny()
    train = list(range(6))
    x, y = dense(task, "src", train), dense(task, "tgt", train)
    model = create_baseline("item-knn", source_exp=0.5, target_exp=0.5).fit(task)
    np.testing.assert_allclose(model.sim.toarray(), cosine_similarity(x.T, y.T), atol=1e-12)
    two = create_baseline("item-knn", source_exp=0.5, target_exp=0.5, k=1).fit(task)
    assert (np.diff(two.sim.tocsc().indptr) <= 1).all()
    # the kept neighbour of each target item is its most similar source item
    full = model.sim.toarray()
    for j in range(5):
        if full[:, j].max() > 0:
            assert two.sim[:, j].toarray().ravel().argmax() == full[:, j].argmax()
    # shrink and power: (co / (n_i^a n_j^b + shrink)) ** power
    co = x.T @ y
    n_i, n_j = x.sum(0), y.sum(0)
    other = create_baseline("item-knn", source_exp=1.0, target_exp=0.0, shrink=2.0, power=2.0).fit(task)
    want = (co / (n_i[:, None] + 2.0)) ** 2
    np.testing.assert_allclose(other.sim.toarray(), want, atol=1e-12)


def test_top_k_per_row_keeps_the_largest_and_breaks_ties_by_column():
    m = sp.csr_matrix(np.array([[0, 3, 1, 3], [5, 0, 0, 0], [1, 1, 1, 1]], dtype=float))
    got = top_k_per_row(m, 2).toarray()
    np.testing.assert_array_equal(got, [[0, 3, 0, 3], [5, 0, 0, 0], [1, 1, 0, 0]])
    assert (top_k_per_row(m, None) != m).nnz == 0


@pytest.mark.parametrize("name", CF)
def test_cf_baselines_beat_popularity_on_planted_signal_and_handle_edge_users(name):
    task, _ = planted_task()
    pop = evaluate(create_baseline("popularity").fit(task).score, task, task.test_users)
    tuned = tune(name, task)
    res = evaluate(tuned.model.score, task, task.test_users)
    assert res.values["ndcg@10"].mean() > pop.values["ndcg@10"].mean() + 0.3
    assert len(tuned.trials) == len(BASELINES[name].grid) <= MAX_GRID
    # a cold user with no source rows at all gets the popularity order (the tie-break)
    lonely = tuned.model.score(np.array([task.n_users - 1]))[0]
    assert torch.isfinite(lonely).all()
    order = torch.argsort(lonely, descending=True, stable=True)
    pop_scores = create_baseline("popularity").fit(task).score(np.array([0]))[0]
    assert (pop_scores[order][:-1] >= pop_scores[order][1:]).all()
    # repeated and unsorted users score as their rows
    users = task.test_users[[3, 1, 3]]
    s = tuned.model.score(users)
    torch.testing.assert_close(s[0], s[2])
    torch.testing.assert_close(s[1], tuned.model.score(task.test_users[[1]])[0])


@pytest.mark.parametrize("name", CF)
def test_within_platform_no_item_or_user_is_its_own_neighbour(name):
    # source = target: the user's own history is in train; a plain ridge X -> X would learn
    # the identity, so ease is Steck's zero-diagonal EASE there
    rows = [(u, "p", i) for u, items in {0: [0, 1, 2], 1: [0, 1], 2: [1, 2], 3: [0, 2], 4: [0, 1, 3],
                                         5: [0, 1]}.items() for i in items]
    rows += [(5, "p", 2)]  # user 5's hidden test item
    task = make_task(rows, {"p": 4}, valid=[], test=[5], source="p", target="p", warm=True)
    task.train = task.train[~((task.train["user_idx"] == 5) & (task.train["item_idx"] == 2))]
    task.holdout = task.holdout[task.holdout["item_idx"] == 2]
    model = create_baseline(name).fit(task)
    if name in ("ease", "ease-merged"):
        for solver in ("primal", "dual"):
            other = create_baseline(name, solver=solver).fit(task)
            torch.testing.assert_close(other.score(np.array([5])), model.score(np.array([5])),
                                       rtol=1e-4, atol=1e-6)
    scores = model.score(np.array([5]))[0]
    unseen = scores[[2, 3]]
    assert unseen[0] > unseen[1], f"{name}: item 2 co-occurs with 0 and 1, item 3 once"


@pytest.mark.parametrize("name, options, message", [
    ("ease", {"lam": -1.0}, r"ease: lam must be a finite number > 0; got -1.0"),
    ("ease", {"lam": 0.0}, r"lam must be a finite number > 0"),
    ("ease-merged", {"solver": "qr"}, r"solver must be one of \('auto', 'primal', 'dual'\); got 'qr'"),
    ("rp3beta", {"alpha": -1.0}, r"rp3beta: alpha must be >= 0.0; got -1.0"),
    ("rp3beta", {"beta": -0.5}, r"rp3beta: beta must be >= 0.0; got -0.5"),
    ("user-knn", {"k": 0}, r"user-knn: .*k a positive integer or None; got power=1.0, k=0"),
    ("user-knn", {"shrink": -1.0}, r"user-knn: shrink must be >= 0.0"),
    ("item-knn", {"k": 0}, r"item-knn: .*k a positive integer"),
    ("item-knn", {"k": 2.5}, r"item-knn: .*k a positive integer"),
    ("item-knn", {"source_exp": float("nan")}, r"item-knn: source_exp must be >= 0.0; got nan"),
])
def test_bad_settings_are_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        create_baseline(name, **options)
