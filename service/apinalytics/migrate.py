"""Applies ``sql/migrations/NNNN_name.sql`` in order, under an advisory lock.

Each migration runs in its own transaction and is recorded in ``schema_migrations``;
re-running applies only what is missing, and two processes migrating at once take
turns on the lock. A migration may come in two variants, ``NNNN_name.apache.sql``
and ``NNNN_name.community.sql``: the rollup mode picks one. The mode is chosen once,
from ``SHOW timescaledb.license`` on the first run, and recorded in ``apinalytics_meta``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from . import db
from .edition import Edition

# Any constant works; it only has to be the same for every migrating process.
_LOCK_ID = 0x41504E4C  # "APNL"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(apache|community))?\.sql$")
MODES = tuple(Edition)


def migrations_dir() -> Path:
    """``sql/migrations`` of the checkout, or the copy installed inside the package."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "sql" / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("sql/migrations not found")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


@dataclass(frozen=True)
class Result:
    mode: Edition
    applied: list[str]
    license: str


def discover(directory: Path, mode: str) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file name not understood: {path.name}")
        version, name, variant = int(m[1]), m[2], m[3]
        if variant and variant != mode:
            continue
        if version in found:
            raise ValueError(f"two migrations numbered {version:04d}")
        found[version] = Migration(version, name, path)
    return [found[v] for v in sorted(found)]


def mode_for_license(license: str) -> Edition:
    return Edition.for_license(license)


async def migrate(dsn: str, directory: Path | None = None) -> Result:
    directory = directory or migrations_dir()
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await db.execute(conn, "migration lock", "SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            return await _migrate_locked(conn, directory)
        finally:
            await db.execute(conn, "migration unlock", "SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


async def _migrate_locked(conn: asyncpg.Connection, directory: Path) -> Result:
    await db.execute(conn, "create extension", "CREATE EXTENSION IF NOT EXISTS timescaledb")
    await db.execute(
        conn,
        "create migration tables",
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS apinalytics_meta (
            key text PRIMARY KEY,
            value text NOT NULL
        );
        """,
    )
    license = str(await db.fetchval(conn, "license", "SHOW timescaledb.license"))
    recorded = await db.fetchval(
        conn, "rollup mode", "SELECT value FROM apinalytics_meta WHERE key = 'rollup_mode'"
    )
    if recorded is None:
        mode = mode_for_license(license)
        await db.execute(
            conn,
            "record rollup mode",
            "INSERT INTO apinalytics_meta (key, value) VALUES ('rollup_mode', $1)",
            mode,
        )
    elif not (mode := Edition(recorded)).runs_on(license):
        raise RuntimeError(
            "this database was set up with continuous aggregates (Community edition) but "
            f"the server now runs TimescaleDB with license '{license}'; start it with the "
            "Community build and timescaledb.license=timescale"
        )
    done = await _applied(conn)
    applied: list[str] = []
    for mig in discover(directory, mode):
        if mig.version in done:
            continue
        async with conn.transaction():
            await db.execute(conn, f"migration {mig.path.name}", mig.path.read_text())
            await db.execute(
                conn,
                f"record migration {mig.path.name}",
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                mig.version,
                mig.name,
            )
        applied.append(mig.path.name)
    return Result(mode=mode, applied=applied, license=license)


async def _applied(conn: asyncpg.Connection) -> set[int]:
    rows = await db.fetch(conn, "migrations applied", "SELECT version FROM schema_migrations")
    return {r["version"] for r in rows}


async def rollup_mode(conn: asyncpg.Connection) -> Edition | None:
    """The recorded rollup mode, or None before the first migration."""
    exists = await db.fetchval(
        conn, "migrated", "SELECT to_regclass('apinalytics_meta') IS NOT NULL"
    )
    if not exists:
        return None
    value = await db.fetchval(
        conn, "rollup mode", "SELECT value FROM apinalytics_meta WHERE key = 'rollup_mode'"
    )
    return Edition(value) if value is not None else None


async def pending(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Migration files not yet applied (for /readyz)."""
    mode = await rollup_mode(conn)
    done: set[int] = set()
    if mode is None:
        # Never migrated: the files the first run would apply, in the mode it would pick
        # (the license is unknown until the extension exists in this database, and
        # then the Apache variants are named: same numbers, same names).
        license = await db.fetchval(
            conn, "license", "SELECT current_setting('timescaledb.license', true)"
        )
        mode = Edition.for_license(str(license or Edition.APACHE))
    else:
        done = await _applied(conn)
    return [
        m.path.name for m in discover(directory or migrations_dir(), mode) if m.version not in done
    ]


async def connect_migrated(dsn: str) -> asyncpg.Connection:
    """A connection to ``dsn`` once its schema is up to date: the commands' way in."""
    await migrate(dsn)
    return await asyncpg.connect(dsn)
