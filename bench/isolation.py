"""Isolation benchmark: a quiet application's latency while another saturates the
service with raw reads, side by side with the same requests on an idle service, in
one run; and the service's memory whatever a client sends.

One service process on a fresh non-durable cluster (``bench/data/isolation-<mode>``)
holding two applications' events (COPY, rollups rebuilt). The quiet application, one
client, alternates a rollup panel (calls per function per hour over a day) and an
ingest batch of 100 events, for ``--seconds`` on the idle service, then again while
``--noisy`` clients of the other application send raw percentile queries without
pause (per-minute p95 per consumer over a day, ``X-Apinalytics-Planner: raw``). Then
the memory bombs: 100,000 ``{}`` (300 KB) and 5.5 million ``{}`` gzipped (16.5 MB
once gunzipped, just under the body limit).
Reported: p50/p95 of the quiet application's requests in both phases and their
ratio, what the noisy clients were answered, and the service's peak RSS (VmHWM).

    .venv/bin/python bench/isolation.py [--mode apache|community] [--events 300000]
        [--seconds 20] [--noisy 50]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg

from apinalytics import apps, localdb, migrate
from apinalytics.edition import Edition
from apinalytics.rollups import rebuild
from common import (
    EventMaker,
    as_json,
    cluster,
    copy_diurnal,
    machine,
    machine_line,
    percentile,
    start_service,
    stop_service,
)

DAY = 86400
SEED = 20141015


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def load(dsn: str, mode: str, n: int) -> tuple[apps.NewApp, apps.NewApp, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        noisy = await apps.create(conn, "noisy")
        quiet = await apps.create(conn, "quiet")
        end = int(time.time()) // 60 * 60
        start = end - DAY
        for app, count in ((noisy, n), (quiet, n // 4)):
            internal = await conn.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
            await copy_diurnal(conn, internal, start, 1440, count, SEED)
        await rebuild.rebuild(conn, Edition(mode), start - 3600, end + 3600)
        await conn.execute("VACUUM ANALYZE")
        return noisy, quiet, start, end
    finally:
        await conn.close()


def headers(app: apps.NewApp, key: str | None) -> dict[str, str]:
    assert key
    return {"X-Auth-User": app.app_id, "X-Auth-Key": key}


async def quiet_client(
    base: str, app: apps.NewApp, start: int, end: int, seconds: float
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"panel": [], "ingest": []}
    maker = EventMaker(seed=7)
    panel = f"{base}/1/timeseries/{start}/{end}/?granularity=hour&group=function"
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            t = time.perf_counter()
            async with http.get(panel, headers=headers(app, app.read_key)) as r:
                await r.read()
                assert r.status == 200, await r.text()
            out["panel"].append(time.perf_counter() - t)
            now = time.time()
            batch = [as_json(e) for e in maker.events([now - 1] * 100)]
            t = time.perf_counter()
            async with http.post(
                f"{base}/1/events/", json=batch, headers=headers(app, app.write_key)
            ) as r:
                await r.read()
                assert r.status == 200, await r.text()
            out["ingest"].append(time.perf_counter() - t)
    return out


async def noisy_clients(
    base: str, app: apps.NewApp, start: int, end: int, n: int, stop: asyncio.Event
) -> collections.Counter[str]:
    answers: collections.Counter[str] = collections.Counter()
    url = (
        f"{base}/1/timeseries/{start}/{end}/"
        "?aggregation=percentile_95&granularity=minute&group=consumer_id"
    )
    h = {**headers(app, app.read_key), "X-Apinalytics-Planner": "raw"}

    async def one(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with http.get(url, headers=h) as r:
                body = await r.json()
                code = body["error"]["code"] if r.status != 200 else ""
                answers[f"{r.status} {code}".strip()] += 1
                if r.status != 200:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / 10)

    conn = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=conn) as http:
        await asyncio.gather(*(one(http) for _ in range(n)))
    return answers


async def bombs(base: str, app: apps.NewApp) -> list[tuple[str, int, float]]:
    h = {**headers(app, app.write_key), "Content-Type": "application/json"}
    plain = b"[" + b",".join([b"{}"] * 100_000) + b"]"
    # Just under the 16 MiB limit once gunzipped: it is read, then counted.
    big = b"[" + b",".join([b"{}"] * 5_500_000) + b"]"
    gz = gzip.compress(big, 6)
    out = []
    async with aiohttp.ClientSession() as http:
        for what, body, extra in (
            ("100,000 {} (300 KB)", plain, {}),
            (
                f"5,500,000 {{}} gzipped ({len(gz) / 1024:.0f} KB)",
                gz,
                {"Content-Encoding": "gzip"},
            ),
        ):
            t = time.perf_counter()
            async with http.post(f"{base}/1/events/", data=body, headers={**h, **extra}) as r:
                await r.read()
                out.append((what, r.status, time.perf_counter() - t))
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="apache", choices=["apache", "community"])
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--noisy", type=int, default=50)
    p.add_argument(
        "--raw-reads", type=int, default=None, help="APINALYTICS_MAX_RAW_READS (default: its own)"
    )
    args = p.parse_args()
    c = cluster(f"isolation-{args.mode}", args.mode, fresh=True)
    await migrate.migrate(c.dsn)
    noisy, quiet, start, end = await load(c.dsn, args.mode, args.events)
    conn = await asyncpg.connect(c.dsn)
    try:
        m = await machine(conn)
    finally:
        await conn.close()
    port = localdb.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {} if args.raw_reads is None else {"APINALYTICS_MAX_RAW_READS": str(args.raw_reads)}
    proc = await start_service(c.dsn, port, env={**env, "APINALYTICS_LOG_LEVEL": "ERROR"})
    try:
        await quiet_client(base, quiet, start, end, 2)  # warm-up
        idle = await quiet_client(base, quiet, start, end, args.seconds)
        stop = asyncio.Event()
        storm = asyncio.create_task(noisy_clients(base, noisy, start, end, args.noisy, stop))
        await asyncio.sleep(2)
        busy = await quiet_client(base, quiet, start, end, args.seconds)
        stop.set()
        answers = await storm
        rss_after_storm = peak_rss_mib(proc.pid)
        bombed = await bombs(base, noisy)
        rss_after_bombs = peak_rss_mib(proc.pid)
    finally:
        await stop_service(proc)
    c.stop()
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        f"### {args.mode} mode — {args.noisy} raw-percentile clients vs one quiet app ({when})",
        "",
        f"Machine: {machine_line(m)}. One service process, default limits"
        + ("" if args.raw_reads is None else f" but max_raw_reads={args.raw_reads}")
        + "; "
        f"{args.events:,} events of the noisy app and {args.events // 4:,} of the quiet "
        f"one over a day; {args.seconds:g} s per phase.",
        "",
        "| quiet app's request | idle p50 | idle p95 | noisy p50 | noisy p95 | p95 ratio | requests (idle / noisy) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("panel", "ingest"):
        a, b = idle[kind], busy[kind]
        lines.append(
            f"| {kind} | {percentile(a, 50) * 1000:.1f} ms | {percentile(a, 95) * 1000:.1f} ms | "
            f"{percentile(b, 50) * 1000:.1f} ms | {percentile(b, 95) * 1000:.1f} ms | "
            f"{percentile(b, 95) / percentile(a, 95):.2f}x | {len(a)} / {len(b)} |"
        )
    lines += [
        "",
        "Noisy clients' answers: "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(answers.items()))
        + ".",
        "",
        "| body sent by the noisy app | status | seconds |",
        "|---|---:|---:|",
        *(f"| {w} | {s} | {t:.2f} |" for w, s, t in bombed),
        "",
        f"Service peak RSS: {rss_after_storm:.0f} MiB after the storm, "
        f"{rss_after_bombs:.0f} MiB after the bombs.",
    ]
    print("\n".join(lines))
    print("done", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
