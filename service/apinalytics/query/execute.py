"""A query's database work, every statement through the timed path (``db.timed``):
the retention horizons and the app's pending stretches the planner honours (one
statement), the plan, its one statement, and the parallel-worker setting of raw
reads."""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from .. import retention
from ..apps import Credentials
from ..db import Database, timed
from . import planner, sql
from .model import Query

# One round trip: every relation's retention horizon (``relation`` set), and the
# app's pending stretches overlapping the range (``relation`` NULL), in UNIX seconds.
HORIZONS_AND_PENDING = f"""
    SELECT r.relation, {retention.horizon_sql("r")} AS a, NULL::float8 AS b FROM retention r
    UNION ALL
    SELECT NULL, extract(epoch FROM p.start)::float8, extract(epoch FROM p."end")::float8
    FROM rollup_pending p
    WHERE p.app_id = $1 AND p.start < to_timestamp($3::bigint)
      AND p."end" > to_timestamp($2::bigint)
"""


async def horizons_and_pending(
    conn: asyncpg.Connection, app: int, start: int, end: int
) -> tuple[dict[str, float | None], list[tuple[float, float]]]:
    """The retention horizons (``retention.horizons``) and ``app``'s pending stretches
    overlapping ``[start, end)``."""
    rows = await timed(
        conn.fetch, HORIZONS_AND_PENDING, (app, start, end), "horizons, pending stretches"
    )
    horizons = {r["relation"]: r["a"] for r in rows if r["relation"] is not None}
    stretches = [(r["a"], r["b"]) for r in rows if r["relation"] is None]
    return horizons, stretches


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
    """Plan against the current retention horizons and the app's pending stretches,
    and run the one statement; with ``max_groups``, at most one group more than that
    comes back (limits.py).

    A pending stretch read here is materialized in the rollups, if at all, by a
    transaction that also deletes its row (``rollups.materializer``): a stretch whose
    row this statement no longer sees is in the rollups the next statement reads."""
    async with db.connection() as conn:
        horizons, stretches = await horizons_and_pending(conn, creds.app, query.start, query.end)
        chosen = planner.plan(query, time.time(), horizons, force_raw=force_raw, pending=stretches)
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
