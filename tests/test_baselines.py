"""Baselines: the registry, tuning, planted signal on a synthetic task, and popularity on
the real amazon_art_office split against EVALUATION.md's reference row."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _tasks import planted_task

from multimodal_interest.baselines import BASELINES, create_baseline, list_baselines, register_baseline, tune
from multimodal_interest.evaluate import evaluate
from multimodal_interest.stats import paired_difference

# options sized for the small synthetic task (the defaults are sized for real data: large
# batches would take only a few steps per epoch here); every registered baseline needs one
SMALL = {
    "popularity": {},
    "content-knn": {},
    "content-pop": {"weight": 0.3},
    "item-knn": {},
    "emcdr": {"dim": 16, "batch_size": 256, "lr": 0.01},
    "cmf": {"dim": 16, "batch_size": 256, "lr": 0.01},
    "ptupcdr": {"dim": 16, "batch_size": 256, "lr": 0.01, "meta_lr": 5e-3},
    "ials": {"factors": 16},
    "attr2factor": {"factors": 16},  # also test_baselines_attr2factor.py
    "bm25-knn": {},  # needs item text: tested in test_baselines_ials_bm25.py
    "ease": {}, "ease-merged": {}, "rp3beta": {}, "user-knn": {},  # also test_baselines_cf.py
}



@pytest.fixture(scope="module")
def planted():
    task, vectors = planted_task()
    pop = create_baseline("popularity").fit(task)
    return task, vectors, evaluate(pop.score, task, task.test_users)


def test_every_registered_baseline_has_test_options():
    assert set(SMALL) == set(list_baselines())


@pytest.mark.parametrize("name", [n for n in sorted(SMALL) if n != "popularity" and not BASELINES[n].needs_text])
def test_baseline_beats_popularity_on_planted_signal(planted, name):
    task, vectors, pop = planted
    model = create_baseline(name, **SMALL[name]).fit(task, vectors)
    res = evaluate(model.score, task, task.test_users)
    # source items imply target items of the same cluster; popularity only knows cluster sizes
    diff = paired_difference(res.values["ndcg@10"], pop.values["ndcg@10"])
    assert diff.low > 0.2, f"{name}: {diff.format()} over popularity's {pop.values['ndcg@10'].mean():.3f}"
    # a cold user without any source rows still gets finite scores
    lonely = model.score(np.array([task.n_users - 1]))
    assert lonely.shape == (1, task.n_items["tgt"]) and torch.isfinite(lonely).all()


@pytest.mark.parametrize("name", ["cmf", "ptupcdr"])
def test_learned_baselines_are_reproducible_and_leave_global_rng_alone(planted, name):
    task, vectors, _ = planted
    state = torch.random.get_rng_state()
    options = {**SMALL[name], "dim": 8}
    a = create_baseline(name, **options).fit(task, vectors)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = create_baseline(name, **options).fit(task, vectors)
    users = task.test_users[:20]
    torch.testing.assert_close(a.score(users), b.score(users), rtol=0, atol=0)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown baseline 'popularty'"):
        create_baseline("popularty")
    with pytest.raises(ValueError, match=r"emcdr: .*unexpected keyword.*'dimm'.*options are \["):
        create_baseline("emcdr", dimm=32)
    assert create_baseline("emcdr", dim=None).config.dim == BASELINES["emcdr"].Config().dim
    with pytest.raises(RuntimeError, match="fit"):
        create_baseline("popularity").score(np.array([0]))
    task, _ = planted_task(n_users=300)
    with pytest.raises(ValueError, match=r"content-knn needs item_features\['src'\]"):
        create_baseline("content-knn").fit(task)
    with pytest.raises(ValueError, match=r"needs item_features\['tgt'\] of shape \[200, dim\]; got \(5, 16\)"):
        create_baseline("content-knn").fit(task, {"src": torch.zeros(200, 16), "tgt": torch.zeros(5, 16)})
    cls = BASELINES["popularity"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        register_baseline(cls)
    assert "registered twice" in str(caught[0].message)


def test_tune_keeps_the_best_configuration_within_the_budget(planted):
    task, vectors, _ = planted
    tuned = tune("content-pop", task, vectors)
    values = [v for _, v in tuned.trials]
    assert len(values) == len(BASELINES["content-pop"].grid) <= 4
    assert tuned.model.valid_score() == max(values)
    assert {"weight": tuned.model.config.weight} == tuned.trials[int(np.argmax(values))][0]
    with pytest.raises(ValueError, match="content-pop: no setting to try"):
        tune("content-pop", task, vectors, grid=[])


# EVALUATION.md, popularity row: (recall@10, ndcg@10, ndcg@10 interval, recall@50, mrr)
REFERENCE = {
    "A->B": (0.0376, 0.0451, (0.0388, 0.0521), 0.0944, 0.1217),
    "B->A": (0.0153, 0.0170, (0.0130, 0.0211), 0.0584, 0.0531),
}


@pytest.mark.parametrize("direction", sorted(REFERENCE))
def test_popularity_reproduces_the_reference_row(amazon, direction):
    source, target = ("art", "office") if direction == "A->B" else ("office", "art")
    task = amazon.cold_start(source, target, "published")
    assert len(task.test_users) == 1000 and len(task.valid_users) == 577
    res = evaluate(create_baseline("popularity").fit(task).score, task, task.test_users)
    recall10, ndcg10, (lo, hi), recall50, mrr = REFERENCE[direction]
    summary = res.summary()
    assert summary["recall@10"].mean == pytest.approx(recall10, abs=5e-4)
    assert summary["ndcg@10"].mean == pytest.approx(ndcg10, abs=5e-4)
    assert summary["ndcg@10"].low == pytest.approx(lo, abs=1e-3)
    assert summary["ndcg@10"].high == pytest.approx(hi, abs=1e-3)
    assert summary["mrr"].mean == pytest.approx(mrr, abs=5e-4)
    # at @50 the order among equally popular items starts to matter ("ties aside")
    assert summary["recall@50"].mean == pytest.approx(recall50, abs=1e-3)
