"""One application's storm of raw reads leaves another's ingest and rollup panel
answering: 100 concurrent percentile queries (each reads every raw event of its app)
while the quiet application sends a batch and reads a per-minute panel. The noisy
application may be told to come back (429, 503 overloaded); the quiet one is served.
Asserted on statuses and completion, not on time (bench/isolation.py measures)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.apps import NewApp

from ..helpers import event, read_headers, write_headers

STORM = 100


async def test_a_percentile_storm_leaves_another_app_served(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    quiet = await apps.create(db, "quiet")
    now = int(time.time())
    for _ in range(4):
        batch = [event(timestamp=now - 60 - i % 3000, response_us=i) for i in range(5000)]
        resp = await client.post("/1/events/", json=batch, headers=write_headers(app_keys))
        assert resp.status == 200, await resp.text()
    path = f"/1/timeseries/{now - 7200}/{now + 60}/"

    async def noisy() -> int:
        resp = await client.get(
            path + "?aggregation=percentile_95&granularity=minute&group=consumer_id",
            headers={**read_headers(app_keys), "X-Apinalytics-Planner": "raw"},
        )
        await resp.read()
        return resp.status

    storm = [asyncio.create_task(noisy()) for _ in range(STORM)]
    await asyncio.sleep(0.2)
    resp = await client.post("/1/events/", json=[event()], headers=write_headers(quiet))
    assert resp.status == 200, await resp.text()
    resp = await client.get(
        path + "?granularity=minute&group=function", headers=read_headers(quiet)
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Apinalytics-Sources"] != "events"
    statuses = await asyncio.gather(*storm)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert 200 in statuses
