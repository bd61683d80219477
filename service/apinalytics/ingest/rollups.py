"""Rollup upkeep on the ingest path, and rebuilding rollups from raw events.

Apache mode: the rollups (``events_1m``, ``events_1h`` and the narrow ones) are
hypertables that the transaction storing the events keeps up to date
(``upkeep_in_transaction``): the database aggregates the rows per rollup key and
upserts them, one statement per rollup, keys in primary-key order. Every transaction
takes its row locks in that one global order (rollups in declaration order, keys sorted
within each), so concurrent transactions wait for each other but cannot deadlock.

Community mode: they are continuous aggregates with real-time aggregation, so events
above an aggregate's invalidation threshold are read from its source at query time.
Events below it (back-dated, or late by more than the policy's end_offset) would stay
invisible until a refresh covers them, so ``after_commit`` refreshes exactly their
buckets, each rollup after the one it is built from (minute, hour, the narrow hour
ones, the per-app minute one; refreshes do not cascade), before the request is
answered, and never a bucket that reaches above its source's own threshold.
Refresh windows never reach below the source's retention horizon: a refresh over a
range whose source chunks were dropped deletes the rollup rows there.

See docs/rollups.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg

from .. import retention
from ..db import Database, timed
from ..rollups import DIMENSION_TYPES, RAW, ROLLUPS, Rollup
from .decode import COLUMNS, Row, earliest_us

log = logging.getLogger(__name__)

_US = 1_000_000

# A batch whose back-dated events fall into many separate stretches is refreshed in at
# most this many windows: the smallest gaps between stretches are closed first. Each
# refresh costs a few milliseconds even when small, and the gaps are invalidated
# anyway (TimescaleDB records one [earliest, latest] range per transaction).
MAX_REFRESH_WINDOWS = 8

# rebuild() works through its range in slices of this many seconds (a multiple of
# every rollup width), so each statement aggregates a bounded amount of raw data and
# concurrent ingest waits on a slice, not on the whole rebuild.
REBUILD_SLICE_S = 86400


# The columns of the rows that the rollups read, passed to the upkeep as one array
# each (the parameters $1... of the finest rollup's statement), with their SQL types.
_SOURCE = (
    ("time", "timestamptz"),
    ("app_id", "integer"),
    *DIMENSION_TYPES.items(),
    ("response_us", "bigint"),
)
_SOURCE_INDEX = tuple(COLUMNS.index(c) for c, _ in _SOURCE)
# Rollups that another one is built from: their part of the batch is kept in a
# temporary table of the connection until the transaction ends.
_STAGED = tuple(r for r in ROLLUPS if any(o.built_from == r.relation for o in ROLLUPS))


def _staging(rollup: Rollup) -> str:
    return f"pg_temp.batch_{rollup.relation}"


def _upkeep_sql(rollup: Rollup) -> str:
    """One statement: the batch aggregated into the rollup's keys, upserted in key order.

    Identifiers come only from the declared rollups, never from input. The finest
    rollup aggregates the rows themselves (``unnest`` of the column arrays); a coarser
    one re-aggregates its source rollup's part of the batch, as the hierarchical
    continuous aggregate does. A rollup that others are built from also keeps its part
    of the batch in its staging table for them.
    """
    dims = [*rollup.dimensions]
    keys = rollup.key_columns
    columns = ", ".join([*keys, "calls", "sum_us", "min_us", "max_us"])
    if rollup.built_from == RAW:
        arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_SOURCE, 1))
        names = ", ".join(c for c, _ in _SOURCE)
        source = f"unnest({arrays}) AS b({names})"
        source_time = "time"
        measures = "count(*), sum(response_us)::bigint, min(response_us), max(response_us)"
    else:
        source = _staging(next(r for r in ROLLUPS if r.relation == rollup.built_from))
        source_time = "bucket"
        measures = "sum(calls)::bigint, sum(sum_us)::bigint, min(min_us), max(max_us)"
    # time_bucket of a minute or an hour is aligned to the UNIX epoch (its default
    # origin, 2000-01-03, is a whole number of days after it).
    bucket = f"time_bucket(make_interval(secs => {rollup.width_s}), {source_time})"
    aggregated = f"""
        SELECT app_id, {bucket} AS bucket, {"".join(f"{d}, " for d in dims)}{measures}
        FROM {source}
        GROUP BY app_id, {bucket}{"".join(f", {d}" for d in dims)}
    """
    upsert = f"""
        ON CONFLICT ({", ".join(keys)}) DO UPDATE SET
            calls = r.calls + EXCLUDED.calls,
            sum_us = r.sum_us + EXCLUDED.sum_us,
            min_us = least(r.min_us, EXCLUDED.min_us),
            max_us = greatest(r.max_us, EXCLUDED.max_us)
    """
    order = ", ".join(keys)
    if rollup not in _STAGED:
        return f"""
            INSERT INTO {rollup.relation} AS r ({columns})
            {aggregated}
            ORDER BY {order}
            {upsert}
        """
    return f"""
        WITH batch AS (
            INSERT INTO {_staging(rollup)} ({columns})
            {aggregated}
            RETURNING {columns}
        )
        INSERT INTO {rollup.relation} AS r ({columns})
        SELECT {columns} FROM batch
        ORDER BY {order}
        {upsert}
    """


# Created once per connection and emptied at every commit (gone with a rollback);
# emptied before use too, so nothing but these rows is ever read from them.
_CREATE_STAGING = "; ".join(
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_staging(r).removeprefix('pg_temp.')} "
    f"(LIKE {r.relation}) ON COMMIT DELETE ROWS; DELETE FROM {_staging(r)}"
    for r in _STAGED
)


def _steps() -> list[tuple[str, bool, str]]:
    """The upkeep statements in declaration order as (SQL, takes the arrays, label).

    A rollup built from raw events takes the column arrays as parameters; the ones
    after it need none, so consecutive ones go to the server in one round trip (a
    multi-statement query runs its statements in order).
    """
    steps: list[tuple[str, bool, str]] = []
    for rollup in ROLLUPS:
        sql, raw = _upkeep_sql(rollup), rollup.built_from == RAW
        if steps and not raw and not steps[-1][1]:
            prev_sql, _, prev_label = steps[-1]
            steps[-1] = (f"{prev_sql};{sql}", False, f"{prev_label}, {rollup.relation}")
        else:
            steps.append((sql, raw, f"upsert {rollup.relation}"))
    return steps


_STEPS = _steps()


async def upkeep_in_transaction(conn: asyncpg.Connection, mode: str, rows: Sequence[Row]) -> None:
    """Apache mode: add the rows to every rollup, inside the transaction that stores them.

    The database aggregates the rows: their columns go as arrays to the finest rollup's
    statement, and every rollup's statement upserts its part of the rows sorted by the
    rollup's primary key, rollups in declaration order (each after the one it is built
    from). That is the one lock order of every transaction that writes events
    (``write.store`` and the group writer): rollups in declaration order, and within
    each the keys in primary-key order as the database sorts them (text by its
    collation). Concurrent transactions, in one service process or several, wait for
    each other on shared keys but cannot deadlock.
    """
    if mode != "apache" or not rows:
        return
    columns = list(zip(*rows, strict=True))
    arrays = [columns[i] for i in _SOURCE_INDEX]
    await timed(conn.execute, _CREATE_STAGING, (), "rollup staging tables")
    for sql, raw, label in _STEPS:
        await timed(conn.execute, sql, arrays if raw else (), label)


async def after_commit(conn: asyncpg.Connection, mode: str, rows: Sequence[Row]) -> None:
    """Community mode: refresh the buckets of events that real-time aggregation misses.

    ``conn`` is an ingest connection (``db.unix_us_timestamps``), the one that just
    committed the rows: no second connection is taken for this.
    """
    if mode != "community" or not rows:
        return
    await refresh_behind_threshold(conn, rows)


async def refresh_behind_threshold(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    """Refresh, rollup by rollup (each after its source), the buckets of ``rows`` that
    lie below the rollup's invalidation threshold, clamped to its source's horizon.

    Events at or above the threshold need nothing: real-time aggregation reads them
    now, and whichever refresh later moves the threshold past them materializes them.
    The thresholds are read after the commit, and each again after its source rollup's
    refresh, so a policy run that moves one concurrently cannot slip between. A batch
    whose earliest event is at or above a threshold needs nothing from that rollup.
    """
    # Live traffic lies above every threshold: the earliest event alone shows that, with
    # one read of every threshold, so the per-event work (and reading the horizons) is
    # only done for batches that reach below one.
    earliest = earliest_us(rows)
    first = await _thresholds_us(conn)
    if all(_above(earliest, r, first.get(r.relation)) for r in ROLLUPS):
        return
    times: list[int] | None = None
    horizons: dict[str, float | None] | None = None
    for rollup in ROLLUPS:
        threshold = (await _thresholds_us(conn, [rollup])).get(rollup.relation)
        if threshold is None or _above(earliest, rollup, threshold):
            continue
        width = rollup.width_s * _US
        if times is None:
            times = sorted({row[0] for row in rows})
        if horizons is None:
            horizons = await retention.horizons(conn)
        buckets = sorted({us - us % width for us in times if us - us % width < threshold})
        for start, end in _windows(buckets, width, MAX_REFRESH_WINDOWS):
            window = _clamp(start, end, width, horizons.get(rollup.built_from))
            if window:
                await _refresh(conn, rollup, window[0] // _US, window[1] // _US)


def _above(earliest_us: int, rollup: Rollup, threshold: int | None) -> bool:
    """Whether events from ``earliest_us`` on need no refresh of ``rollup``: its
    bucket starts at or above the threshold, or nothing is materialized yet."""
    width = rollup.width_s * _US
    return threshold is None or earliest_us - earliest_us % width >= threshold


# Per continuous aggregate, in UNIX microseconds: its invalidation threshold, and for
# one built on another aggregate, that source's own invalidation threshold. No row
# before the aggregate's first refresh (then nothing is materialized and real-time
# aggregation reads all).
#
# Changes below the threshold are logged as invalidations and stay unmaterialized
# until a refresh covers them. The watermark real-time queries start from (the end of
# the last materialized bucket) is normally at or below it; taking the greater of the
# two keeps "below it" the safe test for "needs a refresh" either way.
#
# An aggregate built on another is refreshed from the source's view, real-time part
# included. A bucket of it that reaches above the source's threshold must not be
# refreshed: events arriving there later change only what the source reads in real
# time, which logs no invalidation anywhere, so the bucket would stay as first
# materialized. The thresholds are kept per source hypertable, so aggregates built on
# the same source share one: events_1m_app's refreshes (end_offset 30 minutes) move
# the one events_1h reads into the current hour, which events_1m (end_offset 15
# minutes) has not materialized whole. Such buckets are served by real-time
# aggregation, and their later refreshes (policies, rebuild) come after the source's.
_THRESHOLDS = """
    SELECT ca.user_view_name::text AS relation,
           greatest(t.watermark, _timescaledb_functions.cagg_watermark(ca.mat_hypertable_id))
               AS us,
           st.watermark AS source_us
    FROM _timescaledb_catalog.continuous_agg ca
    JOIN _timescaledb_catalog.continuous_aggs_invalidation_threshold t
        ON t.hypertable_id = ca.raw_hypertable_id
    LEFT JOIN _timescaledb_catalog.continuous_agg src
        ON src.mat_hypertable_id = ca.parent_mat_hypertable_id
    LEFT JOIN _timescaledb_catalog.continuous_aggs_invalidation_threshold st
        ON st.hypertable_id = src.raw_hypertable_id
    WHERE ca.user_view_schema = current_schema() AND ca.user_view_name::text = ANY($1::text[])
"""


async def _thresholds_us(
    conn: asyncpg.Connection, rollups: Sequence[Rollup] = ROLLUPS
) -> dict[str, int | None]:
    """Per rollup, the bucket start below which its buckets need a refresh: the
    threshold of ``_THRESHOLDS``, but for a rollup built on another no later than the
    start of its last bucket wholly below the source's threshold (None, no refresh,
    while the source has none). One round trip; a rollup without a threshold is
    missing."""
    names = [r.relation for r in rollups]
    found = await timed(conn.fetch, _THRESHOLDS, (names,), f"thresholds {', '.join(names)}")
    declared = {r.relation: r for r in rollups}
    out: dict[str, int | None] = {}
    for r in found:
        us: int | None = None if r["us"] is None else int(r["us"])
        rollup = declared[r["relation"]]
        if rollup.built_from != RAW and us is not None:
            source = r["source_us"]
            if source is None:
                us = None
            else:
                width = rollup.width_s * _US
                us = min(us, int(source) - int(source) % width)
        out[r["relation"]] = us
    return out


def _windows(buckets: Sequence[int], width: int, limit: int) -> list[tuple[int, int]]:
    """Sorted bucket starts as at most ``limit`` [start, end) windows, joining
    adjacent buckets and then closing the smallest gaps."""
    if not buckets:
        return []
    runs: list[list[int]] = []
    for b in buckets:
        if runs and runs[-1][1] == b:
            runs[-1][1] = b + width
        else:
            runs.append([b, b + width])
    if len(runs) > limit:
        gaps = sorted(range(len(runs) - 1), key=lambda i: runs[i + 1][0] - runs[i][1])
        close = set(gaps[: len(runs) - limit])
        merged: list[list[int]] = [runs[0]]
        for i in range(1, len(runs)):
            if i - 1 in close:
                merged[-1][1] = runs[i][1]
            else:
                merged.append(runs[i])
        runs = merged
    return [(s, e) for s, e in runs]


def _clamp(start: int, end: int, width: int, horizon: float | None) -> tuple[int, int] | None:
    """The window's whole buckets from the horizon on; None if nothing is left."""
    if horizon is not None:
        floor = math.ceil(horizon * _US / width) * width
        start = max(start, floor)
    return (start, end) if start < end else None


async def _refresh(conn: asyncpg.Connection, rollup: Rollup, start_s: int, end_s: int) -> None:
    """Refresh ``[start_s, end_s)`` (whole UNIX seconds, bucket boundaries). The bounds
    go as integers, so this works on a connection with either timestamp codec."""
    await timed(
        conn.execute,
        "CALL refresh_continuous_aggregate($1, to_timestamp($2::bigint), to_timestamp($3::bigint))",
        (rollup.relation, start_s, end_s),
        f"refresh {rollup.relation}",
    )


@asynccontextmanager
async def _conn(target: Database | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(target, Database):
        async with target.connection() as conn:
            yield conn
    else:
        yield target


async def rebuild(
    target: Database | asyncpg.Connection, mode: str, start: float, end: float
) -> dict[str, tuple[int, int]]:
    """Recompute every rollup from its source for ``[start, end)`` (UNIX seconds).

    For bulk loads that bypass the ingest path (COPY straight into ``events``) and for
    repairs. The range is widened to whole buckets of the coarsest rollup; each rollup
    is then clamped to its source's retention horizon, so nothing is recomputed from
    data that is gone. Returns, per rollup, the range actually rebuilt in UNIX seconds
    (start == end: nothing).

    Apache: per day, in one transaction that first locks every rollup table against
    the ingest path's upserts (batches wait, then add to the rebuilt rows), delete the
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
    coarsest = max(r.width_s for r in ROLLUPS)
    lo = math.floor(start / coarsest) * coarsest
    hi = math.ceil(end / coarsest) * coarsest
    async with _conn(target) as conn:
        horizons = await retention.horizons(conn)
        now = float(await conn.fetchval("SELECT extract(epoch FROM now())"))
        windows: dict[str, tuple[int, int]] = {}
        for rollup in ROLLUPS:
            r_lo, r_hi = lo, hi
            horizon = horizons.get(rollup.built_from)
            if horizon is not None:
                r_lo = max(r_lo, math.ceil(horizon / coarsest) * coarsest)
            if mode == "community":
                r_hi = min(r_hi, math.floor(now / rollup.width_s) * rollup.width_s)
            windows[rollup.relation] = (r_lo, max(r_lo, r_hi))
        first = min(w[0] for w in windows.values())
        last = max(w[1] for w in windows.values())
        slices = [(s, min(s + REBUILD_SLICE_S, last)) for s in range(first, last, REBUILD_SLICE_S)]
        if mode == "apache":
            for s, e in slices:
                await _rebuild_tables(conn, s, e, windows)
        else:
            await conn.execute("SET statement_timeout = 0")
            try:
                for s, e in slices:
                    for rollup, (a, b) in _parts(s, e, windows):
                        await _refresh(conn, rollup, a, b)
            finally:
                try:
                    await conn.execute("RESET statement_timeout")
                except BaseException:
                    # Pools hand connections on without resetting them (db.create_pool):
                    # one without its statement timeout must not go back.
                    conn.terminate()
                    raise
    log.info("rollups rebuilt", extra={"windows": windows, "mode": mode})
    return windows


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


def _rebuild_sql(rollup: Rollup) -> str:
    # A rollup per app alone has no dimension columns.
    dims = "".join(f"{d}, " for d in rollup.dimensions)
    if rollup.built_from == RAW:
        source_time, measures = (
            "time",
            "count(*), sum(response_us)::bigint, min(response_us), max(response_us)",
        )
    else:
        source_time, measures = (
            "bucket",
            "sum(calls)::bigint, sum(sum_us)::bigint, min(min_us), max(max_us)",
        )
    bucket = f"time_bucket(make_interval(secs => {rollup.width_s}), {source_time})"
    return f"""
        INSERT INTO {rollup.relation}
            (bucket, app_id, {dims}calls, sum_us, min_us, max_us)
        SELECT {bucket}, app_id, {dims}{measures}
        FROM {rollup.built_from}
        WHERE {source_time} >= to_timestamp($1::bigint) AND {source_time} < to_timestamp($2::bigint)
        GROUP BY {bucket}, app_id{"".join(f", {d}" for d in rollup.dimensions)}
    """


_REBUILD = {r.relation: _rebuild_sql(r) for r in ROLLUPS}


async def _rebuild_tables(
    conn: asyncpg.Connection, start_s: int, end_s: int, windows: dict[str, tuple[int, int]]
) -> None:
    relations = ", ".join(r.relation for r in ROLLUPS)
    async with conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 0")
        # SHARE ROW EXCLUSIVE conflicts with the upserts' ROW EXCLUSIVE: batches that
        # already upserted have committed once we hold it, so the aggregate below sees
        # their events; batches after it wait and add to the rebuilt rows. Ingest
        # locks events before the rollups and this never writes events: no deadlock.
        await conn.execute(f"LOCK TABLE {relations} IN SHARE ROW EXCLUSIVE MODE")
        for rollup, (a, b) in _parts(start_s, end_s, windows):
            # Whole seconds as integers: right on a connection with either timestamp codec.
            bounds = (a, b)
            await timed(
                conn.execute,
                f"DELETE FROM {rollup.relation} "
                "WHERE bucket >= to_timestamp($1::bigint) AND bucket < to_timestamp($2::bigint)",
                bounds,
                f"rebuild delete {rollup.relation}",
            )
            await timed(
                conn.execute, _REBUILD[rollup.relation], bounds, f"rebuild {rollup.relation}"
            )
