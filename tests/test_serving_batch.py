"""Micro-batched serving: requests scored together answer what each answers alone, one
request's error stays its own, and the service batches concurrent requests, refusing the
excess with 503 rather than queueing without bound."""
from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

import httpx
import numpy as np
import pytest
import torch

from multimodal_interest.bundle import Bundle
from multimodal_interest.micro_batch import MicroBatcher, Overloaded
from multimodal_interest.recommend import Ask, Recommendation, Recommender
from multimodal_interest.server import create_app
from serving_world import train_model, write_world


@pytest.fixture(scope="module", params=["transformer", "linear"])
def rec(request, tmp_path_factory) -> Recommender:
    root = tmp_path_factory.mktemp(f"batch-{request.param}")
    dataset, store = write_world(root)
    run = train_model(dataset, store, root / "run", kind=request.param)
    Bundle.build(run, dataset, store).save(root / "bundle", ("flat",))
    return Recommender.load(root / "bundle", "flat", dataset)


def mix(rec: Recommender) -> list[Ask]:
    """Every kind of request: plain ids and mixed (platform, id) histories of every length
    (empty: the fallback), user ids, an interest document, unknown items skipped or refused,
    items of the target platform in the history, both exclude_seen, several k and explain."""
    rng = np.random.default_rng(0)
    n_a, n_b = len(rec.bundle.item_ids["a"]), len(rec.bundle.item_ids["b"])
    asks = []
    for n in (0, 1, 2, 5, 8, 13, 30):
        ids = [f"a{i}" for i in rng.choice(n_a, n, replace=False)]
        asks.append(Ask(ids, platform="b", source="a", k=int(rng.choice([1, 7, 10, n_b])),
                        explain=int(rng.choice([0, 3, 10])), exclude_seen=bool(n % 2)))
        pairs = [("a", f"a{rng.integers(n_a)}") if rng.random() < 0.6 else ("b", f"b{rng.integers(n_b)}")
                 for _ in range(n)]
        asks.append(Ask(pairs, platform="b", k=10, explain=3, exclude_seen=bool(n % 3)))
    asks += [Ask(user_id=u, platform="b", k=5, explain=2) for u in ("u1", "u17", "u40")]
    asks.append(Ask(platform="b", interest=rec.export_interest(["a1", "a2", "a3"], source="a")))
    asks.append(Ask(["a1", "nope", "a4"], platform="b", source="a", skip_unknown=True))
    asks.append(Ask(["a1", "nope"], platform="b", source="a"))  # refused: an unknown item
    asks.append(Ask(["a1"], platform="nowhere", source="a"))  # refused: an unknown platform
    asks.append(Ask(["a1"], platform="b", source="a", k=0))  # refused: k
    return asks


def alone(rec: Recommender, ask: Ask) -> Recommendation | Exception:
    try:
        return rec.recommend(ask.history, platform=ask.platform, k=ask.k, source=ask.source,
                             user_id=ask.user_id, interest=ask.interest, exclude_seen=ask.exclude_seen,
                             explain=ask.explain, skip_unknown=ask.skip_unknown)
    except Exception as e:  # noqa: BLE001
        return e


def assert_same(got: Recommendation | Exception, want: Recommendation | Exception) -> None:
    """The same answer up to float rounding: items, order, explanations, reports, refusals."""
    if isinstance(want, Exception):
        assert type(got) is type(want) and str(got) == str(want)
        return
    assert isinstance(got, Recommendation), got
    g, w = asdict(got), asdict(want)
    for a, b in zip(g.pop("items"), w.pop("items"), strict=True):
        assert a["item_id"] == b["item_id"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
        for c, d in zip(a["because"], b["because"], strict=True):
            assert (c["item_id"], c["position"]) == (d["item_id"], d["position"])
            assert c["contribution"] == pytest.approx(d["contribution"], abs=1e-4)
    assert g == w  # platform, fallback, history report, model, index


def test_requests_scored_together_answer_as_each_alone(rec):
    asks = mix(rec)
    want = [alone(rec, a) for a in asks]
    assert sum(isinstance(w, Exception) for w in want) == 3
    assert any(isinstance(w, Recommendation) and w.fallback for w in want)
    assert any(isinstance(w, Recommendation) and any(x.because for x in w.items) for w in want)
    for got, w in zip(rec.recommend_many(asks), want, strict=True):
        assert_same(got, w)
    for got, w in zip(rec.recommend_many(asks[::-1]), want[::-1], strict=True):  # another batch order
        assert_same(got, w)


def test_one_request_with_a_broken_vector_fails_alone(rec, monkeypatch):
    """A row whose interest vector is not finite gets the error; the rest of its batch is served."""
    asks = [Ask([f"a{i}", "a2"], platform="b", source="a", explain=3) for i in (3, 4, 5)]
    want = [alone(rec, a) for a in asks]
    encode = rec.model.encode_users

    def poisoned(items, mask, platform):
        u = encode(items, mask, platform)
        return torch.where((items[:, :1] == rec._ids["a"]["a4"]) & mask[:, :1], torch.nan, u)
    monkeypatch.setattr(rec.model, "encode_users", poisoned)
    got = rec.recommend_many(asks)
    assert isinstance(got[1], RuntimeError) and "non-finite interest vector" in str(got[1])
    assert_same(got[0], want[0])
    assert_same(got[2], want[2])


def test_a_batch_that_fails_as_a_whole_is_scored_one_by_one(rec, monkeypatch):
    """Should scoring the batch raise, each request is scored alone: only the one that still
    fails gets the error."""
    asks = [Ask(["a1", "a2"], platform="b", source="a", k=k) for k in (5, 7, 9)]
    want = [alone(rec, a) for a in asks]
    retriever = rec.retrievers["b"]
    search = retriever.search

    def picky(queries, k, exclude=None):  # fails on a batch, and on k = 7
        if len(queries) > 1 or k == 7:
            raise ValueError("broken")
        return search(queries, k, exclude)
    monkeypatch.setattr(retriever, "search", picky)
    got = rec.recommend_many(asks)
    assert isinstance(got[1], ValueError)
    assert_same(got[0], want[0])
    assert_same(got[2], want[2])


# ---------------------------------------------------------------------------- the service
def body(ask: Ask) -> dict:
    out = {"platform": ask.platform, "k": ask.k, "explain": ask.explain, "exclude_seen": ask.exclude_seen,
           "skip_unknown": ask.skip_unknown}
    if ask.history is not None:
        out["history"] = ([{"platform": p, "item_id": i} for p, i in ask.history] if ask.source is None
                          else list(ask.history))
    if ask.source is not None:
        out["source"] = ask.source
    if ask.user_id is not None:
        out["user_id"] = ask.user_id
    if ask.interest is not None:
        out["interest"] = ask.interest
    return out


async def post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    """``bodies`` posted to ``/recommend`` at once (each its own task on one event loop)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await asyncio.gather(*(client.post("/recommend", json=b) for b in bodies))


def test_concurrent_requests_are_scored_in_batches_and_answer_as_alone(rec):
    asks = mix(rec)
    app = create_app(rec)
    answers = asyncio.run(post_all(app, [body(a) for a in asks]))
    batcher = app.state.batcher
    assert batcher.items == len(asks) - 3  # the three refusals never reached a batch
    assert batcher.batches < batcher.items / 4
    for r, ask in zip(answers, asks, strict=True):
        want = alone(rec, ask)
        if isinstance(want, Exception):  # pydantic's list of errors for k = 0, else the reason
            assert r.status_code == 422 and (ask.k < 1 or r.json()["detail"] == str(want))
            continue
        assert r.status_code == 200, r.text
        got = r.json()
        got.pop("titles")
        assert_same(_recommendation(got), want)


def _recommendation(d: dict) -> Recommendation:
    from multimodal_interest.recommend import Contribution, HistoryItem, HistoryReport, RecommendedItem

    items = [RecommendedItem(x["item_id"], x["score"], [Contribution(**c) for c in x["because"]])
             for x in d["items"]]
    h = d["history"]
    report = None if h is None else HistoryReport(
        h["given"], h["used"], h["truncated"], [HistoryItem(**x) for x in h["unknown"]],
        [HistoryItem(**x) for x in h["not_embeddable"]])
    return Recommendation(d["platform"], items, d["fallback"], report, d["model"], d["index"])


def test_over_max_queue_waiting_requests_get_503_with_retry_after(rec):
    app = create_app(rec, max_queue=4)
    answers = asyncio.run(post_all(app, [{"platform": "b", "source": "a", "history": ["a1", "a2"]}] * 10))
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 4 and codes.count(503) == 6
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
    assert [r.status_code for r in asyncio.run(post_all(app, [json.loads(json.dumps(
        {"platform": "b", "source": "a", "history": ["a1"]}))] * 4))] == [200] * 4  # the queue drained


def test_a_batch_of_at_most_max_batch_requests(rec):
    app = create_app(rec, max_batch=3)
    answers = asyncio.run(post_all(app, [{"platform": "b", "source": "a", "history": ["a1", f"a{i}"]}
                                         for i in range(2, 12)]))
    assert [r.status_code for r in answers] == [200] * 10
    assert app.state.batcher.batches == 4  # 3 + 3 + 3 + 1


# ---------------------------------------------------------------------------- the batcher
def test_the_batcher_answers_each_caller_its_own_answer_or_error():
    seen = []

    def compute(items):
        seen.append(list(items))
        return [ValueError(f"bad {x}") if x % 3 == 0 else x * 10 for x in items]

    async def main():
        batcher = MicroBatcher(compute, max_batch=4, max_queue=100)
        return await asyncio.gather(*(batcher.submit(x) for x in range(1, 11)), return_exceptions=True)
    out = asyncio.run(main())
    assert [type(x).__name__ if isinstance(x, Exception) else x for x in out] == \
        [10, 20, "ValueError", 40, 50, "ValueError", 70, 80, "ValueError", 100]
    assert str(out[2]) == "bad 3"
    assert seen == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_a_failing_compute_fails_its_batch_only_and_a_full_queue_refuses_at_once():
    def compute(items):
        if 2 in items:
            raise RuntimeError("broken")
        return items

    async def main():
        batcher = MicroBatcher(compute, max_batch=2, max_queue=3)
        first = await asyncio.gather(*(batcher.submit(x) for x in (1, 2, 3, 4)), return_exceptions=True)
        alone = await batcher.submit(5)  # a batch after a failed one computes as usual
        return first, alone
    first, alone = asyncio.run(main())
    assert [type(x).__name__ for x in first[:2]] == ["RuntimeError", "RuntimeError"]
    assert first[2] == 3 and isinstance(first[3], Overloaded)
    assert alone == 5


def test_a_cancelled_caller_is_left_out_of_its_batch():
    seen = []

    async def main():
        batcher = MicroBatcher(lambda items: seen.append(list(items)) or list(items))
        tasks = [asyncio.ensure_future(batcher.submit(x)) for x in (1, 2, 3)]
        await asyncio.sleep(0)  # each task submitted its item
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)
    out = asyncio.run(main())
    assert out[0] == 1 and isinstance(out[1], asyncio.CancelledError) and out[2] == 3
    assert seen == [[1, 3]]
