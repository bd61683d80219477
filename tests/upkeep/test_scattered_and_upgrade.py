"""A scattered batch against a database holding another app's events; the CLI's
catch-up and status; an upgrade from the schema before pending stretches."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps, migrate
from apinalytics.apps import NewApp
from apinalytics.edition import Edition
from apinalytics.rollups import rebuild
from apinalytics.schema import COLUMNS

from ..conftest import ALL_MODES
from ..dbs import Servers
from ..helpers import catch_up
from ..query.oracle import Ev, Q
from .common import check, pending_count, post, reads_rollups, run_policies, settings, spread

all_modes = pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
DAY = 86400
# The other app's events (the 1,000,000 are the benchmark's: bench/ingest.py).
OTHER_EVENTS = 50_000


@pytest.fixture
async def stopped(make_client: Any, database_url: str, tmp_path: Path) -> TestClient:
    c: TestClient = await make_client(settings(database_url, tmp_path, interval_s=0))
    return c


def scattered(n: int, now: float, days: int, seed: int) -> list[Ev]:
    rng = random.Random(seed)
    evs = spread(n, now - days * DAY, days * DAY - 60, seed=seed)
    return [
        Ev(
            rng.uniform(now - days * DAY, now - 60),
            e.consumer_id,
            e.method,
            e.url,
            e.function,
            e.response_us,
            e.status_code,
            None,
        )
        for e in evs
    ]


def month_panels(now: float) -> list[Q]:
    end = int(now // 3600 * 3600) + 3600
    start = end - 31 * DAY
    return [
        Q(start, end, "day", "count", "function", ()),
        Q(start, end, "day", "mean", "", ()),
        Q(end - 2 * DAY, end, "hour", "max", "consumer_id", ()),
        Q(start + 30, end - 90, "", "sum", "", (("status_code", "404"),)),
    ]


@all_modes
async def test_a_scattered_batch_is_stored_and_answered_exactly(
    mode: str, stopped: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """1,000 events spread over 30 days, into a database where another app holds
    events over the same days: one request, a few pending rows (never one per event),
    exact answers before and after the rollups catch up, and the other app's answers
    untouched."""
    now = time.time()
    other = await apps.create(db, "other")
    other_evs = scattered(OTHER_EVENTS, now, 30, seed=2)
    for i in range(0, OTHER_EVENTS, 5_000):
        await post(stopped, other, other_evs[i : i + 5_000])
    await run_policies(db, mode)
    await catch_up(db)
    await run_policies(db, mode)

    evs = scattered(1000, now, 30, seed=3)
    await post(stopped, app_keys, evs)
    app = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app_keys.app_id)
    assert await db.fetchval("SELECT count(*) FROM events WHERE app_id = $1", app) == 1000
    rows = await db.fetchval("SELECT count(*) FROM rollup_pending WHERE app_id = $1", app)
    assert 1 <= rows <= 8
    await check(stopped, app_keys, evs, month_panels(now))
    await check(stopped, other, other_evs, month_panels(now))

    await catch_up(db)
    assert await pending_count(db) == 0
    assert reads_rollups(await check(stopped, app_keys, evs, month_panels(now)))
    await check(stopped, other, other_evs, month_panels(now))


async def cli(database_url: str, tmp_path: Path, *argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "apinalytics",
        *argv,
        env={
            **os.environ,
            "APINALYTICS_DATABASE_URL": database_url,
            "APINALYTICS_HOME": str(tmp_path / "home"),
        },
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@all_modes
async def test_the_catch_up_and_status_commands(
    mode: str,
    stopped: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    database_url: str,
    tmp_path: Path,
) -> None:
    now = time.time()
    evs = spread(20, now - 2 * DAY, 7200)
    await post(stopped, app_keys, evs)
    await post(stopped, app_keys, spread(5, now - 10, 5))
    code, out = await cli(database_url, tmp_path, "rollups", "status")
    assert code == 0, out
    assert "pending stretches: 2" in out and "materializer: idle" in out, out
    code, out = await cli(database_url, tmp_path, "rollups", "catch-up")
    assert code == 0, out
    assert "materialized 2 pending stretches" in out, out
    assert await pending_count(db) == 0
    code, out = await cli(database_url, tmp_path, "rollups", "status")
    assert "pending stretches: 0" in out and "oldest pending: -" in out, out


def copy_row(e: Ev, app: int) -> tuple[Any, ...]:
    """A row for COPY on a plain connection (its time a datetime)."""
    values = {
        "time": datetime.fromtimestamp(0, UTC) + timedelta(microseconds=e.us),
        "app_id": app,
        "consumer_id": e.consumer_id,
        "method": e.method.upper(),
        "url": e.url,
        "function": e.function,
        "response_us": e.response_us,
        "status_code": e.status_code,
        "data": None,
    }
    return tuple(values[c] for c in COLUMNS)


@all_modes
async def test_an_upgrade_with_data_keeps_every_answer(
    mode: str, servers: Servers, make_client: Any, tmp_path: Path
) -> None:
    """A database with every migration but ``0008_rollup_pending``, holding events and
    their rollups, migrated: every answer equals the oracle (nothing is pending, so
    the rollups answer), and a batch stored after the upgrade is answered too."""
    name = f"upkeep_upgrade_{os.getpid()}_{mode}"
    # Every migration but this one (later ones, like 0009, came first on main).
    older = servers.servers[mode].older_schema(name, tmp_path / "migrations", lambda n: n != 8)
    async with older as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            keys = await apps.create(conn, "upgrade")
            app = await conn.fetchval("SELECT id FROM apps WHERE public_id = $1", keys.app_id)
            now = time.time()
            evs = scattered(500, now, 5, seed=9)
            await conn.copy_records_to_table(
                "events", records=[copy_row(e, app) for e in evs], columns=COLUMNS
            )
            # The rollups as the ingest path of that schema left them: complete.
            await rebuild.rebuild(conn, Edition(mode), now - 6 * DAY, now + 3600)
        finally:
            await conn.close()

        result = await migrate.migrate(dsn)
        assert result.applied == ["0008_rollup_pending.sql"]
        client: TestClient = await make_client(settings(dsn, tmp_path, interval_s=0))
        assert (await client.get("/readyz")).status == 200
        assert reads_rollups(await check(client, keys, evs, month_panels(now)))
        more = spread(30, now - 3 * DAY, 3600)
        await post(client, keys, more)
        await check(client, keys, evs + more, month_panels(now))
        await client.close()
