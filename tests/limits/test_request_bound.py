"""A query's whole time is bounded, not only each of its statements.

The statement timeout bounds one statement; a request runs several (the key, the
horizons, the answer), and each may wait. ``limits.bounded`` holds the request to
``statement_timeout_s`` in all: here two statements each wait well under the timeout
(locks held by other transactions), together past it, and the answer is the 503
``query_timeout`` at the bound instead of a 200 after both waits.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from ..conftest import MakeSettings
from ..helpers import assert_error, event, post, read_headers

TIMEOUT_S = 2.0
# Each wait is 0.6 of the timeout: alone within it, together past it.
WAIT_S = 0.6 * TIMEOUT_S


async def test_the_timeout_bounds_the_request_not_each_statement(
    make_settings: MakeSettings,
    make_client: object,
    app_keys: NewApp,
    database_url: str,
) -> None:
    client: TestClient = await make_client(make_settings(statement_timeout_s=TIMEOUT_S))  # type: ignore[operator]
    now = int(time.time())
    resp = await post(client, app_keys, [event()])
    assert resp.status == 200, await resp.text()

    horizons, events = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        held = [horizons.transaction(), events.transaction()]
        for conn, tx, table in ((horizons, held[0], "retention"), (events, held[1], "events")):
            await tx.start()
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        # A percentile reads raw events: the horizons first, then the events.
        asking = asyncio.create_task(
            client.get(
                f"/1/timeseries/{now - 3600}/{now + 60}/",
                params={"aggregation": "percentile_50"},
                headers=read_headers(app_keys),
            )
        )
        await asyncio.sleep(WAIT_S)
        await held[0].rollback()
        await asyncio.sleep(WAIT_S)
        await held[1].rollback()
        resp = await asking
        await assert_error(resp, 503, "query_timeout")
    finally:
        await horizons.close()
        await events.close()
