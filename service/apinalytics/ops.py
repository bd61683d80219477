"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import migrate
from .errors import DatabaseUnavailable, NotReady
from .keys import DB, METRICS
from .rollups import materializer


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the database answers and every migration is applied; else a 503 error
    (``database_unavailable`` or ``not_ready`` naming the pending migrations)."""
    async with request.app[DB].connection() as conn:
        pending = await migrate.pending(conn)
    if pending:
        raise NotReady(pending)
    return web.json_response({"status": "ready"})


async def metrics_view(request: web.Request) -> web.Response:
    """The metrics; the rollups' pending stretches are read from the database now (a
    database that does not answer leaves their last values)."""
    metrics = request.app[METRICS]
    with contextlib.suppress(DatabaseUnavailable):
        async with request.app[DB].connection() as conn:
            found = await materializer.status(conn)
        metrics.pending_ranges.set(found.ranges)
        metrics.pending_oldest_seconds.set(found.oldest_s or 0.0)
    return web.Response(
        body=metrics.render(),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )
