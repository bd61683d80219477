"""``apinalytics rollups rebuild``: recompute the rollups from their sources.

For bulk loads that bypass the ingest path (COPY straight into ``events``) and for
repairs. Apache edition: delete and re-insert each slice of the rollup tables, SQL
derived from the declared rollups and measures. Community edition: refresh the
continuous aggregates over each slice.

See docs/rollups.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from .. import db, retention
from ..db import Database, timed
from ..edition import Edition
from . import community
from .declared import RAW, ROLLUPS, Rollup

log = logging.getLogger(__name__)

# rebuild() works through its range in slices of this many seconds (a multiple of
# every rollup width), so each statement aggregates a bounded amount of raw data and
# concurrent ingest waits on a slice, not on the whole rebuild.
REBUILD_SLICE_S = 86400


@asynccontextmanager
async def _conn(target: Database | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(target, Database):
        async with target.connection() as conn:
            yield conn
    else:
        yield target


async def rebuild(
    target: Database | asyncpg.Connection, edition: Edition, start: float, end: float
) -> dict[str, tuple[int, int]]:
    """Recompute every rollup from its source for ``[start, end)`` (UNIX seconds).

    For bulk loads that bypass the ingest path (COPY straight into ``events``) and for
    repairs. The range is widened to whole buckets of the coarsest rollup; each rollup
    is then clamped to its source's retention horizon, so nothing is recomputed from
    data that is gone. Returns, per rollup, the range actually rebuilt in UNIX seconds
    (start == end: nothing).

    Apache: per day, in one transaction that first locks every rollup table against
    the materializer (the two take turns; neither writes events), delete the
    slice and insert it aggregated from each rollup's source, in declaration order
    (minute from ``events``, hour from ``events_1m``, the narrow hour ones from
    ``events_1h``, the per-app minute one from ``events_1m``). Community: per day,
    ``refresh_continuous_aggregate`` of each aggregate in the same order over the same
    slice. Every change to ``events``
    below an aggregate's threshold is in its invalidation log, and everything above
    is materialized when the threshold moves, so a plain refresh recomputes exactly
    what a bulk load changed. Not ``force => true``: on TimescaleDB 2.19 a forced
    refresh of the hour aggregate materializes the bucket after its window too, from
    a minute aggregate that does not hold all of it yet, and moves its watermark past
    events that real-time aggregation then no longer reads. Windows end at the start
    of the current bucket: a refresh into the future would move the threshold ahead of
    the clock and make every live batch refresh until the clock caught up (the
    current bucket stays with real-time aggregation).

    Statements run without the statement timeout: a slice of a bulk load can take
    longer than an API query may, and this is an operator's command, not a request.
    """
    async with _conn(target) as conn:
        windows = await _windows(conn, edition, start, end)
        first = min(w[0] for w in windows.values())
        last = max(w[1] for w in windows.values())
        slices = [(s, min(s + REBUILD_SLICE_S, last)) for s in range(first, last, REBUILD_SLICE_S)]
        if edition.continuous_aggregates:
            await _refresh_slices(conn, slices, windows)
        else:
            for s, e in slices:
                await _rebuild_tables(conn, s, e, windows)
    log.info("rollups rebuilt", extra={"windows": windows, "mode": str(edition)})
    return windows


async def _windows(
    conn: asyncpg.Connection, edition: Edition, start: float, end: float
) -> dict[str, tuple[int, int]]:
    """Per rollup, the range to rebuild: whole buckets of the coarsest rollup, from its
    source's horizon on, and (continuous aggregates) up to its current bucket."""
    coarsest = max(r.width_s for r in ROLLUPS)
    lo = math.floor(start / coarsest) * coarsest
    hi = math.ceil(end / coarsest) * coarsest
    horizons = await retention.horizons(conn)
    now = float(await timed(conn.fetchval, "SELECT extract(epoch FROM now())", (), "now"))
    windows: dict[str, tuple[int, int]] = {}
    for rollup in ROLLUPS:
        r_lo, r_hi = lo, hi
        horizon = horizons.get(rollup.built_from)
        if horizon is not None:
            r_lo = max(r_lo, math.ceil(horizon / coarsest) * coarsest)
        if edition.continuous_aggregates:
            r_hi = min(r_hi, math.floor(now / rollup.width_s) * rollup.width_s)
        windows[rollup.relation] = (r_lo, max(r_lo, r_hi))
    return windows


async def _refresh_slices(
    conn: asyncpg.Connection,
    slices: list[tuple[int, int]],
    windows: dict[str, tuple[int, int]],
) -> None:
    await db.execute(conn, "no statement timeout", "SET statement_timeout = 0")
    try:
        for s, e in slices:
            for rollup, (a, b) in _parts(s, e, windows):
                await community.refresh(conn, rollup, a, b)
    finally:
        try:
            await db.execute(conn, "reset statement timeout", "RESET statement_timeout")
        except BaseException:
            # Pools hand connections on without resetting them (db.create_pool):
            # one without its statement timeout must not go back.
            conn.terminate()
            raise


def _parts(
    start: int, end: int, windows: dict[str, tuple[int, int]]
) -> list[tuple[Rollup, tuple[int, int]]]:
    """The slice ``[start, end)`` cut to each rollup's window, finer rollups first."""
    out = []
    for rollup in ROLLUPS:
        lo, hi = windows[rollup.relation]
        a, b = max(start, lo), min(end, hi)
        if a < b:
            out.append((rollup, (a, b)))
    return out


def rebuild_sql(rollup: Rollup, *, per_app: bool = False) -> str:
    """The INSERT of ``rollup``'s rows for ``[$1, $2)`` (UNIX seconds) aggregated from
    its source; with ``per_app``, of app ``$3`` only (the materializer's)."""
    # A rollup per app alone has no dimension columns.
    dims = "".join(f"{d}, " for d in rollup.groups)
    exprs = rollup.group_exprs()
    if rollup.built_from == RAW:
        source_time = "time"
        measures = ", ".join(m.raw_stored() for m in rollup.measures)
    else:
        source_time = "bucket"
        measures = ", ".join(m.merged_stored() for m in rollup.measures)
    columns = ", ".join(m.column for m in rollup.measures)
    bucket = f"time_bucket(make_interval(secs => {rollup.width_s}), {source_time})"
    return f"""
        INSERT INTO {rollup.relation}
            (bucket, app_id, {dims}{columns})
        SELECT {bucket}, app_id, {"".join(f"{e}, " for e in exprs)}{measures}
        FROM {rollup.built_from}
        WHERE {source_time} >= to_timestamp($1::bigint) AND {source_time} < to_timestamp($2::bigint)
            {"AND app_id = $3::integer" if per_app else ""}
        GROUP BY {bucket}, app_id{"".join(f", {e}" for e in exprs)}
    """


def delete_sql(rollup: Rollup, *, per_app: bool = False) -> str:
    """The DELETE of ``rollup``'s rows for ``[$1, $2)``; with ``per_app``, of app ``$3``."""
    return (
        f"DELETE FROM {rollup.relation} "
        "WHERE bucket >= to_timestamp($1::bigint) AND bucket < to_timestamp($2::bigint)"
        + (" AND app_id = $3::integer" if per_app else "")
    )


_REBUILD = {r.relation: rebuild_sql(r) for r in ROLLUPS}


async def _rebuild_tables(
    conn: asyncpg.Connection, start_s: int, end_s: int, windows: dict[str, tuple[int, int]]
) -> None:
    relations = ", ".join(r.relation for r in ROLLUPS)
    async with conn.transaction():
        await db.execute(conn, "no statement timeout", "SET LOCAL statement_timeout = 0")
        # SHARE ROW EXCLUSIVE conflicts with the materializer's ROW EXCLUSIVE: the two
        # take turns. Batches committed meanwhile keep their pending stretches, which
        # the materializer re-aggregates after this (from the same raw events).
        await db.execute(
            conn, "lock rollups", f"LOCK TABLE {relations} IN SHARE ROW EXCLUSIVE MODE"
        )
        for rollup, (a, b) in _parts(start_s, end_s, windows):
            # Whole seconds as integers: right on a connection with either timestamp codec.
            bounds = (a, b)
            await timed(
                conn.execute,
                delete_sql(rollup),
                bounds,
                f"rebuild delete {rollup.relation}",
            )
            await timed(
                conn.execute, _REBUILD[rollup.relation], bounds, f"rebuild {rollup.relation}"
            )
