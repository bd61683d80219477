"""``apinalytics rollups catch-up`` and ``apinalytics rollups status``: the background
upkeep of the rollups (``rollups/materializer.py``), by hand. See docs/rollups.md."""

from __future__ import annotations

import argparse
from typing import Any

from . import db, localdb, migrate
from .rollups import materializer
from .settings import Settings


def register(rollups_sub: Any, common: argparse.ArgumentParser) -> None:
    """The two subcommands, next to ``rollups rebuild`` (``__main__``)."""
    p = rollups_sub.add_parser(
        "catch-up",
        parents=[common],
        help="bring the rollups up to date over every pending stretch, until none is left "
        "(what the service's materializer does in the background; for cron or one-off use)",
    )
    p.set_defaults(func=cmd_catch_up)
    p = rollups_sub.add_parser(
        "status", parents=[common], help="pending stretches, the oldest one's age, the materializer"
    )
    p.set_defaults(func=cmd_status)


async def cmd_catch_up(args: argparse.Namespace, settings: Settings) -> int:
    conn = await migrate.connect_migrated(await localdb.dsn_for(settings))
    try:
        mode = await migrate.rollup_mode(conn)
        assert mode is not None  # connect_migrated migrated the database
        # An operator's command: no statement timeout (a Community refresh over a long
        # backlog may take minutes).
        await db.execute(conn, "no statement timeout", "SET statement_timeout = 0")
        with db.background("rollups catch-up"):
            done = await materializer.catch_up(conn, mode)
    finally:
        await conn.close()
    print(f"materialized {done} pending stretches; none is pending")
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    conn = await migrate.connect_migrated(await localdb.dsn_for(settings))
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
