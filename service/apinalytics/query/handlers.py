"""``GET /1/timeseries/<start>/<end>/``: authenticate, parse, plan, one statement, JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from .. import auth, limits, retention
from ..apps import Credentials, KeyKind
from ..db import Database, timed
from ..errors import InvalidQuery
from ..keys import DB, LIMITS, METRICS, SETTINGS
from . import params, planner, sql
from .model import Kind, Query

# Request header that forces the raw source, for benchmarks and diagnosis.
PLANNER_HEADER = "X-Apinalytics-Planner"
SOURCES_HEADER = "X-Apinalytics-Sources"


@dataclass(frozen=True)
class Answer:
    plan: planner.Plan
    rows: list[asyncpg.Record]


async def timeseries(request: web.Request) -> web.Response:
    creds = await auth.require(request, KeyKind.READ)
    settings = request.app[SETTINGS]
    limits.check_includes(request.query.getall("include", []), settings.max_include_values)
    query = params.parse_query(
        request.match_info["start"],
        request.match_info["end"],
        {name: request.query.getall(name) for name in request.query},
        max_buckets=settings.max_buckets,
    )
    force_raw = _force_raw(request)
    shares, db = request.app[LIMITS], request.app[DB]
    n = limits.groups_allowed(query, settings.max_groups, settings.max_points)
    async with shares.query(creds.app_id), limits.bounded(settings.statement_timeout_s):
        if force_raw or query.aggregation.kind is Kind.PERCENTILE:
            # Raw reads take their turn before their connection (limits.py).
            async with shares.raw_read():
                answer = await run(db, query, creds, force_raw=force_raw, max_groups=n)
        else:
            answer = await run(db, query, creds, force_raw=force_raw, max_groups=n)
    if len(answer.rows) > n:
        raise limits.too_many_groups(n, settings.max_groups, settings.max_points)
    for source in answer.plan.sources:
        request.app[METRICS].query_source.labels(source=source).inc()
    return web.Response(
        body=orjson.dumps(render(query, answer.rows, creds.app_id)),
        content_type="application/json",
        headers={SOURCES_HEADER: ",".join(answer.plan.sources)},
    )


async def run(
    db: Database,
    query: Query,
    creds: Credentials,
    *,
    force_raw: bool,
    max_groups: int | None = None,
) -> Answer:
    """Plan against the current retention horizons and run the one statement."""
    async with db.connection() as conn:
        horizons = await retention.horizons(conn)
        chosen = planner.plan(query, time.time(), horizons, force_raw=force_raw)
        text, args = sql.statement(query, chosen, creds.app, creds.app_id)
        if max_groups is not None:
            # One more than the limit: enough to know it is passed, never a whole
            # answer of 100,000 groups in memory.
            args = [*args, max_groups + 1]
            text = f"{text}\nLIMIT ${len(args)}"
        if chosen.reads_rollups:
            # The pool's connections plan without parallel workers (db.serial_plans):
            # a rollup read is one round trip.
            rows: list[asyncpg.Record] = await timed(conn.fetch, text, args, "timeseries")
        else:
            # Raw reads may scan millions of events: they get the server's workers.
            async with conn.transaction():
                await conn.execute("SET LOCAL max_parallel_workers_per_gather TO DEFAULT")
                rows = await timed(conn.fetch, text, args, "timeseries")
    return Answer(chosen, rows)


def render(query: Query, rows: list[asyncpg.Record], app_id: str) -> dict[str, Any]:
    """The SPEC's answer: groups in code point order, each one's points in time order.

    The statement returns one row per group with its points unordered (sorting them in
    PostgreSQL by a text key costs more than here). Points are tuples: thousands of
    lists would be tracked by the garbage collector.
    """
    found: dict[str, list[tuple[int, Any]]] = {
        g: sorted(zip(bs, vs, strict=True)) for g, bs, vs in rows
    }
    if query.group is None:
        # One group, keyed by the Application ID, present even when it is empty.
        found.setdefault(app_id, [])
    groups = {g: found[g] for g in sorted(found)}
    width = query.granularity.width_s if query.granularity else query.end - query.start
    return {
        "groups": groups,
        "start": query.start,
        "end": query.end,
        "granularity": width * 1000,
    }


def _force_raw(request: web.Request) -> bool:
    value = request.headers.get(PLANNER_HEADER, "").strip().lower()
    if value in ("", "auto"):
        return False
    if value == "raw":
        return True
    raise InvalidQuery(PLANNER_HEADER, f"must be raw or auto, not {value!r}")
