"""The default (linear, closed-form) model served: its run, saved folder, bundle and server
score exactly as the fit does, and an empty history gets the fit's prior."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from fusion import InterestModel
from multimodal_interest.bundle import Bundle, probe_queries
from multimodal_interest.recommend import Recommender
from multimodal_interest.run import Run
from multimodal_interest.server import create_app
from multimodal_interest.training import ItemFeatures, attach_features
from serving_world import assert_same_ranking, train_model, write_world

HISTORY = ["a3", "a17", "a42", "a5", "a88"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-linear")
    dataset, store = write_world(root)
    run = train_model(dataset, store, root / "run", kind="linear")
    bundle = Bundle.build(run, dataset, store)
    bundle.save(root / "bundle", ("flat", "hnsw"), probe_queries(bundle, dataset))
    return {"dataset": dataset, "store": store, "run": run, "rec": Recommender.load(root / "bundle", "exact", dataset)}


def fitted_logits(world, history: list[str]) -> torch.Tensor:
    """The run's own model, from its folder, with the store's features: ``[N_b]``."""
    dataset = world["dataset"]
    task = dataset.cold_start("a", "b", "s0")
    model = InterestModel.from_pretrained(Run(world["run"]).model_dir).eval()
    assert type(model.fusion).__name__ == "LinearFusion" and model.config.targets["b"].space == "learned"
    ids = {p: dataset.items[p]["item_id"].tolist() for p in ("a", "b")}
    attach_features(model, task, ItemFeatures.from_store(world["store"], ids))
    items = torch.tensor(dataset.item_idx("a", history), dtype=torch.long).reshape(1, -1)
    with torch.inference_mode():
        return model.logits(model.encode_users(items, torch.ones_like(items, dtype=torch.bool), "a"), "b")[0]


def test_the_run_logs_its_trials_and_the_chosen_setting(world):
    log = Run(world["run"]).log()
    trials, chosen = log[:-1], log[-1]
    assert len(trials) >= 7 and all("lam" in t and "valid_ndcg10" in t for t in trials)
    assert chosen["rank"] == chosen["chosen"]["rank"] == 32  # the fusion width (dim=32 here) < 100 items
    assert chosen["chosen"] in trials  # a logged trial of the saved model's rank: the one taken
    assert chosen["fit"]["path"] == "exact" and chosen["fit"]["fit_rows"] > 0
    assert chosen["valid_ndcg10"] == pytest.approx(chosen["chosen"]["valid_ndcg10"], abs=1e-5)


def test_bundle_and_server_score_as_the_fit(world):
    rec, n = world["rec"], world["dataset"].items["b"].shape[0]
    want = fitted_logits(world, HISTORY).topk(n)
    got = rec.recommend(HISTORY, source="a", platform="b", k=n, exclude_seen=False, explain=0)
    idx = world["dataset"].item_idx("b", [x.item_id for x in got.items])
    assert_same_ranking([x.score for x in got.items], idx, want.values, want.indices, atol=1e-5)
    client = TestClient(create_app(rec))
    body = {"platform": "b", "history": [{"platform": "a", "item_id": x} for x in HISTORY], "k": 10,
            "exclude_seen": False}
    served = client.post("/recommend", json=body).json()["items"]
    assert [x["item_id"] for x in served] == [x.item_id for x in got.items[:10]]
    np.testing.assert_allclose([x["score"] for x in served], want.values[:10].numpy(), atol=1e-5)


def test_an_empty_history_is_ranked_by_the_fits_prior(world):
    """A linear model's empty history is the population's interest (the constant block): its
    ranking is the fit's shrunk popularity, served as the popularity fallback."""
    r = world["rec"].recommend([], source="a", platform="b", k=10, exclude_seen=False)
    assert r.fallback == "popularity" and r.history.used == 0
    prior = fitted_logits(world, []).topk(10)
    assert_same_ranking([x.score for x in r.items], world["dataset"].item_idx("b", [x.item_id for x in r.items]),
                        prior.values, prior.indices, atol=1e-5)
    assert not torch.equal(prior.values, torch.zeros(10))


def test_a_model_of_item_ids_alone_exports_and_serves(tmp_path):
    """`mmi train` without --store fits a linear model of the source's item ids and no dense
    features; its export used to end in KeyError (no feature table for the target), and its
    target platform is no history platform."""
    from multimodal_interest.recommend import RequestError
    from multimodal_interest.training import TrainConfig, train
    from serving_world import SMALL

    dataset, _ = write_world(tmp_path, n_users=200)
    train(dataset.cold_start("a", "b", "s0"), ItemFeatures(),
          TrainConfig(**{**SMALL, "kind": "linear"}, epochs=1, patience=1), tmp_path / "run",
          progress_bar=False)
    built = Bundle.build(tmp_path / "run", dataset)
    assert built.history_platforms == ["a"]
    built.save(tmp_path / "bundle", ("flat",))
    rec = Recommender.load(tmp_path / "bundle", "flat", dataset)
    assert [(p["name"], p["history"]) for p in rec.describe()["platforms"]] == [("a", True), ("b", False)]
    got = rec.recommend(HISTORY, source="a", platform="b", k=10, explain=0)
    want = Recommender(built, "exact").recommend(HISTORY, source="a", platform="b", k=10, explain=0)
    assert [x.item_id for x in got.items] == [x.item_id for x in want.items] and got.fallback is None
    np.testing.assert_allclose([x.score for x in got.items], [x.score for x in want.items], atol=1e-5)
    with pytest.raises(RequestError, match="platform 'b' cannot appear in histories"):
        rec.recommend(["b1"], source="b", platform="b")
