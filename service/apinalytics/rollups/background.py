"""The service's materializer loop: ``materializer.catch_up_once`` every second, or
soon after a commit wakes it, on a connection of its own (a run holds a session
advisory lock, which a pooled connection must never carry). Failures are logged and
counted, and the loop goes on. See docs/rollups.md ("Rollup upkeep").

The log: one INFO line per catch-up that materialized something ("rollups:
materialized 12 hours for 3 apps in 1.1 s; 0 pending"), none for the idle ones; one
WARNING when catching up starts failing (what failed, and that it is retried), DEBUG
for the failures that follow, and one INFO line when it works again. Its statements
count as background work for the slow-statement warning (``db.background``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import asyncpg

from ..db import background, timed
from ..edition import Edition
from .materializer import APPLICATION_NAME, PENDING, catch_up_once

if TYPE_CHECKING:
    # Not at run time: `serve --workers N` sets up prometheus_client's multiprocess
    # directory before anything imports it.
    from prometheus_client import Counter

log = logging.getLogger(__name__)


class Materializer:
    """The service's background loop: a run every ``interval_s``, or soon after
    ``wake`` (called after a commit); its own connection (it holds a session lock).
    Failures are logged and retried.

    Paced: after runs that took ``t`` seconds it rests ``max(min_gap_s, t * (1 /
    busy_share - 1))``, so under steady ingest it keeps at most ``busy_share`` of the
    database's time busy re-aggregating (a run re-reads each touched hour whole, so
    back-to-back runs would redo more and more of the same hour). Pending stretches
    wait a little longer instead; queries read them from raw events meanwhile."""

    def __init__(
        self,
        dsn: str,
        edition: Edition,
        runs: Counter,
        *,
        interval_s: float = 1.0,
        min_gap_s: float = 0.25,
        busy_share: float = 0.25,
        statement_timeout_s: float = 600.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._edition = edition
        self._runs = runs
        self._interval_s = interval_s
        self._min_gap_s = min_gap_s
        self._rest = 1 / busy_share - 1
        self._statement_timeout_s = statement_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        # Consecutive failed catch-ups: the first is a WARNING, the others DEBUG.
        self._failures = 0

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        try:
            with background("rollup materializer"):
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._interval_s)
                    self._wake.clear()
                    started = time.perf_counter()
                    await self._runs_until_idle()
                    took = time.perf_counter() - started
                    await asyncio.sleep(max(self._min_gap_s, took * self._rest))
        finally:
            if self._conn is not None:
                self._conn.terminate()

    async def _runs_until_idle(self) -> None:
        started = time.perf_counter()
        rows = hours = 0
        apps: set[int] = set()
        try:
            while True:
                conn = await self._connection()
                run = await catch_up_once(conn, self._edition)
                self._runs.labels(outcome=run.outcome).inc()
                rows, hours = rows + run.rows, hours + run.hours
                apps |= run.apps
                if not run.more:
                    break
                await asyncio.sleep(0)
            left = await timed(conn.fetchval, PENDING, (), "pending left") if rows else 0
        except Exception as exc:
            self._failed(exc)
            return
        if self._failures:
            log.info(
                "rollups: catching up works again, after %d failed attempt%s",
                self._failures,
                "" if self._failures == 1 else "s",
                extra={"failures": self._failures},
            )
            self._failures = 0
        if rows:
            took = time.perf_counter() - started
            log.info(
                "rollups: materialized %d hour%s for %d app%s in %s; %d pending",
                hours,
                "" if hours == 1 else "s",
                len(apps),
                "" if len(apps) == 1 else "s",
                f"{took * 1000:.0f} ms" if took < 1 else f"{took:.1f} s",
                left,
                extra={
                    "hours": hours,
                    "apps": len(apps),
                    "pending_read": rows,
                    "s": round(took, 3),
                    "pending": left,
                },
            )

    def _failed(self, exc: Exception) -> None:
        self._runs.labels(outcome="failed").inc()
        self._failures += 1
        log.log(
            logging.WARNING if self._failures == 1 else logging.DEBUG,
            "rollups: catching up on the pending stretches failed (%s: %s); queries read "
            "them from raw events meanwhile, and it is retried every %g s (until it works "
            "again, further failures are logged at DEBUG)",
            type(exc).__name__,
            exc,
            self._interval_s,
            extra={"error": f"{type(exc).__name__}: {exc}", "failures": self._failures},
        )
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout_s,
                server_settings={
                    "application_name": APPLICATION_NAME,
                    "statement_timeout": str(int(self._statement_timeout_s * 1000)),
                    "timezone": "UTC",
                },
            )
        return self._conn
