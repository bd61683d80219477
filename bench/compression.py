"""Compression benchmark (Community edition): bytes per event before and after, and
queries over compressed against uncompressed chunks.

For each dataset (``--apps``: one app, then several), a database of its own in the
non-durable cluster ``bench/data/compression`` gets ``--events`` events over
``--days`` days from ``generate.generate`` (COPY, rollups rebuilt, VACUUM ANALYZE).
Then, in order:

1. the size of ``events`` and of every rollup's stored hypertable
   (``hypertable_size``: heap, indexes and TOAST), and the queries below, uncompressed;
2. ``compression.set_compress_after(1 day)`` and every policy run at once
   (``compression.run_policies``, ``CALL run_job``), timed; ``VACUUM ANALYZE``;
3. the sizes again, ``hypertable_compression_stats``, and the same queries, whose
   answers must equal the uncompressed ones.

The queries go through HTTP to the service (``create_app`` behind an AppRunner in this
process), for the busiest app, ``--requests`` times each, uncompressed and compressed
runs one after the other (the median of each; the ratio is what to read on a shared
machine). Besides, ``--alternatives`` compresses a copy of the last 7 days of raw
events under other segmentby/orderby choices and reports their bytes per event and
the SQL time of a 7-day p95 of the busiest app.

    .venv/bin/python bench/compression.py [--events 3000000] [--days 30] [--apps 1,10]
        [--requests 7] [--alternatives]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

import generate
from apinalytics import compression, localdb, migrate
from apinalytics.app import create_app
from apinalytics.rollups import RAW, ROLLUPS
from apinalytics.settings import Settings
from common import DATA, LICENSES, machine, machine_line, median, stored_relation

DAY = 86400
MODE = "community"
# (name, range in seconds before the data's end, query parameters)
QUERIES: list[tuple[str, int, dict[str, str]]] = [
    ("p95 hourly, 7 days (raw)", 7 * DAY, {"aggregation": "percentile_95", "granularity": "hour"}),
    (
        "p95 by function, 7 days (raw)",
        7 * DAY,
        {"aggregation": "percentile_95", "group": "function"},
    ),
    ("count by function hourly, 30 days", 30 * DAY, {"granularity": "hour", "group": "function"}),
    ("mean per minute, 24 h", DAY, {"aggregation": "mean", "granularity": "minute"}),
]
# segmentby, orderby: the declared one first.
ALTERNATIVES = [
    ("app_id", "time DESC"),
    ("app_id", "function, time DESC"),
    ("app_id, function", "time DESC"),
    ("", "app_id, time DESC"),
]


async def main() -> None:
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=3_000_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--apps", default="1,10", help="datasets: apps per dataset, comma-separated")
    p.add_argument("--requests", type=int, default=7)
    p.add_argument("--alternatives", action="store_true")
    args = p.parse_args()
    c = await asyncio.to_thread(start_cluster)
    results = []
    try:
        for n_apps in (int(a) for a in args.apps.split(",")):
            results.append(await dataset(c, n_apps, args))
    finally:
        await asyncio.to_thread(c.stop)
    out = DATA / "compression-results.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"results in {out}")


def start_cluster() -> localdb.LocalCluster:
    """A fresh non-durable cluster without TimescaleDB's job scheduler: the policies run
    when this script calls them (a scheduled run of the same policy at the same time
    would fail on the chunks this one is compressing)."""
    datadir = DATA / "compression"
    old = localdb.LocalCluster(datadir, localdb.find_bindir())
    if datadir.exists():
        old.datadir = datadir.resolve()
        old.stop()
        shutil.rmtree(datadir)
    return localdb.LocalCluster(
        datadir, localdb.find_bindir(), license=LICENSES[MODE], durable=False, background_jobs=False
    ).ensure_running()


async def dataset(c: localdb.LocalCluster, n_apps: int, args: argparse.Namespace) -> dict[str, Any]:
    name = f"apps_{n_apps}"
    admin = await asyncpg.connect(c.dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    dsn = c.dsn_for(name)
    await migrate.migrate(dsn)
    data = await generate.generate(
        dsn, MODE, events=args.events, days=args.days, n_apps=n_apps, fill=fill
    )
    app = max(data["app_list"], key=lambda a: a["events"])
    conn = await asyncpg.connect(dsn)
    try:
        m = await machine(conn)
        load_before = os.getloadavg()
        before = await sizes(conn)
        plain = await queries(dsn, app, data["end"], args.requests)
        t0 = time.perf_counter()
        await compression.set_compress_after(conn, DAY, available=True)
        compressed_chunks = await compression.run_policies(conn)
        compress_s = time.perf_counter() - t0
        for rel in (RAW, *(r.relation for r in ROLLUPS)):
            await conn.execute(f"VACUUM ANALYZE {await stored_relation(conn, MODE, rel)}")
        after = await sizes(conn)
        stats = await compression.stats(conn)
        packed = await queries(dsn, app, data["end"], args.requests)
        alternatives = (
            await compare_settings(conn, app["id"], data["end"]) if args.alternatives else []
        )
        load_after = os.getloadavg()
    finally:
        await conn.close()
    result = {
        "apps": n_apps,
        "events": data["stored"],
        "busiest_app_events": app["events"],
        "machine": m,
        "load_before": load_before,
        "load_after": load_after,
        "compress_s": round(compress_s, 1),
        "chunks_compressed": len(compressed_chunks),
        "before": before,
        "after": after,
        "stats": {k: vars(v) for k, v in stats.items()},
        "queries": [
            {"query": q, "plain": a, "compressed": b}
            for q, a, b in zip([q[0] for q in QUERIES], plain, packed, strict=True)
        ],
        "alternatives": alternatives,
    }
    report(result)
    for q, a, b in zip(QUERIES, plain, packed, strict=True):
        if a["answer"] != b["answer"]:
            raise SystemExit(f"{q[0]}: the answer changed after compression")
    return result


async def fill(dsn: str, mode: str, data: dict[str, Any]) -> float:
    """Each rollup refreshed once over the whole range, in declaration order; returns
    the seconds taken. On a fresh database this materializes what ``rebuild`` would,
    without its day slices: a day's refresh of an aggregate built on another reads its
    source's real-time part, every later day's raw events, so slice by slice costs
    grow with the square of the days (8 minutes for the first of 30 days here)."""
    t0 = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        lo = data["start"] // 3600 * 3600
        hi = int(time.time()) // 3600 * 3600  # never the current hour (rebuild's rule)
        for r in ROLLUPS:
            await conn.execute(
                "CALL refresh_continuous_aggregate($1, to_timestamp($2), to_timestamp($3))",
                r.relation,
                lo,
                hi,
            )
        await generate.vacuum_analyze(conn, mode)
    finally:
        await conn.close()
    return round(time.perf_counter() - t0, 1)


async def sizes(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    out = {}
    for rel in (RAW, *(r.relation for r in ROLLUPS)):
        stored = await stored_relation(conn, MODE, rel)
        out[rel] = {
            "bytes": int(await conn.fetchval("SELECT hypertable_size($1::regclass)", stored) or 0),
            "rows": int(await conn.fetchval(f"SELECT count(*) FROM {stored}")),
        }
    return out


async def queries(dsn: str, app: dict[str, Any], end: int, requests: int) -> list[dict[str, Any]]:
    settings = Settings(
        database_url=dsn, home=DATA / "home", log_level="WARNING", statement_timeout_s=300
    )
    runner = web.AppRunner(create_app(settings, run_migrations=False), access_log=None)
    await runner.setup()
    port = localdb.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    headers = {"X-Auth-User": app["app_id"], "X-Auth-Key": app["read_key"]}
    out = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            for _, range_s, params in QUERIES:
                url = f"http://127.0.0.1:{port}/1/timeseries/{end - range_s}/{end}/"
                times, answer, sources = [], None, ""
                for _ in range(requests + 1):  # the first one warms up
                    t = time.perf_counter()
                    async with session.get(url, params=params, headers=headers) as resp:
                        body = await resp.read()
                        times.append(time.perf_counter() - t)
                        if resp.status != 200:
                            raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
                        answer = json.loads(body)
                        sources = resp.headers.get("X-Apinalytics-Sources", "")
                out.append({"ms": median(times[1:]) * 1000, "sources": sources, "answer": answer})
    finally:
        await runner.cleanup()
    return out


async def compare_settings(conn: asyncpg.Connection, app_id: int, end: int) -> list[dict[str, Any]]:
    """Each ALTERNATIVES setting on a copy of the last 7 days of raw events."""
    out = []
    lo = f"to_timestamp({end - 7 * DAY})"
    hi = f"to_timestamp({end})"
    n = int(await conn.fetchval(f"SELECT count(*) FROM events WHERE time >= {lo} AND time < {hi}"))
    p95 = (
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY response_us) FROM alt "
        f"WHERE app_id = $1 AND time >= {lo} AND time < {hi}"
    )
    for segment_by, order_by in ALTERNATIVES:
        await conn.execute("DROP TABLE IF EXISTS alt")
        await conn.execute("CREATE TABLE alt (LIKE events)")
        await conn.execute(
            "SELECT create_hypertable('alt', by_range('time', INTERVAL '1 day'), "
            "create_default_indexes => false)"
        )
        await conn.execute("CREATE INDEX ON alt (app_id, time)")
        await conn.execute(
            f"INSERT INTO alt SELECT * FROM events WHERE time >= {lo} AND time < {hi}"
        )
        await conn.execute(
            f"ALTER TABLE alt SET (timescaledb.compress, timescaledb.compress_segmentby = "
            f"'{segment_by}', timescaledb.compress_orderby = '{order_by}')"
        )
        t0 = time.perf_counter()
        await conn.execute("SELECT compress_chunk(c) FROM show_chunks('alt') c")
        seconds = time.perf_counter() - t0
        await conn.execute("VACUUM ANALYZE alt")
        size = int(await conn.fetchval("SELECT hypertable_size('alt')"))
        await conn.fetchval(p95, app_id)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            await conn.fetchval(p95, app_id)
            times.append(time.perf_counter() - t)
        out.append(
            {
                "segmentby": segment_by,
                "orderby": order_by,
                "bytes_per_event": size / n,
                "compress_s": round(seconds, 1),
                "p95_ms": median(times) * 1000,
            }
        )
        print(f"  alt segmentby={segment_by!r} orderby={order_by!r}: {out[-1]}", flush=True)
    await conn.execute("DROP TABLE alt")
    return out


def report(r: dict[str, Any]) -> None:
    n = r["events"]
    print(f"\n## {r['apps']} app(s), {n:,} events; {machine_line(r['machine'])}")
    print(
        f"load {r['load_before']} -> {r['load_after']}; compressed {r['chunks_compressed']} "
        f"chunks in {r['compress_s']} s"
    )
    print("| relation | rows per event | before, B/event | after, B/event | ratio |")
    print("|---|---:|---:|---:|---:|")
    for rel, b in r["before"].items():
        a = r["after"][rel]
        ratio = b["bytes"] / a["bytes"] if a["bytes"] else 0
        print(
            f"| {rel} | {b['rows'] / n:.3f} | {b['bytes'] / n:.1f} | {a['bytes'] / n:.1f} "
            f"| {ratio:.1f} |"
        )
    print("| query | sources | uncompressed ms | compressed ms | ratio |")
    print("|---|---|---:|---:|---:|")
    for q in r["queries"]:
        a, b = q["plain"], q["compressed"]
        print(
            f"| {q['query']} | {b['sources']} | {a['ms']:.1f} | {b['ms']:.1f} "
            f"| {b['ms'] / a['ms']:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
