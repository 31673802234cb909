"""The HTTP service: a FastAPI app over one :class:`~multimodal_interest.recommend.Recommender`.

    GET  /              a page to try the model in a browser (``multimodal_interest/web/``:
                        plain HTML, CSS and JavaScript served from ``/static/web``)
    POST /recommend     top-K items of a platform for a history, a user id or an interest
                        document, with the titles of every item it names (``titles``)
    POST /users/embed   the portable interest document of a history or user id
    GET  /items/search  items of a platform whose title holds every word of ``q``
    GET  /map           a 2-D map of a sample of users' interest vectors (stored in the bundle)
    POST /users/map     where a history or user id sits on that map
    GET  /platforms     the model, the platforms (items, target, history) and each target's
                        index (kind, settings, recorded recall@10)
    GET  /health        liveness, with the model fingerprint
    GET  /docs          OpenAPI documentation (``/openapi.json``; also ``/redoc``), whose
                        scripts and styles are served from ``/static/docs`` (the files of
                        the installed ``fastapi-offline`` package): it works offline

Requests are validated by pydantic models (strict types, no unknown fields, bounded sizes:
:data:`MAX_K`, :data:`MAX_HISTORY`, :data:`MAX_ID_LENGTH`, :data:`MAX_EXPLAIN`); their 422
lists pydantic's errors (a search's ``q`` is at most :data:`MAX_QUERY` characters, its ``k`` at most
:data:`MAX_RESULTS`) (without the quoted input where it holds NaN or an infinity, which
Python's JSON reads and strict JSON cannot write; a lone surrogate, which JSON's ``\\ud800``
escape can carry but UTF-8 cannot, is shown backslash-escaped), so no request body makes the
error handler itself fail. A request the model cannot serve
(:class:`~multimodal_interest.recommend.RequestError`: unknown platform, items or user; an
:class:`~multimodal_interest.interest.InterestDocumentError`) gets 422 with the reason in
``detail``; any other error is a bug, and a 500. A body not labelled JSON (form, multipart,
plain text, none) gets 415; a body that is not JSON gets 422 (400 when Python's JSON parser
gives up on it: nested too deep, an integer of over 4300 digits); a body over
``max_body_bytes`` gets 413 before it is parsed, one slower than ``body_timeout`` 408.
``POST /recommend`` requests that arrive together are scored together (micro-batches, see
:func:`create_app`); one that finds :data:`MAX_QUEUE` requests already waiting gets 503 with
``Retry-After``. A 4xx
quotes at most :data:`MAX_QUOTE` characters of any request value and lists at most
:data:`MAX_ERRORS` errors. Nothing in a request names a
file: the model, the index and the user table are loaded once, read-only, before the app
starts. ``mmi serve`` binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import faiss
import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from multimodal_interest.interest import InterestDocumentError
from multimodal_interest.micro_batch import MicroBatcher, Overloaded
from multimodal_interest.recommend import Ask, Recommendation, Recommender, RequestError
from multimodal_interest.titles import ItemTitles

MAX_K = 1000
MAX_HISTORY = 1000  # items per request; the model uses the most recent max_len of them
MAX_ID_LENGTH = 256
MAX_EXPLAIN = 10
MAX_BODY_BYTES = 1 << 20
BODY_TIMEOUT = 10.0  # seconds a request body may take to arrive, from its headers
MAX_QUERY = 100  # characters of a title search
MAX_ERRORS = 10  # errors a 422 lists (the first ones)
MAX_QUOTE = 200  # characters of the request a 4xx quotes back, per quoted value
MAX_DETAIL = 2000  # characters of a refusal's reason
MAX_RESULTS = 50  # items a title search answers with
MAX_BATCH = 64  # requests scored together at most
MAX_QUEUE = 256  # requests waiting for a batch, per process; one more gets 503
RETRY_AFTER = "1"  # seconds a 503 asks the client to wait
DOCS_ASSETS = "/static/docs"  # where the documentation pages' scripts, styles and icon are served
WEB_ASSETS = "/static/web"  # the try-it page's script, style and icon
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
NO_MAP = ("this bundle has no user map (exported with --map-users 0, or before maps existed); "
          "re-export it with `mmi export-index`")

Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HistoryEntry(_Strict):
    platform: Name
    item_id: ItemId


class Person(_Strict):
    """Who to recommend for: a ``history`` (oldest first; ``{platform, item_id}`` objects, or
    plain item ids of platform ``source``) or a ``user_id`` of the served dataset."""

    history: Annotated[list[HistoryEntry] | list[ItemId], Field(max_length=MAX_HISTORY)] | None = None
    source: Name | None = None
    user_id: ItemId | None = None
    skip_unknown: bool = Field(False, description="leave unknown item ids out (and list them) "
                                                  "instead of refusing the request")

    def pairs(self) -> list | None:
        if self.history is None:
            return None
        return [(x.platform, x.item_id) if isinstance(x, HistoryEntry) else x for x in self.history]


class RecommendRequest(Person):
    platform: Name = Field(description="the platform to recommend on")
    k: int = Field(10, ge=1, le=MAX_K)
    interest: dict[str, Any] | None = Field(None, description="a portable interest document "
                                                              "(from POST /users/embed) instead of a history")
    exclude_seen: bool = True
    explain: int = Field(3, ge=0, le=MAX_EXPLAIN, description="history items named per recommended item")


@dataclass
class TitledRecommendation(Recommendation):
    titles: dict[str, dict[str, str]] = field(default_factory=dict)  # platform -> item id -> title


class SearchHit(BaseModel):
    item_id: str
    title: str


class SearchAnswer(BaseModel):
    platform: str
    query: str
    items: list[SearchHit]
    matches: int = Field(description="items that match (``items`` holds the first k)")


class MapAnswer(BaseModel):
    source: str = Field(description="the platform whose histories made the sample's vectors")
    users: int
    explained_variance: list[float] = Field(description="share of the sample's variance along x and y")
    points: list[list[float]] = Field(description="[x, y] of each sampled user")


class MapPoint(BaseModel):
    point: list[float] = Field(description="[x, y] on the map of GET /map")
    items: int = Field(description="history items the interest vector was made of (0: an empty history)")


class JSONBytes(JSONResponse):
    """A JSON answer written by orjson straight from dataclasses, dicts and lists: the
    answers the service computes are sent as they are, not validated again against their
    ``response_model`` (which documents them in OpenAPI)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(recommender: Recommender, max_body_bytes: int = MAX_BODY_BYTES,
               body_timeout: float = BODY_TIMEOUT, max_batch: int = MAX_BATCH,
               max_queue: int = MAX_QUEUE) -> FastAPI:
    """The app. Every route is a coroutine that computes on the event loop's own thread, with
    no hop to a thread pool (a request costs about a millisecond: handing it to a thread and
    back cost more); a process serves one core's worth, and ``mmi serve --workers N`` runs N
    processes on one listening socket. ``POST /recommend`` requests are checked and resolved
    one by one (:meth:`~multimodal_interest.recommend.Recommender.prepare`: 422 at once for
    one it cannot serve), then scored in micro-batches
    (:class:`~multimodal_interest.micro_batch.MicroBatcher`): those that arrive while a batch
    computes, up to ``max_batch``, make the next one; over ``max_queue`` waiting, a request
    gets 503 with ``Retry-After``. A body must arrive whole within ``body_timeout`` seconds of
    its headers (else 408) and be at most ``max_body_bytes`` (else 413)."""
    app = FastAPI(title="multimodal-interest", version="1",
                  description="Cross-platform recommendations from a person's history on other platforms.",
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, timeout=body_timeout)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, refused)
    bundle = recommender.bundle
    titles = ItemTitles(bundle.item_ids, bundle.titles)

    def serve(call, *args, **kwargs):
        faiss.omp_set_num_threads(1)  # one thread per request; FAISS's setting is per thread
        try:
            return call(*args, **kwargs)
        except (RequestError, InterestDocumentError) as e:  # the request cannot be served: say why
            raise HTTPException(status_code=422, detail=_utf8_safe(str(e))) from None

    batcher = MicroBatcher(lambda batch: serve(recommender.score, batch), max_batch, max_queue)
    app.state.batcher = batcher

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": recommender.fingerprint}

    @app.get("/platforms")
    async def platforms() -> dict[str, Any]:
        return recommender.describe()

    @app.post("/recommend", response_model=TitledRecommendation, dependencies=[JSON_BODY])
    async def recommend(body: RecommendRequest) -> Response:
        prepared = serve(recommender.prepare, Ask(
            body.pairs(), platform=body.platform, k=body.k, source=body.source, user_id=body.user_id,
            interest=body.interest, exclude_seen=body.exclude_seen, explain=body.explain,
            skip_unknown=body.skip_unknown))
        try:
            r = await batcher.submit(prepared)
        except Overloaded:
            raise HTTPException(503, f"the service is busy: over {max_queue} requests wait; retry later",
                                headers={"Retry-After": RETRY_AFTER}) from None
        except (RequestError, InterestDocumentError) as e:
            raise HTTPException(status_code=422, detail=_utf8_safe(str(e))) from None
        named = {(r.platform, x.item_id) for x in r.items} | {(c.platform, c.item_id) for x in r.items
                                                              for c in x.because}
        shown: dict[str, dict[str, str]] = {}
        for p, i in sorted(named):
            shown.setdefault(p, {})[i] = titles.title(p, i)
        return JSONBytes(TitledRecommendation(**vars(r), titles=shown))

    @app.get("/items/search", response_model=SearchAnswer)
    async def search(platform: Annotated[str, Query(min_length=1, max_length=64)],
               q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, description="words of the title")],
               k: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 10) -> SearchAnswer:
        if platform not in bundle.item_ids:
            raise HTTPException(422, _utf8_safe(f"unknown platform {platform!r}; this model knows "
                                                f"{sorted(bundle.item_ids)}"))
        hits, matches = titles.search(platform, q, k)
        return SearchAnswer(platform=platform, query=_utf8_safe(q), matches=matches,
                            items=[SearchHit(item_id=i, title=t) for i, t in hits])

    @app.get("/map", response_model=MapAnswer)
    async def user_map() -> MapAnswer:
        m = _map()
        return MapAnswer(source=m.source, users=len(m.points), explained_variance=m.explained.tolist(),
                         points=np.round(m.points.astype(np.float64), 4).tolist())

    @app.post("/users/map", response_model=MapPoint, dependencies=[JSON_BODY])
    async def locate(body: Person) -> Response:
        m = _map()
        doc = serve(recommender.export_interest, body.pairs(), source=body.source,
                    user_id=body.user_id, skip_unknown=body.skip_unknown)
        return JSONBytes(MapPoint(point=m.project(np.array(doc["vector"], dtype=np.float32)).tolist(),
                                  items=doc["history"]["items"]).model_dump())

    def _map():
        if bundle.user_map is None:
            raise HTTPException(404, NO_MAP)
        return bundle.user_map

    @app.post("/users/embed", response_model=dict[str, Any], dependencies=[JSON_BODY])
    async def embed(body: Person) -> Response:
        return JSONBytes(serve(recommender.export_interest, body.pairs(), source=body.source,
                               user_id=body.user_id, skip_unknown=body.skip_unknown))

    add_offline_docs(app)  # after the API: a request tries the routes in order
    add_page(app)
    return app


def add_offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with every script, style and icon served from
    :data:`DOCS_ASSETS`, a read-only mount of the asset folder of the installed
    ``fastapi-offline`` package, so the pages need no CDN (nor Google Fonts)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=_docs_asset_folder()), name="docs-assets")
    openapi_url, favicon = app.openapi_url, f"{DOCS_ASSETS}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=favicon,
            swagger_ui_parameters={"validatorUrl": None})  # no badge fetched from swagger.io

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - API",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=favicon, with_google_fonts=False)


def add_page(app: FastAPI) -> None:
    """``/``: the try-it page, with its script and style served from :data:`WEB_ASSETS` (the
    ``web/`` folder of this package); a Content-Security-Policy lets it load nothing but
    them and talk to nothing but this service."""
    folder = importlib.resources.files("multimodal_interest") / "web"
    page = (folder / "index.html").read_text(encoding="utf-8")
    app.mount(WEB_ASSETS, StaticFiles(directory=str(folder)), name="web-assets")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY,
                                           "X-Content-Type-Options": "nosniff"})


def _docs_asset_folder() -> str:
    """The folder of Swagger UI's and ReDoc's files shipped in the ``fastapi-offline`` wheel."""
    return str(importlib.resources.files("fastapi_offline") / "static")


async def json_body(request: Request) -> None:
    """A route's dependency: its body must be labelled JSON (``application/json``, or any
    ``application/*+json``), else 415. Form, multipart and plain-text bodies (which any web
    page can send without a CORS preflight), a missing label and a mislabelled body alike."""
    label = request.headers.get("content-type", "")
    kind = label.split(";", 1)[0].strip().lower()
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise HTTPException(415, f"the body must be JSON, sent with Content-Type: application/json "
                                 f"(got {_cut(label) if label else 'no Content-Type'})")


JSON_BODY = Depends(json_body)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 answer to a request pydantic refuses, as strict JSON (see :func:`_strict`),
    bounded: the first :data:`MAX_ERRORS` errors, each quoting at most :data:`MAX_QUOTE`
    characters of the request."""
    return JSONResponse({"detail": [_strict(e) for e in exc.errors()[:MAX_ERRORS]]}, status_code=422)


async def refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every other 4xx (and FastAPI's 400 for a body its JSON parser gives up on) as
    ``{"detail": reason}``, the reason cut to :data:`MAX_DETAIL` characters."""
    detail = _cut(exc.detail, MAX_DETAIL) if isinstance(exc.detail, str) else exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


_UNQUOTABLE = object()


def _strict(error: dict[str, Any]) -> dict[str, Any]:
    """A pydantic error as strict UTF-8 JSON: lone surrogates in any string (field names in
    ``loc``, the quoted ``input``) backslash-escaped, every string cut to :data:`MAX_QUOTE`
    characters, the ``input`` over that written out as JSON and cut (a string), and without
    the ``input`` if it still cannot be written: it holds NaN or an infinity (Python's JSON
    reads them, strict JSON has no such numbers) or is nested too deep to write."""
    out = {}
    for key, value in error.items():
        value = _quotable(value) if key == "input" else _cut(_utf8_safe(jsonable_encoder(value)))
        if value is not _UNQUOTABLE:
            out[key] = value
    return out


def _quotable(value: Any) -> Any:
    """``value`` (a parsed JSON value, or the bytes of a body that is not JSON) as the answer
    can quote it, or ``_UNQUOTABLE``."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[:MAX_QUOTE]).decode("utf-8", "backslashreplace")
    for candidate in (lambda: value, lambda: _utf8_safe(value)):
        try:
            shown = candidate()
            text = json.dumps(shown, allow_nan=False, ensure_ascii=False)
            text.encode("utf-8")
            return shown if len(text) <= MAX_QUOTE else _cut(text)
        except (ValueError, TypeError, RecursionError):  # NaN, a lone surrogate, too deep, not JSON
            continue
    return _UNQUOTABLE


def _cut(value: Any, limit: int = MAX_QUOTE) -> Any:
    """``value`` with every string over ``limit`` characters cut, saying how long it was."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} characters)"
    if isinstance(value, dict):
        return {_cut(k, limit): _cut(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cut(v, limit) for v in value]
    return value


def _utf8_safe(value: Any) -> Any:
    """``value`` with every string (and dict key) that UTF-8 cannot encode -- a lone surrogate,
    which the JSON escape ``\\ud800`` yields -- backslash-escaped; anything else as it is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_utf8_safe(v) for v in value]
    return value


class BodyLimit:
    """ASGI middleware: read a request's whole body before anything parses it, and answer 413
    to one over ``max_bytes`` (declared or sent), 408 to one that takes over ``timeout``
    seconds to arrive (a client trickling a byte at a time holds no connection for long);
    the body, once read whole, is passed on."""

    def __init__(self, app, max_bytes: int, timeout: float):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(413, f"request body over {self.max_bytes} bytes", scope, receive, send)
        body, more = b"", True
        with anyio.move_on_after(self.timeout):
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_bytes:
                    return await self._refuse(413, f"request body over {self.max_bytes} bytes", scope, receive, send)
        if more:
            return await self._refuse(408, f"request body not received within {self.timeout:g} s",
                                      scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(status: int, reason: str, scope, receive, send) -> None:
        """Answer and close the connection: the rest of the body is never read."""
        await JSONResponse({"detail": reason}, status_code=status, headers={"connection": "close"})(scope, receive, send)
