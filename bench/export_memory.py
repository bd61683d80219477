"""Export benchmark: the server's memory stays flat however large the export.

Generates realistic events (``common.EventMaker``) into a fresh non-durable cluster
in ``bench/data/export-<mode>`` (COPY, then the rollups rebuilt), then, per format
and export size, starts the service in a child process, streams
``GET /1/events/<start>/<end>/`` to a client that discards the bytes, and samples
the server's resident memory (VmRSS) every 10 ms. Reported: the resident size
after a warm-up export, the peak during the export, their difference, and
throughput. Also reports the on-disk bytes per event of each relation, for
sizing storage (docs/retention.md).

    .venv/bin/python bench/export_memory.py [--mode apache|community] [--events 1000000]
        [--days 7] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from apinalytics import apps, localdb, migrate
from apinalytics.edition import Edition
from apinalytics.rollups import rebuild
from common import (
    DATA,
    cluster,
    copy_diurnal,
    machine,
    machine_line,
    start_service,
    stop_service,
)

DAY = 86400
SEED = 20141015


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


async def load(dsn: str, mode: str, n: int, days: int) -> tuple[apps.NewApp, int, int, float]:
    """n events over ``days`` days up to now, for one app; returns the app and range."""
    conn = await asyncpg.connect(dsn)
    try:
        app = await apps.create(conn, "export-bench")
        internal = await conn.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
        end = int(time.time()) // 60 * 60
        start = end - days * DAY
        t = time.perf_counter()
        await copy_diurnal(conn, internal, start, days * 1440, n, SEED)
        copy_s = time.perf_counter() - t
        await rebuild.rebuild(conn, Edition(mode), start, end)
        await conn.execute("VACUUM ANALYZE")
        return app, start, end, copy_s
    finally:
        await conn.close()


async def sizes(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        events = int(await conn.fetchval("SELECT count(*) FROM events"))
        out = []
        for rel in ("events", "events_1m", "events_1h"):
            table = await conn.fetchval(
                """
                SELECT coalesce(
                    (SELECT format('%I.%I', materialization_hypertable_schema,
                                   materialization_hypertable_name)
                     FROM timescaledb_information.continuous_aggregates WHERE view_name = $1),
                    $1)
                """,
                rel,
            )
            size = int(await conn.fetchval("SELECT hypertable_size($1::regclass)", table))
            rows = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            out.append({"relation": rel, "bytes": size, "rows": rows, "per_event": size / events})
        return out
    finally:
        await conn.close()


async def nth_time(dsn: str, n: int) -> int:
    """The first whole second after the n-th event: [start, that) holds ~n events."""
    conn = await asyncpg.connect(dsn)
    try:
        t = await conn.fetchval("SELECT time FROM events ORDER BY time OFFSET $1 LIMIT 1", n - 1)
        return int(t.timestamp()) + 1
    finally:
        await conn.close()


async def export_once(
    port: int, app: apps.NewApp, start: int, end: int, fmt: str, pid: int
) -> dict[str, Any]:
    assert app.read_key
    headers = {"X-Auth-User": app.app_id, "X-Auth-Key": app.read_key}
    peak = rss_kib(pid)
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    nbytes = lines = 0
    t = time.perf_counter()
    url = f"http://127.0.0.1:{port}/1/events/{start}/{end}/?format={fmt}"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for chunk in resp.content.iter_chunked(1 << 16):
            nbytes += len(chunk)
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - t
    done.set()
    await sampler
    events = lines - (1 if fmt == "csv" else 0)
    return {"events": events, "bytes": nbytes, "seconds": elapsed, "peak_kib": peak}


async def bench(mode: str, args: argparse.Namespace) -> str:
    c = cluster(f"export-{mode}", mode, fresh=True)
    await migrate.migrate(c.dsn)
    app, start, _end, copy_s = await load(c.dsn, mode, args.events, args.days)
    conn = await asyncpg.connect(c.dsn)
    try:
        m = await machine(conn)
    finally:
        await conn.close()
    results = []
    for n in args.sizes:
        end = await nth_time(c.dsn, min(n, args.events))
        for fmt in ("ndjson", "csv"):
            port = localdb.free_port()
            proc = await start_service(c.dsn, port)
            try:
                # Warm-up: code paths, pool connection, prepared statements.
                await export_once(port, app, start, start + 60, fmt, proc.pid)
                base = rss_kib(proc.pid)
                r = await export_once(port, app, start, end, fmt, proc.pid)
                r |= {"format": fmt, "base_kib": base}
                results.append(r)
                print(r, file=sys.stderr, flush=True)
            finally:
                await stop_service(proc)
    sized = await sizes(c.dsn)
    c.stop()
    return report(mode, args, m, results, sized, copy_s)


def report(
    mode: str,
    args: argparse.Namespace,
    m: dict[str, str],
    results: list[dict[str, Any]],
    sized: list[dict[str, Any]],
    copy_s: float,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        f"### {mode} mode — {args.events:,} events over {args.days} days, one app ({when})",
        "",
        f"Machine: {machine_line(m)}.",
        "",
        "| format | events exported | bytes | seconds | events/s | server RSS after warm-up | peak RSS during export | growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['format']} | {r['events']:,} | {r['bytes'] / 2**20:.1f} MiB | {r['seconds']:.2f} | "
            f"{r['events'] / r['seconds']:,.0f} | {r['base_kib'] / 1024:.1f} MiB | "
            f"{r['peak_kib'] / 1024:.1f} MiB | {(r['peak_kib'] - r['base_kib']) / 1024:+.1f} MiB |"
        )
    lines += [
        "",
        "| relation | size on disk | rows | bytes per event |",
        "|---|---:|---:|---:|",
    ]
    for s in sized:
        lines.append(
            f"| {s['relation']} | {s['bytes'] / 2**20:.1f} MiB | {s['rows']:,} | {s['per_event']:.1f} |"
        )
    lines += ["", f"Load: COPY {copy_s:.1f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from common import modes_available

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="apache", choices=["apache", "community", "all"])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=7)
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 100_000, 1_000_000],
    )
    args = p.parse_args()
    for mode in modes_available(args.mode):
        text = asyncio.run(bench(mode, args))
        (DATA / f"export-results-{mode}.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
