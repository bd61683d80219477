"""Data lifecycle: `apinalytics retention show|set|apply` and the horizons queries honour.

* Retention is kept per relation (events, events_1m, events_1h); forever by default.
* ``set`` refuses what would lose data or exact answers, one sentence per reason that
  names the option to change: a finer rollup kept longer than a coarser one; on the
  Community edition a relation kept shorter than the refresh window (plus a bucket)
  of a rollup built on it.
* Ingest refuses events older than the raw retention (400 naming index and field),
  so back-dated events never land where no refresh may reach them.
* ``apply`` drops exactly the chunks entirely past retention in each relation, and
  nothing with ``--dry-run``; destructive actions need ``--yes`` away from a terminal.
  On the Community edition the retention policies do the dropping; ``--run`` runs them.
* Rollups outlive raw events: once raw chunks are gone, refreshes never reach into
  the dropped range (TimescaleDB would delete the rollup rows there), and queries the
  rollups answer exactly still equal a brute-force oracle; the others get 410
  ``past_retention``.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import retention
from apinalytics.__main__ import build_parser
from apinalytics.apps import NewApp
from apinalytics.edition import Edition
from apinalytics.rollups import rebuild
from apinalytics.settings import Settings

from ..conftest import ALL_MODES
from ..helpers import assert_error, event, read_headers, write_headers

ROOT = Path(__file__).resolve().parents[2]
MIN, HOUR, DAY = 60, 3600, 86400
SPAN_DAYS = 40
EVERY_S = 900
# What the data-lifecycle tests set: raw 10 days, minute 20 days, hour forever.
KEEP = {"events": 10 * DAY, "events_1m": 20 * DAY, "events_1h": None}
NARROW = ("events_1h_app", "events_1h_function", "events_1h_consumer")


# -- data spread over many days and chunks ----------------------------------------


async def app_id(db: asyncpg.Connection, app: NewApp) -> int:
    return int(await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id))


async def spread(
    db: asyncpg.Connection, app: NewApp, mode: str
) -> tuple[datetime, list[asyncpg.Record]]:
    """One event every 15 minutes (with jitter) for SPAN_DAYS days up to an hour ago,
    inserted directly (older than the ingest window), rollups rebuilt over them."""
    now: datetime = await db.fetchval("SELECT date_trunc('hour', now())")
    first = now - timedelta(days=SPAN_DAYS)
    n = SPAN_DAYS * DAY // EVERY_S - 4
    await db.execute(
        """
        INSERT INTO events
        SELECT $2::timestamptz + make_interval(secs => i * $3 + (i * 37) % $3 + (i % 7) / 1000.0), $1,
               'c' || i % 3, (ARRAY['GET', 'POST'])[1 + i % 2], '/u/' || i % 5, 'f' || i % 4,
               (i * 7919) % 100000, (ARRAY[200, 404, 500])[1 + i % 3], NULL
        FROM generate_series(0, $4 - 1) AS i
        """,
        await app_id(db, app),
        first,
        EVERY_S,
        n,
    )
    await rebuild.rebuild(db, Edition(mode), first.timestamp(), now.timestamp())
    rows = await db.fetch(
        "SELECT extract(epoch FROM time)::float8 AS t, function, url, response_us FROM events"
    )
    assert len(rows) == n
    return now, rows


async def chunk_ranges(db: asyncpg.Connection) -> dict[str, set[tuple[datetime, datetime]]]:
    """Chunk ranges per relation, straight from TimescaleDB's catalog views."""
    rows = await db.fetch(
        """
        SELECT coalesce(ca.view_name, c.hypertable_name) AS rel, c.range_start, c.range_end
        FROM timescaledb_information.chunks c
        LEFT JOIN timescaledb_information.continuous_aggregates ca
          ON ca.materialization_hypertable_name = c.hypertable_name
        """
    )
    out: dict[str, set[tuple[datetime, datetime]]] = defaultdict(set)
    for r in rows:
        out[r["rel"]].add((r["range_start"], r["range_end"]))
    return out


def expired(
    ranges: dict[str, set[tuple[datetime, datetime]]], now: datetime
) -> dict[str, set[Any]]:
    out: dict[str, set[Any]] = {}
    for rel, k in KEEP.items():
        out[rel] = (
            set() if k is None else {r for r in ranges[rel] if r[1] <= now - timedelta(seconds=k)}
        )
    return out


async def cli(settings: Settings, *argv: str) -> int:
    """The retention command in this process (same parser and code as the script)."""
    args = build_parser().parse_args(["retention", *argv])
    rc: int = await args.func(args, settings)
    return rc


async def apply_now(db: asyncpg.Connection, settings: Settings, mode: str) -> None:
    flags = ["apply", "--yes"] + (["--run"] if mode == "community" else [])
    assert await cli(settings, *flags) == 0


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_apply_drops_exactly_the_expired_chunks_and_dry_run_nothing(
    mode: str,
    settings: Settings,
    db: asyncpg.Connection,
    app_keys: NewApp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await spread(db, app_keys, mode)
    before = await chunk_ranges(db)
    assert len(before["events"]) >= SPAN_DAYS
    assert await cli(settings, "set", "--raw", "10d", "--minute", "20d", "--yes") == 0

    assert await cli(settings, "apply", "--dry-run") == 0
    assert await chunk_ranges(db) == before, "--dry-run dropped something"
    listed = capsys.readouterr().out
    assert "would drop events" in listed

    t0: datetime = await db.fetchval("SELECT now()")
    await apply_now(db, settings, mode)
    t1: datetime = await db.fetchval("SELECT now()")
    after = await chunk_ranges(db)
    lo, hi = expired(before, t0), expired(before, t1)
    for rel in KEEP:
        dropped = before[rel] - after[rel]
        assert lo[rel] <= dropped <= hi[rel], rel
        assert after[rel] <= before[rel], f"{rel} gained chunks"
    assert lo["events"] and lo["events_1m"], "the data must reach past both retentions"
    assert "dropped events" in capsys.readouterr().out
    # Applying again finds nothing more.
    assert await cli(settings, "apply", "--dry-run") == 0
    assert "nothing past retention" in capsys.readouterr().out

    # What was dropped is recorded; the horizons follow the retention in force.
    hz = await retention.horizons(db)
    assert hz["events_1h"] is None
    for rel in ("events", "events_1m"):
        assert hz[rel] == pytest.approx(t1.timestamp() - KEEP[rel], abs=60)
        recorded = await db.fetchval(
            "SELECT dropped_before FROM retention WHERE relation = $1", rel
        )
        assert recorded == max(r[1] for r in before[rel] - after[rel])


async def test_apply_asks_before_dropping(
    settings: Settings, db: asyncpg.Connection, app_keys: NewApp, capsys: pytest.CaptureFixture[str]
) -> None:
    await spread(db, app_keys, "apache")
    assert await cli(settings, "set", "--raw", "10d", "--minute", "20d", "--yes") == 0
    before = await chunk_ranges(db)
    # Not at a terminal (pytest's stdin) and no --yes: usage error, nothing dropped.
    assert await cli(settings, "apply") == 2
    assert "--yes" in capsys.readouterr().err
    assert await chunk_ranges(db) == before


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["--raw", "30d", "--minute", "180d", "--hour", "90d"], ["--hour to at least 180d"]),
        (["--minute", "forever", "--hour", "5y"], ["--hour to at least forever"]),
    ],
    ids=["minute_longer_than_hour", "minute_forever_hour_finite"],
)
async def test_unsafe_set_refused_and_nothing_changed(
    mode: str,
    settings: Settings,
    db: asyncpg.Connection,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    mentions: list[str],
) -> None:
    policies = (
        "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
    )
    assert await cli(settings, "set", *argv, "--yes") == 3
    err = capsys.readouterr().err
    for m in mentions:
        assert m in err
    assert await retention.retention_in_force(db) == {
        "events": None,
        "events_1m": None,
        "events_1h": None,
        "events_1h_app": None,
        "events_1h_function": None,
        "events_1h_consumer": None,
        "events_1m_app": None,
        "events_1h_function_hist": None,
        "events_1h_app_hist": None,
    }
    assert await db.fetchval(policies) == 0


@pytest.mark.community
@pytest.mark.parametrize("mode", ["community"], indirect=True)
async def test_community_refusals_name_the_windows(
    mode: str, settings: Settings, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(settings, "set", "--raw", "1d", "--yes") == 3
    err = capsys.readouterr().err
    assert "refresh window" in err and "--raw to at least 2d" in err
    # Accepted settings become retention policies with the same drop_after; --minute
    # sets events_1m and events_1m_app alike.
    assert await cli(settings, "set", "--raw", "10d", "--minute", "20d", "--yes") == 0
    jobs = await retention.retention_jobs(db)
    assert {rel: j.after_s for rel, j in jobs.items()} == {
        "events": 10 * DAY,
        "events_1m": 20 * DAY,
        "events_1m_app": 20 * DAY,
    }
    # --hour sets events_1h, the narrow hour rollups and the histograms alike.
    assert await cli(settings, "set", "--hour", "30d", "--yes") == 0
    jobs = await retention.retention_jobs(db)
    assert {rel: j.after_s for rel, j in jobs.items() if rel.startswith("events_1h")} == (
        dict.fromkeys(
            ("events_1h", *NARROW, "events_1h_function_hist", "events_1h_app_hist"), 30 * DAY
        )
    )
    # Forever removes the policy.
    assert await cli(settings, "set", "--minute", "forever", "--hour", "forever") == 0
    assert set(await retention.retention_jobs(db)) == {"events"}


@pytest.mark.community
@pytest.mark.parametrize("mode", ["community"], indirect=True)
async def test_rollups_outlive_raw_events(
    mode: str, settings: Settings, db: asyncpg.Connection, app_keys: NewApp
) -> None:
    """After the policies drop raw chunks, every refresh the service runs leaves the
    rollup rows of the dropped period intact; a refresh reaching into it would not."""
    now, _ = await spread(db, app_keys, mode)
    old = (now - timedelta(days=SPAN_DAYS + 1), now - timedelta(days=12))
    count = "SELECT coalesce(sum(calls), 0) FROM {} WHERE bucket >= $1 AND bucket < $2"
    want = await db.fetchval("SELECT count(*) FROM events WHERE time >= $1 AND time < $2", *old)
    assert await db.fetchval(count.format("events_1m"), *old) == want > 0

    assert await cli(settings, "set", "--raw", "10d", "--yes") == 0
    await apply_now(db, settings, mode)
    assert await db.fetchval("SELECT count(*) FROM events WHERE time < $1", old[1]) == 0

    # The refresh policies, a rebuild over everything, a back-dated event's refresh.
    for job in await db.fetch(
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY job_id"
    ):
        await db.execute("CALL run_job($1)", job["job_id"])
    await rebuild.rebuild(db, Edition(mode), old[0].timestamp(), now.timestamp())
    for rel in ("events_1m", "events_1h", *NARROW):
        assert await db.fetchval(count.format(rel), *old) == want, rel

    # The trap is real: a refresh from the start of time deletes those rows.
    await db.execute(
        "CALL refresh_continuous_aggregate('events_1m', NULL, $1::timestamptz)", old[1]
    )
    assert await db.fetchval(count.format("events_1m"), *old) == 0


# -- the planner over what is left: rollups answer, the rest is 410 --------------


def oracle(
    rows: list[asyncpg.Record], start: int, end: int, width: int, agg: str
) -> dict[str, list[list[Any]]]:
    groups: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if start <= r["t"] < end:
            groups[r["function"]][int(r["t"] // width * width)].append(r["response_us"])
    fn = {"count": len, "sum": sum, "max": max}[agg]
    return {g: [[b, fn(v)] for b, v in sorted(series.items())] for g, series in groups.items()}


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_queries_after_raw_events_are_gone(
    mode: str, settings: Settings, client: TestClient, db: asyncpg.Connection, app_keys: NewApp
) -> None:
    now, rows = await spread(db, app_keys, mode)
    await cli(settings, "set", "--raw", "10d", "--minute", "20d", "--yes")
    await apply_now(db, settings, mode)
    t = int(now.timestamp())
    hour_only = (t - 35 * DAY, t - 25 * DAY)  # only events_1h is left there
    minute_too = (t - 18 * DAY, t - 17 * DAY)  # events_1m and events_1h
    cases: list[tuple[str, tuple[int, int], dict[str, str], int | None]] = [
        ("hourly_count_from_hour_rollup", hour_only, {"granularity": "hour"}, HOUR),
        (
            "daily_sum_from_hour_rollup",
            hour_only,
            {"granularity": "day", "aggregation": "sum"},
            DAY,
        ),
        (
            "minutely_max_from_minute_rollup",
            minute_too,
            {"granularity": "minute", "aggregation": "max"},
            MIN,
        ),
        (
            "whole_range_spanning_all_horizons",
            (t - 30 * DAY, t - 2 * DAY),
            {"granularity": "day"},
            DAY,
        ),
        ("percentile_past_raw", minute_too, {"aggregation": "percentile_95"}, None),
        ("url_group_past_raw", hour_only, {"group": "url"}, None),
        (
            "minute_granularity_past_minute_rollup",
            (t - 30 * DAY, t - 30 * DAY + 6 * HOUR),
            {"granularity": "minute"},
            None,
        ),
    ]
    for name, (start, end), params, width in cases:
        query = {"group": "function", **params}
        resp = await client.get(
            f"/1/timeseries/{start}/{end}/", params=query, headers=read_headers(app_keys)
        )
        if width is None:
            await assert_error(resp, 410, "past_retention", "past retention")
            continue
        assert resp.status == 200, (name, await resp.text())
        body = await resp.json()
        want = oracle(rows, start, end, width, params.get("aggregation", "count"))
        assert body["groups"] == want, name


# -- show, and the script itself ----------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_show_reports_each_relation(
    mode: str,
    settings: Settings,
    db: asyncpg.Connection,
    app_keys: NewApp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now, _ = await spread(db, app_keys, mode)
    assert await cli(settings, "set", "--raw", "10d", "--minute", "20d", "--yes") == 0
    capsys.readouterr()
    assert await cli(settings, "show", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mode"] == mode
    ranges = await chunk_ranges(db)
    for rel, k in KEEP.items():
        s = shown["relations"][rel]
        assert s["retention_s"] == k
        assert s["chunks"] == len(ranges[rel]) > 0
        assert s["bytes"] > 0
        assert s["oldest"] >= (now - timedelta(days=SPAN_DAYS)).timestamp() - HOUR
        assert s["newest"] <= now.timestamp()
        assert (s["policy_job_id"] is not None) == (mode == "community" and k is not None)
    assert shown["relations"]["events"]["oldest"] == pytest.approx(
        (now - timedelta(days=SPAN_DAYS)).timestamp(), abs=EVERY_S
    )
    assert await cli(settings, "show") == 0
    text = capsys.readouterr().out
    assert f"rollup mode: {mode}" in text
    for rel in KEEP:
        assert rel in text


@pytest.mark.parametrize(
    ("argv", "rc", "stream", "mention"),
    [
        (["show"], 0, "out", "rollup mode: apache"),
        (
            ["set", "--raw", "30d", "--minute", "180d", "--hour", "90d", "--yes"],
            3,
            "err",
            "--hour to at least 180d",
        ),
        (["set"], 2, "err", "at least one of"),
        (["set", "--raw", "30 days"], 2, "err", "not a duration"),
        (["apply", "--dry-run"], 0, "out", "nothing past retention"),
        (["apply"], 0, "out", "nothing past retention"),
    ],
    ids=["show", "refused", "nothing_to_set", "bad_duration", "dry_run", "nothing_to_drop"],
)
def test_script_exit_codes(
    database_url: str, argv: list[str], rc: int, stream: str, mention: str
) -> None:
    out = subprocess.run(
        [str(ROOT / "scripts" / "retention"), *argv, "--dsn", database_url],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "APINALYTICS_LOG_JSON": "false"},
    )
    assert out.returncode == rc, out.stderr
    assert mention in (out.stdout if stream == "out" else out.stderr)


def test_script_without_database_fails_with_1(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            str(ROOT / "scripts" / "retention"),
            "show",
            "--dsn",
            "postgresql://nobody@127.0.0.1:9/none",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "APINALYTICS_HOME": str(tmp_path)},
    )
    assert out.returncode == 1
    assert "apinalytics:" in out.stderr


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_longer_retention_keeps_the_old_horizon_where_data_may_be_gone(
    mode: str, settings: Settings, db: asyncpg.Connection
) -> None:
    """Community: the old policy may already have dropped up to now - old retention, so
    lengthening it must not claim that data back. Apache: only `apply` drops, and it
    records what it dropped, so the new retention is the horizon at once."""
    assert await cli(settings, "set", "--raw", "10d", "--yes") == 0
    assert await cli(settings, "set", "--raw", "20d") == 0
    now = float(await db.fetchval("SELECT extract(epoch FROM now())"))
    kept_back = 10 if mode == "community" else 20
    assert (await retention.horizons(db))["events"] == pytest.approx(now - kept_back * DAY, abs=60)
    assert await cli(settings, "set", "--raw", "forever") == 0
    hz = (await retention.horizons(db))["events"]
    assert (hz is None) == (mode == "apache")


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_ingest_refuses_events_past_raw_retention(
    mode: str,
    settings: Settings,
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
) -> None:
    assert await cli(settings, "set", "--raw", "10d", "--yes") == 0
    now = datetime.now().timestamp()
    inside = event(timestamp=now - 10 * DAY + HOUR)
    outside = event(timestamp=now - 10 * DAY - HOUR)

    resp = await client.post("/1/events/", json=[inside, outside], headers=write_headers(app_keys))
    err = await assert_error(resp, 400, "invalid_events", "event 1, field timestamp", "retention")
    assert err["details"] == [
        {"index": 1, "field": "timestamp", "message": err["details"][0]["message"]}
    ]
    assert await db.fetchval("SELECT count(*) FROM events") == 0

    resp = await client.post("/1/events/", json=[inside], headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()
    assert await db.fetchval("SELECT count(*) FROM events") == 1
