"""``serve --workers N``: N processes serving the same host:port.

gunicorn's arbiter runs in the process that was started and forks the workers, each
an aiohttp server (``aiohttp.worker.GunicornUVLoopWebWorker``, or
``GunicornWebWorker`` for ``APINALYTICS_EVENT_LOOP=asyncio``) with an application of its
own (``create_app``). The arbiter first does what must happen once: it starts the
embedded cluster if there is no database URL, applies the migrations and makes the
directory where the workers keep their Prometheus metrics (removed at exit). It
replaces a worker that dies, and on SIGTERM or SIGINT it stops every worker the way a
single process stops: no new connections, in-flight requests finish (up to 30 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from . import migrate
from .settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

# Per APINALYTICS_EVENT_LOOP: aiohttp's worker classes, on uvloop or asyncio's own loop.
WORKER_CLASSES = {
    "uvloop": "aiohttp.worker.GunicornUVLoopWebWorker",
    "asyncio": "aiohttp.worker.GunicornWebWorker",
}
# As the single process: web.run_app(shutdown_timeout=30) and its keep-alive default.
GRACEFUL_TIMEOUT_S = 30
KEEPALIVE_S = 75


def serve(settings: Settings, dsn: str, *, migrate_first: bool, banner: str) -> int:
    """Migrate ``dsn`` (unless told not to), then serve it from ``settings.workers``
    processes until SIGTERM/SIGINT. Returns (or exits with) the arbiter's status."""
    if migrate_first:
        result = asyncio.run(migrate.migrate(dsn))
        log.info("migrations", extra={"applied": result.applied, "mode": result.mode})
    # prometheus_client decides on import whether values go to files; the workers must
    # import it only once the directory is set (nothing above imports it).
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory")
    metrics_dir = tempfile.mkdtemp(prefix="apinalytics-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    arbiter_pid = os.getpid()
    try:
        _Application(settings.model_copy(update={"database_url": dsn}), metrics_dir, banner).run()
    finally:
        # The workers are forked from here and leave through this frame too.
        if os.getpid() == arbiter_pid:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Application(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code: no configuration file, command line or
    ``GUNICORN_CMD_ARGS`` is read."""

    def __init__(self, settings: Settings, metrics_dir: str, banner: str) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.banner = banner
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        metrics_dir = self.metrics_dir

        def child_exit(arbiter: Any, worker: Any) -> None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]

        banner = self.banner

        def when_ready(arbiter: Any) -> None:
            # The sockets are bound: only now is the service listening.
            print(banner, file=sys.stderr, flush=True)

        options: dict[str, Any] = {
            "bind": [bind_address(s.host, s.port)],
            "workers": s.workers,
            "worker_class": WORKER_CLASSES[s.event_loop],
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "keepalive": KEEPALIVE_S,
            "accesslog": None,
            "loglevel": s.log_level.lower(),
            "logger_class": _Logger,
            "proc_name": "apinalytics",
            # gunicorn's control socket (a file under $HOME or $XDG_RUNTIME_DIR) is not
            # used: signals are the interface, as for the single process.
            "control_socket_disable": True,
            "child_exit": child_exit,
            "when_ready": when_ready,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> web.Application:
        # In the worker, after the fork.
        from .app import create_app, tune_gc

        app = create_app(self.settings, run_migrations=False)
        tune_gc()
        return app


class _Logger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own messages go through the service's log handler (JSON lines that
    name the process) instead of handlers and a format of gunicorn's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
