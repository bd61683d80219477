"""Serves the static dashboard (``dashboard/`` of the checkout) under ``/dashboard/``.

The dashboard is plain HTML and JavaScript over the public query API; its one
dependency, uPlot, comes from npm into ``dashboard/node_modules`` (``make`` runs
``npm ci``). The same files work opened from disk with an app ID and read key
(docs/dashboard.md).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboard"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html")


async def redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/dashboard/")


def add_routes(app: web.Application) -> None:
    if not DASHBOARD_DIR.is_dir():
        return
    app.router.add_get("/dashboard", redirect)
    app.router.add_get("/dashboard/", index)
    app.router.add_static("/dashboard/", DASHBOARD_DIR, follow_symlinks=False)
