"""A query's database work, every statement through the timed path (``db.timed``):
the retention horizons the planner honours, the plan, its one statement, and the
parallel-worker setting of raw reads."""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from .. import retention
from ..apps import Credentials
from ..db import Database, timed
from . import planner, sql
from .model import Query


@dataclass(frozen=True)
class Answer:
    plan: planner.Plan
    rows: list[asyncpg.Record]


async def run(
    db: Database,
    query: Query,
    creds: Credentials,
    *,
    force_raw: bool,
    max_groups: int | None = None,
) -> Answer:
    """Plan against the current retention horizons and run the one statement; with
    ``max_groups``, at most one group more than that comes back (limits.py)."""
    async with db.connection() as conn:
        horizons = await retention.horizons(conn)
        chosen = planner.plan(query, time.time(), horizons, force_raw=force_raw)
        text, args = sql.statement(query, chosen, creds.app, creds.app_id)
        if max_groups is not None:
            # One more than the limit: enough to know it is passed, never a whole
            # answer of 100,000 groups in memory.
            args = [*args, max_groups + 1]
            text = f"{text}\nLIMIT ${len(args)}"
        rows = await fetch(conn, text, args, parallel=not chosen.reads_rollups)
    return Answer(chosen, rows)


async def fetch(
    conn: asyncpg.Connection, text: str, args: list[object], *, parallel: bool
) -> list[asyncpg.Record]:
    """The statement's rows. The pool's connections plan without parallel workers
    (``db.serial_plans``): a rollup read is one round trip. Raw reads (``parallel``)
    may scan millions of events: they get the server's workers for their transaction.
    """
    if not parallel:
        rows: list[asyncpg.Record] = await timed(conn.fetch, text, args, "timeseries")
        return rows
    async with conn.transaction():
        await timed(
            conn.execute,
            "SET LOCAL max_parallel_workers_per_gather TO DEFAULT",
            (),
            "parallel workers",
        )
        parallel_rows: list[asyncpg.Record] = await timed(conn.fetch, text, args, "timeseries")
        return parallel_rows
