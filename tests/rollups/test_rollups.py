"""The rollups (events_1m, events_1h and the narrow ones), in both rollup modes.

Spec (SPEC "Storage", docs/rollups.md): per bucket (one minute, one hour, aligned to
the UNIX epoch), app and combination of the rollup's dimensions (consumer_id, method,
function and status_code for events_1m and events_1h; none, function, consumer_id for
events_1h_app, events_1h_function, events_1h_consumer; none for events_1m_app), the
rollups hold calls, sum_us, min_us and max_us of response_us, and equal what a
brute-force aggregation of the events gives. Once ingest answered 200 the rollups
reflect the batch, back-dated events included (read-your-writes); concurrent batches
all succeed with exact totals; deleting an app removes its rollup rows and only its.

Every test runs in the Apache mode (tables kept by the ingest path) and the Community
mode (continuous aggregates). The test clusters run no job scheduler, so Community
tests run the refresh policies themselves, as the scheduler would, to move the
aggregates' thresholds and exercise the materialized path.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apinalytics import apps, migrate, retention
from apinalytics.apps import NewApp
from apinalytics.db import unix_us_timestamps
from apinalytics.edition import Edition
from apinalytics.ingest.decode import COLUMNS
from apinalytics.rollups import ROLLUPS, Rollup, community, materializer, pending, rebuild

from ..conftest import ALL_MODES
from ..dbs import Servers, run
from ..helpers import (
    catch_up,
    event,
    exact_us,
    histogram_bin,
    post_accepted,
    write_headers,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DIMENSION_SHAPE = {
    "consumer_id": "text",
    "method": "text",
    "function": "text",
    "status_code": "smallint",
}


def shape(rollup: Rollup) -> list[tuple[str, str]]:
    if rollup.histogram:
        return [
            ("bucket", "timestamp with time zone"),
            ("app_id", "integer"),
            *((d, DIMENSION_SHAPE[d]) for d in rollup.dimensions),
            ("bin", "smallint"),
            ("calls", "bigint"),
        ]
    return [
        ("bucket", "timestamp with time zone"),
        ("app_id", "integer"),
        *((d, DIMENSION_SHAPE[d]) for d in rollup.dimensions),
        ("calls", "bigint"),
        ("sum_us", "bigint"),
        ("min_us", "bigint"),
        ("max_us", "bigint"),
    ]


NARROW = ("events_1h_app", "events_1h_function", "events_1h_consumer", "events_1m_app")
Key = tuple[Any, ...]
# calls, sum_us, min_us, max_us; a histogram rollup's: calls alone, keyed by bin too.
Totals = dict[Key, tuple[int, ...]]

all_modes = pytest.mark.parametrize("mode", ALL_MODES, indirect=True)


# -- the oracle and what the database holds ------------------------------------------


def oracle(events: Iterable[dict[str, Any]], app: int, rollup: Rollup) -> Totals:
    """Brute force: bucket each event (its timestamp rounded to the microsecond, as
    SPEC keeps it) and aggregate per app, bucket and the rollup's dimensions."""
    groups: dict[Key, list[int]] = {}
    for e in events:
        us = exact_us(e["timestamp"])
        bucket = EPOCH + timedelta(microseconds=us - us % (rollup.width_s * 1_000_000))
        values = {**e, "method": e["method"].upper()}
        key = (app, bucket, *(values[d] for d in rollup.dimensions))
        if rollup.histogram:
            key = (*key, histogram_bin(e["response_us"]))
        groups.setdefault(key, []).append(e["response_us"])
    if rollup.histogram:
        return {k: (len(v),) for k, v in groups.items()}
    return {k: (len(v), sum(v), min(v), max(v)) for k, v in groups.items()}


def by_relation(relation: str) -> Rollup:
    return next(r for r in ROLLUPS if r.relation == relation)


async def held(db: asyncpg.Connection, relation: str, app: int | None = None) -> Totals:
    rollup = by_relation(relation)
    dims = "".join(f", {d}" for d in rollup.groups)
    measures = [m.column for m in rollup.measures]
    rows = await db.fetch(
        f"""
        SELECT app_id, bucket{dims}, {", ".join(measures)}
        FROM {relation} WHERE $1::integer IS NULL OR app_id = $1
        """,
        app,
    )
    out: Totals = {}
    for r in rows:
        key = tuple(r)[: -len(measures)]
        assert key not in out, f"{relation} holds {key} twice"
        out[key] = tuple(r[m] for m in measures)
    return out


async def assert_rollups_match(
    db: asyncpg.Connection, sent: dict[int, list[dict[str, Any]]]
) -> None:
    """Every rollup equals the oracle, app by app, and holds no other app's rows, once
    the materializer has caught up."""
    assert {r.relation for r in ROLLUPS} >= {"events_1m", "events_1h", *NARROW}
    await catch_up(db)
    for rollup in ROLLUPS:
        want: Totals = {}
        for app, events in sent.items():
            want.update(oracle(events, app, rollup))
        got = await held(db, rollup.relation)
        assert got == want, rollup.relation


async def internal_id(db: asyncpg.Connection, app: NewApp) -> int:
    value: int = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
    return value


async def run_policies(db: asyncpg.Connection, mode: str) -> None:
    """Community: one run of each refresh policy, each aggregate after the one it is
    built from (declaration order), as the scheduler would."""
    if mode != "community":
        return
    jobs = await db.fetch(
        """
        SELECT j.job_id FROM timescaledb_information.jobs j
        JOIN timescaledb_information.continuous_aggregates ca
          ON ca.materialization_hypertable_name = j.hypertable_name
        WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
        ORDER BY array_position($1::text[], ca.view_name::text), j.job_id
        """,
        [r.relation for r in ROLLUPS],
    )
    assert len(jobs) == len(ROLLUPS)
    for job in jobs:
        await db.execute("CALL run_job($1)", job["job_id"])


async def thresholds(db: asyncpg.Connection) -> dict[str, float]:
    """Community: per aggregate, the time below which changes need a refresh."""
    rows = await db.fetch(
        """
        SELECT ca.user_view_name AS relation, t.watermark / 1e6 AS threshold
        FROM _timescaledb_catalog.continuous_agg ca
        JOIN _timescaledb_catalog.continuous_aggs_invalidation_threshold t
          ON t.hypertable_id = ca.raw_hypertable_id
        """
    )
    return {r["relation"]: float(r["threshold"]) for r in rows}


def hour_floor(t: float) -> int:
    return int(t // 3600 * 3600)


# -- boundaries -------------------------------------------------------------------------

# (offset from an hour H in seconds, expected minute bucket and hour bucket as offsets
# from H). The function name of each event is its id, so each lands in its own row.
BOUNDARIES = [
    pytest.param(0.0, 0, 0, id="on_hour"),
    pytest.param(-0.000001, -60, -3600, id="just_before_hour"),
    pytest.param(60.0, 60, 0, id="on_minute"),
    pytest.param(119.999999, 60, 0, id="just_before_minute"),
    # 0.1 microsecond before the minute rounds up onto it.
    pytest.param(120 - 1e-7, 120, 0, id="rounds_up_onto_minute"),
    pytest.param(300.5, 300, 0, id="half_second"),
    pytest.param(3599.999999, 3540, 0, id="last_microsecond_of_hour"),
    pytest.param(3600.0, 3600, 3600, id="next_hour"),
]


@all_modes
async def test_boundaries_land_in_their_buckets(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    app = await internal_id(db, app_keys)
    # Four hours back: inside both policies' windows, below both thresholds once run.
    base = hour_floor(time.time()) - 4 * 3600
    events = [
        event(timestamp=base + p.values[0], function=p.id, response_us=i * 10)
        for i, p in enumerate(BOUNDARIES)
    ]
    await post_accepted(client, app_keys, events)
    await catch_up(db)
    for p in BOUNDARIES:
        _, minute, hour = p.values
        for relation, expected in (("events_1m", minute), ("events_1h", hour)):
            buckets = await db.fetch(
                f"SELECT extract(epoch FROM bucket)::bigint AS b FROM {relation} "
                "WHERE function = $1",
                p.id,
            )
            assert [r["b"] - base for r in buckets] == [expected], (p.id, relation)
    await assert_rollups_match(db, {app: events})

    # Community: the above came from real-time aggregation; now the policies
    # materialize it, and the same events again take the ingest path's refresh.
    await run_policies(db, mode)
    await assert_rollups_match(db, {app: events})
    await post_accepted(client, app_keys, events)
    await assert_rollups_match(db, {app: events + events})


# -- read-your-writes ---------------------------------------------------------------


def mixed_events(rng: random.Random, n: int, start: float, span_s: float) -> list[dict[str, Any]]:
    return [
        event(
            timestamp=round(start + rng.random() * span_s, 6),
            consumer_id=rng.choice(["", "alice", "bob", "carol"]),
            method=rng.choice(["GET", "post", "Delete"]),
            function=rng.choice(["", "list", "show"]),
            status_code=rng.choice([200, 201, 404, 500]),
            response_us=rng.randrange(0, 5_000_000),
            url=f"/v1/things/{rng.randrange(10**6)}",
        )
        for _ in range(n)
    ]


@all_modes
async def test_back_dated_events_are_reflected_at_once(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    rng = random.Random(7)
    now = time.time()
    app = await internal_id(db, app_keys)
    await run_policies(db, mode)
    recent = mixed_events(rng, 50, now - 6 * 3600, 6 * 3600 - 5)
    await post_accepted(client, app_keys, recent)
    # The scheduler's runs move the thresholds to now - 15 minutes and now - 1 hour.
    await run_policies(db, mode)
    await assert_rollups_match(db, {app: recent})

    two_days_ago = mixed_events(rng, 20, now - 2 * 86400, 300)
    half_hour_ago = mixed_events(rng, 20, now - 1800, 60)
    if mode == "community":
        # Below the minute rollup's threshold (the two-day-old ones below both):
        # real-time aggregation alone would not show them.
        assert max(e["timestamp"] for e in half_hour_ago) < (await thresholds(db))["events_1m"]
    await post_accepted(client, app_keys, two_days_ago)
    await assert_rollups_match(db, {app: recent + two_days_ago})
    # One batch mixing a back-dated stretch and live events.
    live = mixed_events(rng, 20, now - 30, 25)
    await post_accepted(client, app_keys, half_hour_ago + live)
    await assert_rollups_match(db, {app: recent + two_days_ago + half_hour_ago + live})


@all_modes
async def test_concurrent_batches_all_succeed_with_exact_totals(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    rng = random.Random(11)
    now = time.time()
    app = await internal_id(db, app_keys)
    await run_policies(db, mode)
    first = mixed_events(rng, 5, now - 3600, 60)
    await post_accepted(client, app_keys, first)
    await run_policies(db, mode)
    # Few keys, so batches overlap; each batch in its own order; live and back-dated
    # events, so Community batches refresh concurrently.
    pool = mixed_events(rng, 60, now - 5 * 60, 5 * 60 - 5) + mixed_events(rng, 60, now - 86400, 120)
    batches = []
    for _ in range(8):
        batch = rng.sample(pool, 80)
        rng.shuffle(batch)
        batches.append(batch)
    await asyncio.wait_for(
        asyncio.gather(*(post_accepted(client, app_keys, b) for b in batches)), 120
    )
    sent = first + [e for b in batches for e in b]
    assert await db.fetchval("SELECT count(*) FROM events") == len(sent)
    await assert_rollups_match(db, {app: sent})


@pytest.mark.community
@pytest.mark.parametrize("mode", ["community"], indirect=True)
async def test_a_sibling_refresh_does_not_make_the_hour_rollup_materialize_its_source_early(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """events_1h and events_1m_app are both built on events_1m and share its
    invalidation threshold. Once both minute aggregates are refreshed up to the current
    minute, that threshold lies inside the current hour, which events_1m has not
    materialized whole. A batch that needs refreshes (a back-dated event) must not
    refresh that hour of events_1h: it would be materialized from events_1m as it is
    now, and live events after it change only raw events, which invalidates nothing,
    so events_1h would never show them."""
    into_hour = time.time() % 3600
    if into_hour < 90:
        # The current minute must start after the current hour does.
        await asyncio.sleep(90 - into_hour)
    rng = random.Random(17)
    now = time.time()
    minute = int(now // 60 * 60)
    app = await internal_id(db, app_keys)
    earlier = mixed_events(rng, 30, now - 3 * 3600, 3 * 3600 - 5)
    await post_accepted(client, app_keys, earlier)
    await run_policies(db, mode)
    for relation in ("events_1m", "events_1m_app"):
        await db.execute(
            "CALL refresh_continuous_aggregate($1, now() - interval '1 day', to_timestamp($2))",
            relation,
            minute,
        )
    assert (await thresholds(db))["events_1h"] >= hour_floor(now) + 60, "inside the hour"

    def live(n: int) -> list[dict[str, Any]]:
        # In the current minute, above every threshold, not in the future.
        return mixed_events(rng, n, minute, max(time.time() - minute, 0.001))

    back_dated_and_live = mixed_events(rng, 5, now - 86400, 60) + live(5)
    await post_accepted(client, app_keys, back_dated_and_live)
    later = live(5)
    await post_accepted(client, app_keys, later)
    await assert_rollups_match(db, {app: earlier + back_dated_and_live + later})


# -- deleting an app ------------------------------------------------------------------


@all_modes
async def test_deleting_an_app_removes_its_rollup_rows_only(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    rng = random.Random(3)
    now = time.time()
    other = await apps.create(db, "other-app")
    doomed_id, other_id = await internal_id(db, app_keys), await internal_id(db, other)
    await run_policies(db, mode)
    sent: dict[int, list[dict[str, Any]]] = {}
    for keys, app in ((app_keys, doomed_id), (other, other_id)):
        sent[app] = mixed_events(rng, 40, now - 5 * 3600, 5 * 3600 - 5)
        await post_accepted(client, keys, sent[app])
    await run_policies(db, mode)
    # Back-dated after the policies ran: materialized by the ingest path's refresh.
    for keys, app in ((app_keys, doomed_id), (other, other_id)):
        back = mixed_events(rng, 10, now - 3 * 86400, 600)
        sent[app] += back
        await post_accepted(client, keys, back)
    await assert_rollups_match(db, sent)

    async with db.transaction():
        assert await apps.delete(db, app_keys.app_id)
    del sent[doomed_id]
    await assert_rollups_match(db, sent)
    for relation in await apps.deletable_relations(db):
        left = await db.fetchval(f"SELECT count(*) FROM {relation} WHERE app_id = $1", doomed_id)
        assert left == 0, relation
    # Later refreshes (the policies, a rebuild) agree: nothing comes back, nothing else goes.
    await run_policies(db, mode)
    await rebuild.rebuild(db, Edition(mode), now - 4 * 86400, now)
    await assert_rollups_match(db, sent)


# -- rebuild --------------------------------------------------------------------------


def as_row(e: dict[str, Any], app: int) -> tuple[Any, ...]:
    """A row for COPY on a plain connection: its time is a datetime."""
    t = EPOCH + timedelta(microseconds=exact_us(e["timestamp"]))
    values = {**e, "time": t, "app_id": app, "method": e["method"].upper(), "data": None}
    return tuple(values[c] for c in COLUMNS)


def as_ingest_row(e: dict[str, Any], app: int) -> tuple[Any, ...]:
    """The row the ingest path builds (decode.Row): its time in UNIX microseconds."""
    us = exact_us(e["timestamp"])
    return (us, *as_row(e, app)[1:])


@all_modes
async def test_rebuild_recomputes_bulk_loaded_events(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    rng = random.Random(5)
    now = time.time()
    app = await internal_id(db, app_keys)
    await run_policies(db, mode)
    via_api = mixed_events(rng, 30, now - 2 * 86400, 86400)
    await post_accepted(client, app_keys, via_api)
    # A bulk load straight into events, bypassing the ingest path.
    bulk = mixed_events(rng, 500, now - 3 * 86400, 3 * 86400 - 5)
    await db.copy_records_to_table(
        "events", records=[as_row(e, app) for e in bulk], columns=COLUMNS
    )
    windows = await rebuild.rebuild(db, Edition(mode), now - 3 * 86400, now)
    assert set(windows) == {r.relation for r in ROLLUPS}
    await assert_rollups_match(db, {app: via_api + bulk})
    # Rebuilding again changes nothing (Apache: delete + insert; Community: refresh).
    await rebuild.rebuild(db, Edition(mode), now - 3 * 86400, now)
    await assert_rollups_match(db, {app: via_api + bulk})
    # Ingest keeps working on top of a rebuild.
    live = mixed_events(rng, 10, now - 60, 50)
    await post_accepted(client, app_keys, live)
    await assert_rollups_match(db, {app: via_api + bulk + live})


@all_modes
async def test_rebuild_and_refreshes_stay_inside_the_raw_horizon(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """Raw events older than their retention are dropped; the rollups keep their rows
    there, and neither a rebuild nor the ingest path's refreshes recompute them from
    the nothing that is left."""
    rng = random.Random(9)
    now = time.time()
    app = await internal_id(db, app_keys)
    await run_policies(db, mode)
    old = mixed_events(rng, 30, now - 4 * 86400, 3600)
    recent = mixed_events(rng, 30, now - 3600, 3000)
    await post_accepted(client, app_keys, old)
    await post_accepted(client, app_keys, recent)
    await run_policies(db, mode)
    await assert_rollups_match(db, {app: old + recent})

    # Keep raw events 2 days, and drop what is older, as the retention job does.
    await db.execute("UPDATE retention SET keep_s = 2 * 86400 WHERE relation = 'events'")
    dropped = await db.fetch("SELECT drop_chunks('events', now() - interval '2 days')")
    assert dropped, "the old events' chunk should have been dropped"
    assert (
        await db.fetchval("SELECT count(*) FROM events WHERE time < now() - '3 days'::interval")
        == 0
    )

    windows = await rebuild.rebuild(db, Edition(mode), now - 5 * 86400, now)
    await assert_rollups_match(db, {app: old + recent})
    assert windows["events_1m"][0] >= now - 2 * 86400
    # A batch that reaches back across the horizon refreshes only inside it.
    back = mixed_events(rng, 5, now - 86400, 60)
    await post_accepted(client, app_keys, back)
    await run_policies(db, mode)
    await assert_rollups_match(db, {app: old + recent + back})

    # An event older than the horizon, in the same minute as stored ones: ingest
    # refuses it (nothing is stored, nothing refreshed), and the rollup rows already
    # there are not recomputed away.
    resp = await client.post(
        "/1/events/",
        json=[dict(old[0], function="elsewhere", response_us=1)],
        headers=write_headers(app_keys),
    )
    assert resp.status == 400, await resp.text()
    await run_policies(db, mode)
    await assert_rollups_match(db, {app: old + recent + back})


# -- refresh windows (pure) ---------------------------------------------------------

M = 60 * 1_000_000


@pytest.mark.parametrize(
    ("buckets", "limit", "windows"),
    [
        pytest.param([], 8, [], id="none"),
        pytest.param([0], 8, [(0, M)], id="one_bucket"),
        pytest.param([0, M, 2 * M], 8, [(0, 3 * M)], id="adjacent_join"),
        pytest.param([0, 5 * M], 8, [(0, M), (5 * M, 6 * M)], id="gap_kept"),
        pytest.param(
            [0, 2 * M, 10 * M, 11 * M], 2, [(0, 3 * M), (10 * M, 12 * M)], id="smallest_gap_closed"
        ),
        pytest.param([0, 2 * M, 10 * M], 1, [(0, 11 * M)], id="all_closed"),
    ],
)
def test_refresh_windows(buckets: list[int], limit: int, windows: list[tuple[int, int]]) -> None:
    assert pending.coalesce(buckets, M, limit) == windows


@pytest.mark.parametrize(
    ("start", "end", "horizon", "window"),
    [
        pytest.param(0, 10 * M, None, (0, 10 * M), id="no_horizon"),
        pytest.param(0, 10 * M, 120.0, (2 * M, 10 * M), id="horizon_on_bucket"),
        pytest.param(0, 10 * M, 120.5, (3 * M, 10 * M), id="horizon_inside_bucket_skips_it"),
        pytest.param(0, 2 * M, 120.0, None, id="all_before_horizon"),
    ],
)
def test_refresh_window_clamped_to_horizon(
    start: int, end: int, horizon: float | None, window: tuple[int, int] | None
) -> None:
    assert community._clamp(start, end, M, horizon) == window


# -- the batch aggregation in the database (property) --------------------------------

_events = st.lists(
    st.fixed_dictionaries(
        {
            "timestamp": st.floats(min_value=1.6e9, max_value=1.6e9 + 3 * 86400),
            "consumer_id": st.sampled_from(["", "a", "b"]),
            "method": st.sampled_from(["GET", "post"]),
            "function": st.sampled_from(["", "f"]),
            "status_code": st.sampled_from([200, 500]),
            "response_us": st.integers(min_value=0, max_value=2**40),
        }
    ),
    max_size=40,
)


async def upkept(database_url: str, batches: list[list[tuple[Any, ...]]]) -> dict[str, Totals]:
    """What the Apache-mode materializer makes of the (empty) rollups for ``batches``,
    each stored with its pending stretches and materialized in turn, in one transaction
    rolled back afterwards (the rows' app is the database's first: ``app_id`` 1)."""
    conn = await asyncpg.connect(database_url)
    try:
        await unix_us_timestamps(conn)
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "INSERT INTO apps (id, public_id, name, write_key_digest, read_key_digest) "
                "OVERRIDING SYSTEM VALUE VALUES (1, 'one', 'one', '', '')"
            )
            for rows in batches:
                await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
                await pending.record(conn, {1: [r[0] for r in rows]})
                assert (await materializer.catch_up_once(conn, Edition.APACHE)).ran
            # Read the buckets back as datetimes, as the oracle has them.
            await conn.reset_type_codec("timestamptz", schema="pg_catalog")
            return {r.relation: await held(conn, r.relation) for r in ROLLUPS}
        finally:
            await tx.rollback()
    finally:
        await conn.close()


@settings(
    max_examples=60,
    deadline=None,
    # One database for every example: each runs in a transaction rolled back after it.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=_events, split=st.integers(min_value=0, max_value=40))
def test_upkeep_in_the_database_matches_oracle(
    database_url: str, events: list[dict[str, Any]], split: int
) -> None:
    """The rows aggregated by the database into every rollup, in two batches (the
    second one adding to the first one's rows), equal the brute-force oracle."""
    rows = [as_ingest_row({**e, "url": "/"}, 1) for e in events]
    got = run(upkept(database_url, [rows[:split], rows[split:]]))
    assert isinstance(got, dict)
    for rollup in ROLLUPS:
        assert got[rollup.relation] == oracle(events, 1, rollup), rollup.relation


# -- migrations -----------------------------------------------------------------------


@all_modes
async def test_migrate_on_an_empty_database_reports_the_mode_and_builds_the_shape(
    mode: str, servers: Servers
) -> None:
    server = servers.servers[mode]
    name = f"empty_{os.getpid()}_{mode}"
    admin = await asyncpg.connect(server.admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    try:
        env = {**os.environ, "APINALYTICS_DATABASE_URL": server.dsn(name)}
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "apinalytics", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert f"rollup mode: {mode}" in out.stdout
        assert "0002_rollups." + mode + ".sql" in out.stdout
        conn = await asyncpg.connect(server.dsn(name))
        try:
            for rollup in ROLLUPS:
                columns = await conn.fetch(
                    "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
                    "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
                    "ORDER BY attnum",
                    rollup.relation,
                )
                assert [(c["attname"], c["type"]) for c in columns] == shape(rollup), (
                    rollup.relation
                )
            caggs = await conn.fetch(
                "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            )
            if mode == "community":
                assert {(r["view_name"], r["materialized_only"]) for r in caggs} == {
                    (r.relation, False) for r in ROLLUPS
                }
            else:
                assert caggs == []
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(server.admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@all_modes
@pytest.mark.parametrize(
    ("before", "migration", "added", "source"),
    [
        pytest.param(4, "0005_narrow_rollups", NARROW[:3], "events_1h", id="0005_narrow_hour"),
        pytest.param(6, "0007_minute_app_rollup", NARROW[3:], "events_1m", id="0007_minute_app"),
    ],
)
async def test_migration_brings_narrow_rollups_to_an_existing_database(
    mode: str,
    servers: Servers,
    tmp_path: Path,
    before: int,
    migration: str,
    added: tuple[str, ...],
    source: str,
) -> None:
    """A database migrated up to an older migration, with data and a retention of the
    rollup the new ones are built from, gets the narrow rollups with that rollup's data
    (Apache: copied; Community: real-time from it until refreshed) and its retention."""
    name = f"upgrade_{os.getpid()}_{mode}"
    older = servers.servers[mode].older_schema(name, tmp_path / "migrations", lambda n: n <= before)
    async with older as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            app = await conn.fetchval(
                "INSERT INTO apps (public_id, name, write_key_digest, read_key_digest) "
                "VALUES ('upgrade', 'upgrade', '', '') RETURNING id"
            )
            rng = random.Random(13)
            now = time.time()
            # All before the hour of `end`, so what 0004's rollups hold covers them.
            events = mixed_events(rng, 200, now - 3 * 86400, 3 * 86400 - 7200)
            rows = [as_row(e, app) for e in events]
            await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
            start = datetime.fromtimestamp(hour_floor(now) - 4 * 86400, UTC)
            end = datetime.fromtimestamp(hour_floor(now), UTC)
            if mode == "apache":
                for rollup in ROLLUPS[:2]:
                    await conn.execute(
                        rebuild._REBUILD[rollup.relation],
                        int(start.timestamp()),
                        int(end.timestamp()),
                    )
            else:
                for relation in ("events_1m", "events_1h"):
                    await conn.execute(
                        "CALL refresh_continuous_aggregate($1, $2::timestamptz, $3::timestamptz)",
                        relation,
                        start,
                        end,
                    )
            await conn.execute(
                "UPDATE retention SET keep_s = 30 * 86400 WHERE relation = $1", source
            )
        finally:
            await conn.close()

        result = await migrate.migrate(dsn)
        assert result.applied[0] == f"{migration}.{mode}.sql"
        conn = await asyncpg.connect(dsn)
        try:
            for relation in added:
                got = await held(conn, relation, app)
                assert got == oracle(events, app, by_relation(relation)), relation
            keep = dict(await conn.fetch("SELECT relation, keep_s FROM retention"))
            assert {r: keep[r] for r in added} == dict.fromkeys(added, 30 * 86400)
            if mode == "community":
                jobs = await retention.retention_jobs(conn)
                assert {r: jobs[r].after_s for r in added} == dict.fromkeys(added, 30 * 86400)
        finally:
            await conn.close()


@all_modes
async def test_the_rollups_rebuild_command_takes_in_a_bulk_load(
    mode: str, database_url: str, tmp_path: Path, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """``apinalytics rollups rebuild START END``, the DBA's command after loading events
    straight into the table: the rollups then hold them, with ISO or UNIX bounds."""
    rng = random.Random(13)
    now = time.time()
    app = await internal_id(db, app_keys)

    async def load(events: list[dict[str, Any]]) -> None:
        rows = [as_row(e, app) for e in events]
        await db.copy_records_to_table("events", records=rows, columns=COLUMNS)

    # Recent events, then the policies' runs (Community: which move the thresholds past
    # them), then a load older than every policy's window (7 days at most): the ingest
    # path's upkeep (Apache) and the policies (Community) leave it out of the rollups.
    recent = mixed_events(rng, 20, now - 6 * 3600, 3600)
    await load(recent)
    await run_policies(db, mode)
    bulk = mixed_events(rng, 200, now - 12 * 86400, 2 * 86400)
    await load(bulk)
    await run_policies(db, mode)
    calls = sum(c for c, *_ in (await held(db, "events_1h_app", app)).values())
    assert calls == (len(recent) if mode == "community" else 0)

    start = datetime.fromtimestamp(now - 13 * 86400, UTC).replace(tzinfo=None).isoformat()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apinalytics", "rollups", "rebuild", start, str(int(now)),
        env={**os.environ, "APINALYTICS_DATABASE_URL": database_url,
             "APINALYTICS_HOME": str(tmp_path / "home")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "events_1m: rebuilt" in out.decode() and "events_1h: rebuilt" in out.decode()
    await assert_rollups_match(db, {app: recent + bulk})
