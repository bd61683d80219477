"""``GET /1/timeseries/<start>/<end>/``: authenticate, parse, run (``execute``), JSON."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from .. import auth, limits, replica
from ..apps import KeyKind
from ..db import Database
from ..errors import InvalidQuery
from ..keys import LIMITS, METRICS, READS, SETTINGS
from ..measures import HISTOGRAM
from . import execute, params
from .model import Query

# Request header that forces the raw source, for benchmarks and diagnosis.
PLANNER_HEADER = "X-Apinalytics-Planner"
SOURCES_HEADER = "X-Apinalytics-Sources"


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
    consistency = replica.consistency(request)
    shares, reads = request.app[LIMITS], request.app[READS]
    n = limits.groups_allowed(query, settings.max_groups, settings.max_points)

    def run(db: Database) -> Awaitable[execute.Answer]:
        return execute.run(db, query, creds, force_raw=force_raw, max_groups=n)

    async with shares.query(creds.app_id), limits.bounded(settings.statement_timeout_s):
        if force_raw or query.aggregation.needs_raw:
            # Raw reads take their turn before their connection (limits.py).
            async with shares.raw_read():
                answer, read_from = await reads.run(consistency, run)
        else:
            answer, read_from = await reads.run(consistency, run)
    if len(answer.rows) > n:
        raise limits.too_many_groups(n, settings.max_groups, settings.max_points)
    for source in answer.plan.sources:
        request.app[METRICS].query_source.labels(source=source).inc()
    return web.Response(
        body=orjson.dumps(
            render(query, answer.rows, creds.app_id, approximate=answer.plan.histogram)
        ),
        content_type="application/json",
        headers={
            SOURCES_HEADER: ",".join(answer.plan.sources),
            replica.READ_FROM_HEADER: read_from.value,
        },
    )


def render(
    query: Query, rows: list[asyncpg.Record], app_id: str, *, approximate: bool = False
) -> dict[str, Any]:
    """The SPEC's answer: groups in code point order, each one's points in time order;
    an answer read from the histograms says so (``precision``), an exact one does not.

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
    out: dict[str, Any] = {
        "groups": groups,
        "start": query.start,
        "end": query.end,
        "granularity": width * 1000,
    }
    if approximate:
        out["precision"] = {"relative_error": HISTOGRAM.relative_error}
    return out


def _force_raw(request: web.Request) -> bool:
    value = request.headers.get(PLANNER_HEADER, "").strip().lower()
    if value in ("", "auto"):
        return False
    if value == "raw":
        return True
    raise InvalidQuery(PLANNER_HEADER, f"must be raw or auto, not {value!r}")
