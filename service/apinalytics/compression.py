"""Compressed storage of raw events and rollups (TimescaleDB's columnstore).

Community edition only: compression is a TimescaleDB Community (TSL) feature, and the
Apache build has none (``Edition.compression``). ``apinalytics retention set
--compress-after D`` turns it on for ``events`` and every rollup (their continuous
aggregates' materialization hypertables) with one compression policy each
(``add_compression_policy(..., compress_after => D)``); ``off`` removes the policies
(chunks already compressed stay so). The policies themselves are the setting: no
table of ours records it, and ``retention show`` reads them back.

How each relation is compressed is declared here, once (``SETTINGS``): segments by
``app_id`` (every read is one app and a time range, and deleting an app deletes whole
compressed batches), ordered by time, newest first, within a segment. What is not
compressed: the plain tables (``apps``, ``rollup_pending``, ``retention``,
``idempotency_keys`` and the others), which are not hypertables, and the newest
chunks until they are older than the age set. Measurements: docs/retention.md,
"Compression".

Compressed chunks stay writable on TimescaleDB 2.19: back-dated events go into them
(the chunk becomes partially compressed until the next policy run recompresses it),
refreshes of the continuous aggregates rewrite compressed rollup rows, and
``drop_chunks`` and app deletion work as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from . import db, retention
from .retention import RELATIONS, TIME_COLUMN
from .rollups.declared import RAW


@dataclass(frozen=True)
class Settings:
    segment_by: str
    order_by: str


# Per relation: one segment per app, rows ordered by time within it (newest first,
# as the policy and TimescaleDB's defaults do). Ordering by a dimension first was
# measured (bench/compression.py): see docs/retention.md.
SETTINGS: dict[str, Settings] = {
    rel: Settings("app_id", f"{TIME_COLUMN[rel]} DESC") for rel in RELATIONS
}


class Unavailable(Exception):
    """This database's edition cannot compress."""


@dataclass(frozen=True)
class Stats:
    relation: str
    chunks: int
    compressed_chunks: int
    # Sizes of the compressed chunks before and after compression (indexes included).
    before_bytes: int
    after_bytes: int


async def policies(conn: asyncpg.Connection) -> dict[str, retention.Job]:
    """The compression policy of each relation that has one."""
    return await retention.policy_jobs(conn, "policy_compression", "compress_after")


async def stats(conn: asyncpg.Connection) -> dict[str, Stats]:
    """Per relation, its chunks, how many are compressed and their sizes before and
    after (``hypertable_compression_stats``; zero before compression was enabled)."""
    out: dict[str, Stats] = {}
    for rel, (schema, name) in (await retention.hypertables(conn)).items():
        row = await db.fetchrow(
            conn,
            f"compression stats of {rel}",
            """
            SELECT (SELECT count(*) FROM timescaledb_information.chunks
                     WHERE hypertable_schema = $1 AND hypertable_name = $2) AS chunks,
                   coalesce(s.number_compressed_chunks, 0) AS compressed,
                   coalesce(s.before_compression_total_bytes, 0) AS before,
                   coalesce(s.after_compression_total_bytes, 0) AS after
            FROM (SELECT 1) one
            LEFT JOIN hypertable_compression_stats(format('%I.%I', $1::text, $2::text)::regclass) s
              ON true
            """,
            schema,
            name,
        )
        assert row is not None
        out[rel] = Stats(rel, row["chunks"], row["compressed"], row["before"], row["after"])
    return out


async def _enabled(conn: asyncpg.Connection, schema: str, name: str) -> bool:
    found: bool = await db.fetchval(
        conn,
        "compression enabled",
        """
        SELECT compression_enabled FROM timescaledb_information.hypertables
        WHERE hypertable_schema = $1 AND hypertable_name = $2
        """,
        schema,
        name,
    )
    return found


def _alter_sql(relation: str) -> str:
    """Enable compression with the declared settings (identifiers from RELATIONS)."""
    s = SETTINGS[relation]
    kind = "TABLE" if relation == RAW else "MATERIALIZED VIEW"
    return (
        f"ALTER {kind} {relation} SET (timescaledb.compress = true, "
        f"timescaledb.compress_segmentby = '{s.segment_by}', "
        f"timescaledb.compress_orderby = '{s.order_by}')"
    )


async def set_compress_after(
    conn: asyncpg.Connection, after_s: int | None, *, available: bool
) -> dict[str, retention.Job]:
    """Compress every relation's chunks older than ``after_s`` (None: stop compressing;
    compressed chunks stay compressed), in one transaction; returns the policies now
    in force. Raises Unavailable on an edition without compression."""
    if not available:
        raise Unavailable("compression needs the TimescaleDB Community edition")
    tables = await retention.hypertables(conn)
    async with conn.transaction():
        # Serialises against retention `set` and `apply`.
        await db.execute(conn, "lock retention", "SELECT 1 FROM retention FOR UPDATE")
        for rel in RELATIONS:
            await db.execute(
                conn,
                f"remove compression policy of {rel}",
                "SELECT remove_compression_policy($1::regclass, if_exists => true)",
                rel,
            )
            if after_s is None:
                continue
            if not await _enabled(conn, *tables[rel]):
                await db.execute(conn, f"enable compression of {rel}", _alter_sql(rel))
            await db.execute(
                conn,
                f"add compression policy of {rel}",
                "SELECT add_compression_policy($1::regclass, compress_after => $2::interval)",
                rel,
                timedelta(seconds=after_s),
            )
    return await policies(conn)


async def pending_chunks(conn: asyncpg.Connection, now: datetime) -> list[retention.Chunk]:
    """Chunks a compression policy would compress now: wholly older than its
    compress_after and not compressed yet (or written to since)."""
    out: list[retention.Chunk] = []
    for rel, policy in (await policies(conn)).items():
        if policy.after_s is None:  # not set by us (compress_created_before)
            continue
        cutoff = now - timedelta(seconds=policy.after_s)
        out += [c for c in await retention.chunks(conn, rel, cutoff) if not c.compressed]
    return out


async def run_policies(conn: asyncpg.Connection) -> list[retention.Chunk]:
    """Run every compression policy now (``CALL run_job``); returns the chunks that
    were not compressed before and are now, with their compressed size."""
    done: list[retention.Chunk] = []
    for rel, policy in (await policies(conn)).items():
        before = {c.name for c in await retention.chunks(conn, rel) if not c.compressed}
        await db.execute(conn, f"run compression job of {rel}", "CALL run_job($1)", policy.job_id)
        done += [c for c in await retention.chunks(conn, rel) if c.compressed and c.name in before]
    return done
