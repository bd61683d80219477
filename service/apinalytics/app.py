"""``create_app(settings)``: wiring only — resources, middlewares, the route table."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from . import (
    accounts,
    dashboard,
    export,
    localdb,
    logs,
    middleware,
    migrate,
    openapi,
    protocol,
    security,
)
from . import replica as read_replica
from .db import Database, background, create_pool, serial_plans, unix_us_timestamps
from .edition import Edition
from .ingest import handlers as ingest
from .ingest import otlp
from .ingest.group import GroupWriter
from .ingest.idempotency import purge_idempotency_keys
from .keys import (
    DB,
    DECODER,
    EDITION,
    INGEST,
    INGEST_DB,
    LIMITS,
    MATERIALIZER,
    METRICS,
    READS,
    SETTINGS,
)
from .limits import Limits
from .metrics import Metrics
from .ops import healthz, metrics_view, readyz
from .query import handlers as query
from .rollups.background import Materializer
from .settings import Settings

log = logging.getLogger(__name__)

LOCAL_CLUSTER = web.AppKey("local_cluster", localdb.LocalCluster)
DSN = web.AppKey("dsn", str)


# The first generation's collection threshold of a serving process (CPython's is 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Set up the garbage collector of a process that serves (not of tests).

    An ingest batch allocates a dict per event (validation) and a row per event, which
    live until its COMMIT. With CPython's default threshold of 700 allocations, every
    batch set off several young collections that traversed them all and promoted them,
    and the older generations' collections then traversed them again: about a seventh
    of the service's CPU at full ingest (docs/benchmarks.md). At 50,000 they die
    uncollected, freed by reference counting as before; only cycles wait longer.
    ``gc.freeze()`` takes what startup allocated (modules, schemas, the application)
    out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# aiohttp's default limit of a request line.
MIN_LINE_BYTES = 8190


def create_app(settings: Settings, *, run_migrations: bool = True) -> web.Application:
    logs.quiet_malformed_requests()
    protocol.install()
    app = web.Application(
        middlewares=[
            middleware.timing,
            middleware.cors_preflight,
            middleware.errors,
            *accounts.middlewares(settings),
        ],
        # Ingest reads the body itself, with its own limit and a clear 413.
        client_max_size=settings.max_body_bytes + 1,
        # Ingest gunzips itself, bounded by that limit: aiohttp's own decompression
        # would answer a bad gzip body with a 500 and other encodings than the
        # documented ones would get through.
        #
        # The request line may hold what an event may: include=url:<a URL of
        # MAX_URL_LENGTH characters>, each up to four UTF-8 bytes, percent-encoded
        # (aiohttp's default is 8,190 bytes).
        handler_args={
            "auto_decompress": False,
            "max_line_size": max(MIN_LINE_BYTES, 12 * settings.max_url_length + 1024),
        },
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[LIMITS] = Limits(settings)
    app.on_startup.append(_log_event_loop)
    app.cleanup_ctx.append(_database(run_migrations))
    app.cleanup_ctx.append(_reads)
    app.cleanup_ctx.append(_materializer)
    app.cleanup_ctx.append(_ingest_writer)
    app.cleanup_ctx.append(_decoder)
    app.cleanup_ctx.append(_idempotency_purge)
    app.on_response_prepare.append(middleware.cors_headers)
    app.on_response_prepare.append(security.headers)
    accounts.setup_templates(app)
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    for path in ("/1/events", "/1/event"):
        for p in (path, path + "/"):
            app.router.add_post(p, ingest.post_events)
    for p in ("/v1/traces", "/v1/traces/"):
        app.router.add_post(p, otlp.post_traces)
    for p in ("/1/timeseries/{start}/{end}", "/1/timeseries/{start}/{end}/"):
        app.router.add_get(p, query.timeseries)
    for path in ("/1/events/{start}/{end}", "/1/event/{start}/{end}"):
        for p in (path, path + "/"):
            app.router.add_get(p, export.export_events)
    for p in ("/healthz", "/healthz/"):
        app.router.add_get(p, healthz)
    for p in ("/readyz", "/readyz/"):
        app.router.add_get(p, readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/openapi.json", openapi.view)
    # The landing page at "/", login, and the application and key pages.
    accounts.add_routes(app)
    dashboard.add_routes(app)


def event_loop_name() -> str:
    """ "uvloop" or "asyncio": the running loop, as APINALYTICS_EVENT_LOOP names it."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


async def _log_event_loop(app: web.Application) -> None:
    log.info("event loop", extra={"event_loop": event_loop_name()})


def _database(run_migrations: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        dsn = settings.database_url
        if not dsn:
            cluster = localdb.project_cluster(settings)
            await asyncio.to_thread(cluster.ensure_running)
            app[LOCAL_CLUSTER] = cluster
            dsn = cluster.dsn
            log.info("embedded TimescaleDB running", extra={"port": cluster.port})
        app[DSN] = dsn
        if run_migrations:
            result = await migrate.migrate(dsn)
            log.info("migrations", extra={"applied": result.applied, "mode": result.mode})
        pool = await create_pool(
            dsn,
            max_size=settings.db_pool_max,
            statement_timeout_s=settings.statement_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
            init=serial_plans,
        )
        db = Database(
            pool, settings.statement_timeout_s, settings.db_connect_timeout_s, settings.busy_wait_s
        )
        app[DB] = db
        # The ingest path's own connections, with integer timestamps (db.unix_us_timestamps),
        # so queries and ingest never wait for each other's connections. One per group
        # transaction, as many spare, two for batches written alone (an empty batch's
        # key claim), and two for checking write keys: ingest never waits for a
        # connection a query holds.
        ingest_pool = await create_pool(
            dsn,
            max_size=2 * settings.ingest_writers + 4,
            statement_timeout_s=settings.statement_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
            init=unix_us_timestamps,
        )
        app[INGEST_DB] = Database(
            ingest_pool,
            settings.statement_timeout_s,
            settings.db_connect_timeout_s,
            settings.busy_wait_s,
        )
        async with db.connection() as conn:
            edition = await migrate.rollup_mode(conn)
        app[EDITION] = edition or Edition.APACHE
        yield
        await ingest_pool.close()
        await pool.close()
        # The embedded cluster keeps running: the next `serve` reuses it.

    return ctx


async def _reads(app: web.Application) -> AsyncIterator[None]:
    """Where queries and exports read (``replica.py``): the primary, or a replica."""
    async with read_replica.reads(app[SETTINGS], app[DB], app[DSN], app[METRICS]) as reads:
        app[READS] = reads
        yield


async def _ingest_writer(app: web.Application) -> AsyncIterator[None]:
    """The group writer of ingest; closed (its batches written) before the pool is."""
    settings = app[SETTINGS]
    writer = GroupWriter(
        app[INGEST_DB],
        idempotency_ttl_s=settings.idempotency_ttl_s,
        max_events=settings.ingest_group_max_events,
        writers=settings.ingest_writers,
        group_batches=app[METRICS].ingest_group_batches,
        on_commit=app[MATERIALIZER].wake,
    )
    app[INGEST] = writer
    yield
    await writer.close()


async def _materializer(app: web.Application) -> AsyncIterator[None]:
    """The rollups' materializer (``rollups/materializer.py``): one loop per process,
    runs take turns across processes and instances under an advisory lock. Stopped
    after the ingest writer (its batches' stretches stay pending for the next run)."""
    settings = app[SETTINGS]
    m = Materializer(
        app[DSN],
        app[EDITION],
        app[METRICS].materializer_runs,
        interval_s=settings.materializer_interval_s,
        connect_timeout_s=settings.db_connect_timeout_s,
    )
    app[MATERIALIZER] = m
    if not settings.materializer_interval_s:
        yield
        return
    task = asyncio.create_task(m.run_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _decoder(app: web.Application) -> AsyncIterator[None]:
    """One thread for validating big ingest bodies. One, not the default executor's
    several: validation holds the GIL, so more threads only take turns at it, and
    every turn costs (docs/benchmarks.md). Its queue is ordered; the event loop stays
    free to read, write and answer while a batch is validated."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as decoder:
        app[DECODER] = decoder
        yield


async def _idempotency_purge(app: web.Application) -> AsyncIterator[None]:
    """Hourly delete of expired Idempotency-Keys; failures are logged and retried."""
    settings = app[SETTINGS]

    async def loop() -> None:
        with background("idempotency key purge"):
            await purge_forever()

    async def purge_forever() -> None:
        while True:
            await asyncio.sleep(3600)
            try:
                n = await purge_idempotency_keys(app[DB], settings.idempotency_ttl_s)
                log.info("purged idempotency keys", extra={"count": n})
            except Exception:
                log.exception("purging idempotency keys failed")

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
