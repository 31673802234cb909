"""Serving: the bundle reproduces the trained model; recommendations, explanations, fallback,
portable interest vectors; the HTTP API and its refusals; ``mmi recommend``."""
from __future__ import annotations

import builtins
import json
import logging
import os
import pathlib
import re
import shutil

import anyio
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from fusion import InterestModel
from multimodal_interest.bundle import Bundle, probe_queries
from multimodal_interest.cli import main
from multimodal_interest.interest import InterestDocumentError, read_interest_document
from multimodal_interest.recommend import Recommender, RequestError, UnknownItemsError
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
    assert np.array_equal(rec.model.id_presence("b").numpy(), seen)


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


def test_platforms_show_each_index_its_settings_and_recorded_recall(world):
    manifest = {(e["platform"], e["kind"]): e for e in Bundle.load(world["bundle"]).indexes}
    assert manifest["b", "ivf"]["params"] == {"nlist": 2, "nprobe": 2}  # 105 items; nprobe 32 capped
    assert manifest["b", "hnsw"]["params"] == {"M": 32, "ef_search": 128}
    for kind in ("exact", "flat", "ivf", "hnsw"):
        described = TestClient(create_app(Recommender.load(world["bundle"], kind))).get("/platforms").json()
        assert described["index"] == kind
        for p in ("a", "b"):
            saved = manifest.get((p, kind), {"params": {}})  # exact search has no index, no settings
            want = {"platform": p, "kind": kind, "exact": kind in ("exact", "flat"), "params": saved["params"],
                    "built_in_memory": False, "recall@10": saved.get("recall@10"),
                    "recall_queries": saved.get("recall_queries")}
            assert next(x for x in described["indexes"] if x["platform"] == p) == want
            assert (want["recall@10"] is not None) == (kind in ("ivf", "hnsw"))


def test_an_approximate_index_without_recorded_recall_is_served_with_a_warning(world, tmp_path, caplog):
    Bundle.load(world["bundle"]).save(tmp_path / "unmeasured", ("flat", "ivf"))  # no queries: no recall
    caplog.set_level(logging.INFO, logger="multimodal_interest.bundle")

    def warnings() -> list[str]:
        out = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        caplog.clear()
        return out

    Recommender.load(world["bundle"], "ivf")  # recall recorded
    Recommender.load(tmp_path / "unmeasured", "flat")  # exact
    assert warnings() == []
    rec = Recommender.load(tmp_path / "unmeasured", "ivf")
    assert sorted(warnings()) == [
        f"ivf index of {p!r} ({{'nlist': {n}, 'nprobe': {n}}}) has no recall recorded in the bundle's manifest: "
        f"it may miss true top items unnoticed; measure it (`mmi export-index --index ivf` records "
        f"recall@10 against exact search) or serve the exact flat index" for p, n in (("a", 3), ("b", 2))]
    assert [(x["recall@10"], x["built_in_memory"]) for x in rec.describe()["indexes"]] == [(None, False)] * 2
    rec = Recommender.load(tmp_path / "unmeasured", "hnsw")  # not in the bundle: built here, unmeasured
    assert len(warnings()) == 2
    assert [(x["recall@10"], x["built_in_memory"]) for x in rec.describe()["indexes"]] == [(None, True)] * 2


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


def test_exported_interest_gives_identical_recommendations(rec, world, tmp_path):
    """The document, carried to another deployment of the same model (a copy of the bundle
    elsewhere, searched with another index), recommends what the history did here."""
    doc = json.loads(json.dumps(rec.export_interest(HISTORY, source="a")))  # through JSON text
    assert doc["history"] == {"items": 5, "platforms": ["a"]} and '"a3"' not in json.dumps(doc)
    shutil.copytree(world["bundle"], tmp_path / "elsewhere")
    other_deployment = Recommender.load(tmp_path / "elsewhere", "flat")
    assert other_deployment.bundle.folder == tmp_path / "elsewhere" != rec.bundle.folder
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

    def vector(i: int, value) -> list:
        return doc["vector"][:i] + [value] + doc["vector"][i + 1:]

    cases = [("version 2 is not supported", {**doc, "version": 2}),
             ("version True is not supported", {**doc, "version": True}),  # True == 1 in Python
             ("dim 3", {**doc, "dim": 3}),
             ("dim True", {**doc, "dim": True}),
             ("vector must be a list of 32", {**doc, "vector": doc["vector"][:-1]}),
             (r"vector\[4\] = nan", {**doc, "vector": vector(4, float("nan"))}),
             (r"vector\[2\] = an integer of about 401 digits is not a finite number that float32 can "
              r"hold \(2 such", {**doc, "vector": vector(2, 10 ** 400)[:-1] + [-10 ** 400]}),
             (r"vector\[0\] = 1e\+39 is not a finite number that float32", {**doc, "vector": vector(0, 1e39)}),
             (r"vector\[1\] = inf", {**doc, "vector": vector(1, float("inf"))}),
             (r"vector\[3\] = True", {**doc, "vector": vector(3, True)}),
             (r"vector\[3\] = '0.1'", {**doc, "vector": vector(3, "0.1")}),
             ("length 2.0000", {**doc, "vector": [2 * x for x in doc["vector"]]}),
             ("unknown field", {**doc, "history_items": ["a3"]}),
             (r"missing \['created'\]", {k: v for k, v in doc.items() if k != "created"}),
             ("created 1764583200 is not an ISO-8601 date and time string", {**doc, "created": 1764583200}),
             ("created 'yesterday' is not an ISO-8601", {**doc, "created": "yesterday"}),
             (r"history must be .* got an object with field\(s\) \['items'\]", {**doc, "history": {"items": 5}}),
             ("history must be", {**doc, "history": [5, ["a"]]}),
             ("history.items must be an integer >= 0, got -1", {**doc, "history": {"items": -1, "platforms": []}}),
             ("history.items must be an integer >= 0, got True",
              {**doc, "history": {"items": True, "platforms": []}}),
             ("history.platforms must be a list of platform names, got 'a'",
              {**doc, "history": {"items": 5, "platforms": "a"}}),
             ("history.platforms must be a list", {**doc, "history": {"items": 5, "platforms": ["a", 7]}}),
             ("not valid JSON", "{nope"),
             ("not valid JSON .*digits", '{"vector": [' + "9" * 5000 + "]}"),  # beyond Python's int parsing
             (r"vector\[0\] = an integer of about 400 digits", json.dumps({**doc, "vector": vector(0, 10 ** 399)}))]
    for reason, bad in cases:
        with pytest.raises(InterestDocumentError, match=reason):
            read_interest_document(bad, fp, dim)
    assert torch.equal(read_interest_document({**doc, "created": "2026-12-01T10:00:00"}, fp, dim),
                       read_interest_document(doc, fp, dim))  # ISO-8601 without a time zone is fine


# ------------------------------------------------------------------ HTTP
def test_api_round_trip(client, rec):
    assert client.get("/health").json() == {"status": "ok", "model": rec.fingerprint}
    platforms = {p["name"]: p for p in client.get("/platforms").json()["platforms"]}
    assert platforms["b"] == {"name": "b", "n_items": N_B, "target": True, "history": True}
    body = {"platform": "b", "history": [{"platform": "a", "item_id": x} for x in HISTORY], "k": 5}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200
    want, got = json.loads(json.dumps(rec.recommend(HISTORY, source="a", platform="b", k=5).to_dict())), r.json()
    assert got.pop("titles")["b"].keys() == {x["item_id"] for x in got["items"]}  # the page's (tests/test_web.py)
    assert {k: v for k, v in got.items() if k != "items"} == {k: v for k, v in want.items() if k != "items"}
    for a, b in zip(got["items"], want["items"]):  # the server's threads may round differently
        assert a["item_id"] == b["item_id"] and a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert [(c["item_id"], c["position"]) for c in a["because"]] == [(c["item_id"], c["position"]) for c in b["because"]]
    doc = client.post("/users/embed", json={"history": HISTORY, "source": "a"}).json()
    again = client.post("/recommend", json={"platform": "b", "interest": doc, "k": 5}).json()
    assert [x["item_id"] for x in again["items"]] == [x["item_id"] for x in r.json()["items"]]
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


RECOMMEND_REFUSALS = [
    ({"platform": "b", "history": HISTORY, "source": "a", "k": "5"}, "valid integer"),
    ({"platform": "b", "history": "a3", "source": "a"}, "valid list"),
    ({"platform": "b", "history": HISTORY, "source": "a", "k": 1001}, "less than or equal to 1000"),
    ({"platform": "b", "history": HISTORY, "source": "a", "k": 0}, "greater than or equal to 1"),
    ({"platform": "b", "history": HISTORY, "source": "a", "k": 10 ** 400}, "less than or equal to 1000"),
    ({"platform": "b", "history": HISTORY, "source": "a", "explain": -1}, "greater than or equal to 0"),
    ({"platform": "b", "history": HISTORY, "source": "a", "explain": 11}, "less than or equal to 10"),
    ({"platform": "b", "history": HISTORY, "source": "a", "explain": 2.5}, "valid integer"),
    ({"platform": "b", "history": ["a3"] * (MAX_HISTORY + 1), "source": "a"}, "at most 1000 items"),
    ({"platform": "b", "history": ["a3", "x" * 300], "source": "a"}, "at most 256 characters"),
    ({"platform": "b" * 65, "history": HISTORY, "source": "a"}, "at most 64 characters"),
    ({"platform": "b", "history": HISTORY, "source": "a" * 65}, "at most 64 characters"),
    ({"platform": "b", "history": [{"platform": "a" * 65, "item_id": "a3"}]}, "at most 64 characters"),
    ({"platform": "b", "user_id": "u" * 257}, "at most 256 characters"),
    ({"platform": "b", "history": ["a3", "nope"], "source": "a"}, "unknown item.* a:nope"),
    ({"platform": "zz", "history": HISTORY, "source": "a"}, "unknown target platform 'zz'"),
    ({"platform": "b", "history": HISTORY, "source": "zz"}, "unknown platform 'zz'"),
    ({"platform": "b", "user_id": "u0", "source": "zz"}, "unknown platform 'zz'"),
    ({"platform": "b", "history": HISTORY}, "give the source platform"),
    ({"platform": "b"}, "exactly one of a history, a user id and an interest document"),
    ({"platform": "b", "history": HISTORY, "source": "a", "user_id": "u1"}, "exactly one of"),
    ({"platform": "b", "history": HISTORY, "source": "a", "fields": 1}, "Extra inputs"),
    ({"platform": "b", "interest": {"format": "multimodal-interest/interest-vector", "version": 9}},
     "version 9 is not supported"),
    ({"platform": "b", "interest": {"format": "multimodal-interest/interest-vector", "version": True}},
     "version True is not supported"),
    ({"platform": "b", "interest": "sha256:0123"}, "valid dictionary"),
    ({"platform": "b", "interest": [0.1, 0.2]}, "valid dictionary"),
    ({"platform": "b", "user_id": "nobody"}, "unknown user 'nobody'"),
    ({"platform": "b", "history": HISTORY, "source": "a", "k": float("nan")}, "valid integer"),
    ({"platform": "b", "history": ["a3", float("inf")], "source": "a"}, "valid string"),
    (b'{"platform": "b", "history": ["a3"], "source": "a"', "JSON decode error"),  # malformed JSON
    (b"[1, 2]", "valid dictionary or object"),  # JSON, not an object
    (b'"recommend me"', "valid dictionary or object"),
    (b"null", "valid dictionary or object"),
]
EMBED_REFUSALS = [
    ({"source": "a"}, "exactly one of a history and a user id"),
    ({"history": [1, 2], "source": "a"}, "valid string"),
    ({"history": ["a3"] * (MAX_HISTORY + 1), "source": "a"}, "at most 1000 items"),
    ({"history": ["a3", "nope", "gone"], "source": "a"}, "2 unknown item.* a:nope, a:gone"),
    ({"history": [{"platform": "a", "item_id": "a3"}, {"platform": "b", "item_id": "nope"}]}, "unknown item.* b:nope"),
    ({"history": HISTORY, "source": "zz"}, "unknown platform 'zz'"),
    ({"user_id": "nobody"}, "unknown user 'nobody'"),
    ({"history": HISTORY, "source": "a", "platform": "b"}, "Extra inputs"),
    (b"{nope", "JSON decode error"),
    (b"[]", "valid dictionary or object"),
]


def post(client: TestClient, path: str, body: dict | bytes):
    """POST ``body`` as given (bytes), or as Python writes JSON (NaN and Infinity included)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize("path, body, reason", [("/recommend", *case) for case in RECOMMEND_REFUSALS]
                         + [("/users/embed", *case) for case in EMBED_REFUSALS])
def test_bad_requests_get_422_with_the_reason(client, path, body, reason):
    r = post(client, path, body)
    assert r.status_code == 422
    answer = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in the answer: not JSON"))
    assert re.search(reason, json.dumps(answer)), answer


@pytest.mark.parametrize("value, shown", [(10 ** 400, "an integer of about 401 digits"),
                                          (-10 ** 400, "an integer of about 401 digits"),
                                          (1e39, "1e+39"), (float("nan"), "nan"), (float("-inf"), "-inf"),
                                          ("0.1", "'0.1'"), (None, "None")])
def test_the_api_refuses_interest_values_float32_cannot_hold(client, rec, value, shown):
    doc = rec.export_interest(HISTORY, source="a")
    doc["vector"][5] = value
    r = post(client, "/recommend", {"platform": "b", "interest": doc})
    assert r.status_code == 422  # not a 500: the client's raise_server_exceptions would raise here
    assert r.json()["detail"] == (f"interest document: vector[5] = {shown} is not a finite number that "
                                  f"float32 can hold (1 such value(s))")


def test_a_bug_is_a_500_not_blamed_on_the_request(rec, monkeypatch):
    """Only request errors are 422: a ValueError of the code itself is not the client's fault."""
    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")
    client = TestClient(create_app(rec), raise_server_exceptions=False)
    body = {"platform": "b", "history": HISTORY, "source": "a"}
    assert client.post("/recommend", json=body).status_code == 200
    monkeypatch.setattr(rec, "score", broken)  # the server scores requests in batches
    r = client.post("/recommend", json=body)
    assert r.status_code == 500 and "broadcast" not in r.text

    def refused(*args, **kwargs):
        raise RequestError("no such thing")
    monkeypatch.setattr(rec, "score", refused)
    r = client.post("/recommend", json=body)
    assert r.status_code == 422 and r.json() == {"detail": "no such thing"}


PATH_LIKE = ["../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "..\\..\\boot.ini", "~/.ssh/id_rsa"]


@pytest.fixture
def file_access(monkeypatch) -> list:
    """Every file opening from now on fails, and is listed here."""
    calls = []

    def trap(name):
        def refuse(*args, **kwargs):
            calls.append((name, args))
            raise PermissionError(f"{name}{args}: no file may be opened during a request")
        return refuse

    monkeypatch.setattr(builtins, "open", trap("open"))
    monkeypatch.setattr(pathlib.Path, "open", trap("Path.open"))
    monkeypatch.setattr(os, "open", trap("os.open"))
    return calls


@pytest.mark.parametrize("path, body, named", [
    ("/recommend", {"platform": "b", "history": PATH_LIKE, "source": "a"}, "a:../../etc/passwd"),
    ("/recommend", {"platform": "b", "history": [{"platform": "a", "item_id": x} for x in PATH_LIKE]}, "a:/etc/passwd"),
    ("/recommend", {"platform": "../../etc/passwd", "history": HISTORY, "source": "a"}, "'../../etc/passwd'"),
    ("/recommend", {"platform": "b", "history": HISTORY, "source": "/etc"}, "'/etc'"),
    ("/recommend", {"platform": "b", "history": [{"platform": "../a", "item_id": "a3"}]}, "'../a'"),
    ("/recommend", {"platform": "b", "user_id": "../../etc/passwd"}, "'../../etc/passwd'"),
    ("/recommend", {"platform": "b", "interest": {"format": "/etc/passwd"}}, "'/etc/passwd'"),
    ("/users/embed", {"history": PATH_LIKE, "source": "a"}, "a:file:///etc/passwd"),
    ("/users/embed", {"history": [{"platform": "/etc", "item_id": "passwd"}]}, "'/etc'"),
    ("/users/embed", {"history": HISTORY, "source": "~/.ssh"}, "'~/.ssh'"),
    ("/users/embed", {"user_id": "/etc/shadow"}, "'/etc/shadow'"),
])
def test_no_request_opens_a_file(client, file_access, path, body, named):
    """Path-like ids and platform names are names, never files: the answer is a refusal naming
    them, and nothing is opened (the trap works: a file opened here is caught)."""
    with pytest.raises(PermissionError):
        open(__file__)
    with pytest.raises(PermissionError):
        pathlib.Path(__file__).read_text()
    file_access.clear()
    r = client.post(path, json=body)
    assert r.status_code == 422 and named in r.json()["detail"], r.json()
    assert file_access == []


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


def test_mmi_recommend_refuses_a_number_float32_cannot_hold(world, rec, tmp_path, capsys):
    doc = rec.export_interest(HISTORY, source="a")
    doc["vector"][0] = 10 ** 400
    (tmp_path / "huge.json").write_text(json.dumps(doc))
    assert main(["-q", "recommend", "--model", str(world["bundle"]), "--platform", "b",
                 "--interest", str(tmp_path / "huge.json")]) == 2
    assert "vector[0] = an integer of about 401 digits is not a finite number" in capsys.readouterr().err


def test_a_model_of_a_platforms_own_item_space_is_bundled_with_that_file(world, tmp_path, capsys):
    """`mmi train --item-space b=FILE` -> `mmi export-index --item-space b=FILE` -> `mmi
    recommend`: the bundle serves what the trained model scores in b's own space; building
    it without the file, or with another file, is refused."""
    data, store = str(world["root"] / "data"), str(world["root"] / "store")
    dataset = world["dataset"]
    ids = dataset.items["b"]["item_id"].tolist()
    own = torch.randn(len(ids), 12, generator=torch.Generator().manual_seed(3))
    np.savez(tmp_path / "own.npz", item_id=np.array(ids), vectors=own.numpy())
    np.savez(tmp_path / "other.npz", item_id=np.array(ids), vectors=own.numpy() + 1.0)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**SMALL, "epochs": 1, "patience": 1}))
    assert main(["-q", "train", data, "--source", "a", "--target", "b", "--split", "s0", "--store", store,
                 "--item-space", f"b={tmp_path / 'own.npz'}", "--config", str(config),
                 "--output", str(tmp_path / "run")]) == 0
    base = ["-q", "export-index", "--model", str(tmp_path / "run"), "--dataset", data, "--store", store]
    assert main([*base, "--output", str(tmp_path / "bundle"), "--item-space", f"b={tmp_path / 'own.npz'}"]) == 0
    capsys.readouterr()

    model = InterestModel.from_pretrained(tmp_path / "run" / "model").eval()
    assert model.config.targets["b"].space == "external"
    task = dataset.cold_start("a", "b", "s0")
    features = ItemFeatures.from_store(world["store"], {p: dataset.items[p]["item_id"].tolist() for p in ("a", "b")})
    features.add_item_space("b", own, "-")  # the model's own logits, no bundle involved
    attach_features(model, task, features)
    items = torch.tensor(dataset.item_idx("a", HISTORY))
    with torch.inference_mode():
        want = model.logits(model.encode_users(items[None], torch.ones(1, 5, dtype=torch.bool), "a"), "b")[0].topk(N_B)
    got = Recommender.load(tmp_path / "bundle").recommend(HISTORY, source="a", platform="b", k=N_B, explain=0)
    assert_same_ranking([x.score for x in got.items], dataset.item_idx("b", [x.item_id for x in got.items]),
                        want.values, want.indices, atol=1e-4)

    assert main([*base, "--output", str(tmp_path / "none")]) == 2
    assert "own item space: give its item vectors (`--item-space b=FILE`" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "none"), "--item-space", f"b={tmp_path / 'other.npz'}"]) == 2
    assert "item-space:b: model" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


# ---- offline API documentation ----

LINK = re.compile(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
URL_IN_CODE = re.compile(r"""["']([^"'\s]*\.(?:js|css|png))["']""")
ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def page_assets(html: str) -> set[str]:
    """Every URL a docs page names: src=/href= attributes and script/style/icon paths in its
    inline code (where Swagger UI's page puts nothing else)."""
    return set(LINK.findall(html)) | set(URL_IN_CODE.findall(html))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_every_asset_from_the_service_itself(client, page):
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert not re.search(r"https?:|//[a-z0-9]", html, re.IGNORECASE), "an external URL in " + page
    assets = page_assets(html)
    assert any(a.endswith(".js") for a in assets), assets
    for url in assets:
        assert url.startswith("/static/docs/"), url
        got = client.get(url)
        assert got.status_code == 200 and got.content, url
        assert ASSET_TYPES[pathlib.PurePosixPath(url).suffix] in got.headers["content-type"], url
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("path", ["/static/docs/%2e%2e/__init__.py", "/static/docs/..%2f__init__.py",
                                  "/static/docs/%2e%2e/%2e%2e/fastapi/__init__.py", "/static/docs/nothing.js"])
def test_the_docs_assets_name_no_file_outside_their_folder(client, path):
    """(The client would resolve a plain ``../`` itself; escaped, it reaches the app.)"""
    assert client.get("/static/docs/favicon.png").status_code == 200
    assert client.get(path).status_code == 404


def test_a_literal_dot_dot_path_reaching_the_app_is_refused(client):
    """The ASGI app called directly, with ``..`` in the path no client has normalised."""
    sent, incoming = [], [{"type": "http.disconnect"}, {"type": "http.request", "body": b""}]

    async def receive():
        return incoming.pop() if len(incoming) > 1 else incoming[0]

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/static/docs/../__init__.py",
             "raw_path": b"/static/docs/../__init__.py", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1),
             "server": ("testserver", 80)}
    anyio.run(client.app, scope, receive, send)
    assert sent[0]["status"] == 404
