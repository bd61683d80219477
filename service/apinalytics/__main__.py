"""The apinalytics command: serve, migrate, apps, ... (also python -m apinalytics).

Configuration comes from ``APINALYTICS_*`` environment variables (see settings.py);
the flags below override them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import shutil
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from math import isfinite
from pathlib import Path
from typing import Any

import asyncpg

from . import __version__, apps, localdb, logs, migrate, retention_cli
from .ingest import rollups as upkeep
from .settings import Settings

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None or (getattr(args, "func", None) is None and args.command != "serve"):
        # A command group without its command (`apinalytics`, `apinalytics apps`): its help.
        getattr(args, "help_of", parser).print_help()
        sys.exit(0)
    overrides = {
        k: v
        for k, v in {
            "database_url": getattr(args, "database_url", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "home": getattr(args, "home", None),
            "workers": getattr(args, "workers", None),
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    logs.configure(settings.log_level, settings.log_json, with_pid=settings.workers > 1)
    if args.command == "serve":
        sys.exit(serve(settings, migrate_first=not args.no_migrate))
    func: Command = args.func
    try:
        sys.exit(asyncio.run(func(args, settings)))
    except (OSError, asyncpg.PostgresError, localdb.LocalDbError) as exc:
        print(f"apinalytics: {exc}", file=sys.stderr)
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        help="PostgreSQL URL (APINALYTICS_DATABASE_URL); default: the embedded local cluster",
    )
    common.add_argument(
        "--home", type=Path, help="project-local state directory (APINALYTICS_HOME)"
    )

    parser = argparse.ArgumentParser(prog="apinalytics", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    parser.set_defaults(help_of=parser)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    p.add_argument("--host", help="listen address (APINALYTICS_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (APINALYTICS_PORT, default 8080)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="processes serving host:port, one per core (APINALYTICS_WORKERS, default 1)",
    )
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")

    p = sub.add_parser("migrate", parents=[common], help="apply sql/migrations")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("apps", help="manage applications")
    p.set_defaults(help_of=p)
    apps_sub = p.add_subparsers(dest="apps_command")
    p = apps_sub.add_parser("create", parents=[common], help="create an app and print its keys")
    p.add_argument("--name", required=True, help="1 to 100 characters, no control characters")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_apps_create)
    p = apps_sub.add_parser("list", parents=[common], help="list apps (no keys)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_apps_list)
    p = apps_sub.add_parser("rotate-keys", parents=[common], help="replace an app's keys")
    p.add_argument("app_id")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--write", action="store_true", help="only the write key")
    which.add_argument("--read", action="store_true", help="only the read key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_apps_rotate)
    p = apps_sub.add_parser("delete", parents=[common], help="delete an app and all its data")
    p.add_argument("app_id")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_apps_delete)

    p = sub.add_parser("db", help="the embedded local TimescaleDB")
    p.set_defaults(help_of=p)
    db_sub = p.add_subparsers(dest="db_command")
    p = db_sub.add_parser("start", parents=[common], help="start (or reuse) and print its URL")
    p.set_defaults(func=cmd_db_start)
    p = db_sub.add_parser("stop", parents=[common], help="stop it")
    p.set_defaults(func=cmd_db_stop)
    p = sub.add_parser("rollups", help="the per-minute and per-hour rollups")
    p.set_defaults(help_of=p)
    rollups_sub = p.add_subparsers(dest="rollups_command")
    p = rollups_sub.add_parser(
        "rebuild",
        parents=[common],
        help="recompute every rollup from the raw events over [START, END): after a bulk "
        "load straight into events, or for a period whose refresh was left pending",
    )
    p.add_argument("start", type=_instant, help="UNIX seconds or an ISO 8601 time (UTC if bare)")
    p.add_argument("end", type=_instant, help="UNIX seconds or an ISO 8601 time (UTC if bare)")
    p.set_defaults(func=cmd_rollups_rebuild)
    retention_cli.register(sub)
    return parser


def _instant(text: str) -> float:
    """UNIX seconds, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    with contextlib.suppress(ValueError):
        seconds = float(text)
        if isfinite(seconds):
            return seconds
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither UNIX seconds nor an ISO 8601 time"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


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
        dsn = asyncio.run(dsn_for(settings))
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


async def dsn_for(settings: Settings) -> str:
    """The configured database, or the embedded cluster (started if needed), migrated."""
    if settings.database_url:
        return settings.database_url
    cluster = localdb.LocalCluster(
        settings.home / "pgdata", localdb.find_bindir(settings.pg_bindir)
    )
    await asyncio.to_thread(cluster.ensure_running)
    return cluster.dsn


async def _connect(settings: Settings) -> asyncpg.Connection:
    dsn = await dsn_for(settings)
    await migrate.migrate(dsn)
    return await asyncpg.connect(dsn)


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    result = await migrate.migrate(await dsn_for(settings))
    edition = "Community" if result.license == "timescale" else "Apache-2"
    how = (
        "continuous aggregates with refresh policies"
        if result.mode == "community"
        else "tables kept up to date by the ingest path"
    )
    print(f"TimescaleDB license: {result.license} ({edition} edition)")
    print(f"rollup mode: {result.mode} ({how})")
    if result.applied:
        for name in result.applied:
            print(f"applied {name}")
    else:
        print("schema is up to date")
    return 0


def _print_keys(app: apps.NewApp, as_json: bool) -> None:
    out: dict[str, Any] = {"app_id": app.app_id}
    if app.write_key:
        out["write_key"] = app.write_key
    if app.read_key:
        out["read_key"] = app.read_key
    if as_json:
        print(json.dumps(out))
        return
    print(f"Application ID: {app.app_id}")
    if app.write_key:
        print(f"Write key:      {app.write_key}")
    if app.read_key:
        print(f"Read key:       {app.read_key}")
    print("Keys are shown only now; store them safely.", file=sys.stderr)


async def cmd_apps_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        name = apps.checked_name(args.name)
    except ValueError as exc:
        print(f"apinalytics: {exc}", file=sys.stderr)
        return 2
    conn = await _connect(settings)
    try:
        app = await apps.create(conn, name)
    finally:
        await conn.close()
    _print_keys(app, args.json)
    return 0


async def cmd_apps_list(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    try:
        rows = await apps.list_apps(conn)
    finally:
        await conn.close()
    if args.json:
        print(
            json.dumps(
                [
                    {"app_id": a.app_id, "name": a.name, "created_at": a.created_at.isoformat()}
                    for a in rows
                ]
            )
        )
    else:
        print("APP ID\tNAME\tCREATED (UTC)")
        for a in rows:
            print(f"{a.app_id}\t{a.name}\t{a.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}")
        if not rows:
            print(f"No applications yet: {cli_name()} apps create --name NAME", file=sys.stderr)
    return 0


async def cmd_apps_rotate(args: argparse.Namespace, settings: Settings) -> int:
    kinds = (
        {apps.KeyKind.WRITE}
        if args.write
        else {apps.KeyKind.READ}
        if args.read
        else {apps.KeyKind.WRITE, apps.KeyKind.READ}
    )
    conn = await _connect(settings)
    try:
        app = await apps.rotate(conn, args.app_id, kinds)
    finally:
        await conn.close()
    if app is None:
        print(f"apinalytics: no application {args.app_id}", file=sys.stderr)
        return 2
    _print_keys(app, args.json)
    return 0


async def cmd_apps_delete(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print("apinalytics: deleting needs --yes when not run at a terminal", file=sys.stderr)
            return 2
        answer = input(f"Delete application {args.app_id} and ALL of its events? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            found = await apps.delete(conn, args.app_id)
    finally:
        await conn.close()
    if not found:
        print(f"apinalytics: no application {args.app_id}", file=sys.stderr)
        return 2
    print(f"deleted application {args.app_id} and its data")
    return 0


async def cmd_rollups_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    if not args.end > args.start:
        print("apinalytics: END must be after START", file=sys.stderr)
        return 2
    conn = await _connect(settings)
    try:
        mode = await migrate.rollup_mode(conn)
        assert mode is not None  # _connect migrated the database
        windows = await upkeep.rebuild(conn, mode, args.start, args.end)
    finally:
        await conn.close()
    for relation, (start, end) in windows.items():
        if end > start:
            print(f"{relation}: rebuilt {_iso(start)} to {_iso(end)}")
        else:
            # Past its source's retention, or the current bucket (real-time aggregation's).
            print(f"{relation}: nothing to rebuild in that range")
    return 0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


async def cmd_db_start(args: argparse.Namespace, settings: Settings) -> int:
    print(await dsn_for(settings))
    return 0


async def cmd_db_stop(args: argparse.Namespace, settings: Settings) -> int:
    cluster = localdb.LocalCluster(
        settings.home / "pgdata", localdb.find_bindir(settings.pg_bindir)
    )
    cluster.datadir = cluster.datadir.resolve()
    if not cluster.stop():
        print(f"not running (no embedded cluster runs in {cluster.datadir})")
        return 0
    print("stopped")
    return 0


if __name__ == "__main__":
    main()
