"""The oracle (tests/query/oracle.py) with the materializer stopped, running in the
service, and racing ingest from another connection: after every batch, every answer
equals the brute-force one, in both editions (SPEC: once ingest answered 200, every
query reflects the events)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apinalytics import apps
from apinalytics.edition import Edition
from apinalytics.rollups import materializer

from ..conftest import ALL_MODES
from ..helpers import catch_up
from ..query import oracle
from ..query.oracle import Ev
from . import common

EXAMPLES = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def batches_of(evs: list[Ev], n: int) -> list[list[Ev]]:
    """Newest events first, older ones in later batches (back-dated ones arrive last)."""
    newest_first = sorted(evs, key=lambda e: e.us, reverse=True)
    size = -(-len(newest_first) // n)
    return [newest_first[i : i + size] for i in range(0, len(newest_first), size)]


@pytest.fixture
async def stopped(make_client: Any, database_url: str, tmp_path: Path) -> TestClient:
    c: TestClient = await make_client(common.settings(database_url, tmp_path, interval_s=0))
    return c


@pytest.fixture
async def running(make_client: Any, database_url: str, tmp_path: Path) -> TestClient:
    c: TestClient = await make_client(common.settings(database_url, tmp_path, interval_s=0.05))
    return c


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@EXAMPLES
@given(case=oracle.scenarios(min_events=1, max_queries=3), n=st.integers(1, 3))
async def test_materializer_stopped(
    mode: str, stopped: TestClient, db: asyncpg.Connection, case: oracle.Scenario, n: int
) -> None:
    """Nothing is materialized while batches arrive: pending stretches come from raw
    events; after a catch-up the rollups answer the same."""
    await common.run_policies(db, mode)
    app = await apps.create(db, "oracle")
    sent: list[Ev] = []
    for batch in batches_of(case.events, n):
        await common.post(stopped, app, batch)
        sent.extend(batch)
        await common.check(stopped, app, sent, case.queries)
    await catch_up(db)
    await common.check(stopped, app, sent, case.queries)


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@EXAMPLES
@given(case=oracle.scenarios(min_events=1, max_queries=3), n=st.integers(1, 3))
async def test_materializer_running(
    mode: str, running: TestClient, db: asyncpg.Connection, case: oracle.Scenario, n: int
) -> None:
    """The service's own materializer runs every 50 ms and after each commit."""
    await common.run_policies(db, mode)
    app = await apps.create(db, "oracle")
    sent: list[Ev] = []
    for batch in batches_of(case.events, n):
        await common.post(running, app, batch)
        sent.extend(batch)
        await common.check(running, app, sent, case.queries)
        await asyncio.sleep(0.06)
        await common.check(running, app, sent, case.queries)


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@EXAMPLES
@given(case=oracle.scenarios(min_events=2, max_queries=3), n=st.integers(2, 4))
async def test_materializer_racing_ingest(
    mode: str,
    stopped: TestClient,
    db: asyncpg.Connection,
    database_url: str,
    case: oracle.Scenario,
    n: int,
) -> None:
    """Runs back to back on a connection of their own while batches are posted and
    queried: whichever order a run's read, a batch's commit and a query fall in, the
    answers are exact."""
    await common.run_policies(db, mode)
    app = await apps.create(db, "oracle")
    conn = await common.materializer_connection(database_url)
    stop = asyncio.Event()

    async def race() -> None:
        while not stop.is_set():
            await materializer.catch_up_once(conn, Edition(mode))
            await asyncio.sleep(0.005)

    racer = asyncio.create_task(race())
    try:
        sent: list[Ev] = []
        for batch in batches_of(case.events, n):
            await common.post(stopped, app, batch)
            sent.extend(batch)
            await common.check(stopped, app, sent, case.queries)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await racer
        await conn.close()
    await common.check(stopped, app, sent, case.queries)
