"""SPEC "Sending events": what ``POST /1/events/`` refuses, and how.

- Body: a JSON array of event objects with exactly the fields of the table, typed
  strictly (``response_us`` an integer >= 0, ``status_code`` 100-599, ``data`` an
  object of string to string or null); ``method`` is stored upper-case.
- Bad input never produces a 500 and never stores part of a batch: ``400`` with an
  error naming the event index and field (missing or mistyped field, unknown field,
  NUL character or invalid UTF-8 in a string, a string over its limit, status out of
  range, negative response time, a timestamp outside the window, a body that is not
  JSON or not an array); ``413`` for a body or batch over the limits (also after
  gunzip); ``415`` for a wrong content type.
- URLs of several KB are accepted by default; ``data: null`` is accepted.

Every refused request here is asserted with the SPEC "Errors" shape and followed by
a check that the events table is still empty.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from apinalytics import apps
from apinalytics.app import create_app
from apinalytics.apps import NewApp
from apinalytics.settings import Settings

from ..dbs import Servers
from ..helpers import assert_error, event, post, write_headers

DEFAULTS = Settings()
MISSING = object()  # in an override: drop the field from the event


@dataclass(frozen=True)
class FromNow:
    """A timestamp this many seconds from when the test runs, not from when the cases
    were collected: a long suite run must not move an edge case across its edge."""

    seconds: float


def at_run_time(ev: Any) -> Any:
    if not isinstance(ev, dict):
        return ev
    return {k: time.time() + v.seconds if isinstance(v, FromNow) else v for k, v in ev.items()}


def with_(**overrides: Any) -> dict[str, Any]:
    ev = event()
    for k, v in overrides.items():
        if v is MISSING:
            del ev[k]
        else:
            ev[k] = v
    return ev


async def stored(db: asyncpg.Connection, app: NewApp) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM events JOIN apps a ON a.id = app_id WHERE a.public_id = $1",
        app.app_id,
    )
    return n


# Nothing here needs a database of its own: refused batches store nothing, and each
# test gets an app of its own. One database and one service (plus one with small
# limits) for the module keep its hundred cases fast.
BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def shared_database(servers: Servers) -> Iterator[str]:
    server = servers.servers["apache"]
    name = server.new_database()
    try:
        yield server.dsn(name)
    finally:
        server.drop_database(name)


@pytest.fixture(scope="module")
async def shared_conn(shared_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(shared_database)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def services(
    shared_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, TestClient]]:
    base = Settings(
        database_url=shared_database,
        home=tmp_path_factory.mktemp("home"),
        db_connect_timeout_s=2.0,
    )
    small = base.model_copy(update={"max_body_bytes": BODY_LIMIT, "max_batch_events": 5})
    clients = {
        "default": TestClient(TestServer(create_app(base, run_migrations=False))),
        "small": TestClient(TestServer(create_app(small, run_migrations=False))),
    }
    for c in clients.values():
        await c.start_server()
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.close()


@pytest.fixture
def client(services: dict[str, TestClient]) -> TestClient:
    return services["default"]


@pytest.fixture
def small_client(services: dict[str, TestClient]) -> TestClient:
    """A service with small limits, so crossing them costs little."""
    return services["small"]


@pytest.fixture
def db(shared_conn: asyncpg.Connection) -> asyncpg.Connection:
    return shared_conn


@pytest.fixture
async def app_keys(shared_conn: asyncpg.Connection) -> NewApp:
    return await apps.create(shared_conn, "validation")


# -- one bad event in the middle of a batch -------------------------------------------

# (id, bad event, field named in the error, words the message must contain)
BAD_EVENTS: list[tuple[str, Any, str | None, str]] = [
    ("missing_field", with_(consumer_id=MISSING), "consumer_id", "required"),
    ("missing_timestamp", with_(timestamp=MISSING), "timestamp", "required"),
    ("mistyped_status_string", with_(status_code="200"), "status_code", "integer"),
    ("mistyped_timestamp_string", with_(timestamp="1700000000"), "timestamp", "number"),
    ("mistyped_url_number", with_(url=7), "url", "string"),
    ("unknown_field", with_(user_agent="curl"), "user_agent", "not a known field"),
    ("bool_as_response_us", with_(response_us=True), "response_us", "integer"),
    ("bool_as_timestamp", with_(timestamp=True), "timestamp", "number"),
    ("bool_as_status", with_(status_code=False), "status_code", "integer"),
    ("float_response_us", with_(response_us=1.5), "response_us", "integer"),
    ("integral_float_response_us", with_(response_us=1500.0), "response_us", "integer"),
    ("negative_response_us", with_(response_us=-1), "response_us", "must be at least 0"),
    ("response_us_over_bigint", with_(response_us=2**63), "response_us", "at most 86400000000"),
    # Two events of 2^62 µs overflowed the rollups' 64-bit sums after the commit.
    ("response_us_over_a_day", with_(response_us=86_400_000_001), "response_us", "at most"),
    ("status_99_just_below", with_(status_code=99), "status_code", "must be at least 100"),
    ("status_600_just_above", with_(status_code=600), "status_code", "must be at most 599"),
    ("nul_in_consumer_id", with_(consumer_id="a\x00b"), "consumer_id", "NUL"),
    ("nul_in_url", with_(url="/x\x00"), "url", "NUL"),
    ("nul_in_function", with_(function="\x00"), "function", "NUL"),
    ("nul_in_data_value", with_(data={"k": "v\x00"}), "data.k", "NUL"),
    ("nul_in_data_key", with_(data={"k\x00": "v"}), "data.k\x00", "NUL"),
    ("data_empty_key", with_(data={"": "v"}), "data", "empty key"),
    (
        "consumer_id_just_over_limit",
        with_(consumer_id="c" * (DEFAULTS.max_string_length + 1)),
        "consumer_id",
        "limit",
    ),
    (
        "function_just_over_limit",
        with_(function="f" * (DEFAULTS.max_string_length + 1)),
        "function",
        "limit",
    ),
    ("url_just_over_limit", with_(url="/" * (DEFAULTS.max_url_length + 1)), "url", "limit"),
    (
        "data_value_just_over_limit",
        with_(data={"k": "v" * (DEFAULTS.max_data_value_length + 1)}),
        "data.k",
        "over",
    ),
    (
        "data_too_many_keys",
        with_(data={f"k{i}": "v" for i in range(DEFAULTS.max_data_keys + 1)}),
        "data",
        "keys",
    ),
    (
        "timestamp_too_old",
        with_(timestamp=FromNow(-DEFAULTS.max_event_age_s - 600)),
        "timestamp",
        "too old",
    ),
    (
        "timestamp_in_the_future",
        with_(timestamp=FromNow(DEFAULTS.max_event_future_s + 600)),
        "timestamp",
        "future",
    ),
    ("timestamp_negative", with_(timestamp=-1), "timestamp", "too old"),
    # Python's json writes these non-standard literals, and the parser reads them.
    ("timestamp_nan", with_(timestamp=float("nan")), "timestamp", "finite"),
    ("timestamp_infinity", with_(timestamp=float("inf")), "timestamp", "finite"),
    ("timestamp_minus_infinity", with_(timestamp=float("-inf")), "timestamp", "finite"),
    ("data_a_string", with_(data="k=v"), "data", "object"),
    ("data_an_array", with_(data=["k", "v"]), "data", "object"),
    ("data_number_value", with_(data={"k": 1}), "data.k", "string"),
    ("data_null_value", with_(data={"k": None}), "data.k", "string"),
    ("method_empty", with_(method=""), "method", "must not be empty"),
    ("method_with_space", with_(method="GE T"), "method", "method"),
    ("method_with_trailing_newline", with_(method="GET\n"), "method", "method"),
    ("event_a_number", 5, None, "object"),
    ("event_an_array", [event()], None, "object"),
    ("event_null", None, None, "object"),
]


@pytest.mark.parametrize(("bad", "field", "words"), [c[1:] for c in BAD_EVENTS],
                         ids=[c[0] for c in BAD_EVENTS])  # fmt: skip
async def test_one_bad_event_refuses_the_whole_batch(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    bad: Any,
    field: str | None,
    words: str,
) -> None:
    resp = await post(client, app_keys, [event(), at_run_time(bad), event()])
    err = await assert_error(resp, 400, "invalid_events", words)
    assert {"index": 1, "field": field} in [
        {"index": d["index"], "field": d["field"]} for d in err["details"]
    ], err
    assert all(d["index"] == 1 for d in err["details"]), err
    assert "event 1" in err["message"]
    assert await stored(db, app_keys) == 0


# Bytes no JSON encoder would produce from a str: invalid UTF-8 and lone surrogates.
def raw_batch(bad_value: bytes, field: str = "consumer_id") -> bytes:
    good = json.dumps(event()).encode()
    ev = event()
    ev[field] = "@@"
    bad = json.dumps(ev).encode().replace(b'"@@"', b'"' + bad_value + b'"')
    return b"[" + good + b"," + bad + b"]"


RAW_BAD: list[tuple[str, bytes, str]] = [
    ("invalid_utf8_byte", raw_batch(b"caf\xe9"), "consumer_id"),
    ("invalid_utf8_truncated_sequence", raw_batch(b"\xe2\x82", "function"), "function"),
    ("utf8_encoded_surrogate", raw_batch(b"a\xed\xa0\x80b", "url"), "url"),
    ("lone_high_surrogate_escape", raw_batch(b"a\\ud800b", "url"), "url"),
    ("lone_low_surrogate_escape", raw_batch(b"\\udc00", "consumer_id"), "consumer_id"),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in RAW_BAD],
                         ids=[c[0] for c in RAW_BAD])  # fmt: skip
async def test_text_that_is_not_unicode_names_event_and_field(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, body: bytes, field: str
) -> None:
    resp = await post(client, app_keys, body)
    err = await assert_error(resp, 400, "invalid_events", "UTF-8")
    assert [(d["index"], d["field"]) for d in err["details"]] == [(1, field)], err
    assert await stored(db, app_keys) == 0


async def test_every_problem_of_a_batch_is_reported(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    batch = [with_(status_code=600), event(), with_(url=MISSING, response_us=-5)]
    err = await assert_error(await post(client, app_keys, batch), 400, "invalid_events")
    named = sorted((d["index"], d["field"]) for d in err["details"])
    assert named == [(0, "status_code"), (2, "response_us"), (2, "url")]
    assert await stored(db, app_keys) == 0


# -- what is accepted at the edges -----------------------------------------------------

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("data_null", with_(data=None)),
    ("data_absent", with_(data=MISSING)),
    ("data_empty_object", with_(data={})),
    ("data_at_key_limit", with_(data={f"k{i}": "v" for i in range(DEFAULTS.max_data_keys)})),
    ("url_of_several_kb", with_(url="/search?q=" + "x" * 6000)),
    ("url_at_limit", with_(url="/" * DEFAULTS.max_url_length)),
    ("consumer_id_at_limit", with_(consumer_id="c" * DEFAULTS.max_string_length)),
    ("empty_consumer_and_function", with_(consumer_id="", function="")),
    ("status_100_lowest", with_(status_code=100)),
    ("status_599_highest", with_(status_code=599)),
    ("response_us_zero", with_(response_us=0)),
    ("timestamp_integer", with_(timestamp=int(time.time()) - 5)),
    ("timestamp_just_inside_past", with_(timestamp=FromNow(-DEFAULTS.max_event_age_s + 600))),
    (
        "timestamp_just_inside_future",
        with_(timestamp=FromNow(DEFAULTS.max_event_future_s - 600)),
    ),
    ("non_ascii_text", with_(consumer_id="café ☕", data={"région": "Île-de-France 🇫🇷"})),
    ("surrogate_pair_escape", with_(function="\U0001f600")),
    # The text \u0000 (an escaped backslash, then u0000) is six characters, not a NUL.
    ("backslash_u0000_text", with_(url="/path\\u0000", data={"k\\u0000": "\\u0000"})),
]


@pytest.mark.parametrize("ev", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
async def test_edge_events_are_accepted(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, ev: dict[str, Any]
) -> None:
    resp = await post(client, app_keys, [at_run_time(ev)])
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 1}
    row = await db.fetchrow(
        "SELECT consumer_id, url, function FROM events JOIN apps a ON a.id = app_id "
        "WHERE a.public_id = $1",
        app_keys.app_id,
    )
    assert row is not None
    assert (row["consumer_id"], row["url"], row["function"]) == (
        ev["consumer_id"],
        ev["url"],
        ev["function"],
    )


async def test_surrogate_pair_escape_is_one_character(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    body = raw_batch(b"\\ud83d\\ude00", "function")
    resp = await post(client, app_keys, body)
    assert resp.status == 200, await resp.text()
    functions = await db.fetchval(
        "SELECT array_agg(function ORDER BY function) FROM events JOIN apps a ON a.id = app_id "
        "WHERE a.public_id = $1",
        app_keys.app_id,
    )
    assert functions == ["get_thing", "\U0001f600"]


# -- the body as a whole ---------------------------------------------------------------

BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("not_json", b"hello", "invalid_json"),
    ("empty_body", b"", "invalid_json"),
    ("truncated_json", b'[{"timestamp": 1', "invalid_json"),
    ("trailing_garbage", b"[] []", "invalid_json"),
    ("invalid_utf8_outside_strings", b"[\xff]", "invalid_json"),
    ("nested_too_deep", b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
    ("nested_too_deep_in_data", b'[{"data":' + b"[" * 5000 + b"]" * 5000 + b"}]", "invalid_json"),
    ("number_out_of_range", b'[{"response_us": ' + b"9" * 5000 + b"}]", "invalid_json"),
    ("an_object", json.dumps(event()).encode(), "not_an_array"),
    ("a_string", b'"events"', "not_an_array"),
    ("null", b"null", "not_an_array"),
    ("a_number", b"3", "not_an_array"),
]


@pytest.mark.parametrize(("body", "code"), [c[1:] for c in BAD_BODIES],
                         ids=[c[0] for c in BAD_BODIES])  # fmt: skip
async def test_body_not_a_json_array(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, body: bytes, code: str
) -> None:
    err = await assert_error(await post(client, app_keys, body), 400, code)
    assert "JSON" in err["message"]
    assert await stored(db, app_keys) == 0


CONTENT_TYPES: list[tuple[str, dict[str, str], int, str]] = [
    ("text_plain", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("form", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("json_with_charset", {"Content-Type": "application/json; charset=utf-8"}, 200, ""),
    ("brotli_encoding", {"Content-Encoding": "br"}, 415, "unsupported_media_type"),
    ("identity_encoding", {"Content-Encoding": "identity"}, 200, ""),
]


@pytest.mark.parametrize(("headers", "status", "code"), [c[1:] for c in CONTENT_TYPES],
                         ids=[c[0] for c in CONTENT_TYPES])  # fmt: skip
async def test_content_type_and_encoding(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    resp = await post(client, app_keys, [event()], **headers)
    if status == 200:
        assert resp.status == 200, await resp.text()
        assert await stored(db, app_keys) == 1
    else:
        await assert_error(resp, status, code)
        assert await stored(db, app_keys) == 0


async def test_missing_content_type_is_415(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    # skip_auto_headers: aiohttp would otherwise add application/octet-stream itself.
    resp = await client.post(
        "/1/events/",
        data=json.dumps([event()]).encode(),
        headers=write_headers(app_keys),
        skip_auto_headers=["Content-Type"],
    )
    await assert_error(resp, 415, "unsupported_media_type", "none was sent")
    assert await stored(db, app_keys) == 0


# -- gzip ------------------------------------------------------------------------------


async def test_gzip_body_is_accepted(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    body = gzip.compress(json.dumps([event(), event()]).encode())
    resp = await post(client, app_keys, body, **{"Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 2}
    assert await stored(db, app_keys) == 2


GOOD_GZIP = gzip.compress(json.dumps([event()]).encode())
BAD_GZIP: list[tuple[str, bytes]] = [
    ("not_gzip_at_all", json.dumps([event()]).encode()),
    ("truncated", GOOD_GZIP[: len(GOOD_GZIP) // 2]),
    ("corrupt_deflate_stream", GOOD_GZIP[:10] + b"\xff" * 20 + GOOD_GZIP[30:]),
]


@pytest.mark.parametrize("body", [c[1] for c in BAD_GZIP], ids=[c[0] for c in BAD_GZIP])
async def test_bad_gzip_is_400(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, body: bytes
) -> None:
    resp = await post(client, app_keys, body, **{"Content-Encoding": "gzip"})
    await assert_error(resp, 400, "invalid_body", "gzip")
    assert await stored(db, app_keys) == 0


# -- limits ----------------------------------------------------------------------------


def padded_batch(size: int) -> bytes:
    """One event whose JSON is exactly ``size`` bytes long."""
    ts = int(time.time()) - 60  # fixed, so its JSON length is too
    base = json.dumps([with_(url="", timestamp=ts)]).encode()
    ev = with_(url="/" + "p" * (size - len(base) - 1), timestamp=ts)
    body = json.dumps([ev]).encode()
    assert len(body) == size
    return body


async def test_body_at_limit_is_accepted(
    small_client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    resp = await post(small_client, app_keys, padded_batch(BODY_LIMIT))
    assert resp.status == 200, await resp.text()


async def test_body_just_over_limit_is_413(
    small_client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    resp = await post(small_client, app_keys, padded_batch(BODY_LIMIT + 1))
    await assert_error(resp, 413, "payload_too_large", str(BODY_LIMIT))
    assert await stored(db, app_keys) == 0


async def test_chunked_body_over_limit_is_413(
    small_client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """Without Content-Length the limit is enforced while reading."""
    body = padded_batch(BODY_LIMIT + 1000)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    resp = await small_client.post(
        "/1/events/",
        data=chunks(),
        headers={"Content-Type": "application/json", **write_headers(app_keys)},
    )
    await assert_error(resp, 413, "payload_too_large")
    assert await stored(db, app_keys) == 0


async def test_gzip_bomb_over_limit_is_413(
    small_client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """The limit holds after gunzip: a small body that inflates past it is refused."""
    bomb = gzip.compress(b"[" + b" " * (1 << 20) + b"]")
    assert len(bomb) < BODY_LIMIT
    resp = await post(small_client, app_keys, bomb, **{"Content-Encoding": "gzip"})
    await assert_error(resp, 413, "payload_too_large", "gunzip")
    assert await stored(db, app_keys) == 0


BATCH_SIZES: list[tuple[str, int, int]] = [
    ("batch_at_limit", 5, 200),
    ("batch_just_over_limit", 6, 413),
]


@pytest.mark.parametrize(("n", "status"), [c[1:] for c in BATCH_SIZES],
                         ids=[c[0] for c in BATCH_SIZES])  # fmt: skip
async def test_batch_limit(
    small_client: TestClient, app_keys: NewApp, db: asyncpg.Connection, n: int, status: int
) -> None:
    resp = await post(small_client, app_keys, [event(url="/") for _ in range(n)])
    if status == 200:
        assert resp.status == 200, await resp.text()
        assert await stored(db, app_keys) == n
    else:
        await assert_error(resp, 413, "payload_too_large", "5")
        assert await stored(db, app_keys) == 0
