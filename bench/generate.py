"""Benchmark data: realistic events COPYed straight into ``events``, then the rollups rebuilt.

10 million events over the 30 days up to now (minute-aligned), across 10 apps whose
traffic is skewed like real tenants (the busiest has about a third of all events);
within an app ~50 consumers, ~30 functions and 10 status codes, a daily rhythm and
quieter weekends (see ``common.EventMaker``). The events bypass the HTTP path (COPY
in big batches), so the rollups are then recomputed from them with
``apinalytics.rollups.rebuild.rebuild``, day by day, exactly as an operator would
after a bulk load.

The cluster lives in ``bench/data/query-<mode>`` with a ``manifest.json`` beside it
(the apps' keys, the range, how long generation took); a later run with the same
parameters reuses it, after applying the migrations added since. Those fill the
rollups they add themselves (the Apache ones from existing rollups); the Community
ones create continuous aggregates with no data, and only those are refreshed here.
Every rollup is rebuilt only if a new one is still empty in the Apache mode (a full
rebuild of 10M events takes minutes). After any of this, ``events`` and every
rollup's stored relation get ``VACUUM ANALYZE``: a rebuild or a backfill leaves dead
rows and stale statistics, which skew both the plans and the sizes measured.

    .venv/bin/python bench/generate.py [--mode apache|community] [--events 10000000]
        [--days 30] [--apps 10] [--force]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from tqdm import tqdm

from apinalytics import apps, migrate
from apinalytics.edition import Edition
from apinalytics.ingest import decode
from apinalytics.rollups import RAW, ROLLUPS, Rollup, rebuild
from common import (
    DATA,
    EventMaker,
    as_row,
    database_cpu_s,
    diurnal_minutes,
    stored_relation,
    timestamps,
)
from common import cluster as start_cluster

DAY = 86400
# Rows per COPY statement: big enough that per-statement costs vanish, small enough
# that the next batch is generated while the database writes this one.
COPY_ROWS = 50_000
SEED = 20141015
# Bumped whenever the event model in common.py changes, so old data is not reused.
DATA_VERSION = 2


def data_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of a benchmark that reads this data: the modes, and what ``ensure``
    generates (or finds already generated)."""
    p.add_argument("--mode", default="apache", choices=["apache", "community", "all"])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--apps", type=int, default=10)


def manifest_path(mode: str) -> Path:
    return DATA / f"query-{mode}" / "manifest.json"


async def ensure(
    mode: str, *, events: int, days: int, n_apps: int, force: bool = False
) -> dict[str, Any]:
    """The dataset for ``mode``, generated unless an identical one is already there."""
    wanted = {
        "mode": mode,
        "events": events,
        "days": days,
        "apps": n_apps,
        "seed": SEED,
        "version": DATA_VERSION,
    }
    path = manifest_path(mode)
    if not force and path.exists():
        manifest: dict[str, Any] = json.loads(path.read_text())
        if {k: manifest.get(k) for k in wanted} == wanted:
            c = await asyncio.to_thread(start_cluster, f"query-{mode}", mode, fresh=False)
            manifest["dsn"] = c.dsn
            print(f"[{mode}] reusing {events:,} events in {c.datadir}", flush=True)
            before = await _existing(c.dsn)
            t0 = time.perf_counter()
            applied = (await migrate.migrate(c.dsn)).applied
            if applied:
                print(f"[{mode}] applied {', '.join(applied)}", flush=True)
                manifest["migrations"] = [*manifest.get("migrations", []), *applied]
                manifest["migrate_s"] = round(time.perf_counter() - t0, 1)
                new = [r for r in ROLLUPS if r.relation not in before]
                manifest["fill_s"] = await _fill_new_rollups(c.dsn, mode, manifest, new)
                path.write_text(json.dumps({**manifest, "dsn": None}, indent=1))
            return manifest
    c = await asyncio.to_thread(start_cluster, f"query-{mode}", mode, fresh=True)
    # The manifest goes only once the data is complete: an interrupted run starts over.
    result = await migrate.migrate(c.dsn)
    assert result.mode == mode, result
    manifest = {
        **wanted,
        **await generate(c.dsn, mode, events=events, days=days, n_apps=n_apps, datadir=c.datadir),
    }
    path.write_text(json.dumps(manifest, indent=1))
    manifest["dsn"] = c.dsn
    return manifest


async def generate(
    dsn: str,
    mode: str,
    *,
    events: int,
    days: int,
    n_apps: int,
    datadir: Path | None = None,
    fill: Callable[[str, str, dict[str, Any]], Awaitable[float]] | None = None,
) -> dict[str, Any]:
    """Make the apps and the events, COPY them, fill the rollups; the timings.

    ``fill`` fills the rollups and returns its seconds (default: a rebuild day by day,
    as an operator would, then VACUUM ANALYZE). With the cluster's ``datadir``, the
    database's CPU seconds (postmaster and every backend) are counted too:
    ``copy_db_cpu_s`` and, for the default fill, ``rebuild_db_cpu_s``, which the
    machine's other load does not inflate as it does the wall-clock times."""
    end = int(time.time()) // 60 * 60
    start = end - days * DAY
    conn = await asyncpg.connect(dsn)
    try:
        created = []
        for i in range(n_apps):
            new = await apps.create(conn, f"bench-{i}")
            internal = await conn.fetchval("SELECT id FROM apps WHERE public_id = $1", new.app_id)
            created.append({"app_id": new.app_id, "read_key": new.read_key, "id": internal})
    finally:
        await conn.close()

    # Tenants' shares of the traffic: 1/1, 1/2, ... 1/n, normalised.
    weights = [1 / (i + 1) for i in range(n_apps)]
    shares = [w / sum(weights) for w in weights]
    day_cums = [diurnal_minutes(start + d * DAY, 1440) for d in range(days)]
    total_weight = sum(c[-1] for c in day_cums)
    rng = random.Random(SEED)
    makers = [EventMaker(seed=SEED + i) for i in range(n_apps)]

    def day_rows(d: int) -> list[tuple[Any, ...]]:
        cum = day_cums[d]
        out: list[tuple[Any, ...]] = []
        for a, app in enumerate(created):
            n = round(events * shares[a] * cum[-1] / total_weight)
            ts = timestamps(rng, start + d * DAY, cum, n)
            out.extend(as_row(e, app["id"]) for e in makers[a].events(ts))
        out.sort(key=lambda r: r[0])
        return out

    t0 = time.perf_counter()
    cpu0 = database_cpu_s(datadir) if datadir else 0.0
    stored = 0
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    try:
        with tqdm(total=events, unit="ev", unit_scale=True, desc=f"events ({mode})") as bar:
            pending: asyncio.Task[None] | None = None
            for d in range(days):
                rows = await asyncio.to_thread(day_rows, d)
                for i in range(0, len(rows), COPY_ROWS):
                    chunk = rows[i : i + COPY_ROWS]
                    if pending:
                        await pending
                    pending = asyncio.create_task(_copy(pool, chunk, bar))
                    stored += len(chunk)
            if pending:
                await pending
    finally:
        await pool.close()
    copy_s = time.perf_counter() - t0
    copy_cpu = database_cpu_s(datadir) - cpu0 if datadir else None

    if fill is None:
        timing = await _rebuild(dsn, mode, {"start": start, "days": days}, datadir)
    else:
        timing = {"rebuild_s": await fill(dsn, mode, {"start": start, "days": days})}
    per_app = await _per_app(dsn)
    for app in created:
        app["events"] = per_app.get(app["id"], 0)
    return {
        "start": start,
        "end": end,
        "stored": stored,
        "app_list": created,
        "copy_s": round(copy_s, 1),
        "copy_db_cpu_s": None if copy_cpu is None else round(copy_cpu, 1),
        **timing,
    }


async def _rebuild(
    dsn: str, mode: str, data: dict[str, Any], datadir: Path | None = None
) -> dict[str, Any]:
    """Recompute every rollup from the raw events, day by day, then VACUUM ANALYZE.

    Returns the seconds taken: ``rebuild_s`` (the rebuild alone), ``rebuild_day_s``
    (each day's slice), ``vacuum_s``, and with ``datadir`` the database's CPU seconds
    for the rebuild, ``rebuild_db_cpu_s``, and for each day's slice.
    """
    conn = await asyncpg.connect(dsn)
    try:
        start = data["start"]
        days: list[float] = []
        days_cpu: list[float] = []
        t0 = time.perf_counter()
        cpu0 = database_cpu_s(datadir) if datadir else 0.0
        for d in tqdm(range(data["days"]), desc=f"rollups ({mode})", unit="day"):
            t = time.perf_counter()
            c = database_cpu_s(datadir) if datadir else 0.0
            await rebuild.rebuild(conn, Edition(mode), start + d * DAY, start + (d + 1) * DAY)
            days.append(round(time.perf_counter() - t, 2))
            if datadir:
                days_cpu.append(round(database_cpu_s(datadir) - c, 2))
        rebuild_s = time.perf_counter() - t0
        rebuild_cpu = database_cpu_s(datadir) - cpu0 if datadir else None
        t = time.perf_counter()
        await vacuum_analyze(conn, mode)
        vacuum_s = time.perf_counter() - t
    finally:
        await conn.close()
    return {
        "rebuild_s": round(rebuild_s, 1),
        "rebuild_day_s": days,
        "rebuild_db_cpu_s": None if rebuild_cpu is None else round(rebuild_cpu, 1),
        "rebuild_day_db_cpu_s": days_cpu,
        "vacuum_s": round(vacuum_s, 1),
    }


async def _existing(dsn: str) -> set[str]:
    """The rollup relations that exist (tables or continuous aggregates)."""
    conn = await asyncpg.connect(dsn)
    try:
        return {
            r.relation
            for r in ROLLUPS
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", r.relation)
        }
    finally:
        await conn.close()


async def _fill_new_rollups(
    dsn: str, mode: str, data: dict[str, Any], new: Sequence[Rollup]
) -> float:
    """Fill the rollups new migrations added, then VACUUM ANALYZE; returns the seconds.

    Community: a refresh of each new continuous aggregate over the data's range, in
    ``ROLLUPS`` order (every one after the one it is built from). Apache: the
    migrations fill their tables from the existing rollups; should a new table be
    empty all the same, every rollup is rebuilt from the raw events.
    """
    t0 = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        if mode == "apache":
            for r in new:
                if not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {r.relation})"):
                    print(f"[{mode}] {r.relation} is empty: rebuilding every rollup", flush=True)
                    timing = await _rebuild(dsn, mode, data)
                    return float(timing["rebuild_s"] + timing["vacuum_s"])
        else:
            hour = 3600
            lo = data["start"] // hour * hour
            # Not into the current hour: see rollups.rebuild on refresh windows.
            hi = min(-(-data["end"] // hour) * hour, int(time.time()) // hour * hour)
            for r in new:
                await conn.execute(
                    "CALL refresh_continuous_aggregate($1, $2::timestamptz, $3::timestamptz)",
                    r.relation,
                    datetime.fromtimestamp(lo, UTC),
                    datetime.fromtimestamp(hi, UTC),
                )
        await vacuum_analyze(conn, mode)
    finally:
        await conn.close()
    return round(time.perf_counter() - t0, 1)


async def vacuum_analyze(conn: asyncpg.Connection, mode: str) -> None:
    """VACUUM ANALYZE ``events`` and every rollup's stored relation (and their chunks)."""
    for relation in (RAW, *(r.relation for r in ROLLUPS)):
        await conn.execute(f"VACUUM ANALYZE {await stored_relation(conn, mode, relation)}")


async def _copy(pool: asyncpg.Pool, rows: Sequence[tuple[Any, ...]], bar: tqdm[Any]) -> None:
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("events", records=rows, columns=decode.COLUMNS)
    bar.update(len(rows))


async def _per_app(dsn: str) -> dict[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT app_id, count(*) AS n FROM events GROUP BY app_id")
        return {r["app_id"]: r["n"] for r in rows}
    finally:
        await conn.close()


def main() -> None:
    # Bulk loads and rebuilds run statements for seconds by design: not worth a warning.
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="apache", choices=["apache", "community"])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--apps", type=int, default=10)
    p.add_argument("--force", action="store_true", help="regenerate even if the data exists")
    args = p.parse_args()
    manifest = asyncio.run(
        ensure(args.mode, events=args.events, days=args.days, n_apps=args.apps, force=args.force)
    )
    start_cluster(f"query-{args.mode}", args.mode, fresh=False).stop()
    print(
        f"{manifest['stored']:,} events from {manifest['start']} to {manifest['end']}; "
        f"COPY {manifest['copy_s']} s, rollup rebuild {manifest['rebuild_s']} s, "
        f"VACUUM ANALYZE {manifest.get('vacuum_s', '-')} s; "
        f"in bench/data/query-{args.mode} (stopped; bench/query.py starts it)"
    )


if __name__ == "__main__":
    main()
