"""No request makes the HTTP service answer 500: property-based requests (hypothesis)
over every endpoint's schema (bodies, and the title search's query parameters) -- random JSON values in each field, strings with lone
surrogates and control characters, huge integers, NaN and infinities, deep nesting, wrong
types, unknown fields, bytes that are not JSON -- each answered below 500 with strict UTF-8
JSON. Deterministic (derandomized, no example database) and bounded in time."""
from __future__ import annotations

import json
from urllib.parse import quote_from_bytes

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from multimodal_interest.bundle import Bundle
from multimodal_interest.recommend import Recommender
from multimodal_interest.server import create_app
from serving_world import train_model, write_world

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app over a small trained bundle (with the dataset, so user ids resolve), and a
    valid interest document to mutate."""
    root = tmp_path_factory.mktemp("fuzz")
    dataset, store = write_world(root)
    run = train_model(dataset, store, root / "run", epochs=1)
    Bundle.build(run, dataset, store).save(root / "bundle", ("flat",))
    rec = Recommender.load(root / "bundle", "flat", dataset)
    doc = rec.export_interest(["a3", "a17"], source="a")
    return TestClient(create_app(rec), raise_server_exceptions=False), doc


# ------------------------------------------------------------------ strategies
ODD_CHARS = st.one_of(st.characters(categories=["Cs"]),  # lone surrogates (JSON's "\ud800" escape)
                      st.characters(categories=["Cc"]),  # control characters, NUL included
                      st.characters())
TEXT = st.one_of(st.sampled_from(["a", "b", "a3", "b7", "u0", "u1", "zz", "", "../../etc/passwd",
                                  "multimodal-interest/interest-vector"]),
                 st.text(ODD_CHARS, max_size=12), st.text(ODD_CHARS, min_size=60, max_size=300))
NUMBER = st.one_of(st.integers(-5, 1005), st.integers(), st.sampled_from([10 ** 400, -10 ** 400, 2 ** 63, 2 ** 64]),
                   st.floats(allow_nan=True, allow_infinity=True))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                      st.dictionaries(TEXT, inner, max_size=5)), max_leaves=20)
HISTORY = st.one_of(st.lists(TEXT, max_size=12),
                    st.lists(st.fixed_dictionaries({"platform": TEXT, "item_id": TEXT}), max_size=8),
                    st.lists(st.dictionaries(st.sampled_from(["platform", "item_id", "x"]), JSON), max_size=4),
                    st.builds(lambda n: ["a3"] * n, st.integers(995, 1005)), JSON)


def _fields(schema: dict) -> st.SearchStrategy[dict]:
    """Objects with any subset of ``schema``'s fields (each from its strategy or any JSON
    value) and sometimes an unknown field."""
    value = {k: st.one_of(v, JSON) for k, v in schema.items()}
    extra = st.dictionaries(TEXT, JSON, max_size=1)
    return st.builds(lambda d, e: {**e, **d}, st.fixed_dictionaries({}, optional=value), extra)


PERSON = {"history": HISTORY, "source": TEXT, "user_id": TEXT, "skip_unknown": st.booleans()}
RECOMMEND = {**PERSON, "platform": TEXT, "k": NUMBER, "explain": NUMBER, "exclude_seen": st.booleans(),
             "interest": st.none()}  # documents: see interest_document below


KNOWN = st.sampled_from(["a0", "a3", "a17", "a42", "a99", "b0", "b7", "b104"])
ITEM = st.one_of(KNOWN, KNOWN, KNOWN, TEXT)  # mostly known ids, some anything
PLATFORM = st.sampled_from(["a", "b"])
PAIR = st.fixed_dictionaries({"platform": PLATFORM, "item_id": ITEM})
USER = st.one_of(st.sampled_from(["u0", "u1", "u7", "u299"]), TEXT)
OPTIONS = {"skip_unknown": st.booleans(), "k": st.integers(1, 1000), "explain": st.integers(0, 10),
           "exclude_seen": st.booleans()}


def near_valid(options: dict, **required: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """Requests of the right shape -- a history of ids with its source, of pairs, or a user
    id, well typed -- so that many get past validation into the recommender."""
    people = [{"history": st.lists(ITEM, max_size=12), "source": PLATFORM},
              {"history": st.lists(PAIR, max_size=12)}, {"user_id": USER}]
    return st.one_of([st.fixed_dictionaries({**required, **p}, optional=options) for p in people])


def interest_document(doc: dict) -> st.SearchStrategy[dict]:
    """A valid interest document with some fields replaced, removed or added."""
    changed = st.dictionaries(st.sampled_from([*doc, "extra"]), JSON, max_size=3)
    removed = st.sets(st.sampled_from(list(doc)), max_size=2)
    vector = st.lists(st.one_of(NUMBER, JSON), min_size=len(doc["vector"]), max_size=len(doc["vector"]))
    return st.builds(lambda c, r, v: {k: x for k, x in {**doc, "vector": v, **c}.items() if k not in r},
                     changed, removed, st.one_of(st.just(doc["vector"]), vector))


def deep(depth: int, kind: str) -> bytes:
    return ("[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth).encode()


RAW = st.one_of(st.binary(max_size=64),
                st.builds(deep, st.sampled_from([10, 900, 1100, 5000, 100_000]), st.sampled_from(["list", "dict"])),
                st.builds(lambda n: b'{"platform": "b", "k": ' + b"9" * n + b"}", st.sampled_from([10, 4301, 5000])))


def encode(body) -> bytes:
    """JSON as Python writes it: NaN/Infinity literals, lone surrogates as \\uXXXX escapes."""
    return body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()


def check(r, body) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300], encode(body)[:300])
    event(f"status {r.status_code}")  # --hypothesis-show-statistics: how many got how far
    strict_json(r)


def strict_json(r) -> dict:
    """The answer's body: a JSON object in strict UTF-8 JSON (no NaN)."""
    answer = json.loads(r.content.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"{c} in the answer"))
    assert isinstance(answer, dict)
    return answer


# ------------------------------------------------------------------ properties
@FUZZ
@given(body=st.one_of(near_valid(OPTIONS, platform=PLATFORM),
                     _fields(RECOMMEND), JSON, RAW))
def test_recommend_never_answers_500(served, body):
    client, _ = served
    check(client.post("/recommend", content=encode(body), headers={"content-type": "application/json"}), body)


@FUZZ
@given(data=st.data())
def test_recommend_with_an_interest_document_never_answers_500(served, data):
    client, doc = served
    body = {"platform": data.draw(st.one_of(st.just("b"), TEXT)), "interest": data.draw(interest_document(doc)),
            **data.draw(st.fixed_dictionaries({}, optional={"k": NUMBER, "explain": NUMBER}))}
    check(client.post("/recommend", content=encode(body), headers={"content-type": "application/json"}), body)


@FUZZ
@given(body=st.one_of(near_valid({"skip_unknown": st.booleans()}), _fields(PERSON), JSON, RAW))
def test_embed_never_answers_500(served, body):
    client, _ = served
    check(client.post("/users/embed", content=encode(body), headers={"content-type": "application/json"}), body)


@FUZZ
@given(body=st.one_of(near_valid({"skip_unknown": st.booleans()}), _fields(PERSON), JSON, RAW))
def test_locating_a_person_on_the_map_never_answers_500(served, body):
    client, _ = served
    check(client.post("/users/map", content=encode(body), headers={"content-type": "application/json"}), body)


def query_string(params: list[tuple[str, object]]) -> str:
    """Query parameters as a client may send them: any string percent-encoded from its bytes
    (a lone surrogate as its raw bytes, which are not UTF-8), any other JSON value written out."""
    def encoded(value) -> str:
        text = value if isinstance(value, str) else json.dumps(value, allow_nan=True)
        return quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")
    return "&".join(f"{encoded(k)}={encoded(v)}" for k, v in params)


SEARCH_NEAR = st.fixed_dictionaries({"platform": PLATFORM, "q": st.one_of(KNOWN, st.sampled_from(["item", "item a1"]), TEXT)},
                                    optional={"k": st.one_of(st.integers(1, 50), st.integers(-2, 60))})
SEARCH_ANY = st.dictionaries(st.sampled_from(["platform", "q", "k", "x"]), st.one_of(TEXT, NUMBER, JSON), max_size=4)


@FUZZ
@given(params=st.one_of(SEARCH_NEAR, SEARCH_ANY), repeat=st.booleans())
def test_title_search_never_answers_500(served, params, repeat):
    """Any query parameters (missing, repeated, any bytes, any length) to GET /items/search:
    below 500, strict JSON; a search that gets through answers at most k items."""
    client, _ = served
    items = list(params.items())
    r = client.get("/items/search?" + query_string(items + (items if repeat else [])))
    check(r, params)
    if r.status_code == 200:
        answer = r.json()
        assert len(answer["items"]) <= min(int(params.get("k", 10)), answer["matches"])


@settings(FUZZ, max_examples=40)
@given(path=st.sampled_from(["/health", "/platforms", "/recommend", "/users/embed", "/nowhere", "/", "/map",
                             "/users/map", "/items/search", "/static/web/app.js"]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), body=st.one_of(RAW, JSON), query=TEXT)
def test_any_method_and_path_never_answers_500(served, path, method, body, query):
    client, _ = served
    r = client.request(method, path, content=encode(body), params={"q": query.encode("utf-8", "surrogatepass")},
                       headers={"content-type": "application/json"})
    assert r.status_code < 500, (method, path, r.status_code, r.text[:300])


# ------------------------------------------------------------------ the cases found, pinned
@pytest.mark.parametrize("path, body", [
    ("/recommend", b'{"platform": "\\ud800", "history": ["a3"], "source": "a"}'),
    ("/recommend", b'{"platform": "b", "history": ["a3", "\\udfff"], "source": "a"}'),
    ("/recommend", b'{"platform": "b", "history": ["a3"], "source": "a", "\\ud800": 1}'),
    ("/users/embed", b'{"history": [{"platform": "a", "item_id": "\\udc00x"}]}'),
    ("/users/embed", b'{"user_id": "\\ud83d"}'),
])
def test_a_lone_surrogate_is_a_422_that_shows_it_escaped(served, path, body):
    client, _ = served
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(e["type"] == "string_unicode" and "\\ud" in e["input"] for e in detail), detail  # shown escaped


@pytest.mark.parametrize("depth", [900, 990, 5000])
def test_a_deeply_nested_body_is_refused_not_a_500(served, depth):
    """Deep enough to trouble a recursive error handler, or Python's JSON parser itself."""
    client, _ = served
    for path in ("/recommend", "/users/embed"):
        r = client.post(path, content=deep(depth, "list"), headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), r.text[:200]


BODY_ROUTES = ["/recommend", "/users/embed", "/users/map"]
GOOD = b'{"platform": "b", "source": "a", "history": ["a3"]}'


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("label, body", [
    ("application/x-www-form-urlencoded", GOOD),  # curl -d's default
    ("application/x-www-form-urlencoded", b"platform=b&source=a&history=a3"),
    ("text/plain", GOOD),  # what a web page on any site may send without a CORS preflight
    ("text/plain;charset=UTF-8", GOOD),
    ("multipart/form-data; boundary=x", b'--x\r\ncontent-disposition: form-data; name="platform"\r\n\r\nb\r\n--x--\r\n'),
    (None, GOOD),
    ("image/png", GOOD),  # a JSON body labelled as something else
    ("application/octet-stream", b"\x89PNG\r\n\x1a\n\x00\xff"),
])
def test_a_body_not_labelled_json_is_a_415(served, path, label, body):
    client, _ = served
    r = client.post(path, content=body, headers={"content-type": label} if label else {})
    assert r.status_code == 415, r.text[:300]
    assert "application/json" in r.json()["detail"]


@pytest.mark.parametrize("label", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                   "application/merge-patch+json"])
def test_a_body_labelled_json_is_served(served, label):
    client, _ = served
    r = client.post("/users/embed", content=b'{"source": "a", "history": ["a3"]}', headers={"content-type": label})
    assert r.status_code == 200, r.text[:300]


def test_a_form_body_labelled_json_is_a_422(served):
    client, _ = served
    r = client.post("/recommend", content=b"platform=b&source=a", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("path, body", [
    ("/recommend", {"platform": "b", "source": "a", "history": ["a3"] * 100_000}),  # too long: quoted cut
    ("/users/embed", {"source": "a", "history": [[i] for i in range(50_000)]}),  # 100,000 wrong items
    ("/recommend", {"platform": "b" * 100_000, "source": "a", "history": ["a3"]}),
    ("/users/embed", {"source": "a", "history": ["a3"], "x" * 200_000: 1}),  # a long unknown field name
    ("/recommend", {"platform": "b", "interest": {"vector": "v" * 300_000}}),
])
def test_a_4xx_quotes_a_bounded_excerpt_of_the_request(served, path, body):
    """However large the request (up to the body limit), its error answer stays small."""
    client, _ = served
    r = client.post(path, json=body)
    assert 400 <= r.status_code < 500, r.text[:300]
    assert len(r.content) < 8_000, (len(r.content), r.text[:300])
    strict_json(r)


LABELS = st.one_of(st.sampled_from([
    None, "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "multipart/form-data",
    "text/plain", "text/plain;charset=UTF-8", "image/png", "application/octet-stream", "application/xml",
    "application/problem+json", "application/jsonx", "json", "", ";", "application/json;;;", "*/*"]),
    st.text(st.characters(codec="latin-1"), max_size=40))  # any header value HTTP can carry


def form(body) -> bytes:
    """``body`` as a form would send it (fields url-encoded; nested values as JSON)."""
    from urllib.parse import urlencode

    if isinstance(body, bytes):
        return body
    fields = body if isinstance(body, dict) else {"body": body}
    return urlencode({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()},
                     encoding="utf-8", errors="surrogatepass").encode()


def multipart(body) -> bytes:
    return (b'--x\r\ncontent-disposition: form-data; name="body"\r\ncontent-type: application/json\r\n\r\n'
            + encode(body) + b"\r\n--x--\r\n")


@FUZZ
@given(path=st.one_of(st.sampled_from(BODY_ROUTES), st.sampled_from(BODY_ROUTES), st.sampled_from(BODY_ROUTES),
                     st.sampled_from(["/health", "/platforms", "/map", "/items/search", "/nowhere"])),
       method=st.sampled_from(["POST"] * 6 + ["GET", "PUT"]),
       label=st.one_of(st.just("application/json"), LABELS),
       body=st.one_of(near_valid(OPTIONS, platform=PLATFORM), near_valid({"skip_unknown": st.booleans()}), JSON, RAW),
       shape=st.sampled_from([encode, encode, form, multipart]))
def test_any_content_type_on_any_route_is_answered_below_500_in_json(served, path, method, label, body, shape):
    """Every route, every Content-Type (form, text, multipart, none, and lies: JSON labelled
    image/png, a form labelled application/json): below 500, and every error in JSON."""
    client, _ = served
    content = shape(body)
    headers = {"content-type": label.encode("latin-1")} if label is not None else {}
    r = client.request(method, path, content=content, headers=headers)
    assert r.status_code < 500, (method, path, label, r.status_code, r.text[:300], content[:200])
    event(f"status {r.status_code} {method} {path}")
    if r.status_code >= 400 or path in BODY_ROUTES:
        strict_json(r)
    if path in BODY_ROUTES and method == "POST" and r.status_code < 415:
        kind = (label or "").split(";")[0].strip().lower()
        assert kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")), label
