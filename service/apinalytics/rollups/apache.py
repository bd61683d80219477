"""Apache edition: the rollups are hypertables the ingest transaction keeps up to date.

``upkeep`` runs inside the transaction storing the events: the database aggregates the
rows per rollup key and upserts them, one statement per rollup, keys in primary-key
order. Every transaction takes its row locks in that one global order (rollups in
declaration order, keys sorted within each), so concurrent transactions wait for each
other but cannot deadlock. The SQL derives from the declared rollups
(``declared.ROLLUPS``) and measures (``measures.MEASURES``).

See docs/rollups.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .. import schema
from ..db import timed
from ..ingest.decode import Row
from ..measures import VALUE
from .declared import DIMENSIONS, RAW, ROLLUPS, Rollup

# The columns of the rows that the rollups read, passed to the upkeep as one array
# each (the parameters $1... of the finest rollup's statement), with their SQL types.
_SOURCE = tuple((c, schema.BY_NAME[c].sql_type) for c in ("time", "app_id", *DIMENSIONS, VALUE))
_SOURCE_INDEX = tuple(schema.COLUMNS.index(c) for c, _ in _SOURCE)
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
    dims = [*rollup.group_exprs()]
    keys = rollup.key_columns
    measured = rollup.measures
    columns = ", ".join([*keys, *(m.column for m in measured)])
    if rollup.built_from == RAW:
        arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_SOURCE, 1))
        names = ", ".join(c for c, _ in _SOURCE)
        source = f"unnest({arrays}) AS b({names})"
        source_time = "time"
        measures = ", ".join(m.raw_stored() for m in measured)
    else:
        source = _staging(next(r for r in ROLLUPS if r.relation == rollup.built_from))
        source_time = "bucket"
        measures = ", ".join(m.merged_stored() for m in measured)
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
            {", ".join(f"{m.column} = {m.combine()}" for m in measured)}
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


async def upkeep(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    """Add the rows to every rollup, inside the transaction that stores them.

    The database aggregates the rows: their columns go as arrays to the finest rollup's
    statement, and every rollup's statement upserts its part of the rows sorted by the
    rollup's primary key, rollups in declaration order (each after the one it is built
    from). That is the one lock order of every transaction that writes events
    (``write.store`` and the group writer): rollups in declaration order, and within
    each the keys in primary-key order as the database sorts them (text by its
    collation). Concurrent transactions, in one service process or several, wait for
    each other on shared keys but cannot deadlock.
    """
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    arrays = [columns[i] for i in _SOURCE_INDEX]
    await timed(conn.execute, _CREATE_STAGING, (), "rollup staging tables")
    for sql, raw, label in _STEPS:
        await timed(conn.execute, sql, arrays if raw else (), label)
