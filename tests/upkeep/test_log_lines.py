"""What the background upkeep says in the log, read by a person running the service.

- A catch-up that materialized something is one INFO line saying what, for how many
  apps, how long it took and what is still pending; idle runs say nothing.
- The materializer's statements are background work: slower than a request's
  threshold they are not warnings (only over the background threshold, with a message
  naming the work).
- A catch-up that fails is one WARNING naming the error and saying it is retried;
  the failures that follow are DEBUG, and working again is one INFO line.
- ``db.timed``'s slow-statement warning says what was slow and by how much.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import db as dbmod
from apinalytics.apps import NewApp

from ..conftest import ALL_MODES, MakeSettings
from ..helpers import event, write_headers

all_modes = pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
BACKGROUND = "apinalytics.rollups.background"


def lines(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


async def eventually(check: Callable[[], Any], what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


@all_modes
async def test_a_catch_up_is_one_info_line_and_its_statements_are_no_warnings(
    mode: str,
    make_client: Callable[..., Any],
    make_settings: MakeSettings,
    app_keys: NewApp,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Every statement is slower than a request's threshold now: none of the
    # materializer's may warn for it.
    monkeypatch.setattr(dbmod, "SLOW_STATEMENT_S", 0.0)
    client: TestClient = await make_client(make_settings(materializer_interval_s=0.05))
    now = time.time()
    # Two hours of one app, three hours apart: two stretches of one hour each.
    batch = [event(timestamp=now - 3 * 3600), event(timestamp=now - 60)]
    resp = await client.post("/1/events/", json=batch, headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()

    async def said() -> bool:
        return bool(lines(caplog, BACKGROUND, logging.INFO))

    await eventually(said, "a materializer INFO line")
    [line] = lines(caplog, BACKGROUND, logging.INFO)
    assert re.fullmatch(
        r"rollups: materialized 2 hours for 1 app in (\d+ ms|\d+\.\d s); 0 pending", line
    )
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") == 0
    background_warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "apinalytics.db"
        and r.levelno >= logging.WARNING
        and getattr(r, "background", None) is not None
    ]
    assert background_warnings == []
    assert not [r for r in caplog.records if r.getMessage() == "sql" and r.levelno > logging.DEBUG]
    # Idle runs say nothing.
    await asyncio.sleep(0.5)
    assert len(lines(caplog, BACKGROUND, logging.INFO)) == 1


async def test_a_failing_catch_up_warns_once_then_says_it_works_again(
    make_client: Callable[..., Any],
    make_settings: MakeSettings,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await db.execute("ALTER TABLE rollup_pending RENAME TO rollup_pending_away")
    await make_client(make_settings(materializer_interval_s=0.05))

    async def failed_thrice() -> bool:
        return len(lines(caplog, BACKGROUND, logging.DEBUG)) >= 2

    await eventually(failed_thrice, "three failed catch-ups")
    await db.execute("ALTER TABLE rollup_pending_away RENAME TO rollup_pending")

    async def recovered() -> bool:
        return any("works again" in m for m in lines(caplog, BACKGROUND, logging.INFO))

    await eventually(recovered, "a catch-up that works again")
    [warning] = lines(caplog, BACKGROUND, logging.WARNING)
    assert "catching up on the pending stretches failed" in warning
    assert "UndefinedTableError" in warning and "rollup_pending" in warning
    assert "retried every 0.05 s" in warning
    [again] = [m for m in lines(caplog, BACKGROUND, logging.INFO) if "works again" in m]
    failures = int(re.fullmatch(r".* after (\d+) failed attempts", again)[1])  # type: ignore[index]
    assert failures >= 3


async def test_slow_statements_say_what_and_where(
    database_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmod, "SLOW_STATEMENT_S", 0.05)
    monkeypatch.setattr(dbmod, "SLOW_BACKGROUND_STATEMENT_S", 10.0)
    caplog.set_level(logging.DEBUG, logger="apinalytics.db")
    conn = await asyncpg.connect(database_url)
    try:
        await dbmod.execute(conn, "sleepy request", "SELECT pg_sleep(0.1)")
        with dbmod.background("rollup materializer"):
            await dbmod.execute(conn, "sleepy refresh", "SELECT pg_sleep(0.1)")
        monkeypatch.setattr(dbmod, "SLOW_BACKGROUND_STATEMENT_S", 0.05)
        with dbmod.background("rollup materializer"):
            await dbmod.execute(conn, "slow refresh", "SELECT pg_sleep(0.1)")
    finally:
        await conn.close()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, [r.getMessage() for r in warned]
    assert re.fullmatch(
        r"slow SQL statement: 'sleepy request' took 0\.\d s \(over 0\.05 s\)",
        warned[0].getMessage(),
    )
    assert (
        warned[1]
        .getMessage()
        .startswith(
            "slow SQL statement in background work (rollup materializer): 'slow refresh' took"
        )
    )
    assert getattr(warned[1], "label", None) == "slow refresh"
    debug = [r for r in caplog.records if getattr(r, "label", None) == "sleepy refresh"]
    assert [r.levelno for r in debug] == [logging.DEBUG]
