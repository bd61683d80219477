"""Reads on a streaming replica (``APINALYTICS_READ_DATABASE_URL``), within a bound
of staleness, and on the primary otherwise (docs/replicas.md).

Only the query API's statements (time series, export; the dashboard reads through
them) go to the replica. Everything that writes, or guards a write, stays on the
primary: ingest, key checks, accounts, migrations, the materializer, retention.

Read-your-writes: a read goes to the replica only while the replica is known to hold
every transaction the primary had committed ``read_max_lag_s`` ago
(``replica_lag.Monitor`` measures it), so a write acknowledged longer ago than that is
always seen. A client that must see its write at once asks for ``strong``
(``X-Apinalytics-Consistency: strong`` or ``?consistency=strong``) and is answered by
the primary.

A replica that is down, not a standby, or cancels a statement for a conflict with
recovery sends its reads to the primary (logged once, when it happens and when it
recovers); the request is answered, never failed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

import asyncpg
from aiohttp import web

from .db import Database, connection_lost, create_pool, serial_plans
from .errors import InvalidQuery
from .replica_lag import Monitor

if TYPE_CHECKING:
    from .metrics import Metrics
    from .settings import Settings

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


@contextlib.asynccontextmanager
async def reads(
    settings: Settings, primary: Database, primary_dsn: str, metrics: Metrics
) -> AsyncIterator[Reads]:
    """Where queries and exports read: with a replica configured, its pool (which
    connects lazily: the service starts without it) and the task measuring its lag."""
    url = settings.read_database_url
    if not url:
        yield Reads(primary, metrics)
        return
    pool = await create_pool(
        url,
        max_size=settings.db_pool_max,
        statement_timeout_s=settings.statement_timeout_s,
        connect_timeout_s=settings.db_connect_timeout_s,
        init=serial_plans,
    )
    monitor = Monitor(
        primary_dsn,
        url,
        metrics,
        interval_s=settings.read_lag_interval_s,
        connect_timeout_s=settings.db_connect_timeout_s,
    )
    replica = Database(
        pool, settings.statement_timeout_s, settings.db_connect_timeout_s, settings.busy_wait_s
    )
    task = asyncio.create_task(monitor.run_forever())
    try:
        yield Reads(
            primary, metrics, replica=replica, monitor=monitor, max_lag_s=settings.read_max_lag_s
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()
