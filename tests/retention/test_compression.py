"""Compressed storage: `apinalytics retention set --compress-after`, shown and applied.

* Community edition: every relation (raw events and each rollup's continuous
  aggregate) gets a compression policy with the age set, and the declared
  segmentby/orderby; ``show`` reports the policies and what is compressed; ``apply
  --run`` runs the policies (``CALL run_job``; test clusters run no scheduler).
* Answers over compressed chunks equal the brute-force oracle's; back-dated events
  into compressed chunks are stored (200, rows counted) and answered at once and,
  after the materializer caught up, from the rollups rewritten over compressed chunks.
* Retention still drops compressed chunks; the export still reads them.
* Apache edition: there is no compression; ``set --compress-after`` refuses (exit 2,
  nothing changed, no traceback) and ``show`` says so.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import asyncpg
import hypothesis
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings

from apinalytics import apps, compression, retention
from apinalytics.apps import NewApp
from apinalytics.db import create_pool
from apinalytics.edition import Edition
from apinalytics.rollups import rebuild
from apinalytics.settings import Settings

from ..conftest import MakeSettings
from ..helpers import catch_up, post_accepted, read_headers
from ..query import oracle
from ..query.test_oracle import check
from ..test_export import export, make_events, normalized, parse
from .test_retention import DAY, ROOT, SPAN_DAYS, chunk_ranges, cli, spread

COMMUNITY = pytest.mark.parametrize("mode", ["community"], indirect=True)


async def compressed(conn: asyncpg.Connection, relation: str) -> tuple[int, int]:
    """(compressed chunks, all chunks) of a relation, from TimescaleDB's catalog."""
    parts = await retention.chunks(conn, relation)
    return sum(c.compressed for c in parts), len(parts)


async def compression_stored(conn: asyncpg.Connection, relation: str) -> str:
    """The hypertable holding a relation's rows (a continuous aggregate's own)."""
    schema, name = (await retention.hypertables(conn))[relation]
    return f"{schema}.{name}"


async def partial_chunks(conn: asyncpg.Connection) -> int:
    """Chunks holding rows outside their compressed part (status bit 8, "partial")."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM _timescaledb_catalog.chunk WHERE status & 8 = 8 AND NOT dropped"
    )
    return count


async def materialize(conn: asyncpg.Connection) -> None:
    """Refresh every rollup over the oracle's days: a test database has no refresh
    before, so nothing would be materialized (real-time aggregation reads it all) and
    there would be no rollup chunk to compress."""
    await rebuild.rebuild(conn, Edition.COMMUNITY, oracle.BASE - DAY, oracle.BASE + 5 * DAY)


async def compress_now(settings: Settings, conn: asyncpg.Connection) -> None:
    """The policies, run at once through the command (the real jobs, CALL run_job)."""
    assert await cli(settings, "apply", "--run", "--yes") == 0


# Named apart from hypothesis.settings, imported above.
@pytest.fixture(name="settings")
def compression_settings(make_settings: MakeSettings) -> Settings:
    # The oracle's events are in August 2025 (see tests/query/test_oracle.py). No
    # background materializer: each test catches up explicitly, so the answers are
    # checked before and after a refresh, never racing one (docs/retention.md).
    return make_settings(
        max_event_age_s=20 * 366 * 86400, max_buckets=1_000_000, materializer_interval_s=0
    )


@COMMUNITY
async def test_set_creates_policies_with_declared_settings_and_show_reports_them(
    mode: str, settings: Settings, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(settings, "set", "--compress-after", "10d") == 0
    assert "compressed once older than 10d" in capsys.readouterr().out
    policies = await compression.policies(db)
    assert {rel: p.after_s for rel, p in policies.items()} == dict.fromkeys(
        retention.RELATIONS, 10 * DAY
    )
    tables = await retention.hypertables(db)
    for rel, (schema, name) in tables.items():
        found = {
            r["attname"]: (r["segmentby_column_index"], r["orderby_column_index"], r["orderby_asc"])
            for r in await db.fetch(
                "SELECT * FROM timescaledb_information.compression_settings "
                "WHERE hypertable_schema = $1 AND hypertable_name = $2",
                schema,
                name,
            )
        }
        time_column = retention.TIME_COLUMN[rel]
        assert found == {"app_id": (1, None, None), time_column: (None, 1, False)}, rel

    # Another age replaces the policies; show prints it; off removes them.
    assert await cli(settings, "set", "--compress-after", "30d") == 0
    capsys.readouterr()
    assert await cli(settings, "show", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["compression_available"] is True
    policies = await compression.policies(db)
    for rel in retention.RELATIONS:
        assert shown["relations"][rel]["compress_after_s"] == 30 * DAY
        assert shown["relations"][rel]["compression_job_id"] == policies[rel].job_id
    assert await cli(settings, "show") == 0
    assert "compression: chunks compressed once older than 30d" in capsys.readouterr().out
    assert await cli(settings, "set", "--compress-after", "off") == 0
    assert await compression.policies(db) == {}
    assert await cli(settings, "show") == 0
    assert "compression: off" in capsys.readouterr().out


EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@COMMUNITY
@EXAMPLES
@given(case=oracle.scenarios(min_events=2))
async def test_answers_over_compressed_chunks_equal_the_oracle_back_dated_too(
    settings: Settings, client: TestClient, db: asyncpg.Connection, case: oracle.Scenario
) -> None:
    """Half the events stored and compressed (raw chunks and rollups); the other half
    then posted into those compressed chunks: every answer right at once, after the
    materializer caught up (refreshes over compressed rollup chunks), and after the
    policies compressed everything again."""
    app = await apps.create(db, "oracle")
    first, later = case.events[::2], case.events[1::2]
    await post_accepted(client, app, [e.body() for e in first])
    await catch_up(db)
    await materialize(db)
    assert await cli(settings, "set", "--compress-after", "7d") == 0
    await compress_now(settings, db)
    assert (await compressed(db, "events"))[0] > 0
    assert (await compressed(db, "events_1m"))[0] > 0
    await check(client, app, first, case.queries)

    internal = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
    await post_accepted(client, app, [e.body() for e in later])
    stored = await db.fetchval("SELECT count(*) FROM events WHERE app_id = $1", internal)
    assert stored == len(case.events)
    await check(client, app, case.events, case.queries)
    await catch_up(db)
    await check(client, app, case.events, case.queries)
    await compress_now(settings, db)
    hypothesis.event(f"events chunks compressed {await compressed(db, 'events')}")
    await check(client, app, case.events, case.queries)


@COMMUNITY
async def test_back_dated_events_reach_compressed_rollups_after_catch_up(
    settings: Settings, client: TestClient, db: asyncpg.Connection
) -> None:
    """A fixed scenario: the rollups' own rows (not the raw events) hold the late
    events once caught up, in chunks that were compressed."""
    app = await apps.create(db, "late")
    base = oracle.BASE
    evs = [
        oracle.Ev(base + i * 600.5, "a", "GET", "/a", "f", 1000 + i, 200, None) for i in range(300)
    ]
    await post_accepted(client, app, [e.body() for e in evs])
    await catch_up(db)
    await materialize(db)
    assert await cli(settings, "set", "--compress-after", "7d") == 0
    await compress_now(settings, db)
    for rel in ("events", "events_1m", "events_1h"):
        done, total = await compressed(db, rel)
        assert done == total > 0, rel
    late = [
        oracle.Ev(base + 3600 * h + 30, "late", "POST", "/b", "g", 7, 201, None) for h in range(40)
    ]
    await post_accepted(client, app, [e.body() for e in late])
    assert await partial_chunks(db) > 0
    await catch_up(db)
    internal = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
    for rel in ("events_1m", "events_1h", "events_1h_consumer"):
        calls = await db.fetchval(
            f"SELECT sum(calls) FROM {rel} WHERE app_id = $1 AND consumer_id = 'late'", internal
        )
        assert calls == len(late), rel
    q = oracle.Q(base, base + 4 * DAY, "hour", "count", "consumer_id", ())
    resp = await client.get(
        f"/1/timeseries/{q.start}/{q.end}/", params=q.params(), headers=read_headers(app)
    )
    assert resp.status == 200, await resp.text()
    assert "events_1h_consumer" in resp.headers["X-Apinalytics-Sources"]
    oracle.assert_same((await resp.json())["groups"], oracle.answer(evs + late, q, app.app_id), q)
    # The next policy run recompresses the chunks the late events made partial.
    await compress_now(settings, db)
    assert await partial_chunks(db) == 0

    # Deleting the app deletes its rows from compressed chunks too (whole segments).
    async with db.transaction():
        assert await apps.delete(db, app.app_id)
    for rel in retention.RELATIONS:
        stored = await compression_stored(db, rel)
        assert await db.fetchval(f"SELECT count(*) FROM {stored} WHERE app_id = $1", internal) == 0


@COMMUNITY
async def test_service_statements_see_rows_rewritten_in_compressed_rollup_chunks(
    database_url: str, db: asyncpg.Connection, settings: Settings
) -> None:
    """TimescaleDB 2.19.3: a generic plan made while a rollup chunk was wholly
    compressed was seen to miss the rows a later refresh rewrote into it (a psql
    session, PREPARE under plan_cache_mode = force_generic_plan; not every arrangement
    shows it). The service's connections plan every statement for its parameters
    (db.create_pool), and a statement run often on one of them sees those rows."""
    app = await apps.create(db, "plans")
    internal = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
    base = oracle.BASE
    await db.execute(
        "INSERT INTO events SELECT to_timestamp($2 + i * 7), $1, 'c', 'GET', '/', 'f', i, 200, NULL "
        "FROM generate_series(0, 999) i",
        internal,
        base,
    )
    await db.execute(
        "CALL refresh_continuous_aggregate('events_1m', to_timestamp($1), to_timestamp($2))",
        base - DAY,
        base + 2 * DAY,
    )
    assert await cli(settings, "set", "--compress-after", "7d") == 0
    await compression.run_policies(db)
    read = "SELECT sum(calls)::bigint FROM events_1m WHERE app_id = $1 AND bucket >= to_timestamp($2) AND bucket < to_timestamp($3)"
    window = (internal, base, base + 3600)
    pool = await db_pool(database_url)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
            for _ in range(8):
                want = await conn.fetchval(read, *window)
        await db.execute(
            "INSERT INTO events VALUES "
            "(to_timestamp($2 + 30), $1, 'late', 'GET', '/', 'f', 1, 200, NULL)",
            internal,
            base,
        )
        await db.execute(
            "CALL refresh_continuous_aggregate('events_1m', to_timestamp($1), to_timestamp($2))",
            base,
            base + 3600,
        )
        async with pool.acquire() as conn:
            assert await conn.fetchval(read, *window) == want + 1
    finally:
        await pool.close()


async def db_pool(database_url: str) -> asyncpg.Pool:
    return await create_pool(database_url, max_size=1, statement_timeout_s=30, connect_timeout_s=5)


@COMMUNITY
async def test_retention_drops_compressed_chunks(
    mode: str,
    settings: Settings,
    db: asyncpg.Connection,
    app_keys: NewApp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now, _ = await spread(db, app_keys, mode)
    assert await cli(settings, "set", "--compress-after", "3d") == 0
    assert await cli(settings, "apply", "--dry-run") == 0
    assert "would compress events" in capsys.readouterr().out
    await compress_now(settings, db)
    assert "compressed events" in capsys.readouterr().out
    done, total = await compressed(db, "events")
    assert total >= SPAN_DAYS and done >= SPAN_DAYS - 4
    assert await cli(settings, "show", "--json") == 0
    shown = json.loads(capsys.readouterr().out)["relations"]["events"]
    assert shown["compressed_chunks"] == done
    # (96 events a day: too few for compression to pay, so no ratio is asserted here.)
    assert shown["compressed_bytes_after"] > 0 and shown["compressed_bytes_before"] > 0
    # The sizes shown are those on disk, compressed chunks included.
    assert shown["bytes"] >= shown["compressed_bytes_after"]

    before = await chunk_ranges(db)
    assert await cli(settings, "set", "--raw", "10d", "--minute", "20d", "--yes") == 0
    await compress_now(settings, db)
    after = await chunk_ranges(db)
    cut = now - timedelta(days=10)
    assert {r for r in after["events"] if r[1] <= cut - timedelta(days=1)} == set()
    assert len(before["events"] - after["events"]) >= SPAN_DAYS - 12
    oldest = await db.fetchval("SELECT min(time) FROM events")
    assert oldest >= cut - timedelta(days=1)


@COMMUNITY
async def test_export_reads_compressed_chunks(
    settings: Settings, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    sent = make_events(500)
    await post_accepted(client, app_keys, sent)
    assert await cli(settings, "set", "--compress-after", "1d") == 0
    await compress_now(settings, db)
    assert (await compressed(db, "events"))[0] > 0
    resp, body = await export(client, app_keys)
    assert resp.status == 200, body
    assert sorted(normalized(e) for e in parse(resp, body)) == sorted(normalized(e) for e in sent)


# -- the Apache edition: no compression ------------------------------------------


async def test_apache_refuses_compression_and_changes_nothing(
    settings: Settings, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(settings, "set", "--raw", "30d", "--compress-after", "7d", "--yes") == 2
    err = capsys.readouterr().err
    assert "--compress-after" in err and "Community edition" in err and "Nothing changed" in err
    assert (await retention.retention_in_force(db))["events"] is None
    assert await cli(settings, "show") == 0
    assert "compression: not available on the Apache edition" in capsys.readouterr().out
    assert await cli(settings, "show", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["compression_available"] is False
    assert shown["relations"]["events"]["compress_after_s"] is None


def test_apache_script_refuses_compression_without_a_traceback(database_url: str) -> None:
    out = subprocess.run(
        [
            str(ROOT / "scripts" / "retention"),
            "set",
            "--compress-after",
            "7d",
            "--dsn",
            database_url,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "APINALYTICS_LOG_JSON": "false"},
    )
    assert out.returncode == 2, out.stderr
    assert "compression needs the TimescaleDB Community edition" in out.stderr
    assert "Traceback" not in out.stderr
