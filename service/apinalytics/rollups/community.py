"""Community edition: refreshing the pending stretches into the continuous aggregates.

The rollups are continuous aggregates with real-time aggregation, so events above an
aggregate's invalidation threshold are read from its source at query time. Events
below it (back-dated, or late by more than the policy's end_offset) stay in
TimescaleDB's invalidation log until a refresh covers them. The materializer
(``materializer.py``) hands ``refresh_stretches`` the coalesced pending stretches of
every app (a refresh re-materializes a window for all apps at once); it refreshes the
buckets of them that lie below each aggregate's threshold, each rollup after the one
it is built from (minute, hour, the narrow hour ones, the per-app minute one;
refreshes do not cascade), and never a bucket that reaches above its source's own
threshold. Refresh windows never reach below the source's retention horizon: a
refresh over a range whose source chunks were dropped deletes the rollup rows there.

``refresh_continuous_aggregate`` cannot run inside a transaction block: each call is
its own statement on a connection outside any transaction.

See docs/rollups.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import asyncpg

from .. import retention
from ..db import timed
from .declared import RAW, ROLLUPS, Rollup

_US = 1_000_000

# The pending stretches of one run are refreshed in at most this many windows: the
# smallest gaps between them are closed first. Each refresh costs a few milliseconds
# even when small, and its cost grows with every app's data in the window, so a few
# wide windows beat many narrow ones (TimescaleDB only re-materializes the ranges its
# invalidation log names inside a window).
MAX_REFRESH_WINDOWS = 8


async def refresh_stretches(conn: asyncpg.Connection, stretches: Sequence[tuple[int, int]]) -> int:
    """Refresh, rollup by rollup (each after its source), the buckets of ``stretches``
    (sorted, disjoint ``[start, end)`` in UNIX seconds, whole hours) that lie below the
    rollup's invalidation threshold, clamped to its source's horizon. Returns the
    number of refresh calls made.

    Buckets at or above the threshold need nothing: real-time aggregation reads them
    now, and whichever refresh later moves the threshold past them materializes them.
    Each rollup's threshold is read after its source rollup's refresh, so a policy run
    that moves one concurrently cannot slip between.
    """
    if not stretches:
        return 0
    calls = 0
    horizons: dict[str, float | None] | None = None
    for rollup in ROLLUPS:
        threshold = (await _thresholds_us(conn, [rollup])).get(rollup.relation)
        if threshold is None:
            continue
        width = rollup.width_s * _US
        # Buckets whose start lies below the threshold, whole, and never the current
        # bucket: an hour aggregate on raw events (the histograms) would move the raw
        # threshold it shares with events_1m past the clock; the current bucket lies
        # above every aggregate's watermark, read in real time.
        below = -(-threshold // width) * width
        current = int(time.time() * _US) // width * width
        for start_s, end_s in stretches:
            start, end = start_s * _US, min(end_s * _US, below, current)
            if start >= end:
                continue
            if horizons is None:
                horizons = await retention.horizons(conn)
            window = _clamp(start, end, width, horizons.get(rollup.built_from))
            if window:
                await refresh(conn, rollup, window[0] // _US, window[1] // _US)
                calls += 1
    return calls


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


def _clamp(start: int, end: int, width: int, horizon: float | None) -> tuple[int, int] | None:
    """The window's whole buckets from the horizon on; None if nothing is left."""
    if horizon is not None:
        floor = math.ceil(horizon * _US / width) * width
        start = max(start, floor)
    return (start, end) if start < end else None


async def refresh(conn: asyncpg.Connection, rollup: Rollup, start_s: int, end_s: int) -> None:
    """Refresh ``[start_s, end_s)`` (whole UNIX seconds, bucket boundaries). The bounds
    go as integers, so this works on a connection with either timestamp codec."""
    await timed(
        conn.execute,
        "CALL refresh_continuous_aggregate($1, to_timestamp($2::bigint), to_timestamp($3::bigint))",
        (rollup.relation, start_s, end_s),
        f"refresh {rollup.relation}",
    )
