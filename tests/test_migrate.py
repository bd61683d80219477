"""SPEC "CLI" (``migrate`` applies ``sql/migrations``) and "Operations" (``/readyz``:
database reachable, migrations applied), as DESIGN.md lays migrations out:

- ``NNNN_what.sql`` applied in order, each in its own transaction, recorded in
  ``schema_migrations``; a second run applies nothing; two runs at once take turns
  (advisory lock) and apply every migration exactly once.
- A migration may come as ``.apache.sql`` / ``.community.sql``; the rollup mode is
  picked from the server's license on the first run and recorded; a database set up
  for continuous aggregates refuses a server without them.
- Each file starts with a header comment that says whether it is reversible.
- ``/readyz`` is 503 naming the pending migrations on an empty database, 200 once
  migrated.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import migrate
from apinalytics.settings import Settings

from .dbs import Servers, with_database
from .helpers import assert_error

_names = itertools.count()


@pytest.fixture
async def empty_database(servers: Servers) -> AsyncIterator[str]:
    """A database without TimescaleDB or any table: what `migrate` meets first."""
    admin_dsn = servers.servers["apache"].admin_dsn
    name = f"empty_{os.getpid()}_{next(_names)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
        yield with_database(admin_dsn, name)
    finally:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()


def expected_files(mode: str) -> list[str]:
    return [m.path.name for m in migrate.discover(migrate.migrations_dir(), mode)]


async def recorded(dsn: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def test_from_empty_then_rerun_applies_nothing(empty_database: str) -> None:
    first = await migrate.migrate(empty_database)
    assert first.mode == "apache"
    assert first.license == "apache"
    assert first.applied == expected_files("apache")
    assert first.applied[0] == "0001_apps_and_events.sql"
    found = migrate.discover(migrate.migrations_dir(), "apache")
    assert await recorded(empty_database) == [(m.version, m.name) for m in found]

    conn = await asyncpg.connect(empty_database)
    try:
        hypertables = await conn.fetchval(
            "SELECT array_agg(hypertable_name::text) FROM timescaledb_information.hypertables"
        )
        assert "events" in hypertables
        mode = await conn.fetchval("SELECT value FROM apinalytics_meta WHERE key = 'rollup_mode'")
        assert mode == "apache"
    finally:
        await conn.close()

    second = await migrate.migrate(empty_database)
    assert second.applied == []
    assert second.mode == "apache"
    assert await recorded(empty_database) == [(m.version, m.name) for m in found]


async def test_two_concurrent_runs_apply_each_migration_once(empty_database: str) -> None:
    a, b = await asyncio.gather(migrate.migrate(empty_database), migrate.migrate(empty_database))
    assert sorted(a.applied + b.applied) == expected_files("apache")
    # The lock serialises them: one did everything, the other found nothing to do.
    assert sorted([len(a.applied), len(b.applied)]) == [0, len(expected_files("apache"))]
    assert len(await recorded(empty_database)) == len(expected_files("apache"))


async def test_recorded_community_mode_refuses_an_apache_server(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(
            "CREATE TABLE apinalytics_meta (key text PRIMARY KEY, value text NOT NULL);"
            "INSERT INTO apinalytics_meta VALUES ('rollup_mode', 'community')"
        )
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match="continuous aggregates"):
        await migrate.migrate(empty_database)


# -- /readyz -------------------------------------------------------------------------------


async def test_readyz_names_pending_migrations_until_migrated(
    empty_database: str, tmp_path: Path, make_client: Callable[[Settings], Any]
) -> None:
    settings = Settings(database_url=empty_database, home=tmp_path / "home")
    client: TestClient = await make_client(settings)  # started without migrating
    resp = await client.get("/readyz")
    err = await assert_error(resp, 503, "not_ready", *expected_files("apache"))
    assert err["details"] == [{"pending_migration": f} for f in expected_files("apache")]

    await migrate.migrate(empty_database)
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "ready"}


async def test_readyz_names_only_what_is_missing(
    empty_database: str, tmp_path: Path, make_client: Callable[[Settings], Any]
) -> None:
    await migrate.migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        last = await conn.fetchval("SELECT max(version) FROM schema_migrations")
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", last)
    finally:
        await conn.close()
    client: TestClient = await make_client(
        Settings(database_url=empty_database, home=tmp_path / "home")
    )
    err = await assert_error(await client.get("/readyz"), 503, "not_ready")
    assert err["details"] == [{"pending_migration": expected_files("apache")[-1]}]


# -- migration files -----------------------------------------------------------------------


def test_every_migration_says_whether_it_is_reversible() -> None:
    files = sorted(migrate.migrations_dir().glob("*.sql"))
    assert files
    for path in files:
        lines = path.read_text().splitlines()
        header = list(itertools.takewhile(lambda line: line.startswith("--"), lines))
        assert header, f"{path.name} has no header comment"
        assert any("Reversible:" in line for line in header), f"{path.name}: say if reversible"


DIRECTORIES: list[tuple[str, list[str], str, list[str] | str]] = [
    ("in_order", ["0002_b.sql", "0001_a.sql"], "apache", ["0001_a.sql", "0002_b.sql"]),
    (
        "variant_of_the_mode",
        ["0001_a.sql", "0002_r.apache.sql", "0002_r.community.sql"],
        "community",
        ["0001_a.sql", "0002_r.community.sql"],
    ),
    ("same_number_twice", ["0001_a.sql", "0001_b.sql"], "apache", "two migrations"),
    ("name_not_understood", ["1_a.sql"], "apache", "not understood"),
    ("upper_case_name", ["0001_Apps.sql"], "apache", "not understood"),
]


@pytest.mark.parametrize(("files", "mode", "expected"), [d[1:] for d in DIRECTORIES],
                         ids=[d[0] for d in DIRECTORIES])  # fmt: skip
def test_discover(tmp_path: Path, files: list[str], mode: str, expected: list[str] | str) -> None:
    for f in files:
        (tmp_path / f).write_text("-- Reversible: yes\nSELECT 1;\n")
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            migrate.discover(tmp_path, mode)
    else:
        assert [m.path.name for m in migrate.discover(tmp_path, mode)] == expected
