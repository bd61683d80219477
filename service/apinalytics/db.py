"""The database pool and the one path every statement takes.

Every statement runs under the server-side ``statement_timeout`` set on each pooled
connection, is timed, and has its failures mapped to domain errors in one place:
a lost or refused connection is ``DatabaseUnavailable`` (503 + Retry-After), a
cancelled statement is ``QueryTimeout``.

A slow statement is logged at WARNING: over ``SLOW_STATEMENT_S`` for a request's, over
``SLOW_BACKGROUND_STATEMENT_S`` for background work (``background``), whose statements
take seconds by design and delay no request. Any other timing is at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import asyncpg

from .errors import DatabaseUnavailable, Overloaded, QueryTimeout

log = logging.getLogger(__name__)

# A request's statement slower than this is logged at WARNING with its timing.
SLOW_STATEMENT_S = 1.0
# The same for background work (the rollups' materializer, the key purge). Refreshing
# or re-aggregating a day of a busy app's rollups takes seconds, and nobody waits for
# it; a statement this slow is worth a look (the rollups fall behind meanwhile).
SLOW_BACKGROUND_STATEMENT_S = 30.0

# What background work the running task is doing, if any (``background``).
_BACKGROUND: ContextVar[str | None] = ContextVar("apinalytics_background_work", default=None)


@contextmanager
def background(work: str) -> Iterator[None]:
    """Statements run inside are ``work``'s (e.g. "rollup materializer"): timed against
    ``SLOW_BACKGROUND_STATEMENT_S``, and named so in the slow-statement warning. A
    context variable, so it holds for the task that enters it and the tasks it starts."""
    token = _BACKGROUND.set(work)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


_UNAVAILABLE = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # pool acquire or connect took too long
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,  # connection closed under us
    # A pooled connection whose backend was terminated while idle (pg_terminate_backend,
    # a failover) fails its next statement with this: MagicStack/asyncpg#1069.
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,  # max_connections or the role's limit reached
)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection to the database failed (the server's
    answer, if any, is lost), rather than the server refusing a statement."""
    return isinstance(exc, (DatabaseUnavailable, *_UNAVAILABLE))


@contextmanager
def mapped_errors(timeout_s: float) -> Iterator[None]:
    """Turn driver failures into the domain errors the API renders."""
    try:
        yield
    except asyncpg.QueryCanceledError as exc:
        raise QueryTimeout(timeout_s) from exc
    except _UNAVAILABLE as exc:
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        raise DatabaseUnavailable() from exc


class Database:
    """The pool plus timing, timeouts and error mapping; the only way to run SQL.

    A caller holding one of its connections runs statements through ``timed`` or the
    functions below it (``fetch(conn, label, sql, *args)``, ...), so that every
    statement is timed and logged alike."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        statement_timeout_s: float,
        acquire_timeout_s: float,
        busy_wait_s: float | None = None,
    ):
        self.pool = pool
        self.statement_timeout_s = statement_timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self.busy_wait_s = acquire_timeout_s if busy_wait_s is None else busy_wait_s

    def busy(self) -> bool:
        """Every connection the pool may have is open and in use: a wait for one is a
        wait for other requests, not for the database."""
        pool = self.pool
        return bool(pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size())

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection; ``Overloaded`` after ``busy_wait_s`` if the pool was busy (a
        full pool is not a database outage, and says so quickly)."""
        busy = self.busy()
        try:
            conn = await self.pool.acquire(
                timeout=min(self.busy_wait_s, self.acquire_timeout_s)
                if busy
                else self.acquire_timeout_s
            )
        except TimeoutError:
            if busy or self.busy():
                raise Overloaded("every database connection is in use") from None
            raise
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        with mapped_errors(self.statement_timeout_s):
            async with self._acquire() as conn:
                yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside one transaction; committed when the block exits cleanly."""
        with mapped_errors(self.statement_timeout_s):
            async with self._acquire() as conn, conn.transaction():
                yield conn

    async def fetch(self, sql: str, *args: Any, label: str = "") -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return await fetch(conn, label, sql, *args)

    async def fetchrow(self, sql: str, *args: Any, label: str = "") -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await fetchrow(conn, label, sql, *args)

    async def fetchval(self, sql: str, *args: Any, label: str = "") -> Any:
        async with self.connection() as conn:
            return await fetchval(conn, label, sql, *args)

    async def execute(self, sql: str, *args: Any, label: str = "") -> str:
        async with self.connection() as conn:
            return await execute(conn, label, sql, *args)


async def timed(fn: Any, sql: str, args: Sequence[Any], label: str = "") -> Any:
    """Run one statement on a connection, logging its duration."""
    started = time.perf_counter()
    try:
        return await fn(sql, *args)
    finally:
        _log_timing(label or sql[:60], time.perf_counter() - started)


def _log_timing(label: str, elapsed: float) -> None:
    work = _BACKGROUND.get()
    limit = SLOW_STATEMENT_S if work is None else SLOW_BACKGROUND_STATEMENT_S
    extra = {"label": label, "ms": round(elapsed * 1000, 2)}
    if work is not None:
        extra["background"] = work
    if elapsed < limit:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sql", extra=extra)
    elif work is None:
        log.warning(
            "slow SQL statement: %r took %.1f s (over %g s)", label, elapsed, limit, extra=extra
        )
    else:
        log.warning(
            "slow SQL statement in background work (%s): %r took %.1f s (over %g s); it "
            "delays no request, but that work falls behind meanwhile",
            *(work, label, elapsed, limit),
            extra=extra,
        )


# The same path for a caller that holds a connection (a transaction, a command's own
# connection): ``await fetch(conn, "apps of owner", sql, owner_id)``. The label names
# the statement in the log; the arguments never appear there.


async def fetch(conn: asyncpg.Connection, label: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await timed(conn.fetch, sql, args, label)
    return rows


async def fetchrow(
    conn: asyncpg.Connection, label: str, sql: str, *args: Any
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await timed(conn.fetchrow, sql, args, label)
    return row


async def fetchval(conn: asyncpg.Connection, label: str, sql: str, *args: Any) -> Any:
    return await timed(conn.fetchval, sql, args, label)


async def execute(conn: asyncpg.Connection, label: str, sql: str, *args: Any) -> str:
    result: str = await timed(conn.execute, sql, args, label)
    return result


# PostgreSQL counts timestamptz in microseconds from 2000-01-01 00:00 UTC.
PG_EPOCH_UNIX_US = 946_684_800_000_000


def _to_pg_us(unix_us: int) -> tuple[int]:
    return (unix_us - PG_EPOCH_UNIX_US,)


def _from_pg_us(pg: tuple[int]) -> int:
    return pg[0] + PG_EPOCH_UNIX_US


async def unix_us_timestamps(conn: asyncpg.Connection) -> None:
    """On this connection, timestamptz values are ints of UNIX microseconds, both ways.

    For the ingest path: a batch's times go to the database as ints, which asyncpg
    encodes in a fraction of the time a datetime takes (docs/benchmarks.md), and the
    decoder never builds a datetime. Infinite timestamps decode to the int64 extremes
    shifted by the epoch difference: nothing on the ingest path reads one.
    """
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_to_pg_us,
        decoder=_from_pg_us,
        format="tuple",
    )


async def serial_plans(conn: asyncpg.Connection) -> None:
    """On this connection, statements plan without parallel workers unless they ask.

    For the API pool: its statements read a few thousand rows (rollups, apps,
    sessions) or stream through a cursor, which never runs in parallel. Starting
    workers costs more than they save for such statements (20-90 ms of a 10-100 ms
    rollup read on the benchmark machine, docs/benchmarks.md), and a session setting
    spares each rollup read the three round trips of a transaction with SET LOCAL.
    Statements that read raw events, and may profit from workers, take them back for
    their transaction with ``SET LOCAL max_parallel_workers_per_gather TO DEFAULT``:
    the value the server's configuration gives.
    """
    await execute(conn, "serial plans", "SET max_parallel_workers_per_gather = 0")


async def _release(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing more than asyncpg
    does anyway (rolling back a transaction left open, forgetting listeners).

    asyncpg's default reset is one more round trip per use (advisory unlocks, CLOSE
    ALL, UNLISTEN, RESET ALL). The service leaves none of that behind: settings are
    changed with SET LOCAL (or once, by the pool's ``init``, when it connects), cursors
    live in transactions, nothing listens or takes session advisory locks on a pooled
    connection, and ``rollups.rebuild`` resets the one session setting it changes.
    """


async def create_pool(
    dsn: str,
    *,
    max_size: int,
    statement_timeout_s: float,
    connect_timeout_s: float,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    """A pool that connects lazily, so the service starts (and recovers) without the
    database; ``init`` runs on each new connection."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=connect_timeout_s,
        init=init,
        reset=_release,
        # Recycle idle connections so a restarted database is rediscovered promptly.
        max_inactive_connection_lifetime=60,
        server_settings={
            "statement_timeout": str(int(statement_timeout_s * 1000)),
            "application_name": "apinalytics",
            "timezone": "UTC",
            # Never a cached generic plan: one made while a chunk was wholly compressed
            # misses rows written into it later (docs/retention.md, "Cached plans").
            "plan_cache_mode": "force_custom_plan",
        },
    )
    return pool
