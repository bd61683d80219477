"""The materializer: brings the rollups up to date where batches left stretches pending.

The ingest transaction records, per app, the stretches of time its events touched
(``pending.record``, table ``rollup_pending``). ``catch_up_once`` takes the oldest
pending rows (``ROWS_PER_RUN``) and every other pending row of the same stretches,
brings the rollups up to date over those stretches and deletes exactly the rows it
read, by id:

- Apache: in ONE transaction, per app and coalesced stretch, each rollup in declared
  order deletes the app's rows of the stretch and re-aggregates them from its source
  (minute from raw events, hour from the minute rollup, ...: ``rebuild.rebuild_sql``),
  then the pending rows read are deleted.
- Community: the stretches of every app, coalesced into a few windows, are refreshed
  into the continuous aggregates (``community.refresh_stretches``; a refresh cannot
  run in a transaction block), then the pending rows read are deleted.

One materializer runs per database at a time: a run holds a session advisory lock
(``LOCK_ID``); a run that finds it taken does nothing (``Run.ran`` False), so every
service process and instance runs its own loop (``background.Materializer``) and they
take turns.
``apinalytics rollups catch-up`` runs until nothing is pending.

Why a batch committed meanwhile is never lost from view. A pending row is deleted
only by the run that read it, and the query planner reads a stretch from raw events
as long as a pending row covers it. Let batch B commit its events E and its pending
row P in one transaction, and let run R read the pending rows with snapshot S.

- B committed before S: R reads P. Everything R does afterwards takes later snapshots
  (READ COMMITTED: each statement its own; each refresh its own transactions), all of
  which see E. So R's re-aggregation (Apache) or refresh (Community: E's invalidation
  is logged in B's own transaction) of P's stretch includes E, and the rollup rows are
  written before (Community) or with (Apache, same COMMIT) the deletion of P. A query
  that no longer sees P sees those rollup rows.
- B committed after S: R does not read P and deletes rows by the ids it read only, so
  P survives R whatever R's re-aggregation happened to see of E. The planner keeps
  reading P's stretch from raw events, and the next run recomputes the stretch whole
  (delete and re-aggregate, or refresh: idempotent).

A run killed midway (backend terminated, database restart) deletes nothing it has not
materialized: Apache's transaction rolls back whole; Community's refreshes that
completed stay (a later refresh of the same window finds nothing invalidated) and the
pending rows stay until a run completes. ``tests/upkeep`` proves both.

See docs/rollups.md ("Rollup upkeep").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from ..db import timed
from ..edition import Edition
from . import community, pending
from .declared import ROLLUPS
from .rebuild import delete_sql, rebuild_sql

log = logging.getLogger(__name__)

# The session advisory lock a run holds ("APNR"); any constant shared by every process.
LOCK_ID = 0x41504E52

# Pending rows taken per run: bounds one run's transaction (Apache) and lets the loop
# pace itself; a backlog is worked off in consecutive runs, oldest rows first.
ROWS_PER_RUN = 500

# What a materializer connection is called in pg_stat_activity.
APPLICATION_NAME = "apinalytics materializer"

_DELETE_SQL = {r.relation: delete_sql(r, per_app=True) for r in ROLLUPS}
_INSERT_SQL = {r.relation: rebuild_sql(r, per_app=True) for r in ROLLUPS}

# The oldest $1 pending rows, and every other pending row of the same app and stretch:
# live traffic leaves a row per batch, all of one app's current hour, and the run
# materializes that stretch once whatever the rows' number (it re-reads the hour
# whole). Taking only the oldest $1 left the rest of them for runs that re-aggregated
# the same hour again, one after the other. ``is_full``: the oldest $1 were as many as
# asked for (more may be pending).
_READ = """
    WITH oldest AS (
        SELECT app_id, start, "end" FROM rollup_pending ORDER BY id LIMIT $1
    )
    SELECT p.id, p.app_id,
           extract(epoch FROM p.start)::bigint AS s,
           extract(epoch FROM p."end")::bigint AS e,
           (SELECT count(*) FROM oldest) = $1 AS is_full
    FROM rollup_pending p
    WHERE (p.app_id, p.start, p."end") IN (SELECT DISTINCT app_id, start, "end" FROM oldest)
    ORDER BY p.id
"""
_DONE = "DELETE FROM rollup_pending WHERE id = ANY($1::bigint[])"
PENDING = "SELECT count(*) FROM rollup_pending"
# Per relation, the time before which its data was (or may have been) dropped.
_DROPPED = "SELECT relation, extract(epoch FROM dropped_before)::float8 AS dropped FROM retention"

_STATUS = f"""
    SELECT count(*) AS ranges,
           extract(epoch FROM now() - min(created_at))::float8 AS oldest_s,
           (SELECT l.pid FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                SELECT oid FROM pg_database WHERE datname = current_database())
              AND ((l.classid::bigint << 32) | l.objid::bigint) = {LOCK_ID}
            LIMIT 1) AS running_pid
    FROM rollup_pending
"""


@dataclass(frozen=True)
class Run:
    """What one run did: ``ran`` False when another materializer held the lock.
    ``hours``: the hours of rollups brought up to date (per app on Apache; on
    Community a refreshed hour is every app's), ``apps``: the apps whose pending rows
    it read."""

    ran: bool
    rows: int = 0
    stretches: int = 0
    hours: int = 0
    apps: frozenset[int] = frozenset()
    # More rows may be pending than the run took (its oldest ``limit`` were full).
    more: bool = False

    @property
    def outcome(self) -> str:
        if not self.ran:
            return "busy"
        return "materialized" if self.rows else "idle"


@dataclass(frozen=True)
class Status:
    ranges: int
    oldest_s: float | None
    # The backend running a materializer now, if any.
    running_pid: int | None


async def status(conn: asyncpg.Connection) -> Status:
    row = await timed(conn.fetchrow, _STATUS, (), "pending status")
    assert row is not None
    return Status(row["ranges"], row["oldest_s"], row["running_pid"])


async def catch_up_once(
    conn: asyncpg.Connection, edition: Edition, *, limit: int = ROWS_PER_RUN
) -> Run:
    """One run over the oldest ``limit`` pending rows (and the other rows of their
    stretches), under the advisory lock.

    ``conn`` is a connection of its own (not a pooled one: the lock is the session's),
    outside any transaction; either timestamp codec.
    """
    if not await timed(conn.fetchval, "SELECT pg_try_advisory_lock($1)", (LOCK_ID,), "lock"):
        return Run(ran=False)
    try:
        if edition.continuous_aggregates:
            return await _refresh(conn, limit)
        return await _reaggregate(conn, limit)
    finally:
        try:
            await timed(conn.execute, "SELECT pg_advisory_unlock($1)", (LOCK_ID,), "unlock")
        except BaseException:
            # A connection that may still hold the lock must not live on.
            conn.terminate()
            raise


async def catch_up(conn: asyncpg.Connection, edition: Edition, *, pause_s: float = 0.2) -> int:
    """Run until nothing is pending; waits its turn while another materializer runs.
    Returns the pending rows this call materialized."""
    done = 0
    while True:
        run = await catch_up_once(conn, edition)
        done += run.rows
        if run.ran and run.rows == 0:
            return done
        if not run.ran:
            await asyncio.sleep(pause_s)


def _per_app(rows: list[asyncpg.Record]) -> dict[int, list[tuple[int, int]]]:
    found: dict[int, list[tuple[int, int]]] = {}
    for r in rows:
        found.setdefault(r["app_id"], []).append((r["s"], r["e"]))
    return {app: pending.join(ranges) for app, ranges in sorted(found.items())}


async def _reaggregate(conn: asyncpg.Connection, limit: int) -> Run:
    """Apache: the pending rows' stretches deleted and re-aggregated per app, rollups in
    declared order, and the rows deleted, in one transaction."""
    async with conn.transaction():
        rows = await timed(conn.fetch, _READ, (limit,), "pending read")
        if not rows:
            return Run(ran=True)
        per_app = _per_app(rows)
        # Share-lock the apps as ingest does: deleting an app waits for this run (or
        # this run finds it gone, its pending rows deleted with it), so no rollup row
        # of a deleted app is written back.
        live = await timed(
            conn.fetch,
            "SELECT id FROM apps WHERE id = ANY($1::integer[]) ORDER BY id FOR SHARE",
            (list(per_app),),
            "pending apps",
        )
        dropped = {
            r["relation"]: r["dropped"]
            for r in await timed(conn.fetch, _DROPPED, (), "dropped before")
        }
        stretches = hours = 0
        for r in live:
            app = r["id"]
            for start, end in per_app[app]:
                stretches += 1
                hours += (end - start) // pending.WIDTH_S
                for rollup in ROLLUPS:
                    lo = start
                    gone = dropped.get(rollup.built_from)
                    if gone is not None:
                        # Never re-aggregate from a source's dropped data: that would
                        # delete the rollup rows kept longer than it. Data merely older
                        # than the retention is still there until `retention apply`
                        # drops it (and then records dropped_before).
                        lo = max(lo, -int(-gone // pending.WIDTH_S) * pending.WIDTH_S)
                    if lo >= end:
                        continue
                    args = (lo, end, app)
                    await timed(conn.execute, _DELETE_SQL[rollup.relation], args, "upkeep delete")
                    await timed(conn.execute, _INSERT_SQL[rollup.relation], args, "upkeep insert")
        await timed(conn.execute, _DONE, ([r["id"] for r in rows],), "pending done")
    log.debug("rollups materialized", extra={"pending": len(rows), "stretches": stretches})
    return Run(
        ran=True,
        rows=len(rows),
        stretches=stretches,
        hours=hours,
        apps=frozenset(per_app),
        more=rows[0]["is_full"],
    )


async def _refresh(conn: asyncpg.Connection, limit: int) -> Run:
    """Community: every app's stretches coalesced into a few windows and refreshed,
    then the rows read deleted (after the refreshes have committed)."""
    rows = await timed(conn.fetch, _READ, (limit,), "pending read")
    if not rows:
        return Run(ran=True)
    windows = pending.join(((r["s"], r["e"]) for r in rows), community.MAX_REFRESH_WINDOWS)
    await community.refresh_stretches(conn, windows)
    await timed(conn.execute, _DONE, ([r["id"] for r in rows],), "pending done")
    log.debug("rollups refreshed", extra={"pending": len(rows), "windows": len(windows)})
    return Run(
        ran=True,
        rows=len(rows),
        stretches=len(windows),
        hours=sum((e - s) // pending.WIDTH_S for s, e in windows),
        apps=frozenset(r["app_id"] for r in rows),
        more=rows[0]["is_full"],
    )
