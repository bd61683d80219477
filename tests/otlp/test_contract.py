"""SPEC "OpenTelemetry ingest" — ``POST /v1/traces``, as a contract (docs/otlp.md).

* OTLP/HTTP: an ExportTraceServiceRequest in protobuf (``application/x-protobuf``) or
  the OTLP JSON mapping (``application/json``: hex IDs, enums as integers, camelCase
  or proto field names), gzip or not; the write key in X-Auth-User / X-Auth-Key.
* Each span of kind SERVER with an HTTP method attribute is one event, read from the
  current or the older semantic conventions; response time from the span's duration,
  time from its start (both to the nearest microsecond); the consumer and ``data``
  from configured attributes, the span's before the resource's.
* Other spans are ignored and counted (``apinalytics_otlp_spans_ignored``).
* A span whose event fails the validation of ``/1/events/`` is rejected alone: 200
  with ``partial_success`` {rejected_spans, error_message}; the others are stored.
* An undecodable body is a 400 and stores nothing; errors are google.rpc.Status in
  the request's encoding (415 for another content type, in our JSON error shape);
  413 over the limits; 401/403 for keys; 503 with Retry-After when the database is
  unavailable. An Idempotency-Key stores a request once; reused with another body
  (compared after gunzip) it is a 422 ``idempotency_key_reused`` that stores nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from apinalytics.apps import NewApp
from apinalytics.settings import Settings

from ..conftest import MakeSettings
from ..helpers import assert_error, read_headers
from .spans import (
    CURRENT,
    JSON,
    OLDER,
    PROTOBUF,
    Attr,
    body,
    encode,
    headers,
    now_ns,
    request,
    response,
    span,
)

TRACES = "/v1/traces"
ENCODINGS = [pytest.param(PROTOBUF, id="protobuf"), pytest.param(JSON, id="json")]


DATA_ATTRIBUTES = ["service.name", "http.request.header.x-tenant", "retry"]


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(otlp_data_attributes=DATA_ATTRIBUTES)


async def stored(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT (extract(epoch FROM time) * 1000000)::bigint AS us, consumer_id, method, url, "
        "function, response_us, status_code, data FROM events ORDER BY time, url"
    )
    out = []
    for r in rows:
        row = dict(r)
        row["data"] = json.loads(row["data"]) if row["data"] is not None else None
        out.append(row)
    return out


def exact_us(ns: int) -> int:
    """The nearest microsecond, ties to even (Python's round of a Fraction)."""
    return round(Fraction(ns, 1000))


def error_status(raw: bytes, content_type: str) -> status_pb2.Status:
    status = status_pb2.Status()
    if content_type == PROTOBUF:
        status.ParseFromString(raw)
    else:
        json_format.Parse(raw, status)
    return status


async def assert_status(
    resp: Any, http_status: int, content_type: str, grpc_code: int, reason: str, *mentions: str
) -> status_pb2.Status:
    """An OTLP error: the HTTP status, a google.rpc.Status in the request's encoding with
    its code, a message naming what is wrong, our machine code as ErrorInfo.reason."""
    raw = await resp.read()
    assert resp.status == http_status, raw
    assert resp.content_type == content_type
    status = error_status(raw, content_type)
    assert status.code == grpc_code
    for m in mentions:
        assert m in status.message, (m, status.message)
    info = error_details_pb2.ErrorInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(info)
    assert (info.reason, info.domain) == (reason, "apinalytics")
    return status


async def post(
    client: TestClient,
    app: NewApp,
    raw: bytes,
    content_type: str,
    *,
    gzipped: bool = False,
    extra: dict[str, str] | None = None,
) -> Any:
    h = {**headers(app, content_type, gzipped=gzipped), **(extra or {})}
    return await client.post(TRACES, data=raw, headers=h)


async def export_ok(
    client: TestClient, app: NewApp, content_type: str, *spans: Span, **kw: Any
) -> Any:
    resp = await post(client, app, body(request(*spans, **kw), content_type), content_type)
    raw = await resp.read()
    assert resp.status == 200, raw
    assert resp.content_type == content_type
    return response(raw, content_type)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("content_type", ENCODINGS)
@pytest.mark.parametrize("attrs", [CURRENT, OLDER], ids=["current", "older"])
async def test_a_server_span_is_one_event(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    attrs: dict[str, Attr],
    content_type: str,
    gzipped: bool,
) -> None:
    start = now_ns()
    s = span(attrs, start_ns=start, duration_ns=1_234_567)
    raw = body(request(s), content_type, gzipped=gzipped)
    resp = await post(client, app_keys, raw, content_type, gzipped=gzipped)
    answer = response(await resp.read(), content_type)
    assert resp.status == 200
    assert resp.content_type == content_type
    assert not answer.HasField("partial_success"), "all accepted: partial_success unset"
    assert await stored(db) == [
        {
            "us": exact_us(start),
            "consumer_id": "alice",
            "method": "GET",
            "url": "/orders/7?expand=items",
            "function": "/orders/{id}",
            "response_us": 1235,
            "status_code": 200,
            "data": {"service.name": "shop"},
        }
    ]
    # Queryable like any event, with the read key.
    now = int(time.time())
    q = await client.get(
        f"/1/timeseries/{now - 3600}/{now + 60}/",
        params={"group": "function"},
        headers=read_headers(app_keys),
    )
    assert (await q.json())["groups"] == {"/orders/{id}": [[now - 3600, 1]]}


def without(attrs: dict[str, Attr], *names: str) -> dict[str, Attr]:
    return {k: v for k, v in attrs.items() if k not in names}


# (id, span attributes, span options, expected fields of the event)
MAPPING: list[tuple[str, dict[str, Attr], dict[str, Any], dict[str, Any]]] = [
    (
        "url_full_first",
        {**CURRENT, "url.full": "https://api.example/orders/7?expand=items", "http.url": "x"},
        {},
        {"url": "https://api.example/orders/7?expand=items"},
    ),
    ("url_path_without_query", without(CURRENT, "url.query"), {}, {"url": "/orders/7"}),
    (
        "http_url_before_http_target",
        {**OLDER, "http.url": "http://api.example/orders/7?expand=items"},
        {},
        {"url": "http://api.example/orders/7?expand=items"},
    ),
    ("no_url_at_all", without(OLDER, "http.target"), {}, {"url": ""}),
    (
        "function_falls_back_to_span_name",
        without(CURRENT, "http.route"),
        {"name": "GET /orders/7"},
        {"function": "GET /orders/7"},
    ),
    (
        "method_other_uses_the_original",
        {**CURRENT, "http.request.method": "_OTHER", "http.request.method_original": "purge"},
        {},
        {"method": "PURGE"},
    ),
    (
        "status_as_text",
        {**CURRENT, "http.response.status_code": "404"},
        {},
        {"status_code": 404},
    ),
    (
        "exception_without_status_is_500",
        without(CURRENT, "http.response.status_code"),
        {"error": True},
        {"status_code": 500},
    ),
    ("no_consumer_is_empty", without(CURRENT, "enduser.id"), {}, {"consumer_id": ""}),
    ("consumer_as_integer", {**CURRENT, "enduser.id": 42}, {}, {"consumer_id": "42"}),
    ("zero_duration", CURRENT, {"duration_ns": 0}, {"response_us": 0}),
    ("half_microsecond_to_even_down", CURRENT, {"duration_ns": 2500}, {"response_us": 2}),
    ("half_microsecond_to_even_up", CURRENT, {"duration_ns": 3500}, {"response_us": 4}),
    (
        "data_from_span_resource_and_arrays",
        {**CURRENT, "http.request.header.x-tenant": ["acme", "beta"], "retry": True},
        {},
        {
            "data": {
                "service.name": "shop",
                "http.request.header.x-tenant": "acme, beta",
                "retry": "true",
            }
        },
    ),
    (
        "span_attribute_before_resource",
        {**CURRENT, "service.name": "checkout"},
        {},
        {"data": {"service.name": "checkout"}},
    ),
]


@pytest.mark.parametrize(("attrs", "options", "expected"), [c[1:] for c in MAPPING],
                         ids=[c[0] for c in MAPPING])  # fmt: skip
async def test_mapping(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    attrs: dict[str, Attr],
    options: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    answer = await export_ok(client, app_keys, PROTOBUF, span(attrs, **options))
    assert not answer.HasField("partial_success"), answer
    [event] = await stored(db)
    assert {k: event[k] for k in expected} == expected


async def test_exact_start_microsecond(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    base = now_ns() // 1_000_000 * 1_000_000
    starts = [base + 500, base + 1500, base + 2501, base + 999]
    await export_ok(client, app_keys, PROTOBUF, *(span(CURRENT, start_ns=s) for s in starts))
    assert [e["us"] for e in await stored(db)] == [exact_us(s) for s in sorted(starts)]
    assert [exact_us(s) - base // 1000 for s in sorted(starts)] == [0, 1, 2, 3]


async def test_consumer_from_the_configured_attribute(
    make_client: Any, make_settings: MakeSettings, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    client = await make_client(
        make_settings(otlp_data_attributes=DATA_ATTRIBUTES, otlp_consumer_attribute="app.user")
    )
    await export_ok(
        client,
        app_keys,
        JSON,
        span({**CURRENT, "app.user": "bob", "url.path": "/a"}),
        span({**CURRENT, "url.path": "/b"}),  # the resource's
        resource={"service.name": "shop", "app.user": "batch-job"},
    )
    assert [(e["url"], e["consumer_id"]) for e in await stored(db)] == [
        ("/a?expand=items", "bob"),
        ("/b?expand=items", "batch-job"),
    ]


def otlp_json(start: int, *, proto_names: bool) -> bytes:
    """An ExportTraceServiceRequest as the OTLP JSON encoding writes it: trace and span
    IDs in hex, the span kind as an integer, 64-bit integers as strings."""

    def name(camel: str, snake: str) -> str:
        return snake if proto_names else camel

    doc = {
        name("resourceSpans", "resource_spans"): [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]
                },
                name("scopeSpans", "scope_spans"): [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                name("traceId", "trace_id"): "5b8efff798038103d269b633813fc60c",
                                name("spanId", "span_id"): "eee19b7ec3c1b174",
                                name("parentSpanId", "parent_span_id"): "",
                                "name": "GET /orders/{id}",
                                "kind": 2,
                                name("startTimeUnixNano", "start_time_unix_nano"): str(start),
                                name("endTimeUnixNano", "end_time_unix_nano"): str(
                                    start + 2_000_000
                                ),
                                "attributes": [
                                    {
                                        "key": "http.request.method",
                                        "value": {"stringValue": "POST"},
                                    },
                                    {"key": "url.path", "value": {"stringValue": "/orders"}},
                                    {"key": "http.route", "value": {"stringValue": "/orders"}},
                                    {
                                        "key": "http.response.status_code",
                                        "value": {name("intValue", "int_value"): "201"},
                                    },
                                ],
                                "status": {},
                                "unknownFutureField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize("proto_names", [False, True], ids=["camel_case", "proto_names"])
async def test_otlp_json_encoding(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, proto_names: bool
) -> None:
    start = now_ns()
    resp = await post(client, app_keys, otlp_json(start, proto_names=proto_names), JSON)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {}
    [event] = await stored(db)
    assert (event["method"], event["url"], event["status_code"], event["response_us"]) == (
        "POST",
        "/orders",
        201,
        2000,
    )
    assert event["us"] == exact_us(start)


@pytest.mark.parametrize("content_type", ENCODINGS)
async def test_partial_success(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, content_type: str
) -> None:
    spans = [
        span({**CURRENT, "url.path": "/good"}),
        span({**CURRENT, "url.full": "/" + "x" * 9000}, name="long url"),
        span({**CURRENT, "http.response.status_code": 700}, name="status 700"),
        span(without(CURRENT, "http.response.status_code"), name="no status"),
        span(CURRENT, duration_ns=-1000, name="backwards"),
        span(CURRENT, start_ns=now_ns(400 * 86400), name="too old"),
        span(
            {**without(CURRENT, "http.response.status_code"), "url.path": "/boom"},
            name="exception",
            error=True,
        ),
    ]
    answer = await export_ok(client, app_keys, content_type, *spans)
    assert answer.partial_success.rejected_spans == 5
    message = answer.partial_success.error_message
    for i, words in [
        (1, "url is 9001 characters long"),
        (2, "status_code must be at most 599"),
        (3, "no http.response.status_code"),
        (4, "ends before it starts"),
        (5, "timestamp is too old"),
    ]:
        assert f"spans[{i}]" in message and words in message, (i, message)
    assert "spans[0]" not in message and "spans[6]" not in message
    assert [(e["url"], e["status_code"]) for e in await stored(db)] == [
        ("/good?expand=items", 200),
        ("/boom?expand=items", 500),
    ]
    metrics = await (await client.get("/metrics")).text()
    assert 'apinalytics_events_rejected_total{reason="invalid_span"} 5.0' in metrics
    assert "apinalytics_events_accepted_total 2.0" in metrics


async def test_spans_past_the_raw_retention_are_rejected_alone(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE retention SET keep_s = 2 * 86400 WHERE relation = 'events'")
    answer = await export_ok(
        client,
        app_keys,
        PROTOBUF,
        span({**CURRENT, "url.path": "/old"}, start_ns=now_ns(3 * 86400), name="old"),
        span({**CURRENT, "url.path": "/new"}),
    )
    assert answer.partial_success.rejected_spans == 1
    assert "spans[0] ('old'): timestamp is older than the raw events' retention" in (
        answer.partial_success.error_message
    )
    assert [e["url"] for e in await stored(db)] == ["/new?expand=items"]


async def test_other_spans_are_ignored_and_counted(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    kinds = [
        Span.SpanKind.SPAN_KIND_UNSPECIFIED,
        Span.SpanKind.SPAN_KIND_INTERNAL,
        Span.SpanKind.SPAN_KIND_CLIENT,
        Span.SpanKind.SPAN_KIND_PRODUCER,
        Span.SpanKind.SPAN_KIND_CONSUMER,
    ]
    grpc = {"rpc.system": "grpc", "rpc.service": "Orders", "rpc.grpc.status_code": 0}
    answer = await export_ok(
        client,
        app_keys,
        JSON,
        *(span(CURRENT, kind=k) for k in kinds),
        span(grpc, name="Orders/Get"),
    )
    assert not answer.HasField("partial_success")
    assert await stored(db) == []
    metrics = await (await client.get("/metrics")).text()
    assert 'apinalytics_otlp_spans_ignored_total{reason="not_server"} 5.0' in metrics
    assert 'apinalytics_otlp_spans_ignored_total{reason="no_http_method"} 1.0' in metrics


async def test_empty_request(client: TestClient, app_keys: NewApp, db: asyncpg.Connection) -> None:
    for content_type in (PROTOBUF, JSON):
        answer = await export_ok(client, app_keys, content_type)
        assert not answer.HasField("partial_success")
    resp = await post(client, app_keys, b"", PROTOBUF)  # the empty message
    assert resp.status == 200
    assert await stored(db) == []


BAD_BODIES = [
    ("protobuf_truncated", PROTOBUF, b"\x0a\xff\xff\xff\x0f\x01", "protobuf"),
    ("protobuf_invalid_wire_type", PROTOBUF, b"\x0f\x00", "protobuf"),
    ("protobuf_nested_truncated", PROTOBUF, b"\x0a\x03\x0a\x05\x01", "protobuf"),
    ("json_not_json", JSON, b"{not json", "JSON"),
    ("json_wrong_type", JSON, b'{"resourceSpans": 5}', "JSON"),
    ("json_array", JSON, b"[]", "JSON"),
    ("json_empty", JSON, b"", "JSON"),
    ("json_not_utf8", JSON, b'{"resourceSpans": [{"schemaUrl": "\xff"}]}', "JSON"),
    (
        "json_time_not_a_number",
        JSON,
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
        "JSON",
    ),
]


@pytest.mark.parametrize(("content_type", "raw", "mention"), [c[1:] for c in BAD_BODIES],
                         ids=[c[0] for c in BAD_BODIES])  # fmt: skip
async def test_undecodable_body_is_400(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    content_type: str,
    raw: bytes,
    mention: str,
) -> None:
    resp = await post(client, app_keys, raw, content_type)
    await assert_status(resp, 400, content_type, code_pb2.INVALID_ARGUMENT, "invalid_body", mention)
    assert await stored(db) == []


@pytest.mark.parametrize("content_type", ENCODINGS)
async def test_bad_gzip_is_400(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, content_type: str
) -> None:
    good = gzip.compress(encode(request(span(CURRENT)), content_type))
    for raw in (b"not gzip", good[:-5]):
        resp = await post(client, app_keys, raw, content_type, gzipped=True)
        await assert_status(resp, 400, content_type, code_pb2.INVALID_ARGUMENT, "invalid_body")
    assert await stored(db) == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/protobuf", "application/octet-stream", None]
)
async def test_other_content_types_are_415(
    client: TestClient, app_keys: NewApp, content_type: str | None
) -> None:
    h = headers(app_keys, content_type or "")
    if content_type is None:
        del h["Content-Type"]
    resp = await client.post(
        TRACES,
        data=encode(request(span(CURRENT)), PROTOBUF),
        headers=h,
        skip_auto_headers=["Content-Type"],
    )
    await assert_error(resp, 415, "unsupported_media_type", "application/x-protobuf")


@pytest.mark.parametrize("content_type", ENCODINGS)
async def test_limits_are_413(
    make_client: Any,
    make_settings: MakeSettings,
    app_keys: NewApp,
    db: asyncpg.Connection,
    content_type: str,
) -> None:
    client = await make_client(make_settings(max_batch_events=2, max_body_bytes=5000))
    three = request(*(span(CURRENT) for _ in range(3)))
    resp = await post(client, app_keys, encode(three, content_type), content_type)
    await assert_status(
        resp, 413, content_type, code_pb2.RESOURCE_EXHAUSTED, "payload_too_large", "limit is 2"
    )
    big = request(span({**CURRENT, "url.path": "/" + "x" * 5000}))
    resp = await post(client, app_keys, encode(big, content_type), content_type)
    await assert_status(
        resp, 413, content_type, code_pb2.RESOURCE_EXHAUSTED, "payload_too_large", "5000-byte"
    )
    # Two HTTP server spans and any number of others fit.
    others = [span(CURRENT, kind=Span.SpanKind.SPAN_KIND_INTERNAL) for _ in range(3)]
    resp = await post(
        client,
        app_keys,
        encode(request(span(CURRENT), span(CURRENT), *others), content_type),
        content_type,
    )
    assert resp.status == 200, await resp.read()
    assert len(await stored(db)) == 2


@pytest.mark.parametrize("content_type", ENCODINGS)
async def test_keys(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, content_type: str
) -> None:
    assert app_keys.write_key and app_keys.read_key
    raw = encode(request(span(CURRENT)), content_type)
    cases = [
        ({}, 401, code_pb2.UNAUTHENTICATED, "unauthorized"),
        ({"X-Auth-Key": "apw_wrong"}, 401, code_pb2.UNAUTHENTICATED, "unauthorized"),
        ({"X-Auth-Key": app_keys.read_key}, 403, code_pb2.PERMISSION_DENIED, "forbidden"),
    ]
    for auth, http_status, grpc_code, reason in cases:
        h = {"Content-Type": content_type, **auth}
        if auth:
            h["X-Auth-User"] = app_keys.app_id
        resp = await client.post(TRACES, data=raw, headers=h)
        status = await assert_status(resp, http_status, content_type, grpc_code, reason, "key")
        assert app_keys.read_key not in status.message
    assert await stored(db) == []
    padded = {"X-Auth-Key": app_keys.write_key + "="}
    resp = await post(client, app_keys, raw, content_type, extra=padded)
    assert resp.status == 200
    assert len(await stored(db)) == 1


@pytest.mark.parametrize("content_type", ENCODINGS)
async def test_idempotency_key_stores_once(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, content_type: str
) -> None:
    raw = encode(
        request(span(CURRENT), span({**CURRENT, "http.response.status_code": 99})), content_type
    )
    answers = []
    for key in ("batch-1", "batch-1", "batch-2"):
        resp = await post(client, app_keys, raw, content_type, extra={"Idempotency-Key": key})
        assert resp.status == 200
        answers.append(response(await resp.read(), content_type))
    assert len(await stored(db)) == 2, "batch-1 once, batch-2 once"
    assert {a.partial_success.rejected_spans for a in answers} == {1}
    resp = await post(client, app_keys, raw, content_type, extra={"Idempotency-Key": ""})
    await assert_status(
        resp, 400, content_type, code_pb2.INVALID_ARGUMENT, "invalid_idempotency_key"
    )


@pytest.mark.parametrize("content_type", ENCODINGS)
async def test_idempotency_key_reused_with_another_body_is_422(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, content_type: str
) -> None:
    key = {"Idempotency-Key": "otlp-key-9c1"}
    raw = encode(request(span(CURRENT)), content_type)
    first = await post(client, app_keys, raw, content_type, extra=key)
    assert first.status == 200, await first.read()
    zipped = await post(client, app_keys, gzip.compress(raw), content_type, gzipped=True, extra=key)
    assert zipped.status == 200, "the same body gzipped is the same request"
    other = encode(request(span(CURRENT), span(CURRENT)), content_type)
    resp = await post(client, app_keys, other, content_type, extra=key)
    status = await assert_status(
        resp, 422, content_type, code_pb2.FAILED_PRECONDITION, "idempotency_key_reused"
    )
    assert "otlp-key-9c1" not in status.message
    assert len(await stored(db)) == 1


async def test_database_unavailable_is_503_with_retry_after(
    make_client: Any,
    make_settings: MakeSettings,
    app_keys: NewApp,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """The service connects as a role whose connections are then refused (a role of its
    own: superusers are exempt from connection limits); the write path's recovery is
    tests/test_outage.py's."""
    role = f"otlp_limited_{os.getpid()}"
    # With a password: the embedded test clusters ask every connection for one.
    await db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
    try:
        await db.execute(f"GRANT SELECT ON apps, apinalytics_meta TO {role}")
        url = urlsplit(database_url)
        dsn = urlunsplit(url._replace(netloc=f"{role}:{role}@{url.hostname}:{url.port}"))
        client = await make_client(make_settings(database_url=dsn))
        raw = encode(request(span(CURRENT)), PROTOBUF)
        await db.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        # The first may still meet a terminated connection; the second must connect anew.
        for _ in range(2):
            resp = await post(client, app_keys, raw, PROTOBUF)
            await assert_status(
                resp, 503, PROTOBUF, code_pb2.UNAVAILABLE, "database_unavailable", "Retry later"
            )
            assert int(resp.headers["Retry-After"]) > 0
    finally:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")
    assert await stored(db) == []


@pytest.mark.parametrize("mode", ["community"], indirect=True)
async def test_stored_spans_are_200_while_the_rollups_cannot_catch_up(
    mode: str,
    make_client: Any,
    make_settings: MakeSettings,
    database_url: str,
    app_keys: NewApp,
    db: asyncpg.Connection,
) -> None:
    """While the rollups cannot be brought up to date (their materialization locked),
    /v1/traces, like /1/events/, answers 200 for stored spans: the rollups catch up in
    the background. An OTLP exporter retries every 503, with no Idempotency-Key, and
    would store them twice."""
    client = await make_client(make_settings(statement_timeout_s=1.0))
    await export_ok(client, app_keys, PROTOBUF, span(CURRENT, start_ns=now_ns(3 * 3600)))
    # One run of each refresh policy, in the order they were made (minute, then hour):
    # the two-day-old span below is then back-dated for the rollups.
    for job in await db.fetch(
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY job_id"
    ):
        await db.execute("CALL run_job($1)", job["job_id"])
    materialized = await db.fetchval(
        "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "
        "FROM timescaledb_information.continuous_aggregates WHERE view_name = 'events_1m'"
    )
    locker = await asyncpg.connect(database_url)
    try:
        tx = locker.transaction()
        await tx.start()
        # The materializer's refresh waits for this lock; the request does not.
        await locker.execute(f"LOCK TABLE {materialized} IN ACCESS EXCLUSIVE MODE")
        answer = await export_ok(
            client, app_keys, JSON, span(CURRENT, start_ns=now_ns(2 * 86400), name="back")
        )
        assert not answer.HasField("partial_success")
        await tx.rollback()
    finally:
        await locker.close()
    assert len(await stored(db)) == 2
    # The same event through /1/events/ is answered 200 too.
    back = {
        "timestamp": time.time() - 2 * 86400,
        "consumer_id": "",
        "method": "GET",
        "url": "/",
        "function": "",
        "response_us": 1,
        "status_code": 200,
    }
    locker = await asyncpg.connect(database_url)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute(f"LOCK TABLE {materialized} IN ACCESS EXCLUSIVE MODE")
        resp = await client.post("/1/events/", json=[back], headers=headers(app_keys, JSON))
        assert resp.status == 200, await resp.text()
        await tx.rollback()
    finally:
        await locker.close()
