"""Serving: the bundle reproduces the trained model; recommendations, explanations, fallback,
portable interest vectors; the HTTP API and its refusals; ``mmi recommend``."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from fusion import InterestModel
from multimodal_interest.bundle import Bundle, probe_queries
from multimodal_interest.cli import main
from multimodal_interest.interest import InterestDocumentError, read_interest_document
from multimodal_interest.recommend import Recommender, UnknownItemsError
from multimodal_interest.server import MAX_HISTORY, create_app
from multimodal_interest.training import ItemFeatures, TrainConfig, attach_features, build_model
from serving_world import NEW_ITEMS, SMALL, assert_same_ranking, train_model, write_world




@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Dataset, store, trained run, and its bundle with every index kind."""
    root = tmp_path_factory.mktemp("serving")
    dataset, store = write_world(root)
    run = train_model(dataset, store, root / "run")
    bundle = Bundle.build(run, dataset, store)
    bundle.save(root / "bundle", ("flat", "ivf", "hnsw"), probe_queries(bundle, dataset))
    return {"root": root, "dataset": dataset, "store": store, "run": run, "bundle": root / "bundle"}


@pytest.fixture(scope="module")
def rec(world) -> Recommender:
    return Recommender.load(world["bundle"], "exact", world["dataset"])


@pytest.fixture(scope="module")
def other_bundle(world):
    """A bundle of another model (other weights) on the same data."""
    torch.manual_seed(1)
    task = world["dataset"].cold_start("a", "b", "s0")
    ids = {p: world["dataset"].items[p]["item_id"].tolist() for p in ("a", "b")}
    model = build_model(task, ItemFeatures.from_store(world["store"], ids), TrainConfig(**SMALL))
    model.save_pretrained(world["root"] / "other" / "model")
    bundle = Bundle.build(world["root"] / "other", world["dataset"], world["store"], split="s0")
    bundle.save(world["root"] / "other_bundle", ())
    return world["root"] / "other_bundle"


@pytest.fixture(scope="module")
def client(rec) -> TestClient:
    return TestClient(create_app(rec))


HISTORY = ["a3", "a17", "a42", "a5", "a88"]
N_B = 100 + NEW_ITEMS


def test_bundle_reproduces_the_trained_model(world, rec):
    """Recommendations from the bundle alone = the trained model's own logits, computed with
    the store's features and the training split's seen items (no bundle involved)."""
    dataset, task = world["dataset"], world["dataset"].cold_start("a", "b", "s0")
    model = InterestModel.from_pretrained(world["run"] / "model").eval()
    ids = {p: dataset.items[p]["item_id"].tolist() for p in ("a", "b")}
    attach_features(model, task, ItemFeatures.from_store(world["store"], ids))
    items = torch.tensor(dataset.item_idx("a", HISTORY))
    with torch.inference_mode():
        logits = model.logits(model.encode_users(items[None], torch.ones(1, 5, dtype=torch.bool), "a"), "b")[0]
    want = logits.topk(N_B)
    got = rec.recommend(HISTORY, source="a", platform="b", k=N_B, explain=0)
    got_idx = dataset.item_idx("b", [x.item_id for x in got.items])
    assert_same_ranking([x.score for x in got.items], got_idx, want.values, want.indices, atol=1e-4)
    seen = np.isin(np.arange(N_B), task.train.loc[task.train["platform"] == "b", "item_idx"])
    assert not seen.all()  # so a wrong "seen in training" mask would change the logits above
    assert np.array_equal(rec.model.fusion.items.tables["b"].has("id").numpy(), seen)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_every_saved_index_serves_the_exact_ranking_here(world, rec, kind):
    """On 100 items the approximate indexes find everything (recall 1.0 is recorded)."""
    other = Recommender.load(world["bundle"], kind)
    a = rec.recommend(HISTORY, source="a", platform="b", k=10)
    b = other.recommend(HISTORY, source="a", platform="b", k=10)
    assert_same_ranking([x.score for x in a.items], [int(x.item_id[1:]) for x in a.items],
                        [x.score for x in b.items], [int(x.item_id[1:]) for x in b.items])
    entry = next(e for e in Bundle.load(world["bundle"]).indexes if e["kind"] == kind and e["platform"] == "b")
    assert kind == "flat" or (entry["recall@10"] == 1.0 and entry["recall_queries"] > 100)


def test_a_changed_model_file_is_refused(world, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(world["bundle"], copy)
    weights = copy / "model" / "fusion" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the bundle's manifest"):
        Bundle.load(copy)


def test_explanations_are_leave_one_out_drops_of_history_items(rec):
    r = rec.recommend(HISTORY, source="a", platform="b", k=5, explain=5)
    assert any(x.because for x in r.items)
    for item in r.items:
        for c in item.because:
            assert (c.platform, c.item_id) == ("a", HISTORY[c.position]) and c.contribution > 0
            without = [x for i, x in enumerate(HISTORY) if i != c.position]
            all_items = rec.recommend(without, source="a", platform="b", k=N_B, explain=0).items
            score_without = next(x.score for x in all_items if x.item_id == item.item_id)
            assert item.score - score_without == pytest.approx(c.contribution, abs=1e-4)


def test_unknown_items_are_named_or_skipped_with_a_report(rec):
    with pytest.raises(UnknownItemsError, match="a:nope, a:gone"):
        rec.recommend(["a3", "nope", "gone"], source="a", platform="b")
    r = rec.recommend(["a3", "nope"], source="a", platform="b", skip_unknown=True)
    assert [(x.platform, x.item_id) for x in r.history.unknown] == [("a", "nope")]
    assert r.history.used == 1 and r.items == rec.recommend(["a3"], source="a", platform="b").items
    with pytest.raises(ValueError, match="unknown platform 'zz'"):
        rec.recommend([("zz", "a3")], platform="b")


def test_empty_history_falls_back_to_the_item_bias(rec):
    r = rec.recommend([], source="a", platform="b", k=5)
    bias = rec.bundle.targets["b"].bias
    assert r.fallback == "popularity" and r.history.used == 0
    assert [x.item_id for x in r.items] == [f"b{i}" for i in bias.topk(5).indices.tolist()]
    assert [x.score for x in r.items] == pytest.approx(bias.topk(5).values.tolist())
    assert rec.recommend(HISTORY, source="a", platform="b").fallback is None


def test_only_the_most_recent_window_is_used(rec):
    long = [f"a{i}" for i in range(12)]  # the model's window is 8 items
    r = rec.recommend(long, source="a", platform="b", explain=0)
    assert (r.history.used, r.history.truncated) == (8, 4)
    assert r.items == rec.recommend(long[-8:], source="a", platform="b", explain=0).items


def test_a_user_id_uses_their_other_platform_and_excludes_what_they_have(world, rec):
    inter = world["dataset"].interactions
    user = inter.loc[inter["platform"] == "b", "user_id"].iloc[0]
    mine = inter[inter["user_id"] == user]
    history = mine.loc[mine["platform"] == "a", "item_id"].tolist()
    owned = set(mine.loc[mine["platform"] == "b", "item_id"])
    r = rec.recommend(user_id=user, platform="b", k=N_B)
    assert r.history.used == len(history) and not owned & {x.item_id for x in r.items}
    assert len(r.items) == N_B - len(owned)
    same = rec.recommend(history, source="a", platform="b", k=N_B, exclude_seen=False)
    assert [x for x in same.items if x.item_id not in owned] == r.items
    with pytest.raises(ValueError, match="unknown user 'nobody'"):
        rec.recommend(user_id="nobody", platform="b")


def test_exported_interest_gives_identical_recommendations(rec, world):
    doc = json.loads(json.dumps(rec.export_interest(HISTORY, source="a")))  # through JSON text
    assert doc["history"] == {"items": 5, "platforms": ["a"]} and "a3" not in json.dumps(doc)
    other_deployment = Recommender.load(world["bundle"], "flat")
    for platform in ("b", "a"):
        want = rec.recommend(HISTORY, source="a", platform=platform, k=10, exclude_seen=False)
        got = other_deployment.recommend(platform=platform, k=10, interest=doc)
        assert [x.item_id for x in got.items] == [x.item_id for x in want.items]
        assert [x.score for x in got.items] == pytest.approx([x.score for x in want.items], abs=1e-5)


def test_bad_interest_documents_are_refused(rec, other_bundle):
    doc = rec.export_interest(HISTORY, source="a")
    other = Recommender.load(other_bundle)
    with pytest.raises(InterestDocumentError, match="made by model .* but this deployment serves model"):
        other.recommend(platform="b", interest=doc)
    fp, dim = rec.fingerprint, rec.dim
    cases = {"version 2 is not supported": {**doc, "version": 2},
             "dim 3": {**doc, "dim": 3},
             "vector must be a list of 32": {**doc, "vector": doc["vector"][:-1]},
             r"vector\[4\] = nan": {**doc, "vector": doc["vector"][:4] + [float("nan")] + doc["vector"][5:]},
             "length 2.0000": {**doc, "vector": [2 * x for x in doc["vector"]]},
             "unknown field": {**doc, "history_items": ["a3"]},
             "not valid JSON": "{nope"}
    for reason, bad in cases.items():
        with pytest.raises(InterestDocumentError, match=reason):
            read_interest_document(bad, fp, dim)


# ------------------------------------------------------------------ HTTP
def test_api_round_trip(client, rec):
    assert client.get("/health").json() == {"status": "ok", "model": rec.fingerprint}
    platforms = {p["name"]: p for p in client.get("/platforms").json()["platforms"]}
    assert platforms["b"] == {"name": "b", "n_items": N_B, "target": True, "history": True}
    body = {"platform": "b", "history": [{"platform": "a", "item_id": x} for x in HISTORY], "k": 5}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200
    want, got = json.loads(json.dumps(rec.recommend(HISTORY, source="a", platform="b", k=5).to_dict())), r.json()
    assert {k: v for k, v in got.items() if k != "items"} == {k: v for k, v in want.items() if k != "items"}
    for a, b in zip(got["items"], want["items"]):  # the server's threads may round differently
        assert a["item_id"] == b["item_id"] and a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert [(c["item_id"], c["position"]) for c in a["because"]] == [(c["item_id"], c["position"]) for c in b["because"]]
    doc = client.post("/users/embed", json={"history": HISTORY, "source": "a"}).json()
    again = client.post("/recommend", json={"platform": "b", "interest": doc, "k": 5}).json()
    assert [x["item_id"] for x in again["items"]] == [x["item_id"] for x in r.json()["items"]]
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("body, status, reason", [
    ({"platform": "b", "history": HISTORY, "source": "a", "k": "5"}, 422, "valid integer"),
    ({"platform": "b", "history": "a3", "source": "a"}, 422, "valid list"),
    ({"platform": "b", "history": HISTORY, "source": "a", "k": 1001}, 422, "less than or equal to 1000"),
    ({"platform": "b", "history": HISTORY, "source": "a", "k": 0}, 422, "greater than or equal to 1"),
    ({"platform": "b", "history": ["a3"] * (MAX_HISTORY + 1), "source": "a"}, 422, "at most 1000 items"),
    ({"platform": "b", "history": ["a3", "x" * 300], "source": "a"}, 422, "at most 256 characters"),
    ({"platform": "b", "history": ["a3", "nope"], "source": "a"}, 422, "unknown item.* a:nope"),
    ({"platform": "zz", "history": HISTORY, "source": "a"}, 422, "unknown target platform 'zz'"),
    ({"platform": "b", "history": HISTORY, "source": "zz"}, 422, "unknown platform 'zz'"),
    ({"platform": "b", "history": HISTORY}, 422, "give the source platform"),
    ({"platform": "b"}, 422, "exactly one of a history, a user id and an interest document"),
    ({"platform": "b", "history": HISTORY, "source": "a", "user_id": "u1"}, 422, "exactly one of"),
    ({"platform": "b", "history": HISTORY, "source": "a", "fields": 1}, 422, "Extra inputs"),
    ({"platform": "b", "interest": {"format": "multimodal-interest/interest-vector", "version": 9}}, 422,
     "version 9 is not supported"),
    ({"platform": "b", "user_id": "nobody"}, 422, "unknown user 'nobody'"),
])
def test_bad_requests_get_4xx_with_the_reason(client, body, status, reason):
    r = client.post("/recommend", json=body)
    assert r.status_code == status
    assert re.search(reason, json.dumps(r.json())), r.json()


def test_embed_needs_a_history_or_a_user(client):
    r = client.post("/users/embed", json={"source": "a"})
    assert r.status_code == 422 and "exactly one of a history and a user id" in r.json()["detail"]
    r = client.post("/users/embed", json={"history": [1, 2], "source": "a"})
    assert r.status_code == 422


def test_oversized_bodies_are_refused_before_parsing(rec):
    client = TestClient(create_app(rec, max_body_bytes=1000))
    big = json.dumps({"platform": "b", "history": ["a3"] * 300, "source": "a"}).encode()
    for content in (big, iter([big[:600], big[600:]])):  # declared length, and chunked
        r = client.post("/recommend", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over 1000 bytes" in r.json()["detail"]
    assert client.post("/recommend", json={"platform": "b", "history": HISTORY, "source": "a"}).status_code == 200


def test_the_api_refuses_another_models_interest_document(client, other_bundle):
    foreign = Recommender.load(other_bundle).export_interest(HISTORY, source="a")
    r = client.post("/recommend", json={"platform": "b", "interest": foreign})
    assert r.status_code == 422 and "made by model" in r.json()["detail"]


# ------------------------------------------------------------------ CLI
def test_mmi_recommend_prints_a_table_json_and_an_interest_file(world, tmp_path, capsys):
    history = tmp_path / "history.txt"
    history.write_text("\n".join(HISTORY) + "\n")
    base = ["recommend", "--model", str(world["bundle"]), "--platform", "b", "-k", "3"]
    assert main(["-q", *base, "--history", str(history), "--source", "a",
                 "--save-interest", str(tmp_path / "me.json")]) == 0
    table = capsys.readouterr().out
    want = Recommender.load(world["bundle"]).recommend(HISTORY, source="a", platform="b", k=3)
    assert "top 3 for a history of 5 item(s), 5 used" in table
    assert all(x.item_id in table for x in want.items)
    assert main(["-q", *base, "--interest", str(tmp_path / "me.json"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [x["item_id"] for x in got["items"]] == [x.item_id for x in want.items]
    pairs = tmp_path / "history.json"  # the other history format: {platform, item_id} objects
    pairs.write_text(json.dumps([{"platform": "a", "item_id": x} for x in HISTORY]))
    assert main(["-q", *base, "--history", str(pairs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == json.loads(json.dumps(want.to_dict()))["items"]


def test_mmi_export_index_then_recommend_by_user(world, tmp_path, capsys):
    data, store = str(world["root"] / "data"), str(world["root"] / "store")
    assert main(["-q", "export-index", "--model", str(world["run"]), "--dataset", data, "--store", store,
                 "--output", str(tmp_path / "bundle"), "--index", "flat,ivf", "--nprobe", "1"]) == 0
    out = capsys.readouterr().out
    assert "index/b.ivf.faiss: ivf {'nlist': 2, 'nprobe': 1}, recall@10" in out
    assert main(["-q", "recommend", "--model", str(tmp_path / "bundle"), "--platform", "b",
                 "--user", "u0", "--dataset", data, "--index", "ivf"]) == 0
    assert "top 10 for a history of" in capsys.readouterr().out


def test_mmi_recommend_refuses_another_models_interest_file(world, other_bundle, tmp_path, capsys):
    doc = Recommender.load(other_bundle).export_interest(HISTORY, source="a")
    (tmp_path / "foreign.json").write_text(json.dumps(doc))
    assert main(["-q", "recommend", "--model", str(world["bundle"]), "--platform", "b",
                 "--interest", str(tmp_path / "foreign.json")]) == 2
    assert "made by model" in capsys.readouterr().err
