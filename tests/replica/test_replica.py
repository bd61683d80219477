"""docs/replicas.md: queries and exports read from a streaming replica within a bound.

- With ``APINALYTICS_READ_DATABASE_URL`` set, time-series queries and exports are read
  from the replica while it lags at most ``read_max_lag_s``, and the answer says so
  (``X-Apinalytics-Read-From: replica``); ingest never touches the replica.
- Past the bound, a read goes to the primary and sees every acknowledged write;
  ``X-Apinalytics-Consistency: strong`` (or ``?consistency=strong``) always does.
- A replica that is down answers nothing: reads go to the primary (200, never a 5xx),
  logged once; they come back when it does.
- Every query shape the API has runs on a hot standby (read-only, no temp tables, no
  locks beyond reads) and answers as the primary does.

A real primary and a real replica (tests/replica/conftest.py), in each rollup mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.keys import READS
from apinalytics.settings import Settings

from ..helpers import assert_error, catch_up, event, post_accepted, read_headers
from .conftest import Streaming

ClientFor = Callable[..., Awaitable[TestClient]]
READ_FROM = "X-Apinalytics-Read-From"
CONSISTENCY = "X-Apinalytics-Consistency"
# What the service's pools call themselves (db.create_pool); the lag monitor's own
# connections have another name.
POOL_APPLICATION = "apinalytics"


@pytest.fixture
def client_for(
    streaming: Streaming, make_client: Callable[[Settings], Awaitable[TestClient]], tmp_path: Path
) -> ClientFor:
    """A service on the primary, reading from the replica; keywords set other settings."""

    async def make(**overrides: Any) -> TestClient:
        fields: dict[str, Any] = {
            "database_url": streaming.primary_dsn,
            "read_database_url": streaming.replica_dsn,
            "home": tmp_path / "home",
            "db_connect_timeout_s": 2.0,
            "read_max_lag_s": 1.0,
            "read_lag_interval_s": 0.1,
        }
        return await make_client(Settings(**(fields | overrides)))

    return make


@pytest.fixture
async def app_keys(streaming: Streaming) -> apps.NewApp:
    conn = await asyncpg.connect(streaming.primary_dsn)
    try:
        return await apps.create(conn, "replica-test")
    finally:
        await conn.close()


NOW = int(time.time())
RANGE = f"{NOW - 3 * 3600}/{NOW + 60}/"


async def count(
    client: TestClient, app: apps.NewApp, query: str = "", **headers: str
) -> tuple[str, int]:
    """Where the app's events were counted, and how many there were."""
    resp = await client.get(
        f"/1/timeseries/{RANGE}?{query}", headers={**read_headers(app), **headers}
    )
    assert resp.status == 200, await resp.text()
    [points] = (await resp.json())["groups"].values()
    return resp.headers[READ_FROM], sum(v or 0 for _, v in points)


async def exported(client: TestClient, app: apps.NewApp, **headers: str) -> tuple[str, int]:
    resp = await client.get(f"/1/events/{RANGE}", headers={**read_headers(app), **headers})
    assert resp.status == 200, await resp.text()
    return resp.headers[READ_FROM], len((await resp.text()).splitlines())


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


async def fresh(client: TestClient) -> None:
    """Until the service's monitor has measured the replica within its bound."""
    reads = client.app[READS]

    async def within() -> bool:
        assert reads.monitor is not None
        return bool(reads.monitor.up) and reads.monitor.staleness() <= reads.max_lag_s

    await until(within, "the replica measured fresh")


async def pool_backends(streaming: Streaming) -> int:
    """Connections of the service's pools open on the replica."""
    n = await streaming.replica_sql(
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{POOL_APPLICATION}'"
    )
    assert isinstance(n, int)
    return n


async def test_queries_and_exports_read_from_the_replica_and_ingest_never_does(
    streaming: Streaming, client_for: ClientFor, app_keys: apps.NewApp
) -> None:
    # Earlier tests' services have closed their pools; their backends go soon after.
    await until(lambda: _none_open(streaming), "no pool connections on the replica")
    client = await client_for()
    await post_accepted(client, app_keys, [event(timestamp=NOW - 60) for _ in range(3)])
    await post_accepted(client, app_keys, [event(timestamp=NOW - 120)])
    assert await pool_backends(streaming) == 0, "ingest opened a connection to the replica"

    await streaming.caught_up()
    await fresh(client)
    assert await count(client, app_keys) == ("replica", 4)
    assert await count(client, app_keys, "granularity=minute&group=url") == ("replica", 4)
    assert await exported(client, app_keys) == ("replica", 4)
    assert await pool_backends(streaming) >= 1


async def _none_open(streaming: Streaming) -> bool:
    return await pool_backends(streaming) == 0


async def test_a_lagging_replica_sends_reads_to_the_primary_and_strong_reads_always_go_there(
    streaming: Streaming, client_for: ClientFor, app_keys: apps.NewApp
) -> None:
    bounded = await client_for(read_max_lag_s=1.0)
    # A bound no pause in this test reaches: the replica answers with what it has.
    loose = await client_for(read_max_lag_s=3600)
    await post_accepted(bounded, app_keys, [event(timestamp=NOW - 60)])
    await streaming.caught_up()
    await fresh(bounded)
    await fresh(loose)
    assert await count(bounded, app_keys) == ("replica", 1)

    await streaming.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        await post_accepted(bounded, app_keys, [event(timestamp=NOW - 30)])
        # The replica does not have the new batch: the answers below that lack it come
        # from there, and those that have it from the primary.
        assert await count(loose, app_keys) == ("replica", 1)
        assert await exported(loose, app_keys) == ("replica", 1)
        # Asked for: the primary, at once, whatever the lag.
        assert await count(loose, app_keys, **{CONSISTENCY: "strong"}) == ("primary", 2)
        assert await count(loose, app_keys, "consistency=strong") == ("primary", 2)
        assert await count(loose, app_keys, "consistency=Strong") == ("primary", 2)
        assert await exported(loose, app_keys, **{CONSISTENCY: "strong"}) == ("primary", 2)
        # Past the bound, a default read goes to the primary and sees the batch.
        await asyncio.sleep(1.2)
        assert await count(bounded, app_keys) == ("primary", 2)
        assert await exported(bounded, app_keys) == ("primary", 2)
        metrics = await (await bounded.get("/metrics")).text()
        assert 'apinalytics_reads_total{reason="lagging",source="primary"} 2.0' in metrics
        assert "apinalytics_read_replica_up 1.0" in metrics
        lag_bytes = _metric(metrics, "apinalytics_read_replica_lag_bytes")
        assert lag_bytes > 0
        assert _metric(metrics, "apinalytics_read_replica_lag_seconds") > 1.0
    finally:
        await streaming.replica_sql("SELECT pg_wal_replay_resume()")
    await streaming.caught_up()
    await fresh(bounded)
    assert await count(bounded, app_keys) == ("replica", 2)


async def test_an_idle_primary_after_a_wal_switch_is_not_lagged_behind(
    streaming: Streaming, client_for: ClientFor, app_keys: apps.NewApp
) -> None:
    """After a WAL segment switch the primary's insert position points past the new
    segment's page header, where no replay position ever is: idle, the replica must
    still count as fresh."""
    # No materializer: nothing writes to the primary during the test.
    client = await client_for(materializer_interval_s=0)
    await fresh(client)
    conn = await asyncpg.connect(streaming.primary_dsn)
    try:
        await conn.execute("SELECT pg_switch_wal()")
        at = await conn.fetchval("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint")
    finally:
        await conn.close()
    await streaming.caught_up()
    await asyncio.sleep(1.5)  # past the bound: a replica seen behind would be left
    await fresh(client)
    assert (await count(client, app_keys))[0] == "replica"
    # Nothing was written since: the position was still past the header.
    conn = await asyncpg.connect(streaming.primary_dsn)
    try:
        now = await conn.fetchval("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint")
        segment = await conn.fetchval("SELECT pg_size_bytes(current_setting('wal_segment_size'))")
    finally:
        await conn.close()
    assert at % segment == 40
    assert now == at, "something wrote to the primary meanwhile: the idle case was not met"


def _metric(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_the_consistency_asked_for_is_strong_or_bounded(
    streaming: Streaming, client_for: ClientFor, app_keys: apps.NewApp
) -> None:
    client = await client_for()
    await fresh(client)
    assert (await count(client, app_keys, "consistency=bounded"))[0] == "replica"
    assert (await count(client, app_keys, **{CONSISTENCY: ""}))[0] == "replica"
    url = f"/1/timeseries/{RANGE}"
    resp = await client.get(url + "?consistency=eventual", headers=read_headers(app_keys))
    await assert_error(resp, 400, "invalid_parameter", "consistency", "strong or bounded")
    resp = await client.get(url, headers={**read_headers(app_keys), CONSISTENCY: "latest"})
    await assert_error(resp, 400, "invalid_parameter", CONSISTENCY, "'latest'")
    resp = await client.get(f"/1/events/{RANGE}?consistency=1", headers=read_headers(app_keys))
    await assert_error(resp, 400, "invalid_parameter", "consistency")
    # A page on another origin may ask for it and read where the answer came from.
    resp = await client.options(
        url,
        headers={
            "Origin": "https://example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": CONSISTENCY.lower(),
        },
    )
    assert CONSISTENCY in resp.headers["Access-Control-Allow-Headers"]
    assert READ_FROM in resp.headers["Access-Control-Expose-Headers"]


async def test_without_a_replica_every_read_is_the_primarys(
    streaming: Streaming, client_for: ClientFor, app_keys: apps.NewApp
) -> None:
    client = await client_for(read_database_url=None)
    await post_accepted(client, app_keys, [event(timestamp=NOW - 60)])
    assert await count(client, app_keys) == ("primary", 1)
    assert await exported(client, app_keys) == ("primary", 1)


async def test_a_stopped_replica_leaves_reads_on_the_primary(
    streaming: Streaming,
    client_for: ClientFor,
    app_keys: apps.NewApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Measured once when it starts, not again in this test: the replica goes down
    # while the service still takes it for fresh.
    unaware = await client_for(read_lag_interval_s=3600, read_max_lag_s=3600)
    await post_accepted(unaware, app_keys, [event(timestamp=NOW - 60)])
    await streaming.caught_up()
    monitor = unaware.app[READS].monitor
    assert monitor is not None
    await monitor.measure()
    await fresh(unaware)
    password = urlsplit(streaming.replica_dsn).password
    assert password

    streaming.stop_replica()
    try:
        with caplog.at_level(logging.INFO, logger="apinalytics.replica_lag"):
            # The replica fails the read: it is read again on the primary.
            assert await count(unaware, app_keys) == ("primary", 1)
            # Then it is left alone until a measure reaches it again.
            assert await count(unaware, app_keys) == ("primary", 1)
            assert await exported(unaware, app_keys) == ("primary", 1)
            # A service started while it is down reads from the primary too.
            watching = await client_for()
            await until(lambda: _measured_down(watching), "the replica measured down")
            assert await count(watching, app_keys) == ("primary", 1)
            assert await exported(watching, app_keys) == ("primary", 1)
        metrics = await (await unaware.get("/metrics")).text()
        assert "apinalytics_read_replica_up 0.0" in metrics
        assert 'apinalytics_reads_total{reason="replica_failed",source="primary"} 1.0' in metrics
        assert 'apinalytics_reads_total{reason="unavailable",source="primary"} 2.0' in metrics
        said = [
            r.getMessage()
            for r in caplog.records
            if r.name == "apinalytics.replica_lag" and r.levelno == logging.WARNING
        ]
        # Once per service, naming the replica and what follows; no password.
        assert len(said) == 2, said
        for message in said:
            assert f":{streaming.replica.port}/" in message
            assert "read from the primary" in message
            assert password not in message
    finally:
        streaming.start_replica()
    await streaming.caught_up()
    await fresh(watching)
    assert await count(watching, app_keys) == ("replica", 1)


async def _measured_down(client: TestClient) -> bool:
    monitor = client.app[READS].monitor
    return monitor is not None and monitor.up is False


# Every kind of statement the query path runs: rollup reads, raw reads in a
# transaction with SET LOCAL (percentiles, forced raw), the histogram rollups,
# filters, groups, the pending stretches read from raw events.
SHAPES = (
    "",
    "granularity=minute",
    "granularity=hour&group=url",
    "granularity=day&group=data.plan",
    "aggregation=mean&include=method:GET",
    "aggregation=max&granularity=hour&include=status_code:500",
    "aggregation=error_rate&granularity=hour",
    "aggregation=percentile_99&granularity=hour",
    "aggregation=percentile_50&precision=approximate&granularity=hour",
    "aggregation=apdex_2&group=consumer_id",
)


async def test_every_query_shape_answers_on_the_standby_as_on_the_primary(
    streaming: Streaming, client_for: ClientFor, app_keys: apps.NewApp
) -> None:
    client = await client_for(materializer_interval_s=0)
    events = [
        event(
            timestamp=NOW - 60 * i,
            url=f"/v1/{i % 3}",
            consumer_id=f"c{i % 2}",
            response_us=1000 + 37 * i,
            status_code=500 if i % 5 == 0 else 200,
            data={"plan": "pro" if i % 4 else "free"},
        )
        for i in range(1, 150)
    ]
    await post_accepted(client, app_keys, events[:100])
    # Some in the rollups, some still pending (read from raw events).
    conn = await asyncpg.connect(streaming.primary_dsn)
    try:
        await catch_up(conn)
    finally:
        await conn.close()
    await post_accepted(client, app_keys, events[100:])
    await streaming.caught_up()
    await fresh(client)
    for shape in SHAPES:
        for planner in ("auto", "raw"):
            headers = {**read_headers(app_keys), "X-Apinalytics-Planner": planner}
            answers = {}
            for consistency in ("bounded", "strong"):
                resp = await client.get(
                    f"/1/timeseries/{RANGE}?{shape}",
                    headers={**headers, CONSISTENCY: consistency},
                )
                assert resp.status == 200, (shape, planner, await resp.text())
                answers[resp.headers[READ_FROM]] = await resp.json()
            assert set(answers) == {"replica", "primary"}, (shape, planner)
            assert answers["replica"] == answers["primary"], (shape, planner)
