"""What the upkeep tests share: a client whose materializer is stopped or running, a
materializer connection of the test's own, and the oracle's checks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics.rollups import RAW, ROLLUPS, materializer
from apinalytics.settings import Settings

from ..helpers import read_headers, write_headers
from ..query import oracle
from ..query.oracle import Ev, Q


def settings(database_url: str, tmp_path: Path, *, interval_s: float = 0.0) -> Settings:
    """The service's settings; ``interval_s`` 0: no background materializer."""
    return Settings(
        database_url=database_url,
        home=tmp_path / "home",
        db_connect_timeout_s=2.0,
        max_event_age_s=20 * 366 * 86400,
        max_buckets=1_000_000,
        materializer_interval_s=interval_s,
    )


async def materializer_connection(database_url: str) -> asyncpg.Connection:
    """A connection as the service's materializer makes it (its name in pg_stat_activity)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        database_url, server_settings={"application_name": materializer.APPLICATION_NAME}
    )
    return conn


async def wait_until_blocked(db: asyncpg.Connection) -> int:
    """The pid of the materializer backend once it waits for a lock (bounded: 20 s)."""
    for _ in range(400):
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND wait_event_type = 'Lock'",
            materializer.APPLICATION_NAME,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the materializer never reached the lock it should wait on")


async def lock_rollup(conn: asyncpg.Connection, mode: str) -> None:
    """In ``conn``'s open transaction, lock what the materializer writes first: the
    minute rollup (Apache) or its materialization hypertable (Community)."""
    relation = ROLLUPS[0].relation
    if mode == "community":
        relation = await conn.fetchval(
            "SELECT format('%I.%I', materialization_hypertable_schema, "
            "materialization_hypertable_name) "
            "FROM timescaledb_information.continuous_aggregates WHERE view_name = $1",
            relation,
        )
    await conn.execute(f"LOCK TABLE {relation} IN ACCESS EXCLUSIVE MODE")


async def run_policies(db: asyncpg.Connection, mode: str) -> None:
    """Community: one run of each refresh policy in declared order, so the aggregates'
    thresholds lie near now and back-dated events fall below them."""
    if mode != "community":
        return
    jobs = await db.fetch(
        """
        SELECT j.job_id FROM timescaledb_information.jobs j
        JOIN timescaledb_information.continuous_aggregates ca
          ON ca.materialization_hypertable_name = j.hypertable_name
        WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
        ORDER BY array_position($1::text[], ca.view_name::text), j.job_id
        """,
        [r.relation for r in ROLLUPS],
    )
    for job in jobs:
        await db.execute("CALL run_job($1)", job["job_id"])


async def pending_count(db: asyncpg.Connection) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM rollup_pending")
    return n


async def post(client: TestClient, app: NewApp, evs: list[Ev]) -> None:
    resp = await client.post("/1/events/", json=[e.body() for e in evs], headers=write_headers(app))
    assert resp.status == 200, await resp.text()


async def check(client: TestClient, app: NewApp, evs: list[Ev], qs: list[Q]) -> set[str]:
    """Every answer equals the oracle's; returns the sources read."""
    sources: set[str] = set()
    for q in qs:
        resp = await client.get(
            f"/1/timeseries/{q.start}/{q.end}/", params=q.params(), headers=read_headers(app)
        )
        assert resp.status == 200, (q, await resp.text())
        body = await resp.json()
        sources.update(resp.headers["X-Apinalytics-Sources"].split(","))
        oracle.assert_same(body["groups"], oracle.answer(evs, q, app.app_id), q)
    return sources


def spread(n: int, start: float, span_s: float, seed: int = 1) -> list[Ev]:
    """``n`` events spread evenly over ``[start, start + span_s)``, varied dimensions."""
    return [
        Ev(
            timestamp=start + span_s * i / n + (i % 7) * 0.001,
            consumer_id=oracle.CONSUMERS[(i * seed) % 3],
            method=oracle.METHODS[i % 3],
            url="/a",
            function=oracle.FUNCTIONS[(i // 3) % 3],
            response_us=1000 + (i * 7919 * seed) % 100_000,
            status_code=oracle.STATUSES[(i // 2) % 3],
            data=None,
        )
        for i in range(n)
    ]


def panels(start: int, end: int) -> list[Q]:
    """Queries the rollups answer (when nothing is pending), and one only raw events do."""
    return [
        Q(start, end, "day", "count", "", ()),
        Q(start, end, "hour", "mean", "function", ()),
        Q(start, end, "", "max", "consumer_id", ()),
        Q(start, end, "day", "sum", "", (("method", "get"),)),
        Q(start + 90, end - 30, "", "min", "", ()),
    ]


def hour_floor(t: float) -> int:
    return int(t // 3600 * 3600)


def now_hour() -> int:
    return hour_floor(time.time())


def reads_rollups(sources: set[str]) -> bool:
    return bool(sources - {RAW})
