"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import migrate
from .errors import DatabaseUnavailable
from .keys import DB, METRICS


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[DB].connection() as conn:
            pending = await migrate.pending(conn)
    except DatabaseUnavailable:
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    if pending:
        return web.json_response(
            {"status": "unavailable", "pending_migrations": pending}, status=503
        )
    return web.json_response({"status": "ready"})


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )
