"""Retention of raw events and rollups: settings, the rules that keep them safe,
the horizons the query planner honours, and dropping what has expired.

What is kept is stored per relation in the ``retention`` table (migration 0004). The
retention in force decides what queries may read, whether or not the expired chunks
have been dropped yet: a relation's horizon is ``now - keep`` (or the time before
which data was already dropped, if later), so answers never depend on when cron or a
policy last ran.

Apache edition: ``drop_expired`` drops the chunks (``apinalytics retention apply``,
from cron). Community edition: TimescaleDB retention policies drop them; ``set``
keeps the policies in line with the table and ``run_policies`` runs them at once.

The trap the rules guard against (TimescaleDB 2.19, continuous aggregates): dropping
chunks of a relation a continuous aggregate is built on records the dropped range as
changed, and any later refresh over that range recomputes the aggregate from the
nothing that is left, deleting its rows. So every refresh window, including the
refreshes the ingest path runs for back-dated events, must stay inside the retention
of the relation it reads from.

Over 300 lines: the rules, the horizons and the operations that drop chunks and
replace policies are one reason to change (what is kept, and how safely); the CLI
around them is ``retention_cli.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

import asyncpg

from . import db
from .edition import Edition
from .rollups.declared import RAW, ROLLUPS

RELATIONS: tuple[str, ...] = (RAW, *(r.relation for r in ROLLUPS))
# The option of `apinalytics retention set` for each relation, named in refusals: one
# per declared rollup width. --minute sets events_1m and events_1m_app alike, --hour
# events_1h and the narrow hour rollups built from it: each answers part of what the
# first of its width answers, at the same granularity, so they are kept as long.
FLAGS = {RAW: "--raw", **{r.relation: f"--{r.width_name}" for r in ROLLUPS}}
# The time column of each relation (identifiers only from this declared table).
TIME_COLUMN = {RAW: "time", **{r.relation: "bucket" for r in ROLLUPS}}

DAY = 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY, "y": 365 * DAY}
_DURATION = re.compile(r"^([0-9]{1,9})([smhdwy])\Z")
FOREVER = ("forever", "none", "off")


class UnsafeRetention(Exception):
    """A retention setting that would lose data or answers; one sentence per reason."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(" ".join(reasons))
        self.reasons = reasons


def parse_duration(text: str) -> int | None:
    """``30d``, ``12h``, ``5y`` (365 days), ... in seconds; ``forever`` is None."""
    t = text.strip().lower()
    if t in FOREVER:
        return None
    m = _DURATION.match(t)
    if not m or int(m[1]) == 0:
        raise ValueError(
            f"{text!r} is not a duration: use a positive number with a unit "
            "s, m, h, d, w or y (365 days), e.g. 30d, or 'forever'"
        )
    return int(m[1]) * _UNITS[m[2]]


def format_duration(seconds: int | None) -> str:
    """The largest unit that says it exactly: 5y, 180d, 36h, 90s; None is forever."""
    if seconds is None:
        return "forever"
    for unit in ("y", "w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def _days_up(seconds: int) -> str:
    """A whole number of days at least ``seconds`` long, for suggestions."""
    return f"{-(-seconds // DAY)}d"


def horizon_sql(table: str) -> str:
    """A relation's horizon from its ``retention`` row (aliased ``table``), in UNIX
    seconds: ``now - keep``, or the time before which data was already dropped, if
    later; NULL when kept forever and nothing was dropped."""
    return (
        f"extract(epoch FROM greatest({table}.dropped_before, "
        f"now() - make_interval(secs => {table}.keep_s)))::float8"
    )


@dataclass(frozen=True)
class Rules:
    """What the safety rules need to know besides the retention itself."""

    mode: Edition
    # Community: per rollup, how far back its refresh policy reaches (start_offset, s);
    # None means it has no start, i.e. refreshes from the beginning of time.
    refresh_windows: Mapping[str, int | None]


def refusals(keep: Mapping[str, int | None], rules: Rules) -> list[str]:
    """Why this retention would lose data or exact answers; empty when it is safe.

    1. A finer rollup is never kept longer than a coarser one: the coarser one answers
       everything the finer one does at its own granularity, and outliving it buys
       nothing but storage (on the Community edition the hour rollup is refreshed
       from the minute one, so it must outlive it). Rollups of one width that one
       option sets (events_1m and events_1m_app, ``--minute``; events_1h and the narrow
       hour rollups, ``--hour``) are compared once, through the first of them
       declared.
    2. Community edition: each rollup's refresh policy reaches back ``start_offset``;
       the relation it reads must be kept longer than that plus one bucket (windows
       are widened to whole buckets).

    Events older than the raw horizon are refused at ingest (ingest/write.py), so a
    raw retention shorter than the ingest window loses nothing either.
    """
    out: list[str] = []
    per_option = {FLAGS[r.relation]: r for r in reversed(ROLLUPS)}.values()
    for finer, coarser in pairwise(sorted(per_option, key=lambda r: r.width_s)):
        f, c = keep[finer.relation], keep[coarser.relation]
        if c is not None and (f is None or f > c):
            out.append(
                f"{finer.relation} would be kept longer ({format_duration(f)}) than "
                f"{coarser.relation} ({format_duration(c)}), which answers all it does: "
                f"raise {FLAGS[coarser.relation]} to at least {format_duration(f)} or lower "
                f"{FLAGS[finer.relation]} to at most {format_duration(c)}."
            )
    if not rules.mode.continuous_aggregates:
        return out
    for rollup in ROLLUPS:
        source = rollup.built_from
        kept = keep[source]
        if kept is None:
            continue
        window = rules.refresh_windows.get(rollup.relation)
        if rollup.relation in rules.refresh_windows and window is None:
            out.append(
                f"The {rollup.relation} refresh policy has no start_offset, so it refreshes "
                f"from the beginning of time and would delete {rollup.relation} rows once "
                f"{source} is dropped: give that policy a start_offset shorter than "
                f"{FLAGS[source]} {format_duration(kept)}, or set {FLAGS[source]} forever."
            )
        elif window is not None and kept < window + rollup.width_s:
            out.append(
                f"{FLAGS[source]} {format_duration(kept)} is shorter than the {rollup.relation} "
                f"refresh window ({format_duration(window)} plus one {format_duration(rollup.width_s)} "
                f"bucket): a refresh would read {source} data that is gone and delete "
                f"{rollup.relation} rows; set {FLAGS[source]} to at least "
                f"{_days_up(window + rollup.width_s)}."
            )
    return out


async def horizons(conn: asyncpg.Connection) -> dict[str, float | None]:
    """Per relation, the UNIX time from which its data is complete (None: since always).

    The planner never reads a relation before its horizon. One read of a table of a
    few rows (one per relation): it runs on every query.
    """
    rows = await db.fetch(
        conn,
        "horizons",
        f"SELECT relation, {horizon_sql('r')} AS horizon FROM retention r",
    )
    return {r["relation"]: r["horizon"] for r in rows}


async def retention_in_force(conn: asyncpg.Connection) -> dict[str, int | None]:
    rows = await db.fetch(conn, "retention in force", "SELECT relation, keep_s FROM retention")
    found = {r["relation"]: r["keep_s"] for r in rows}
    return {rel: found.get(rel) for rel in RELATIONS}


async def refresh_windows(conn: asyncpg.Connection) -> dict[str, int | None]:
    """Community: each continuous aggregate's refresh policy start_offset, in seconds."""
    rows = await db.fetch(
        conn,
        "refresh windows",
        """
        SELECT ca.view_name,
               extract(epoch FROM (j.config ->> 'start_offset')::interval)::bigint AS start_s
        FROM timescaledb_information.jobs j
        JOIN timescaledb_information.continuous_aggregates ca
          ON ca.materialization_hypertable_schema = j.hypertable_schema
         AND ca.materialization_hypertable_name = j.hypertable_name
        WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
        """,
    )
    return {r["view_name"]: r["start_s"] for r in rows}


async def hypertables(conn: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    """Relation -> (schema, name) of the hypertable holding its chunks."""
    rows = await db.fetch(
        conn,
        "hypertables of relations",
        """
        SELECT r.rel,
               coalesce(ca.materialization_hypertable_schema, h.hypertable_schema) AS s,
               coalesce(ca.materialization_hypertable_name, h.hypertable_name) AS n
        FROM unnest($1::text[]) AS r(rel)
        LEFT JOIN timescaledb_information.continuous_aggregates ca
          ON ca.view_name = r.rel AND ca.view_schema = current_schema()
        LEFT JOIN timescaledb_information.hypertables h
          ON h.hypertable_name = r.rel AND h.hypertable_schema = current_schema()
        """,
        list(RELATIONS),
    )
    return {r["rel"]: (r["s"], r["n"]) for r in rows if r["n"] is not None}


@dataclass(frozen=True)
class Chunk:
    relation: str
    name: str
    start: datetime
    end: datetime
    # On disk, indexes and TOAST included; for a compressed chunk, its compressed rows
    # (Community edition: the chunk's own table is then nearly empty).
    bytes: int
    compressed: bool = False


async def chunks(
    conn: asyncpg.Connection, relation: str, before: datetime | None = None
) -> list[Chunk]:
    """The chunks of a relation in time order; with ``before``, those entirely before it."""
    tables = await hypertables(conn)
    if relation not in tables:
        return []
    schema, name = tables[relation]
    rows = await db.fetch(
        conn,
        f"chunks of {relation}",
        """
        SELECT c.chunk_name, c.range_start, c.range_end, c.is_compressed,
               coalesce(s.total_bytes, 0) AS bytes
        FROM timescaledb_information.chunks c
        LEFT JOIN chunks_detailed_size(format('%I.%I', $1::text, $2::text)::regclass) s
          ON s.chunk_schema = c.chunk_schema AND s.chunk_name = c.chunk_name
        WHERE c.hypertable_schema = $1 AND c.hypertable_name = $2
          AND ($3::timestamptz IS NULL OR c.range_end <= $3)
        ORDER BY c.range_start
        """,
        schema,
        name,
        before,
    )
    return [
        Chunk(
            relation,
            r["chunk_name"],
            r["range_start"],
            r["range_end"],
            r["bytes"],
            r["is_compressed"],
        )
        for r in rows
    ]


def cutoffs(keep: Mapping[str, int | None], now: datetime) -> dict[str, datetime]:
    """Per relation with a retention: data entirely before this time has expired."""
    return {rel: now - timedelta(seconds=k) for rel, k in keep.items() if k is not None}


async def expired_chunks(conn: asyncpg.Connection, now: datetime) -> list[Chunk]:
    """What dropping now would remove: whole chunks ending at or before each cutoff."""
    out: list[Chunk] = []
    for rel, cutoff in cutoffs(await retention_in_force(conn), now).items():
        out += await chunks(conn, rel, cutoff)
    return out


async def drop_expired(conn: asyncpg.Connection, now: datetime) -> list[Chunk]:
    """Apache edition: drop every expired chunk, in one transaction; returns them.

    The time before which data is gone is recorded in the same transaction, so the
    horizons never claim data that a committed drop removed.
    """
    dropped: list[Chunk] = []
    async with conn.transaction():
        # Serialises against `set` and another `apply`.
        await db.execute(conn, "lock retention", "SELECT 1 FROM retention FOR UPDATE")
        for rel, cutoff in cutoffs(await retention_in_force(conn), now).items():
            expected = await chunks(conn, rel, cutoff)
            if not expected:
                continue
            await db.fetch(
                conn,
                f"drop chunks of {rel}",
                "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)",
                rel,
                cutoff,
            )
            await _record_dropped(conn, rel, max(c.end for c in expected))
            dropped += expected
    return dropped


async def _record_dropped(conn: asyncpg.Connection, relation: str, before: datetime) -> None:
    await db.execute(
        conn,
        f"record dropped {relation}",
        """
        UPDATE retention SET dropped_before = greatest(dropped_before, $2), updated_at = now()
        WHERE relation = $1
        """,
        relation,
        before,
    )


@dataclass(frozen=True)
class Job:
    """A Community policy job on one relation, with the age it acts at (a retention
    policy's ``drop_after``, a compression policy's ``compress_after``)."""

    relation: str
    job_id: int
    after_s: int | None
    next_start: datetime | None
    schedule: timedelta


async def policy_jobs(conn: asyncpg.Connection, proc: str, setting: str) -> dict[str, Job]:
    """Community: each relation's job of policy ``proc`` (``policy_retention``,
    ``policy_compression``), if it has one, with its age ``setting`` in seconds."""
    tables = {v: k for k, v in (await hypertables(conn)).items()}
    rows = await db.fetch(
        conn,
        f"{proc} jobs",
        """
        SELECT job_id, hypertable_schema AS s, hypertable_name AS n, next_start,
               schedule_interval,
               extract(epoch FROM (config ->> $2)::interval)::bigint AS after_s
        FROM timescaledb_information.jobs
        WHERE proc_name = $1
        """,
        proc,
        setting,
    )
    out: dict[str, Job] = {}
    for r in rows:
        rel = tables.get((r["s"], r["n"]))
        if rel is not None:
            out[rel] = Job(rel, r["job_id"], r["after_s"], r["next_start"], r["schedule_interval"])
    return out


async def retention_jobs(conn: asyncpg.Connection) -> dict[str, Job]:
    """Community: the retention policy of each relation, if it has one."""
    return await policy_jobs(conn, "policy_retention", "drop_after")


async def run_policies(conn: asyncpg.Connection) -> list[Chunk]:
    """Community: run every retention policy now; returns the chunks they dropped."""
    dropped: list[Chunk] = []
    for rel, job in (await retention_jobs(conn)).items():
        before = await chunks(conn, rel)
        await db.execute(conn, f"run retention job of {rel}", "CALL run_job($1)", job.job_id)
        left = {c.name for c in await chunks(conn, rel)}
        gone = [c for c in before if c.name not in left]
        if gone:
            await _record_dropped(conn, rel, max(c.end for c in gone))
        dropped += gone
    return dropped


async def check(
    conn: asyncpg.Connection, keep: Mapping[str, int | None], *, mode: Edition
) -> list[str]:
    """``refusals`` of a whole retention, against this database's refresh policies."""
    windows = await refresh_windows(conn) if mode.continuous_aggregates else {}
    return refusals(keep, Rules(mode, windows))


async def set_retention(
    conn: asyncpg.Connection,
    changes: Mapping[str, int | None],
    *,
    mode: Edition,
) -> dict[str, int | None]:
    """Change the retention of some relations; raises UnsafeRetention, changing nothing.

    Community edition: the retention policies are replaced in the same transaction.
    A retention made longer first freezes the horizon where the old one stood, as its
    policy may already have dropped data up to there.
    """
    async with conn.transaction():
        await db.execute(conn, "lock retention", "SELECT 1 FROM retention FOR UPDATE")
        old = await retention_in_force(conn)
        new = {**old, **changes}
        reasons = await check(conn, new, mode=mode)
        if reasons:
            raise UnsafeRetention(reasons)
        for rel, keep in changes.items():
            before = old[rel]
            frozen = (
                mode.retention_policies and before is not None and (keep is None or keep > before)
            )
            await db.execute(
                conn,
                f"set retention of {rel}",
                """
                UPDATE retention SET keep_s = $2, updated_at = now(),
                    dropped_before = CASE WHEN $3 THEN greatest(
                        dropped_before, now() - make_interval(secs => $4::bigint))
                        ELSE dropped_before END
                WHERE relation = $1
                """,
                rel,
                keep,
                frozen,
                before,
            )
            if mode.retention_policies:
                await db.execute(
                    conn,
                    f"remove retention policy of {rel}",
                    "SELECT remove_retention_policy($1::regclass, if_exists => true)",
                    rel,
                )
                if keep is not None:
                    await db.execute(
                        conn,
                        f"add retention policy of {rel}",
                        "SELECT add_retention_policy($1::regclass, drop_after => $2::interval)",
                        rel,
                        timedelta(seconds=keep),
                    )
    return new


@dataclass(frozen=True)
class RelationStatus:
    relation: str
    keep_s: int | None
    horizon: float | None
    oldest: datetime | None
    newest: datetime | None
    chunks: int
    bytes: int
    # Community: its retention policy (None: none, or the Apache edition).
    policy: Job | None


async def status(conn: asyncpg.Connection, mode: Edition) -> list[RelationStatus]:
    """What `apinalytics retention show` prints, per relation."""
    keep = await retention_in_force(conn)
    hz = await horizons(conn)
    jobs = await retention_jobs(conn) if mode.retention_policies else {}
    out = []
    for rel in RELATIONS:
        parts = await chunks(conn, rel)
        out.append(
            RelationStatus(
                relation=rel,
                keep_s=keep[rel],
                horizon=hz.get(rel),
                oldest=await _edge(conn, rel, parts, "min"),
                newest=await _edge(conn, rel, list(reversed(parts)), "max"),
                chunks=len(parts),
                bytes=sum(c.bytes for c in parts),
                policy=jobs.get(rel),
            )
        )
    return out


async def _edge(
    conn: asyncpg.Connection, relation: str, parts: list[Chunk], fn: str
) -> datetime | None:
    """The oldest (min) or newest (max) time of a relation, reading only the edge chunk.

    A whole-table min/max would scan everything (there is no time-only index); a
    chunk's rows all lie inside its range, so the first non-empty chunk decides.
    """
    column = TIME_COLUMN[relation]
    agg = {"min": "min", "max": "max"}[fn]
    for c in parts:
        found: datetime | None = await db.fetchval(
            conn,
            f"{agg} time of {relation}",
            f"SELECT {agg}({column}) FROM {relation} WHERE {column} >= $1 AND {column} < $2",
            c.start,
            c.end,
        )
        if found is not None:
            return found
    return None
