"""attr2factor: iALS whose cold target items get factors mapped from their content (Gantner
et al. 2010). On the synthetic world, whose item content carries the items' latent position."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import synthetic_task

from multimodal_interest.baselines import BASELINES, MAX_GRID, create_baseline
from multimodal_interest.baselines.attr2factor import RidgeMap, warm_target_items
from multimodal_interest.data.protocols import Protocol, make_items_cold
from multimodal_interest.evaluate import ItemSlices, evaluate

OPTIONS = {"factors": 8, "map_lam": 1.0}


@pytest.fixture(scope="module")
def world():
    task, features = synthetic_task()
    return task, {p: v["text"] for p, v in features.vectors.items()}


@pytest.fixture(scope="module")
def cold(world):
    """Half of the target's items cold; attr2factor and iALS of the same settings on it."""
    task, vectors = world
    task = make_items_cold(task, 0.5, seed=0)
    mapped = create_baseline("attr2factor", **OPTIONS).fit(task, vectors)
    ials = create_baseline("ials", factors=OPTIONS["factors"]).fit(task)
    return task, vectors, mapped, ials


def _cold_ndcg(model, task) -> float:
    """Mean NDCG@10 of the test users' hidden cold items, ranked among the test cold items."""
    result = evaluate(model.score, task, task.test_users, slices=ItemSlices.for_test(task))
    return float(result.slices["cold-candidates"].values["ndcg@10"].mean())


def test_the_content_map_ranks_the_hidden_cold_items_that_ials_cannot(cold):
    task, _, mapped, ials = cold
    warm = warm_target_items(task)
    assert not warm[task.cold_items].any() and warm.sum() == task.n_items["b"] - len(task.cold_items)
    # iALS never updated a cold item's factor: every cold item scores the same
    cold_scores = ials.score(task.test_users[:10])[:, task.test_cold_items]
    assert torch.equal(cold_scores, cold_scores[:, :1].expand_as(cold_scores))
    ours, theirs = _cold_ndcg(mapped, task), _cold_ndcg(ials, task)
    assert ours > theirs + 0.2, (ours, theirs)


def test_warm_items_keep_their_ials_scores(cold):
    task, _, mapped, ials = cold
    users = np.concatenate([task.test_users, task.valid_users[:5], [task.n_users - 1]])
    a, b = mapped.score(users), ials.score(users)
    warm = warm_target_items(task)
    torch.testing.assert_close(a[:, warm], b[:, warm], rtol=0, atol=1e-12)
    assert (a[:, ~warm] - b[:, ~warm]).abs().amax() > 1e-3  # the cold items did change
    assert torch.isfinite(a).all()


def test_without_cold_items_it_is_ials(world):
    task, vectors = world
    assert warm_target_items(task).all()  # every target item has a training row
    mapped = create_baseline("attr2factor", **OPTIONS).fit(task, vectors)
    ials = create_baseline("ials", factors=OPTIONS["factors"]).fit(task)
    assert mapped.map is None
    users = task.test_users
    torch.testing.assert_close(mapped.score(users), ials.score(users), rtol=0, atol=0)


def test_it_is_deterministic(cold):
    task, vectors, mapped, _ = cold
    again = create_baseline("attr2factor", **OPTIONS).fit(task, vectors)
    users = task.test_users
    torch.testing.assert_close(again.score(users), mapped.score(users), rtol=0, atol=0)


def test_it_runs_with_few_linked_users_and_still_maps_the_cold_items(world):
    task, vectors = world
    task = Protocol(overlap_fraction=0.5, cold_items=0.5).apply(task)
    assert task.n_users > 400  # users were unlinked
    mapped = create_baseline("attr2factor", **OPTIONS).fit(task, vectors)
    ials = create_baseline("ials", factors=OPTIONS["factors"]).fit(task)
    assert torch.isfinite(mapped.score(task.test_users)).all()
    assert _cold_ndcg(mapped, task) > _cold_ndcg(ials, task) + 0.15


def test_the_ridge_map_recovers_a_linear_map_in_both_solvers():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    fitted = RidgeMap.fit(x, x @ w + b, lam=1e-9)  # primal: dim 6 <= 40 items
    torch.testing.assert_close(fitted.weight, w)
    new = torch.randn(5, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fitted(new), new @ w + b)
    wide = torch.randn(4, 6, generator=g, dtype=torch.float64)  # dual: dim 6 > 4 items
    y = torch.randn(4, 3, generator=g, dtype=torch.float64)
    dual = RidgeMap.fit(wide, y, lam=0.5)
    xc, yc = wide - wide.mean(0), y - y.mean(0)
    primal = torch.linalg.solve(xc.T @ xc + 0.5 * torch.eye(6, dtype=torch.float64), xc.T @ yc)
    torch.testing.assert_close(dual.weight, primal)
    heavy = RidgeMap.fit(x, x @ w + b, lam=1e9)  # all shrinkage: every item maps to the mean factor
    torch.testing.assert_close(heavy(new), (x @ w + b).mean(0).expand(5, -1), rtol=0, atol=1e-6)


def test_its_settings_are_checked_and_its_grid_fits_the_budget(world):
    task, vectors = world
    cls = BASELINES["attr2factor"]
    assert cls.needs_features and 1 < len(cls.grid) <= MAX_GRID
    assert {s["map_lam"] for s in cls.grid} == {0.1, 1.0, 10.0}
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="attr2factor: map_lam must be a finite number > 0"):
            create_baseline("attr2factor", map_lam=bad)
    with pytest.raises(ValueError, match="attr2factor: factors must be a positive integer"):
        create_baseline("attr2factor", factors=0)
    with pytest.raises(ValueError, match=r"attr2factor needs item_features\['a'\]"):
        create_baseline("attr2factor").fit(task)
