"""The apinalytics command: serve, migrate, apps, ... (also python -m apinalytics).

Configuration comes from ``APINALYTICS_*`` environment variables (see settings.py);
the flags below override them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from math import isfinite
from pathlib import Path
from typing import Any

import asyncpg

from . import __version__, apps_cli, localdb, logs, migrate, retention_cli, rollups_cli
from .edition import Edition
from .rollups import rebuild
from .serve_cli import serve
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

    apps_cli.register(sub, common)

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
    rollups_cli.register(rollups_sub, common)
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


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    result = await migrate.migrate(await localdb.dsn_for(settings))
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


async def cmd_rollups_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    if not args.end > args.start:
        print("apinalytics: END must be after START", file=sys.stderr)
        return 2
    conn = await migrate.connect_migrated(await localdb.dsn_for(settings))
    try:
        mode = await migrate.rollup_mode(conn)
        assert mode is not None  # connect_migrated migrated the database
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


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


async def cmd_db_start(args: argparse.Namespace, settings: Settings) -> int:
    print(await localdb.dsn_for(settings))
    return 0


async def cmd_db_stop(args: argparse.Namespace, settings: Settings) -> int:
    cluster = localdb.project_cluster(settings)
    if not cluster.stop():
        print(f"not running (no embedded cluster runs in {cluster.datadir})")
        return 0
    print("stopped")
    return 0


if __name__ == "__main__":
    main()
