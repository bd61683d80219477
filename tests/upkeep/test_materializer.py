"""The materializer against a real database, in both editions: pending stretches are
recorded with the batch, answers stay exact before and after a run, a batch committed
during a run keeps its pending row, a killed run leaves its rows for the next, and two
runs never overlap."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics.edition import Edition
from apinalytics.rollups import RAW, materializer

from ..conftest import ALL_MODES
from ..helpers import catch_up, read_headers
from .common import (
    check,
    lock_rollup,
    materializer_connection,
    panels,
    pending_count,
    post,
    reads_rollups,
    run_policies,
    settings,
    spread,
    wait_until_blocked,
)

all_modes = pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
DAY = 86400


@pytest.fixture
async def stopped(make_client: Any, database_url: str, tmp_path: Path) -> TestClient:
    """A client whose service runs no materializer: the test runs it."""
    c: TestClient = await make_client(settings(database_url, tmp_path, interval_s=0))
    return c


@all_modes
async def test_a_batch_is_answered_exactly_before_and_after_the_rollups_catch_up(
    mode: str, stopped: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    await run_policies(db, mode)
    now = time.time()
    start, end = int(now // 3600 * 3600) - 3 * DAY, int(now // 3600 * 3600) + 3600
    live = spread(50, now - 30, 29)
    back = spread(50, now - 2 * DAY, 3 * 3600, seed=3)
    await post(stopped, app_keys, live)
    await post(stopped, app_keys, back)
    # One row for the live batch, a few for the back-dated one; no rollup row written.
    rows = await db.fetch('SELECT start, "end" FROM rollup_pending ORDER BY id')
    assert 2 <= len(rows) <= 1 + 3
    if mode == "apache":
        assert await db.fetchval("SELECT count(*) FROM events_1m") == 0
    sources = await check(stopped, app_keys, live + back, panels(start, end))
    assert RAW in sources

    assert await catch_up(db) == len(rows)
    assert await pending_count(db) == 0
    sources = await check(stopped, app_keys, live + back, panels(start, end))
    assert reads_rollups(sources)


@all_modes
async def test_a_batch_committed_during_a_run_keeps_its_pending_row(
    mode: str,
    stopped: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """The race: run R reads batch A's pending row and is held at its first rollup
    write; batch B (same app, same hours) commits meanwhile. R deletes A's row only;
    B's stays and is read from raw events, so every answer includes B; the next run
    catches up on B."""
    await run_policies(db, mode)
    now = time.time()
    start, end = int(now // 3600 * 3600) - 3 * DAY, int(now // 3600 * 3600) + 3600
    # Two days back: below every Community threshold, so the run refreshes (and waits).
    a = spread(40, now - 2 * DAY, 1800)
    b = spread(40, now - 2 * DAY + 60, 1800, seed=5)
    await post(stopped, app_keys, a)
    (a_row,) = [r["id"] for r in await db.fetch("SELECT id FROM rollup_pending")]

    blocker = await asyncpg.connect(database_url)
    conn = await materializer_connection(database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await lock_rollup(blocker, mode)
        run = asyncio.create_task(materializer.catch_up_once(conn, Edition(mode)))
        await wait_until_blocked(db)
        await post(stopped, app_keys, b)
        await tx.rollback()
        done = await asyncio.wait_for(run, 60)
    finally:
        await blocker.close()
        await conn.close()
    assert done.ran and done.rows == 1
    left = [r["id"] for r in await db.fetch("SELECT id FROM rollup_pending")]
    assert len(left) == 1 and left[0] != a_row, "B's row, and only it, is pending"
    await check(stopped, app_keys, a + b, panels(start, end))
    await catch_up(db)
    sources = await check(stopped, app_keys, a + b, panels(start, end))
    assert reads_rollups(sources)


@all_modes
async def test_a_run_killed_midway_leaves_its_rows_for_the_next(
    mode: str,
    stopped: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """The backend terminated while a run holds the lock and waits: its pending rows
    stay, the lock is released with the session, answers stay exact, and the next run
    finishes them. Meanwhile a second materializer finds the lock taken."""
    await run_policies(db, mode)
    now = time.time()
    start, end = int(now // 3600 * 3600) - 3 * DAY, int(now // 3600 * 3600) + 3600
    evs = spread(60, now - 2 * DAY, 5 * 3600)
    await post(stopped, app_keys, evs)
    before = await pending_count(db)
    assert before >= 1

    blocker = await asyncpg.connect(database_url)
    conn = await materializer_connection(database_url)
    second = await asyncpg.connect(database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await lock_rollup(blocker, mode)
        run = asyncio.create_task(materializer.catch_up_once(conn, Edition(mode)))
        pid = await wait_until_blocked(db)
        # Two materializers never run at once: the second one does nothing.
        assert not (await materializer.catch_up_once(second, Edition(mode))).ran
        status = await materializer.status(db)
        assert status.running_pid == pid and status.ranges == before
        assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await asyncio.wait_for(run, 30)
        await tx.rollback()
    finally:
        await blocker.close()
        conn.terminate()
    try:
        assert await pending_count(db) == before
        await check(stopped, app_keys, evs, panels(start, end))
        # The lock went with the session: the next run (here the second connection) works.
        assert (await materializer.catch_up_once(second, Edition(mode))).rows == before
    finally:
        await second.close()
    assert await pending_count(db) == 0
    sources = await check(stopped, app_keys, evs, panels(start, end))
    assert reads_rollups(sources)


@all_modes
async def test_the_service_materializer_catches_up_by_itself(
    mode: str,
    make_client: Any,
    database_url: str,
    tmp_path: Path,
    app_keys: NewApp,
    db: asyncpg.Connection,
) -> None:
    """With the background materializer running, pending rows go away within seconds;
    /metrics shows them and the runs, /readyz stays ready throughout."""
    client: TestClient = await make_client(settings(database_url, tmp_path, interval_s=0.2))
    await run_policies(db, mode)
    now = time.time()
    evs = spread(30, now - DAY, 3600)
    await post(client, app_keys, evs)
    assert (await client.get("/readyz")).status == 200
    for _ in range(300):
        if await pending_count(db) == 0:
            break
        await asyncio.sleep(0.05)
    assert await pending_count(db) == 0
    text = await (await client.get("/metrics")).text()
    assert "apinalytics_rollup_pending_ranges 0.0" in text
    assert "apinalytics_rollup_pending_oldest_seconds 0.0" in text
    assert 'apinalytics_materializer_runs_total{outcome="materialized"}' in text
    start, end = int(now // 3600 * 3600) - 2 * DAY, int(now // 3600 * 3600) + 3600
    resp = await client.get(
        f"/1/timeseries/{start}/{end}/",
        params={"granularity": "day", "aggregation": "count"},
        headers=read_headers(app_keys),
    )
    assert resp.status == 200
    assert sum(v for _, v in (await resp.json())["groups"][app_keys.app_id]) == len(evs)


@all_modes
async def test_metrics_and_status_show_what_is_pending(
    mode: str, stopped: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    await post(stopped, app_keys, spread(10, time.time() - 3 * DAY, 60))
    await post(stopped, app_keys, spread(10, time.time() - 10, 5))
    await asyncio.sleep(1.1)
    text = await (await stopped.get("/metrics")).text()
    assert "apinalytics_rollup_pending_ranges 2.0" in text
    oldest = next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("apinalytics_rollup_pending_oldest_seconds ")
    )
    assert oldest >= 1.0
    assert (await stopped.get("/readyz")).status == 200
    status = await materializer.status(db)
    assert status.ranges == 2 and status.oldest_s is not None and status.running_pid is None


@all_modes
async def test_a_run_takes_every_pending_row_of_the_stretches_it_materializes(
    mode: str,
    stopped: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """Live traffic leaves a pending row per batch, all of one stretch (the app's
    current hour). A run materializes that stretch once and takes all its rows, not
    only the oldest ``limit``: the others would have re-aggregated the same hour again,
    run after run, while the backlog grew. Rows of other stretches wait their turn."""
    await run_policies(db, mode)
    hour = int(time.time() // 3600 * 3600) - 2 * DAY
    batches = [spread(10, hour + 600 * i, 300, seed=i + 1) for i in range(5)]
    later = spread(10, hour + 3600 + 60, 300)
    for evs in [*batches, later]:
        await post(stopped, app_keys, evs)
    assert await pending_count(db) == 6

    conn = await materializer_connection(database_url)
    try:
        run = await materializer.catch_up_once(conn, Edition(mode), limit=3)
    finally:
        await conn.close()
    assert (run.rows, run.stretches) == (5, 1)
    assert run.more  # its oldest 3 were as many as it asked for
    left = await db.fetch("SELECT extract(epoch FROM start)::bigint AS s FROM rollup_pending")
    assert [r["s"] for r in left] == [hour + 3600]
    everything = [e for evs in batches for e in evs] + later
    await check(stopped, app_keys, everything, panels(hour - DAY, hour + 2 * 3600))
    assert await catch_up(db) == 1
    sources = await check(stopped, app_keys, everything, panels(hour - DAY, hour + 2 * 3600))
    assert reads_rollups(sources)
