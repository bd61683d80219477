"""OpenTelemetry's own SDK and OTLP/HTTP exporter against the service (docs/otlp.md).

A Starlette app traced by opentelemetry-instrumentation-asgi, in each of its semantic
convention modes (the older attributes, the current ones, both), serves a few
requests in-process; the real ``OTLPSpanExporter`` sends the spans to the service,
configured by arguments or by the ``OTEL_EXPORTER_OTLP_*`` variables docs/otlp.md
gives. Each request becomes the event its span describes (the span is the oracle for
time and duration); the instrumentation's other spans are ignored and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from apinalytics.apps import NewApp

from ..helpers import read_headers


async def order(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["order_id"]})


async def create(request: Request) -> Response:
    return JSONResponse({"id": 8}, status_code=201)


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


SHOP = Starlette(
    routes=[
        Route("/orders/{order_id}", order),
        Route("/orders", create, methods=["POST"]),
        Route("/boom", boom),
    ]
)


def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The span's name and route, as the Starlette and FastAPI instrumentations make them."""
    for route in SHOP.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL and isinstance(route, Route):
            return f"{scope['method']} {route.path}", {"http.route": route.path}
    return scope["method"], {}


def set_user(span: Span, scope: dict[str, Any]) -> None:
    """What an app's authentication sets: the caller's identity."""
    user = dict(scope["headers"]).get(b"x-user")
    if user and span.is_recording():
        span.set_attribute("enduser.id", user.decode())


async def serve(app: Any, method: str, path: str, query: bytes, user: bytes) -> int:
    """One request through the ASGI app, in-process; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"api.example"), (b"x-user", user)],
        "client": ("127.0.0.1", 50000),
        "server": ("api.example", 80),
    }
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.Event().wait()  # never disconnects
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with contextlib.suppress(RuntimeError):  # the server's part: Starlette answered 500
        await app(scope, receive, send)
    status: int = sent[0]["status"]
    return status


REQUESTS = [
    ("GET", "/orders/7", b"expand=items", b"alice", 200, "/orders/{order_id}"),
    ("POST", "/orders", b"", b"bob", 201, "/orders"),
    ("GET", "/boom", b"", b"carol", 500, "/boom"),
    ("GET", "/nowhere", b"", b"dave", 404, "GET"),  # no route: the span's name
]


@pytest.fixture(params=["", "http", "http/dup"], ids=["older", "current", "both"])
def semconv(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """OTEL_SEMCONV_STABILITY_OPT_IN, which the instrumentation reads once per process
    (hence its private flag reset around each test)."""
    mode: str = request.param
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", mode)
    _OpenTelemetrySemanticConventionStability._initialized = False
    yield mode
    _OpenTelemetrySemanticConventionStability._initialized = False


async def traced_requests() -> list[ReadableSpan]:
    """The spans of REQUESTS served by the instrumented app."""
    spans = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = OpenTelemetryMiddleware(
        SHOP,
        tracer_provider=provider,
        default_span_details=span_details,
        server_request_hook=set_user,
    )
    for method, path, query, user, status, _ in REQUESTS:
        assert await serve(app, method, path, query, user) == status
    finished = list(spans.get_finished_spans())
    provider.shutdown()
    return finished


def exact_us(ns: int) -> int:
    return round(Fraction(ns, 1000))


async def check_stored(
    client: TestClient, app: NewApp, db: asyncpg.Connection, spans: list[ReadableSpan], mode: str
) -> None:
    server = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(server) == len(REQUESTS)
    rows = await db.fetch(
        "SELECT (extract(epoch FROM time) * 1000000)::bigint AS us, consumer_id, method, url, "
        "function, response_us, status_code FROM events ORDER BY time"
    )
    assert len(rows) == len(REQUESTS)
    for row, s, (method, path, query, user, status, function) in zip(
        rows, server, REQUESTS, strict=True
    ):
        assert s.start_time is not None and s.end_time is not None
        target = path + (f"?{query.decode()}" if query else "")
        assert dict(row) == {
            "us": exact_us(s.start_time),
            "consumer_id": user.decode(),
            "method": method,
            # The older conventions record the full URL; the current ones its path and query.
            "url": f"http://api.example{target}" if mode == "" else target,
            "function": function,
            "response_us": exact_us(s.end_time - s.start_time),
            "status_code": status,
        }
    now = int(time.time())
    resp = await client.get(
        f"/1/timeseries/{now - 3600}/{now + 60}/",
        params={"group": "status_code"},
        headers=read_headers(app),
    )
    assert (await resp.json())["groups"] == {str(r[4]): [[now - 3600, 1]] for r in REQUESTS}
    metrics = await (await client.get("/metrics")).text()
    ignored = len(spans) - len(server)
    assert ignored > 0, "the instrumentation's send and receive spans"
    assert f'apinalytics_otlp_spans_ignored_total{{reason="not_server"}} {ignored}.0' in metrics


async def test_instrumented_app_exports_its_requests(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, semconv: str
) -> None:
    spans = await traced_requests()
    assert app_keys.write_key
    exporter = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{client.port}/v1/traces",
        headers={"X-Auth-User": app_keys.app_id, "X-Auth-Key": app_keys.write_key},
        compression=Compression.Gzip,
        timeout=10,
    )
    try:
        # The exporter blocks (requests); the service runs on this thread's event loop.
        assert await asyncio.to_thread(exporter.export, spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    await check_stored(client, app_keys, db, spans, semconv)


@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_exporter_configured_by_environment(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    compression: str,
) -> None:
    """docs/otlp.md's configuration: the endpoint, the headers and compression from the
    environment, nothing in code. A padded key (the 2014 clients' habit) works too."""
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    _OpenTelemetrySemanticConventionStability._initialized = False
    spans = await traced_requests()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{client.port}")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS",
        f"X-Auth-User={app_keys.app_id},X-Auth-Key={app_keys.write_key}=",
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    exporter = OTLPSpanExporter()
    try:
        assert await asyncio.to_thread(exporter.export, spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    await check_stored(client, app_keys, db, spans, "")
