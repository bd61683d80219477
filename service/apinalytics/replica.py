"""Reads on a streaming replica (``APINALYTICS_READ_DATABASE_URL``), within a bound
of staleness, and on the primary otherwise (docs/replicas.md).

Only the query API's statements (time series, export; the dashboard reads through
them) go to the replica. Everything that writes, or guards a write, stays on the
primary: ingest, key checks, accounts, migrations, the materializer, retention.

Read-your-writes: a read goes to the replica only while the replica is known to hold
every transaction the primary had committed ``read_max_lag_s`` ago, so a write
acknowledged longer ago than that is always seen. ``Monitor`` measures this about
once a second, never per request: it notes the primary's WAL position with the
service's own clock, and the replica's replay position; the replica holds what the
primary had at the latest noted time whose position it has replayed. One clock, no
timestamps from the database: an idle primary has an old last-commit time but no
lag, and the two servers' clocks need not agree. A client that must see its write
at once asks for ``strong`` (``X-Apinalytics-Consistency: strong`` or
``?consistency=strong``) and is answered by the primary.

A replica that is down, not a standby, or cancels a statement for a conflict with
recovery sends its reads to the primary (logged once, when it happens and when it
recovers); the request is answered, never failed for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from .db import Database, connection_lost
from .errors import InvalidQuery

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# The response header naming the server that answered, and the request's choice.
READ_FROM_HEADER = "X-Apinalytics-Read-From"
CONSISTENCY_HEADER = "X-Apinalytics-Consistency"
CONSISTENCY_PARAM = "consistency"


class Source(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"


class Consistency(StrEnum):
    # The default: the replica while it lags at most read_max_lag_s.
    BOUNDED = "bounded"
    # The primary: every write acknowledged before the request is seen.
    STRONG = "strong"


def consistency(request: web.Request) -> Consistency:
    """What the request asks for, by header or query parameter; ``strong`` if either
    says so. An empty value is the default."""
    asked = [(CONSISTENCY_HEADER, request.headers.get(CONSISTENCY_HEADER, ""))]
    asked += [(CONSISTENCY_PARAM, v) for v in request.query.getall(CONSISTENCY_PARAM, [])]
    chosen = Consistency.BOUNDED
    for name, raw in asked:
        value = raw.strip().lower()
        if value == "":
            continue
        if value not in Consistency.__members__.values():
            raise InvalidQuery(name, f"must be strong or bounded, not {raw!r}")
        if value == Consistency.STRONG:
            chosen = Consistency.STRONG
    return chosen


# What a replica's failure looks like, besides a lost connection (``db.connection_lost``):
# a statement cancelled because WAL replay needed what it held (SQLSTATE 40001
# "conflict with recovery", 40P01 for a buffer pin deadlock, 57P04 a dropped database).
_RECOVERY_CONFLICTS = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.DatabaseDroppedError,
)


def replica_failed(exc: BaseException) -> bool:
    return connection_lost(exc) or isinstance(exc, _RECOVERY_CONFLICTS)


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
        self._dsns = {Source.PRIMARY: primary_dsn, Source.REPLICA: replica_dsn}
        self._conns: dict[Source, asyncpg.Connection] = {}
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
            primary = await self._position(Source.PRIMARY, PRIMARY_POSITION)
        except Exception as exc:
            # The primary's own outage fails its requests anyway; reads stay there
            # (synced_at only grows staler) until it answers again.
            log.debug("replica monitor: primary position unknown: %s", type(exc).__name__)
            return
        if primary is None:
            return
        self._samples.append((noted, primary))
        try:
            replayed = await self._position(Source.REPLICA, REPLICA_POSITION)
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
                where(self._dsns[Source.REPLICA]),
            )
        self.up = True
        self._metrics.replica_up.set(1)
        self._metrics.replica_lag_bytes.set(max(0, primary - replayed))
        self._metrics.replica_lag_seconds.set(self.staleness())

    def lost(self, exc: BaseException) -> None:
        """The replica failed a measure or a request: reads go to the primary until a
        measure reaches it again."""
        self._drop(Source.REPLICA)
        self._down(f"cannot be read ({type(exc).__name__}: {exc})")

    def _down(self, why: str) -> None:
        self.synced_at = None
        self._metrics.replica_up.set(0)
        if self.up is not False:
            log.warning(
                "read replica %s %s; queries and exports are read from the primary "
                "until it answers again",
                where(self._dsns[Source.REPLICA]),
                why,
            )
        self.up = False

    async def _position(self, source: Source, sql: str) -> int | None:
        conn = self._conns.get(source)
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(
                self._dsns[source],
                timeout=self._connect_timeout_s,
                server_settings={"application_name": "apinalytics replica monitor"},
            )
            self._conns[source] = conn
        try:
            position: int | None = await conn.fetchval(sql, timeout=self._connect_timeout_s)
            return position
        except BaseException:
            self._drop(source)
            raise

    def _drop(self, source: Source) -> None:
        conn = self._conns.pop(source, None)
        if conn is not None:
            conn.terminate()


class Reads:
    """Where a query or export reads: ``choose`` the server, ``run`` a read there,
    falling back to the primary when the replica fails it."""

    def __init__(
        self,
        primary: Database,
        metrics: Metrics,
        *,
        replica: Database | None = None,
        monitor: Monitor | None = None,
        max_lag_s: float = 0.0,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.monitor = monitor
        self.max_lag_s = max_lag_s
        self._counter = metrics.reads

    def choose(self, asked: Consistency) -> tuple[Database, Source]:
        reason = self._primary_because(asked)
        if reason is None and self.replica is not None:
            self._counter.labels(source=Source.REPLICA, reason="fresh").inc()
            return self.replica, Source.REPLICA
        self._counter.labels(source=Source.PRIMARY, reason=reason or "no_replica").inc()
        return self.primary, Source.PRIMARY

    def _primary_because(self, asked: Consistency) -> str | None:
        if self.replica is None or self.monitor is None:
            return "no_replica"
        if asked is Consistency.STRONG:
            return "strong"
        if not self.monitor.up:
            return "unavailable"
        if self.monitor.staleness() > self.max_lag_s:
            return "lagging"
        return None

    async def run(
        self, asked: Consistency, read: Callable[[Database], Awaitable[T]]
    ) -> tuple[T, Source]:
        """``read`` on the chosen server; on the primary again if the replica failed."""
        db, source = self.choose(asked)
        try:
            return await read(db), source
        except Exception as exc:
            if not self.fall_back(source, exc):
                raise
        return await read(self.primary), Source.PRIMARY

    def fall_back(self, source: Source, exc: BaseException) -> bool:
        """Whether a read that failed with ``exc`` on ``source`` is to be read from
        the primary instead (and the replica left alone until it answers again)."""
        if source is not Source.REPLICA or self.monitor is None or not replica_failed(exc):
            return False
        self.monitor.lost(exc)
        self._counter.labels(source=Source.PRIMARY, reason="replica_failed").inc()
        return True
