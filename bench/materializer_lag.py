"""Does the materializer keep up with live traffic into a busy hour?

Under live traffic every write transaction records its app's current hour as pending,
and a materializer run brings that hour up to date whole (``materializer_cost.py``
measures a run by the events in the hour). A run takes at most
``materializer.ROWS_PER_RUN`` pending rows; when more arrive during a run than it
takes, the pending rows grow.

This benchmark starts the service (``apinalytics serve``, its materializer running as
in production) on a fresh non-durable cluster, gives one app's current hour
``--preload`` events by COPY (the hour's traffic so far; rolled up by ``rebuild``, so
nothing is pending at the start), then posts live batches of ``--batch`` events at
each rate of ``--rates`` (batches per second, one after the other, paced by the
clock) for ``--seconds`` each, sampling once a second the pending rows, the oldest
one's age, and the write transactions committed (the growth of ``rollup_pending``'s
id). After each rate it waits up to ``--drain`` seconds for nothing to be pending.

    .venv/bin/python bench/materializer_lag.py [--mode apache|community|all]
        [--preload 2000000] [--batch 100] [--rates 10,50] [--seconds 90] [--drain 300]
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

from apinalytics import apps, localdb, migrate
from apinalytics.edition import Edition
from apinalytics.ingest import decode
from apinalytics.rollups import rebuild
from common import (
    DATA,
    EventMaker,
    as_json,
    as_row,
    machine,
    machine_line,
    modes_available,
    start_service,
    stop_service,
)
from common import cluster as start_cluster

HOUR = 3600


async def main() -> None:
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="apache", choices=["apache", "community", "all"])
    p.add_argument("--preload", type=int, default=2_000_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rates", default="10,50")
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--drain", type=float, default=300)
    args = p.parse_args()
    for mode in modes_available(args.mode):
        await bench_mode(mode, args)


async def bench_mode(mode: str, args: argparse.Namespace) -> None:
    name = f"materializer-lag-{mode}"
    c = await asyncio.to_thread(start_cluster, name, mode, fresh=True)
    server = None
    try:
        result = await migrate.migrate(c.dsn)
        conn = await asyncpg.connect(c.dsn)
        try:
            await conn.execute("SET statement_timeout = 0")
            m = await machine(conn)
            app = await apps.create(conn, "bench")
            app_id = await conn.fetchval("SELECT id FROM apps WHERE public_id=$1", app.app_id)
            now = time.time()
            hour = int(now) // HOUR * HOUR
            # The hour's traffic so far, up to a few seconds ago.
            so_far = now - 5 - hour
            ts = [hour + i * so_far / args.preload for i in range(args.preload)]
            rows = [as_row(e, app_id) for e in EventMaker(seed=3).events(ts)]
            await conn.copy_records_to_table("events", records=rows, columns=decode.COLUMNS)
            del rows
            await rebuild.rebuild(conn, Edition(result.mode), hour - HOUR, hour + HOUR)
            await conn.execute("VACUUM ANALYZE events")
        finally:
            await conn.close()
        port = localdb.free_port()
        server = await start_service(c.dsn, port)
        url = f"http://127.0.0.1:{port}/1/events/"
        headers = {
            "X-Auth-User": app.app_id,
            "X-Auth-Key": app.write_key or "",
            "Content-Type": "application/json",
        }
        results = []
        for rate in (float(r) for r in args.rates.split(",")):
            results.append(await _one_rate(c.dsn, url, headers, rate, args))
        _report(mode, m, args, results)
    finally:
        if server is not None:
            await stop_service(server)
        await asyncio.to_thread(c.stop)
        shutil.rmtree(DATA / name, ignore_errors=True)


async def _state(conn: asyncpg.Connection) -> tuple[int, float, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age, "
        "(SELECT last_value FROM rollup_pending_id_seq) AS last FROM rollup_pending"
    )
    assert row is not None
    return int(row["n"]), float(row["age"] or 0.0), int(row["last"])


async def _one_rate(
    dsn: str, url: str, headers: dict[str, str], rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    maker = EventMaker(seed=int(rate) + 17)
    samples: list[tuple[float, int, float, int]] = []
    errors = 0
    sent = 0
    conn = await asyncpg.connect(dsn)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            in_flight: set[asyncio.Task[None]] = set()

            async def post(body: bytes) -> None:
                nonlocal errors
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1

            t0 = time.perf_counter()
            next_sample = 0.0
            i = 0
            while (elapsed := time.perf_counter() - t0) < args.seconds:
                if elapsed >= next_sample:
                    samples.append((elapsed, *await _state(conn)))
                    next_sample += 1.0
                due = int(elapsed * rate) + 1
                while i < due:
                    now = time.time()
                    ts = [now - 1 + j / args.batch for j in range(args.batch)]
                    body = json.dumps([as_json(e) for e in maker.events(ts)]).encode()
                    task = asyncio.create_task(post(body))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    i += 1
                    sent += args.batch
                await asyncio.sleep(min(0.02, 1 / rate))
            if in_flight:
                await asyncio.gather(*in_flight)
            posted_s = time.perf_counter() - t0
            end_state = await _state(conn)
            t = time.perf_counter()
            drained: float | None = None
            while time.perf_counter() - t < args.drain:
                if (await _state(conn))[0] == 0:
                    drained = time.perf_counter() - t
                    break
                await asyncio.sleep(0.5)
    finally:
        await conn.close()
    first_id = samples[0][3]
    out = {
        "rate": rate,
        "batch": args.batch,
        "sent": sent,
        "errors": errors,
        "posted_s": round(posted_s, 1),
        "transactions_per_s": round((end_state[2] - first_id) / posted_s, 1),
        "samples": samples,
        "end_pending": end_state[0],
        "end_oldest_s": round(end_state[1], 1),
        "max_pending": max(s[1] for s in samples),
        "max_oldest_s": round(max(s[2] for s in samples), 1),
        "drained_s": None if drained is None else round(drained, 1),
        "load": os.getloadavg()[0],
    }
    print(
        f"  {rate:g} batches/s of {args.batch}: {sent / posted_s:,.0f} events/s, "
        f"{out['transactions_per_s']} transactions/s, errors {errors}; pending at the end "
        f"{out['end_pending']} (oldest {out['end_oldest_s']} s), most {out['max_pending']}, "
        f"oldest at most {out['max_oldest_s']} s; nothing pending "
        + (f"{drained:.1f} s after" if drained is not None else f"not within {args.drain:g} s")
        + f" (load {out['load']:.1f})",
        flush=True,
    )
    return out


def _report(
    mode: str, m: dict[str, str], args: argparse.Namespace, results: list[dict[str, Any]]
) -> None:
    lines = [
        f"### {mode} mode: live batches into an hour that holds {args.preload:,} events",
        "",
        f"Machine: {machine_line(m)}.",
        "",
        "| batches/s of "
        f"{args.batch} | events/s | write transactions/s | pending rows at the end "
        "(most) | oldest pending at the end (most) | nothing pending after |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        drained = f"{r['drained_s']} s" if r["drained_s"] is not None else f"> {args.drain:g} s"
        lines.append(
            f"| {r['rate']:g} | {r['sent'] / r['posted_s']:,.0f} | {r['transactions_per_s']} | "
            f"{r['end_pending']} ({r['max_pending']}) | {r['end_oldest_s']} s "
            f"({r['max_oldest_s']} s) | {drained} |"
        )
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    out = DATA / f"materializer-lag-{mode}"
    out.with_suffix(".json").write_text(json.dumps({"machine": m, "results": results}, indent=1))
    out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
