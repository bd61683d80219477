"""SPEC "Identity": who may send events and who may read them.

- Every API request carries the Application ID in ``X-Auth-User`` and a key in
  ``X-Auth-Key``: the write key to send events, the read key to query them.
- Unknown application or wrong key: 401. A valid key of the wrong kind (read key on
  ingest, write key on a query): 403. Both with the JSON error body of SPEC "Errors".
- Keys are stored only as digests and never logged.
- Responses to the API allow cross-origin use, with preflight for ``X-Auth-*``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.apps import NewApp

from .helpers import assert_error, event, read_headers, write_headers

NOW = int(time.time())
INGEST = "/1/events/"
QUERY = f"/1/timeseries/{NOW - 3600}/{NOW + 60}/"


def other_app_key(attr: str) -> Callable[[NewApp, NewApp], dict[str, str]]:
    """This app's ID with the other app's key of the same kind."""
    return lambda app, other: {"X-Auth-User": app.app_id, "X-Auth-Key": getattr(other, attr)}


Headers = Callable[[NewApp, NewApp], dict[str, str]]

# (id, method, path, headers from (app, another app), expected status)
MATRIX: list[tuple[str, str, str, Headers, int]] = [
    ("ingest_no_headers", "POST", INGEST, lambda a, o: {}, 401),
    ("ingest_app_id_only", "POST", INGEST, lambda a, o: {"X-Auth-User": a.app_id}, 401),
    (
        "ingest_key_only",
        "POST",
        INGEST,
        lambda a, o: {"X-Auth-Key": a.write_key or ""},
        401,
    ),
    (
        "ingest_unknown_app",
        "POST",
        INGEST,
        lambda a, o: {"X-Auth-User": "no-such-app", "X-Auth-Key": a.write_key or ""},
        401,
    ),
    (
        "ingest_wrong_key",
        "POST",
        INGEST,
        lambda a, o: {"X-Auth-User": a.app_id, "X-Auth-Key": "apw_wrong"},
        401,
    ),
    (
        "ingest_key_one_char_short",
        "POST",
        INGEST,
        lambda a, o: {"X-Auth-User": a.app_id, "X-Auth-Key": (a.write_key or "")[:-1]},
        401,
    ),
    ("ingest_other_apps_write_key", "POST", INGEST, other_app_key("write_key"), 401),
    ("ingest_read_key", "POST", INGEST, lambda a, o: read_headers(a), 403),
    ("ingest_write_key", "POST", INGEST, lambda a, o: write_headers(a), 200),
    ("query_no_headers", "GET", QUERY, lambda a, o: {}, 401),
    # Without a key, only a logged-in owner's session may read; there is none here.
    ("query_app_id_only_no_session", "GET", QUERY, lambda a, o: {"X-Auth-User": a.app_id}, 401),
    (
        "query_wrong_key",
        "GET",
        QUERY,
        lambda a, o: {"X-Auth-User": a.app_id, "X-Auth-Key": "apr_wrong"},
        401,
    ),
    (
        "query_unknown_app",
        "GET",
        QUERY,
        lambda a, o: {"X-Auth-User": "no-such-app", "X-Auth-Key": a.read_key or ""},
        401,
    ),
    ("query_other_apps_read_key", "GET", QUERY, other_app_key("read_key"), 401),
    ("query_write_key", "GET", QUERY, lambda a, o: write_headers(a), 403),
    ("query_read_key", "GET", QUERY, lambda a, o: read_headers(a), 200),
]


@pytest.mark.parametrize(("method", "path", "headers", "status"), [m[1:] for m in MATRIX],
                         ids=[m[0] for m in MATRIX])  # fmt: skip
async def test_auth_matrix(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    method: str,
    path: str,
    headers: Headers,
    status: int,
) -> None:
    other = await apps.create(db, "other-app")
    h = headers(app_keys, other)
    if method == "POST":
        resp = await client.post(path, json=[event()], headers=h)
    else:
        resp = await client.get(path, headers=h)
    if status == 200:
        assert resp.status == 200, await resp.text()
    else:
        code = {401: "unauthorized", 403: "forbidden"}[status]
        err = await assert_error(resp, status, code, "key")
        assert "X-Auth-Key" not in h or h["X-Auth-Key"] not in err["message"]
    stored = await db.fetchval("SELECT count(*) FROM events")
    assert stored == (1 if method == "POST" and status == 200 else 0)


async def test_auth_comes_before_the_body(client: TestClient, app_keys: NewApp) -> None:
    """A stranger learns nothing about the body rules: 401/403 before any 400/415."""
    resp = await client.post(INGEST, data=b"not json", headers={"Content-Type": "text/plain"})
    await assert_error(resp, 401, "unauthorized")
    resp = await client.post(INGEST, data=b"not json", headers=read_headers(app_keys))
    await assert_error(resp, 403, "forbidden")


async def test_keys_are_stored_only_as_digests(app_keys: NewApp, db: asyncpg.Connection) -> None:
    row = await db.fetchrow("SELECT * FROM apps WHERE public_id = $1", app_keys.app_id)
    assert row is not None
    assert app_keys.write_key and app_keys.read_key
    for value in row.values():
        for key in (app_keys.write_key, app_keys.read_key):
            assert key not in str(value)
            assert key.encode() != value
    assert row["write_key_digest"] == hashlib.sha256(app_keys.write_key.encode()).digest()
    assert row["read_key_digest"] == hashlib.sha256(app_keys.read_key.encode()).digest()


def test_keys_are_high_entropy_and_url_safe() -> None:
    made = [apps.new_key(kind) for kind in apps.KeyKind for _ in range(50)]
    assert len(set(made)) == len(made)
    for key in made:
        body = key.split("_", 1)[1]
        # 32 random bytes, URL-safe base64 without padding.
        assert len(body) == 43
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


async def test_keys_never_appear_in_logs(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert app_keys.write_key and app_keys.read_key
    unknown_key = "apw_" + "s3cr3t" * 7
    caplog.set_level(logging.DEBUG)
    await client.post(INGEST, json=[event()], headers=write_headers(app_keys))
    await client.post(INGEST, json=[event(status_code=1)], headers=write_headers(app_keys))
    await client.post(INGEST, json=[event()], headers=read_headers(app_keys))
    await client.post(
        INGEST, json=[event()], headers={"X-Auth-User": app_keys.app_id, "X-Auth-Key": unknown_key}
    )
    await client.get(QUERY, headers=write_headers(app_keys))
    await client.get(QUERY, headers=read_headers(app_keys))
    await client.get("/1/nowhere", headers=read_headers(app_keys))
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    assert any(app_keys.app_id in _everything(r) for r in caplog.records), (
        "the app ID should be logged with requests"
    )
    for record in caplog.records:
        text = _everything(record)
        for key in (app_keys.write_key, app_keys.read_key, unknown_key):
            assert key not in text, f"key logged by {record.name}: {text[:300]}"


def _everything(record: logging.LogRecord) -> str:
    parts: list[Any] = [record.getMessage(), record.exc_text or ""]
    parts.extend(f"{k}={v!r}" for k, v in vars(record).items())
    return " ".join(str(p) for p in parts)


# -- CORS ----------------------------------------------------------------------------------

PREFLIGHTS = [
    ("ingest", INGEST, "POST"),
    ("ingest_no_slash", "/1/events", "POST"),
    ("query", QUERY, "GET"),
]


@pytest.mark.parametrize(
    ("path", "method"), [p[1:] for p in PREFLIGHTS], ids=[p[0] for p in PREFLIGHTS]
)
async def test_cors_preflight_allows_auth_headers(
    client: TestClient, path: str, method: str
) -> None:
    resp = await client.options(
        path,
        headers={
            "Origin": "null",  # a dashboard opened from disk
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "x-auth-user, x-auth-key, content-type",
        },
    )
    assert resp.status in (200, 204), await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"x-auth-user", "x-auth-key", "content-type"} <= allowed
    # The documented headers a cross-origin client may send too.
    assert {"idempotency-key", "content-encoding", "x-apinalytics-planner"} <= allowed
    assert method in resp.headers["Access-Control-Allow-Methods"]


async def test_cors_headers_on_answers_and_errors(client: TestClient, app_keys: NewApp) -> None:
    ok = await client.post(
        INGEST, json=[], headers={"Origin": "https://d.example", **write_headers(app_keys)}
    )
    denied = await client.post(INGEST, json=[], headers={"Origin": "https://d.example"})
    assert ok.status == 200
    assert denied.status == 401
    for resp in (ok, denied):
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
        # Every header the API answers with that a script needs (sources, 503s, 429s).
        assert {
            "X-Apinalytics-Sources",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        } <= exposed


async def raw_post(client: TestClient, headers: bytes, body: bytes = b"[]") -> tuple[int, Any]:
    """A request with header bytes no HTTP client library would send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /1/events/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n" + headers
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


RAW_HEADERS: list[tuple[str, Callable[[NewApp], bytes]]] = [
    ("app_id_invalid_utf8", lambda a: b"X-Auth-User: \xff\xfe\r\nX-Auth-Key: k\r\n"),
    (
        "app_id_latin1",
        lambda a: b"X-Auth-User: caf\xe9\r\nX-Auth-Key: " + (a.write_key or "").encode() + b"\r\n",
    ),
    (
        "key_invalid_utf8",
        lambda a: b"X-Auth-User: " + a.app_id.encode() + b"\r\nX-Auth-Key: \xff\xfe\r\n",
    ),
]


@pytest.mark.parametrize("headers", [r[1] for r in RAW_HEADERS], ids=[r[0] for r in RAW_HEADERS])
async def test_header_bytes_that_are_not_utf8_are_401(
    client: TestClient, app_keys: NewApp, headers: Callable[[NewApp], bytes]
) -> None:
    status, body = await raw_post(client, headers(app_keys))
    assert (status, body["error"]["code"]) == (401, "unauthorized"), body
