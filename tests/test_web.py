"""The page of ``mmi serve`` and the endpoints it uses, without a browser (tests/test_browser.py
drives the page in Chromium): title search, titles in recommendations, the users' map stored in
the bundle (verified like every other file) and a new person projected onto it."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from multimodal_interest.bundle import Bundle
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.recommend import Recommender
from multimodal_interest.server import MAX_QUERY, MAX_RESULTS, create_app
from serving_world import train_model, write_world

WEB = Path(__file__).resolve().parents[1] / "multimodal_interest" / "web"
HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">Brush & <b>ink</b> </td><script>x()</script>'
TITLES = {"a5": HOSTILE, "a6": "Café crème — Ünïcode brush", "a7": "Oil paint set, 24 colours",
          "a8": "Watercolour paint set", "a9": "paint"}


def titled_world(root: Path) -> dict:
    """The serving world with a few real-looking titles (one of them hostile markup), a
    trained model and its bundle (with a map of every user) at ``root / "bundle"``."""
    dataset, store = write_world(root)
    run = train_model(dataset, store, root / "run", epochs=2)
    items = root / "data" / "items" / "a.csv"
    table = pd.read_csv(items, dtype=str)
    table["title"] = [TITLES.get(i, t) for i, t in zip(table["item_id"], table["title"])]
    table.to_csv(items, index=False)
    dataset = CrossPlatformDataset.load(root / "data")
    Bundle.build(run, dataset, store).save(root / "bundle", ("flat",))
    return {"root": root, "dataset": dataset, "store": store, "run": run, "bundle": root / "bundle"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return titled_world(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def rec(world) -> Recommender:
    return Recommender.load(world["bundle"], "flat", world["dataset"])


@pytest.fixture(scope="module")
def client(rec) -> TestClient:
    return TestClient(create_app(rec), raise_server_exceptions=False)


def search(client, q, platform="a", k=None):
    params = {"platform": platform, "q": q} | ({"k": k} if k is not None else {})
    return client.get("/items/search", params=params)


# ------------------------------------------------------------------ the page
def test_the_page_and_its_assets_come_from_the_service_itself(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert {"/static/web/app.js", "/static/web/style.css", "/static/web/icon.svg"} <= set(assets)
    for url in assets:
        assert url.startswith("/"), f"{url}: the page names another host"
        assert client.get(url).status_code == 200, url
    assert "<script>" not in r.text and "style=" not in r.text  # nothing inline: the policy forbids it


def test_the_page_never_writes_data_as_markup():
    """Titles are untrusted: the script builds every node itself and sets text as text."""
    script = (WEB / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "textContent" in script


# ------------------------------------------------------------------ search
def test_search_finds_titles_by_their_words_best_first(client):
    answer = search(client, "PAINT set").json()
    assert [x["item_id"] for x in answer["items"]] == ["a8", "a7"]  # both hold the phrase: shorter title first
    assert answer["matches"] == 2
    answer = search(client, "paint").json()
    assert [x["item_id"] for x in answer["items"]] == ["a9", "a8", "a7"]  # equal, then holding it, shorter first
    assert [x["item_id"] for x in search(client, "SET oil").json()["items"]] == ["a7"]  # every word, any order
    assert search(client, "café CRÈME").json()["items"] == [{"item_id": "a6", "title": TITLES["a6"]}]
    assert search(client, "a17").json()["items"][0] == {"item_id": "a17", "title": "item a17"}  # the id itself


def test_search_answers_titles_verbatim_as_data(client):
    answer = search(client, "<b>ink</b>").json()
    assert answer["items"] == [{"item_id": "a5", "title": " ".join(HOSTILE.split())}]


def test_search_is_bounded_and_validated(client):
    answer = search(client, "item", k=MAX_RESULTS).json()
    assert len(answer["items"]) == MAX_RESULTS and answer["matches"] == 120 - len(TITLES)  # 120 items of a
    assert search(client, "item").json()["items"].__len__() == 10  # default k
    assert search(client, "x" * MAX_QUERY).status_code == 200
    for bad in [dict(q="x" * (MAX_QUERY + 1)), dict(q=""), dict(q="item", k=MAX_RESULTS + 1), dict(q="item", k=0),
                dict(q="item", k="ten")]:
        r = search(client, **bad)
        assert r.status_code == 422, (bad, r.text)
    r = search(client, "item", platform="nowhere")
    assert r.status_code == 422 and "unknown platform 'nowhere'" in r.json()["detail"]
    assert search(client, "   ").json()["items"] == []
    assert client.get("/items/search", params={"q": "item"}).status_code == 422  # no platform


# ------------------------------------------------------------------ titles in recommendations
def test_recommendations_carry_the_title_of_every_item_they_name(client, world):
    history = [{"platform": "a", "item_id": i} for i in ("a5", "a6", "a17", "a40")]
    r = client.post("/recommend", json={"history": history, "platform": "b", "k": 5, "explain": 3}).json()
    assert len(r["items"]) == 5
    named = {("b", x["item_id"]) for x in r["items"]} | {(c["platform"], c["item_id"]) for x in r["items"]
                                                         for c in x["because"]}
    assert any(x["because"] for x in r["items"])
    titles = {p: dict(zip(world["dataset"].items[p]["item_id"], world["dataset"].items[p]["title"])) for p in "ab"}
    shown = {(p, i): t for p, ts in r["titles"].items() for i, t in ts.items()}
    assert set(shown) == named
    assert all(shown[p, i] == " ".join(titles[p][i].split()) for p, i in named)


# ------------------------------------------------------------------ the map
def test_the_map_is_a_pca_of_the_users_interest_vectors(client, rec, world):
    m = rec.bundle.user_map
    dataset = world["dataset"]
    assert m.source == "a" and len(m.points) == int(dataset.active_users("a").sum())  # every user (< 2000)
    assert np.allclose(m.components @ m.components.T, np.eye(2), atol=1e-5)
    assert np.allclose(m.points.mean(0), 0, atol=1e-4)
    assert m.points[:, 0].var() >= m.points[:, 1].var() and 0 < m.explained.sum() <= 1
    answer = client.get("/map").json()
    assert answer["source"] == "a" and answer["users"] == len(m.points)
    assert np.allclose(answer["points"], m.points, atol=1e-4)


def test_a_person_is_projected_exactly_as_the_sample_was(client, rec):
    """One user of the sample, located by their history: their point on the map."""
    m = rec.bundle.user_map
    u = rec.export_interest(user_id="u3", source="a")
    located = client.post("/users/map", json={"user_id": "u3", "source": "a"}).json()
    assert np.allclose(located["point"], m.project(np.array(u["vector"], np.float32)), atol=1e-6)
    assert any(np.allclose(located["point"], p, atol=1e-4) for p in m.points)  # the same point as in the sample
    history = client.post("/users/map", json={"history": ["a5", "a6"], "source": "a"}).json()
    assert history["items"] == 2 and history["point"] != located["point"]
    r = client.post("/users/map", json={"history": ["no-such-item"], "source": "a"})
    assert r.status_code == 422 and "no-such-item" in r.json()["detail"]


@pytest.mark.parametrize("name", ["map.safetensors", "titles/a.json"])
def test_a_changed_map_or_titles_file_is_refused(world, tmp_path, name):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(world["bundle"], copy)
    data = bytearray((copy / name).read_bytes())
    data[-2] ^= 1
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(name)):
        Bundle.load(copy)


def test_a_bundle_without_a_map_or_titles_still_serves_the_page(world, tmp_path):
    """Exported with --map-users 0 from a dataset without text: ids stand in for titles."""
    bundle = Bundle.build(world["run"], world["dataset"], world["store"], map_users=0)
    bundle.titles = {}
    bundle.save(tmp_path / "bundle", ("flat",))
    client = TestClient(create_app(Recommender.load(tmp_path / "bundle")), raise_server_exceptions=False)
    assert client.get("/").status_code == 200
    r = client.get("/map")
    assert r.status_code == 404 and "mmi export-index" in r.json()["detail"]
    assert client.post("/users/map", json={"history": ["a5"], "source": "a"}).status_code == 404
    assert search(client, "a17").json()["items"] == [{"item_id": "a17", "title": "a17"}]
    r = client.post("/recommend", json={"history": ["a5"], "source": "a", "platform": "b", "k": 2}).json()
    assert all(r["titles"]["b"][x["item_id"]] == x["item_id"] for x in r["items"])
