"""How far a read replica is behind the primary (docs/replicas.md, "How the lag is
measured"): ``Monitor``, one per process, about once a second and never per request.

It notes the primary's WAL position with the service's own clock, and the replica's
replay position; the replica holds what the primary had at the latest noted time
whose position it has replayed. One clock, no timestamps from the database: an idle
primary has an old last-commit time but no lag, and the two servers' clocks need not
agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg

from . import db

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

PRIMARY = "primary"
REPLICA = "replica"

# The primary's WAL insert position, in bytes: every commit acknowledged before this
# statement started is at or below it (also under synchronous_commit=off, where the
# write position may not have reached it yet). Where no record has started on the
# current page, it points past the page header, which a standby's replay position
# never does (it stops at the end of the last record): the header is taken off, or an
# idle primary would seem forever ahead. Headers are 40 bytes at a segment's start
# and 24 on other pages (64-bit builds; PostgreSQL's SizeOfXLogLongPHD, ShortPHD).
PRIMARY_POSITION = """
    WITH w AS (
        SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint AS lsn,
               current_setting('wal_block_size')::bigint AS page,
               pg_size_bytes(current_setting('wal_segment_size')) AS segment
    )
    SELECT CASE WHEN lsn % segment = 40 THEN lsn - 40
                WHEN lsn % page = 24 THEN lsn - 24
                ELSE lsn END
    FROM w
"""
# NULL position: not a standby (a primary, or a promoted one).
REPLICA_POSITION = "SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint"


def where(dsn: str) -> str:
    """host:port/database of a DSN, for logs: never its password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


class Monitor:
    """How far the replica is behind the primary, measured every ``interval_s`` on two
    connections of its own (so that a busy pool never delays it).

    ``synced_at`` is the latest time (``clock``) at which the primary's WAL position
    is one the replica has replayed: the replica holds every transaction the primary
    had committed then. None until first measured, and while the replica is down."""

    # Noted primary positions kept at most (an hour of seconds): a replica further
    # behind keeps its last synced_at, which only grows staler.
    MAX_SAMPLES = 3600

    def __init__(
        self,
        primary_dsn: str,
        replica_dsn: str,
        metrics: Metrics,
        *,
        interval_s: float,
        connect_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsns = {PRIMARY: primary_dsn, REPLICA: replica_dsn}
        self._conns: dict[str, asyncpg.Connection] = {}
        self._metrics = metrics
        self._interval_s = interval_s
        self._connect_timeout_s = connect_timeout_s
        self.clock = clock
        self._samples: deque[tuple[float, int]] = deque(maxlen=self.MAX_SAMPLES)
        self.synced_at: float | None = None
        # None until the first measure: the first failure is logged too.
        self.up: bool | None = None

    def staleness(self) -> float:
        """Seconds of commits the replica may lack; infinite while down or unknown."""
        if self.synced_at is None:
            return float("inf")
        return max(0.0, self.clock() - self.synced_at)

    async def run_forever(self) -> None:
        try:
            while True:
                await self.measure()
                await asyncio.sleep(self._interval_s)
        finally:
            for conn in self._conns.values():
                conn.terminate()

    async def measure(self) -> None:
        noted = self.clock()
        try:
            primary = await self._position(PRIMARY, PRIMARY_POSITION)
        except Exception as exc:
            # The primary's own outage fails its requests anyway; reads stay there
            # (synced_at only grows staler) until it answers again.
            log.debug("replica monitor: primary position unknown: %s", type(exc).__name__)
            return
        if primary is None:
            return
        self._samples.append((noted, primary))
        try:
            replayed = await self._position(REPLICA, REPLICA_POSITION)
        except Exception as exc:
            self.lost(exc)
            return
        if replayed is None:
            self._down(
                "is not a standby (pg_last_wal_replay_lsn() is NULL: a primary, or a "
                "promoted replica)"
            )
            return
        self._replayed(replayed, primary)

    def _replayed(self, replayed: int, primary: int) -> None:
        while len(self._samples) > 1 and self._samples[1][1] <= replayed:
            self._samples.popleft()
        if self._samples and self._samples[0][1] <= replayed:
            self.synced_at = self._samples[0][0]
        if self.up is not True:
            log.info(
                "read replica %s answering; queries and exports are read from it while it is fresh",
                where(self._dsns[REPLICA]),
            )
        self.up = True
        self._metrics.replica_up.set(1)
        self._metrics.replica_lag_bytes.set(max(0, primary - replayed))
        self._metrics.replica_lag_seconds.set(self.staleness())

    def lost(self, exc: BaseException) -> None:
        """The replica failed a measure or a request: reads go to the primary until a
        measure reaches it again."""
        self._drop(REPLICA)
        self._down(f"cannot be read ({type(exc).__name__}: {exc})")

    def _down(self, why: str) -> None:
        self.synced_at = None
        self._metrics.replica_up.set(0)
        if self.up is not False:
            log.warning(
                "read replica %s %s; queries and exports are read from the primary "
                "until it answers again",
                where(self._dsns[REPLICA]),
                why,
            )
        self.up = False

    async def _position(self, source: str, sql: str) -> int | None:
        # Bounded as a whole: a server that stops answering mid-statement (a network
        # that drops packets) must not hold the measures up.
        async with asyncio.timeout(self._connect_timeout_s):
            conn = self._conns.get(source)
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(
                    self._dsns[source],
                    server_settings={"application_name": "apinalytics replica monitor"},
                )
                self._conns[source] = conn
            try:
                position: int | None = await db.fetchval(conn, f"{source} position", sql)
            except BaseException:
                self._drop(source)
                raise
            return position

    def _drop(self, source: str) -> None:
        conn = self._conns.pop(source, None)
        if conn is not None:
            conn.terminate()
