"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import migrate
from .errors import NotReady
from .keys import DB, METRICS


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
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )
