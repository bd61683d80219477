"""SPEC "Exporting" — ``GET /1/events/<start>/<end>/``, as a contract.

* Read key only (write key 403, no or wrong key 401); one app never sees another's.
* The raw events of ``[start, end)``, in time order, each exactly once, with the
  fields ingest takes (timestamp as UNIX seconds with microseconds, consumer_id,
  method, url, function, response_us, status_code, data), so an export can be sent
  back to ``POST /1/events/``.
* NDJSON by default; CSV with ``?format=csv`` or ``Accept: text/csv``.
* The same ``include`` filters as queries.
* A range reaching before the raw events' retention horizon is refused with 410
  ``past_retention`` rather than exported incomplete.
* Streamed: a failure after the first bytes breaks the download instead of ending
  it cleanly (memory is measured in bench/export_memory.py).
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.apps import NewApp
from apinalytics.export import BATCH_ROWS
from apinalytics.ingest.model import MAX_RESPONSE_US

from .conftest import ALL_MODES
from .helpers import assert_error, exact_us, post_accepted, read_headers, write_headers

DAY = 86400
NOW = int(datetime.now(UTC).timestamp())
# A whole day, ending an hour ago, well inside the ingest window.
START = NOW - NOW % DAY - 2 * DAY
END = START + DAY
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def make_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Events that exercise every field: microseconds, equal timestamps, commas,
    quotes, newlines and non-ASCII text, data null, absent or with values."""
    rnd = random.Random(seed)
    texts = [
        "",
        "alice",
        'quote " and, comma',
        "line\nbreak",
        "cr\ronly",
        "naïve café ☕",
        "tab\there",
    ]
    out = []
    for i in range(n):
        t = START + rnd.randrange(DAY * 1_000_000) / 1_000_000
        if i % 50 == 1:
            t = out[-1]["timestamp"]  # equal timestamps
        ev: dict[str, Any] = {
            "timestamp": t,
            "consumer_id": rnd.choice(texts),
            "method": rnd.choice(["get", "POST", "delete"]),
            "url": f"/v1/things/{i}?q={rnd.choice(texts)}&x=1",
            "function": rnd.choice(texts),
            "response_us": rnd.choice([0, 1, 1500, MAX_RESPONSE_US]),
            "status_code": rnd.choice([100, 200, 404, 500, 599]),
        }
        choice = i % 3
        if choice == 0:
            ev["data"] = None
        elif choice == 1:
            ev["data"] = {"plan": rnd.choice(texts), 'k,"2': "v\n"}
        out.append(ev)
    return out


def normalized(ev: dict[str, Any]) -> tuple[Any, ...]:
    """An event as stored: microsecond timestamp, upper-case method, empty data as null."""
    us = exact_us(ev["timestamp"])
    return (
        us,
        ev["consumer_id"],
        ev["method"].upper(),
        ev["url"],
        ev["function"],
        ev["response_us"],
        ev["status_code"],
        json.dumps(ev.get("data") or None, sort_keys=True),
    )


def from_csv(text: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [
        {
            "timestamp": float(r["timestamp"]),
            "consumer_id": r["consumer_id"],
            "method": r["method"],
            "url": r["url"],
            "function": r["function"],
            "response_us": int(r["response_us"]),
            "status_code": int(r["status_code"]),
            "data": json.loads(r["data"]) if r["data"] else None,
        }
        for r in rows
    ]


async def export(
    client: TestClient, app: NewApp, start: int = START, end: int = END, **kw: Any
) -> tuple[aiohttp.ClientResponse, str]:
    headers = {**read_headers(app), **kw.pop("headers", {})}
    resp = await client.get(f"/1/events/{start}/{end}/", headers=headers, **kw)
    return resp, await resp.text()


def parse(resp: aiohttp.ClientResponse, body: str) -> list[dict[str, Any]]:
    if resp.content_type == "text/csv":
        return from_csv(body)
    assert resp.content_type == "application/x-ndjson"
    return [json.loads(line) for line in body.splitlines()]


def assert_in_time_order(events: list[dict[str, Any]]) -> None:
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)


def raw_timestamps(body: str) -> list[str]:
    return [line.split(",", 1)[0].removeprefix('{"timestamp":') for line in body.splitlines()]


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@pytest.mark.parametrize(
    ("fmt", "query", "headers"),
    [
        ("ndjson", {}, {}),
        ("csv", {"format": "csv"}, {}),
        ("csv", {}, {"Accept": "text/csv"}),
    ],
    ids=["ndjson_default", "csv_by_param", "csv_by_accept"],
)
async def test_round_trip_every_event_once_in_order_fields_intact(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    fmt: str,
    query: dict[str, str],
    headers: dict[str, str],
) -> None:
    sent = make_events(2 * BATCH_ROWS + 37)  # crosses cursor batches
    await post_accepted(client, app_keys, sent)
    resp, body = await export(client, app_keys, params=query, headers=headers)
    assert resp.status == 200, body
    assert resp.content_type == ("text/csv" if fmt == "csv" else "application/x-ndjson")
    assert f'filename="events-{START}-{END}.{fmt}"' in resp.headers["Content-Disposition"]
    got = parse(resp, body)
    assert_in_time_order(got)
    assert sorted(normalized(e) for e in got) == sorted(normalized(e) for e in sent)
    for e in got:
        assert list(e) == [
            "timestamp",
            "consumer_id",
            "method",
            "url",
            "function",
            "response_us",
            "status_code",
            "data",
        ]
    if fmt == "ndjson":
        # Exactly six decimals: the microsecond, never a float's rounding.
        stored = await db.fetch("SELECT time FROM events ORDER BY time")
        assert raw_timestamps(body) == [
            f"{(r['time'] - EPOCH) // timedelta(seconds=1)}."
            f"{(r['time'] - EPOCH) // timedelta(microseconds=1) % 1_000_000:06d}"
            for r in stored
        ]
    # Re-sent as exported, into another app, it exports the same again.
    other = await apps.create(db, "copy")
    await post_accepted(client, other, got)
    resp2, body2 = await export(client, other, params=query, headers=headers)
    assert sorted(normalized(e) for e in parse(resp2, body2)) == sorted(normalized(e) for e in got)


@pytest.mark.parametrize(
    ("offset", "exported"),
    [
        (-1e-6, False),
        (0.0, True),
        (DAY - 1e-6, True),
        (DAY, False),
    ],
    ids=["just_before_start", "at_start", "just_before_end", "at_end"],
)
async def test_range_is_start_inclusive_end_exclusive(
    client: TestClient, app_keys: NewApp, offset: float, exported: bool
) -> None:
    ev = make_events(1)[0] | {"timestamp": START + offset}
    await post_accepted(client, app_keys, [ev])
    resp, body = await export(client, app_keys)
    assert resp.status == 200
    assert len(body.splitlines()) == (1 if exported else 0)


@pytest.mark.parametrize(
    "includes",
    [
        ["method:POST"],
        ["method:post", "method:delete"],
        ["status_code:500", "method:GET"],
        ["consumer_id:"],
        ["data.plan:alice"],
        ["function:naïve café ☕", "consumer_id:alice"],
        [""],
    ],
    ids=[
        "one_value",
        "or_within_field_lower_case_method",
        "and_across_fields",
        "empty_value",
        "data_key",
        "non_ascii_and",
        "empty_include_no_filter",
    ],
)
async def test_include_filters_as_queries(
    client: TestClient, app_keys: NewApp, includes: list[str]
) -> None:
    sent = make_events(600)
    await post_accepted(client, app_keys, sent)
    wanted: dict[str, set[str]] = {}
    for inc in includes:
        if inc:
            name, _, value = inc.partition(":")
            wanted.setdefault(name, set()).add(value.upper() if name == "method" else value)

    def field(e: dict[str, Any], name: str) -> str:
        if name.startswith("data."):
            return str((e.get("data") or {}).get(name[5:], ""))
        value = e[name]
        return value.upper() if name == "method" else str(value)

    oracle = [e for e in sent if all(field(e, n) in vs for n, vs in wanted.items())]
    resp, body = await export(client, app_keys, params=[("include", i) for i in includes])
    assert resp.status == 200, body
    got = parse(resp, body)
    assert sorted(normalized(e) for e in got) == sorted(normalized(e) for e in oracle)


async def test_only_the_apps_own_events(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    other = await apps.create(db, "other")
    await post_accepted(client, other, make_events(20))
    resp, body = await export(client, app_keys)
    assert resp.status == 200
    assert body == ""


@pytest.mark.parametrize(
    ("path", "params", "headers", "status", "code", "mention"),
    [
        (f"/1/events/{START}/{END}/", {}, "write", 403, "forbidden", "read key"),
        (f"/1/events/{START}/{END}/", {}, "none", 401, "unauthorized", "X-Auth-Key"),
        (f"/1/events/{END}/{START}/", {}, "read", 400, "invalid_parameter", "end"),
        (f"/1/events/{START}/{START}", {}, "read", 400, "invalid_parameter", "end"),
        (f"/1/events/x/{END}/", {}, "read", 400, "invalid_parameter", "start"),
        (
            f"/1/events/{START}/{END}/",
            {"format": "xml"},
            "read",
            400,
            "invalid_parameter",
            "format",
        ),
        (
            f"/1/events/{START}/{END}/",
            {"include": "nope"},
            "read",
            400,
            "invalid_parameter",
            "include",
        ),
        (
            f"/1/events/{START}/{END}/",
            {"include": "url:\x00"},
            "read",
            400,
            "invalid_parameter",
            "NUL",
        ),
    ],
    ids=[
        "write_key",
        "no_key",
        "end_before_start",
        "empty_range_no_trailing_slash",
        "start_not_a_number",
        "unknown_format",
        "malformed_include",
        "nul_in_include",
    ],
)
async def test_errors(
    client: TestClient,
    app_keys: NewApp,
    path: str,
    params: dict[str, str],
    headers: str,
    status: int,
    code: str,
    mention: str,
) -> None:
    h = {"read": read_headers(app_keys), "write": write_headers(app_keys), "none": {}}[headers]
    resp = await client.get(path, params=params, headers=h)
    await assert_error(resp, status, code, mention)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (f"/1/events/{START}/{END}", {"format": ""}),
        (f"/1/event/{START}/{END}/", {}),
    ],
    ids=["no_trailing_slash_empty_format", "event_alias"],
)
async def test_paths_and_empty_format(
    client: TestClient, app_keys: NewApp, path: str, params: dict[str, str]
) -> None:
    await post_accepted(client, app_keys, make_events(3))
    resp = await client.get(path, params=params, headers=read_headers(app_keys))
    assert resp.status == 200
    assert resp.content_type == "application/x-ndjson"
    assert len((await resp.text()).splitlines()) == 3


@pytest.mark.parametrize(
    ("start_offset", "status"),
    [(-1, 410), (0, 200), (1, 200)],
    ids=["before_horizon", "at_horizon", "after_horizon"],
)
async def test_range_before_the_raw_horizon_is_refused(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    start_offset: int,
    status: int,
) -> None:
    # Raw events dropped up to START + 10 h (what `retention apply` records).
    horizon = START + 36000
    await db.execute(
        "UPDATE retention SET dropped_before = $1 WHERE relation = 'events'",
        datetime.fromtimestamp(horizon, UTC),
    )
    resp = await client.get(
        f"/1/events/{horizon + start_offset}/{END}/", headers=read_headers(app_keys)
    )
    if status == 410:
        await assert_error(resp, 410, "past_retention", str(horizon))
    else:
        assert resp.status == 200


async def test_failure_mid_stream_breaks_the_download(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """Once the status line is out, a database failure must not look like a whole export."""
    app = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app_keys.app_id)
    n = 60_000  # several MB: more than the socket buffers hold while we hold back
    await db.execute(
        """
        INSERT INTO events
        SELECT to_timestamp($2::float8) + i * interval '1 second', $1, 'c', 'GET',
               '/' || repeat('x', 100), 'f', i, 200, NULL
        FROM generate_series(0, $3 - 1) AS i
        """,
        app,
        START,
        n,
    )
    resp = await client.get(f"/1/events/{START}/{END}/", headers=read_headers(app_keys))
    assert resp.status == 200
    await resp.content.readexactly(1000)
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'apinalytics' AND query LIKE '%FROM events WHERE app_id%'"
    )
    assert killed == 1
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
