"""Busy pools, fair shares and bounded queries (docs/limits.md).

- Ingest checks write keys on its own pool: it answers while every connection of the
  query pool is held.
- A pool whose connections are all in use is ``503 overloaded`` with Retry-After,
  within ``busy_wait_s``, not ``database_unavailable``.
- An application with ``max_queries_per_app`` queries running gets a 429 with
  Retry-After and RateLimit-* fields; another application does not.
- Ingest over an application's token bucket is a 429 saying when to come back.
- More than ``max_include_values`` include filters, or an answer of more than
  ``max_groups`` groups, is a 400 naming the limit.
- /metrics counts these rejections by reason.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.apps import NewApp
from apinalytics.keys import DB
from apinalytics.settings import Settings

from ..conftest import MakeSettings
from ..helpers import assert_error, event, read_headers, write_headers

POOL = 3


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(
        db_connect_timeout_s=5.0,
        db_pool_max=POOL,
        busy_wait_s=0.2,
        max_queries_per_app=2,
        max_include_values=10,
        max_groups=5,
        max_points=20,
        ingest_rate_per_app=1.0,
        ingest_burst_per_app=3,
    )


def series(start: int | None = None) -> str:
    now = int(time.time())
    return f"/1/timeseries/{start or now - 3600}/{now + 60}/"


async def test_ingest_and_a_busy_query_pool(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    other = await apps.create(db, "other")
    pool = client.app[DB].pool
    held = [await pool.acquire() for _ in range(POOL)]
    try:
        started = time.monotonic()
        resp = await client.get(series(), headers=read_headers(app_keys))
        err = await assert_error(resp, 503, "overloaded")
        assert resp.headers["Retry-After"] == "1"
        assert "busy" in err["message"]
        # Well before the 5 s acquire timeout (a bound, not a benchmark).
        assert time.monotonic() - started < 4
        resp = await client.post("/1/events/", json=[event()], headers=write_headers(other))
        assert resp.status == 200, await resp.text()
    finally:
        for conn in held:
            await pool.release(conn)
    resp = await client.get(series(), headers=read_headers(app_keys))
    assert resp.status == 200, await resp.text()


async def test_an_app_over_its_query_share_gets_429_and_others_do_not(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    other = await apps.create(db, "other")
    # Hold the raw events' table so that the two percentile queries keep running.
    async with db.transaction():
        await db.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        slow = [
            asyncio.create_task(
                client.get(series() + "?aggregation=percentile_50", headers=read_headers(app_keys))
            )
            for _ in range(2)
        ]
        for _ in range(100):
            n = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'apinalytics' "
                "AND wait_event_type = 'Lock'"
            )
            if n >= 2:
                break
            await asyncio.sleep(0.05)
        resp = await client.get(series(), headers=read_headers(app_keys))
        await assert_error(resp, 429, "rate_limited")
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["RateLimit-Limit"] == "2"
        assert resp.headers["RateLimit-Remaining"] == "0"
        # The other application's share is its own (its read waits for the lock too).
        pending = asyncio.create_task(client.get(series(), headers=read_headers(other)))
        await asyncio.sleep(0.3)
    for task in [*slow, pending]:
        resp = await task
        assert resp.status == 200, await resp.text()


async def test_ingest_over_the_bucket_is_429(client: TestClient, app_keys: NewApp) -> None:
    statuses = []
    for _ in range(5):
        resp = await client.post("/1/events/", json=[event()], headers=write_headers(app_keys))
        statuses.append(resp.status)
        if resp.status == 429:
            await assert_error(resp, 429, "rate_limited", "per second")
            assert int(resp.headers["Retry-After"]) >= 1
            assert resp.headers["RateLimit-Limit"] == "3"
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:], statuses


async def test_too_many_include_values_is_400(client: TestClient, app_keys: NewApp) -> None:
    include = "&".join(f"include=data.k{i}:v" for i in range(11))
    for path in (series() + "?" + include, f"/1/events/0/60/?{include}"):
        resp = await client.get(path, headers=read_headers(app_keys))
        await assert_error(resp, 400, "too_many_includes", "include", "10")
    resp = await client.get(
        series() + "?" + "&".join(f"include=data.k{i}:v" for i in range(10)),
        headers=read_headers(app_keys),
    )
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(("urls", "status"), [(5, 200), (6, 400)], ids=["at_limit", "over"])
async def test_groups_beyond_the_limit_are_400(
    client: TestClient, app_keys: NewApp, urls: int, status: int
) -> None:
    batch = [event(url=f"/u{i}") for i in range(urls)]
    resp = await client.post("/1/events/", json=batch, headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()
    resp = await client.get(series() + "?group=url", headers=read_headers(app_keys))
    if status == 200:
        assert resp.status == 200, await resp.text()
        assert len((await resp.json())["groups"]) == urls
    else:
        await assert_error(resp, 400, "too_many_groups", "5 groups")


async def test_groups_times_buckets_beyond_the_points_limit_are_400(
    client: TestClient, app_keys: NewApp
) -> None:
    batch = [event(url=f"/u{i}") for i in range(3)]
    resp = await client.post("/1/events/", json=batch, headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()
    now = int(time.time())
    # 3 groups of 10 buckets: 30 points, over 20; of 5 buckets: 15, within.
    resp = await client.get(
        f"/1/timeseries/{now - 600}/{now}/?group=url&granularity=60",
        headers=read_headers(app_keys),
    )
    await assert_error(resp, 400, "too_many_groups", "20 points")
    resp = await client.get(
        f"/1/timeseries/{now - 300}/{now}/?group=url&granularity=60",
        headers=read_headers(app_keys),
    )
    assert resp.status == 200, await resp.text()


async def test_rejections_are_counted_by_reason(client: TestClient, app_keys: NewApp) -> None:
    include = "&".join(f"include=data.k{i}:v" for i in range(11))
    await client.get(series() + "?" + include, headers=read_headers(app_keys))
    for _ in range(5):  # a burst of 3
        await client.post("/1/events/", json=[event()], headers=write_headers(app_keys))
    pool = client.app[DB].pool
    held = [await pool.acquire() for _ in range(POOL)]
    try:
        await client.get(series(), headers=read_headers(app_keys))
    finally:
        for conn in held:
            await pool.release(conn)
    text = await (await client.get("/metrics")).text()
    for reason, n in (("too_many_includes", 1), ("rate_limited", 2), ("overloaded", 1)):
        line = f'apinalytics_requests_rejected_total{{reason="{reason}"}} {n:.1f}'
        assert line in text, text
