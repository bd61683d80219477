"""``apinalytics serve``: one process or several workers, on the configured event loop,
with a banner once the port is bound and one line for what cannot listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path

import asyncpg

from . import localdb
from .settings import Settings

__all__ = ["banner", "cli_name", "new_event_loop", "serve", "serve_workers"]


def cli_name() -> str:
    """How to run this command from the shell it was started in: ``apinalytics`` when
    that is on PATH (and is this one), else its path, such as ``.venv/bin/apinalytics``."""
    mine = Path(sys.prefix) / "bin" / "apinalytics"
    found = shutil.which("apinalytics")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "apinalytics"
    with contextlib.suppress(ValueError):
        return str(mine.absolute().relative_to(Path.cwd().absolute()))
    return str(mine)


def banner(settings: Settings) -> str:
    from . import dashboard

    # An address that listens everywhere is reached here at the loopback one.
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    base = f"http://{host}:{settings.port}"
    lines = [f"APInalytics listening on {base}/"]
    if dashboard.DASHBOARD_DIR.is_dir():
        lines.append(f"Dashboard: {base}/dashboard/")
    lines.append(f"Create an app with: {cli_name()} apps create --name my-api")
    return "\n".join(lines)


# What a listening socket cannot do, said in one line rather than a traceback.
_BIND_ERRORS = {
    errno.EADDRINUSE: "the port is in use (another apinalytics serve?); choose one with --port",
    errno.EACCES: "permission denied; ports below 1024 need privileges",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}


_EMBEDDED_RUNS_ON = (
    "The embedded TimescaleDB keeps running, for the next serve; stop it with: {cli} db stop"
)


def serve(settings: Settings, *, migrate_first: bool) -> int:
    if settings.workers > 1:
        return serve_workers(settings, migrate_first=migrate_first, banner=banner(settings))

    from aiohttp import web

    from .app import LOCAL_CLUSTER, create_app, tune_gc

    app = create_app(settings, run_migrations=migrate_first)
    tune_gc()
    loop = new_event_loop(settings)
    # aiohttp handles SIGINT/SIGTERM: stops accepting, lets in-flight requests finish
    # (shutdown_timeout), then runs the cleanup contexts. It calls `print` once the
    # socket is bound: only then is the service listening.
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            access_log=None,
            shutdown_timeout=30,
            print=lambda _: print(banner(settings), file=sys.stderr, flush=True),
            loop=loop,
        )
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS:
            raise
        print(
            f"apinalytics: cannot listen on {settings.host}:{settings.port}: "
            f"{_BIND_ERRORS[exc.errno]}",
            file=sys.stderr,
        )
        return 1
    finally:
        if LOCAL_CLUSTER in app:
            print(_EMBEDDED_RUNS_ON.format(cli=cli_name()), file=sys.stderr)
    return 0


def new_event_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """The event loop ``settings.event_loop`` names (``serve`` runs on it)."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve_workers(settings: Settings, *, migrate_first: bool, banner: str) -> int:
    """Several processes (see workers.py): the database is found once, here."""
    from . import workers

    try:
        dsn = asyncio.run(localdb.dsn_for(settings))
    except (OSError, asyncpg.PostgresError, localdb.LocalDbError) as exc:
        print(f"apinalytics: {exc}", file=sys.stderr)
        return 1
    arbiter = os.getpid()
    try:
        return workers.serve(settings, dsn, migrate_first=migrate_first, banner=banner)
    except (OSError, asyncpg.PostgresError, localdb.LocalDbError) as exc:
        print(f"apinalytics: {exc}", file=sys.stderr)
        return 1
    finally:
        # The workers, forked inside, leave through this frame too: only the arbiter says it.
        if not settings.database_url and os.getpid() == arbiter:
            print(_EMBEDDED_RUNS_ON.format(cli=cli_name()), file=sys.stderr)
