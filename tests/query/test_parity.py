"""The same events and queries give identical answers in the Apache mode (rollups kept
by the ingest path) and the Community mode (continuous aggregates): SPEC "Storage",
"the query path does not care which"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apinalytics import apps
from apinalytics.settings import Settings

from ..dbs import MODES, Servers
from ..helpers import catch_up, read_headers, write_headers
from . import oracle


class Side:
    """One mode's service and a direct connection to its database."""

    def __init__(self, client: TestClient, conn: asyncpg.Connection) -> None:
        self.client = client
        self.conn = conn


@pytest.fixture
async def sides(
    servers: Servers, make_client: Any, tmp_path: Path
) -> AsyncIterator[dict[str, Side]]:
    for mode in MODES:
        if mode not in servers.servers:
            pytest.skip(servers.missing.get(mode, f"no server in {mode} mode"))
    out: dict[str, Side] = {}
    made: list[tuple[str, str]] = []
    try:
        for mode in MODES:
            server = servers.servers[mode]
            name = server.new_database()
            made.append((mode, name))
            client: TestClient = await make_client(
                Settings(
                    database_url=server.dsn(name),
                    home=tmp_path / mode,
                    db_connect_timeout_s=2.0,
                    max_event_age_s=20 * 366 * 86400,
                    max_buckets=1_000_000,
                )
            )
            out[mode] = Side(client, await asyncpg.connect(server.dsn(name)))
        yield out
    finally:
        for side in out.values():
            await side.conn.close()
            await side.client.close()
        for mode, name in made:
            servers.servers[mode].drop_database(name)


async def answer(side: Side, app: apps.NewApp, q: oracle.Q) -> tuple[str, Any]:
    resp = await side.client.get(
        f"/1/timeseries/{q.start}/{q.end}", params=q.params(), headers=read_headers(app)
    )
    assert resp.status == 200, (q, await resp.text())
    body = await resp.json()
    # The one group of a query without `group` is keyed by each side's own app ID.
    if not q.group:
        body["groups"] = {"app": body["groups"].pop(app.app_id), **body["groups"]}
    return resp.headers["X-Apinalytics-Sources"], body


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=oracle.scenarios(), split=st.booleans())
async def test_modes_answer_identically(
    sides: dict[str, Side], case: oracle.Scenario, split: bool
) -> None:
    bodies = [e.body() for e in case.events]
    # Optionally newest first in two batches, so the later batch is back-dated.
    bodies.sort(key=lambda b: -b["timestamp"] if split else 0)
    half = len(bodies) // 2 if split else len(bodies)
    keys = {}
    for mode, side in sides.items():
        app = keys[mode] = await apps.create(side.conn, "parity")
        for batch in (bodies[:half], bodies[half:]):
            if batch:
                resp = await side.client.post("/1/events/", json=batch, headers=write_headers(app))
                assert resp.status == 200, await resp.text()
        # The sources compared too: nothing left pending on either side.
        await catch_up(side.conn)
    for q in case.queries:
        apache, community = [await answer(sides[m], keys[m], q) for m in MODES]
        assert apache == community, q
