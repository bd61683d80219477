"""The ``apinalytics`` command: serve, migrate, apps, ... (also ``python -m apinalytics``).

Configuration comes from ``APINALYTICS_*`` environment variables (see settings.py);
the flags below override them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from math import isfinite
from pathlib import Path
from typing import Any

import asyncpg

from . import __version__, apps, localdb, logs, migrate, retention_cli
from .edition import Edition
from .rollups import materializer, rebuild
from .settings import Settings

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    sub = parser.add_subparsers(dest="command", required=True)

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
    apps_sub = p.add_subparsers(dest="apps_command", required=True)
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
    db_sub = p.add_subparsers(dest="db_command", required=True)
    p = db_sub.add_parser("start", parents=[common], help="start (or reuse) and print its URL")
    p.set_defaults(func=cmd_db_start)
    p = db_sub.add_parser("stop", parents=[common], help="stop it")
    p.set_defaults(func=cmd_db_stop)
    p = sub.add_parser("rollups", help="the per-minute and per-hour rollups")
    rollups_sub = p.add_subparsers(dest="rollups_command", required=True)
    p = rollups_sub.add_parser(
        "rebuild",
        parents=[common],
        help="recompute every rollup from the raw events over [START, END): after a bulk "
        "load straight into events, or for a period whose refresh was left pending",
    )
    p.add_argument("start", type=_instant, help="UNIX seconds or an ISO 8601 time (UTC if bare)")
    p.add_argument("end", type=_instant, help="UNIX seconds or an ISO 8601 time (UTC if bare)")
    p.set_defaults(func=cmd_rollups_rebuild)
    p = rollups_sub.add_parser(
        "catch-up",
        parents=[common],
        help="bring the rollups up to date over every pending stretch, until none is left "
        "(what the service's materializer does in the background; for cron or one-off use)",
    )
    p.set_defaults(func=cmd_rollups_catch_up)
    p = rollups_sub.add_parser(
        "status", parents=[common], help="pending stretches, the oldest one's age, the materializer"
    )
    p.set_defaults(func=cmd_rollups_status)
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


def serve(settings: Settings, *, migrate_first: bool) -> int:
    banner = (
        f"APInalytics listening on http://{settings.host}:{settings.port}/\n"
        "Create an app with: apinalytics apps create --name my-api"
    )
    if settings.workers > 1:
        return serve_workers(settings, migrate_first=migrate_first, banner=banner)

    from aiohttp import web

    from .app import create_app, tune_gc

    app = create_app(settings, run_migrations=migrate_first)
    tune_gc()
    loop = new_event_loop(settings)
    print(banner, file=sys.stderr, flush=True)
    # aiohttp handles SIGINT/SIGTERM: stops accepting, lets in-flight requests finish
    # (shutdown_timeout), then runs the cleanup contexts.
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        shutdown_timeout=30,
        print=None,
        loop=loop,
    )
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
        return workers.serve(settings, dsn, migrate_first=migrate_first, banner=banner)
    except (OSError, asyncpg.PostgresError, localdb.LocalDbError) as exc:
        print(f"apinalytics: {exc}", file=sys.stderr)
        return 1


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
    server = Edition.for_license(result.license)
    edition = "Community" if server is Edition.COMMUNITY else "Apache-2"
    how = (
        "continuous aggregates with refresh policies"
        if result.mode.continuous_aggregates
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
        for a in rows:
            print(f"{a.app_id}\t{a.name}\t{a.created_at:%Y-%m-%d %H:%M:%S}")
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
        windows = await rebuild.rebuild(conn, mode, args.start, args.end)
    finally:
        await conn.close()
    for relation, (start, end) in windows.items():
        if end > start:
            print(f"{relation}: rebuilt {_iso(start)} to {_iso(end)}")
        else:
            # Past its source's retention, or the current bucket (real-time aggregation's).
            print(f"{relation}: nothing to rebuild in that range")
    return 0


async def cmd_rollups_catch_up(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    try:
        mode = await migrate.rollup_mode(conn)
        assert mode is not None  # _connect migrated the database
        # An operator's command: no statement timeout (a Community refresh over a long
        # backlog may take minutes).
        await conn.execute("SET statement_timeout = 0")
        done = await materializer.catch_up(conn, mode)
    finally:
        await conn.close()
    print(f"materialized {done} pending stretches; none is pending")
    return 0


async def cmd_rollups_status(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    try:
        found = await materializer.status(conn)
    finally:
        await conn.close()
    print(f"pending stretches: {found.ranges}")
    oldest = "-" if found.oldest_s is None else f"{found.oldest_s:.1f} s"
    print(f"oldest pending: {oldest}")
    running = "idle" if found.running_pid is None else f"running (backend {found.running_pid})"
    print(f"materializer: {running}")
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
    cluster.stop()
    print("stopped")
    return 0


if __name__ == "__main__":
    main()
