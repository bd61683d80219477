"""Pending stretches: where the rollups have not caught up with the raw events yet.

The ingest transaction records, next to its COPY, one row of ``rollup_pending`` per
app and touched stretch of time (``record``); the materializer
(``rollups/materializer.py``) brings the rollups up to date there and deletes exactly
the rows it read; until then the query planner reads those stretches of that app from
raw events (``query/execute.py`` reads them, ``query/planner.py`` honours them).

Stretches are whole buckets of the coarsest rollup (an hour), so a pending stretch
is whole buckets of every rollup: the planner cuts it out of the range, and the
materializer re-aggregates whole buckets. A batch of live traffic is one row; a
batch scattered over days is at most ``MAX_STRETCHES`` rows per app (the smallest
gaps between its touched hours are closed first), never one per event.

See docs/rollups.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from ..db import timed
from .declared import ROLLUPS

_US = 1_000_000

# Pending stretches are aligned to the coarsest rollup's buckets.
WIDTH_S = max(r.width_s for r in ROLLUPS)
assert all(WIDTH_S % r.width_s == 0 for r in ROLLUPS), "every width divides the coarsest"

# At most this many rows per app and batch.
MAX_STRETCHES = 8

# Whole UNIX seconds as integers: right on a connection with either timestamp codec
# (the ingest pool's decode timestamps as ints, db.unix_us_timestamps).
RECORD = """
    INSERT INTO rollup_pending (app_id, start, "end")
    SELECT a, to_timestamp(s), to_timestamp(e)
    FROM unnest($1::integer[], $2::bigint[], $3::bigint[]) AS p(a, s, e)
"""


def stretches(times_us: Iterable[int], limit: int = MAX_STRETCHES) -> list[tuple[int, int]]:
    """The touched buckets of ``times_us`` (UNIX microseconds) as at most ``limit``
    ``[start, end)`` stretches in UNIX seconds: adjacent buckets joined, then the
    smallest gaps closed."""
    width = WIDTH_S * _US
    buckets = sorted({t - t % width for t in times_us})
    return [(s // _US, e // _US) for s, e in coalesce(buckets, width, limit)]


def coalesce(buckets: Sequence[int], width: int, limit: int) -> list[tuple[int, int]]:
    """Sorted bucket starts as at most ``limit`` [start, end) windows, joining
    adjacent buckets and then closing the smallest gaps."""
    return join([(b, b + width) for b in buckets], limit)


def join(ranges: Iterable[tuple[int, int]], limit: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` ranges as sorted disjoint ones, overlapping and adjacent ones
    joined; with ``limit``, then the smallest gaps closed until at most that many."""
    runs: list[list[int]] = []
    for s, e in sorted(ranges):
        if runs and s <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], e)
        else:
            runs.append([s, e])
    if limit is not None and len(runs) > limit:
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


async def record(conn: asyncpg.Connection, per_app: dict[int, list[int]]) -> None:
    """Insert the pending stretches of ``per_app`` (app id -> its rows' times, UNIX
    microseconds), in the caller's transaction: they commit with the events or not at
    all."""
    apps: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for app in sorted(per_app):
        for s, e in stretches(per_app[app]):
            apps.append(app)
            starts.append(s)
            ends.append(e)
    if apps:
        await timed(conn.execute, RECORD, (apps, starts, ends), "pending stretches")
