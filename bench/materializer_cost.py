"""What one materializer run costs, by the number of events in the hour it catches up on.

The ingest transaction records whole hours as pending (``rollups/pending.py``), and a
materializer run brings each pending hour of each app up to date whole: the Apache
edition deletes and re-aggregates the app's hour from raw events (every rollup, in
declared order), the Community edition refreshes the hour's window in every
continuous aggregate. Under live traffic an app's current hour is pending again
after every batch, so a run's cost follows the events already stored in that hour,
not the batch: this benchmark measures that cost per event.

For each size in ``--sizes`` and each of ``--rounds`` repetitions, a fresh hour of
one app (three hours back and further, so that in the Community edition it lies
below every aggregate's invalidation threshold, as a back-dated or late stretch
does) gets that many realistic events by COPY, a pending row is recorded for it, and
``materializer.catch_up_once`` runs once, timed, with the database's CPU (postmaster
and backends) counted around it. Around that run, two of the dashboard's 30-day
panels (count per hour, count by function) are asked once while the hour is pending
(the planner then reads it from raw events) and once after: what a pending hour of
that many events adds to every panel whose range holds it. The service is
``create_app`` in this process with its own materializer off
(``materializer_interval_s=0``), so that the hour stays pending until the timed run. The cluster is fresh and non-durable
(``bench/data/materializer-<mode>``), and removed at the end.

    .venv/bin/python bench/materializer_cost.py [--mode apache|community|all]
        [--sizes 10000,100000,1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from apinalytics import apps, localdb, migrate
from apinalytics.app import create_app
from apinalytics.edition import Edition
from apinalytics.ingest import decode
from apinalytics.rollups import materializer, rebuild
from apinalytics.settings import Settings
from common import (
    DATA,
    EventMaker,
    as_row,
    database_cpu_s,
    machine,
    machine_line,
    median,
    modes_available,
    stored_relation,
)
from common import cluster as start_cluster
from query import _get

HOUR = 3600
# Two of the dashboard's 30-day requests (count per hour; count by function).
PANELS = ("granularity=hour", "group=function")


async def main() -> None:
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="all", choices=["apache", "community", "all"])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for mode in modes_available(args.mode):
        await bench_mode(mode, sizes, args.rounds)


async def bench_mode(mode: str, sizes: list[int], rounds: int) -> None:
    name = f"materializer-{mode}"
    c = await asyncio.to_thread(start_cluster, name, mode, fresh=True)
    try:
        result = await migrate.migrate(c.dsn)
        async with contextlib.AsyncExitStack() as stack:
            conn = await asyncpg.connect(c.dsn)
            stack.push_async_callback(conn.close)
            await conn.execute("SET statement_timeout = 0")
            m = await machine(conn)
            app = await apps.create(conn, "bench")
            settings = Settings(
                database_url=c.dsn,
                home=DATA / "home",
                log_level="WARNING",
                statement_timeout_s=300,
                materializer_interval_s=0,
            )
            runner = web.AppRunner(create_app(settings, run_migrations=False), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            port = localdb.free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
            stack.push_async_callback(session.close)
            runs, panels = await _measure(
                conn, c.datadir, Edition(result.mode), mode, app, session, port, sizes, rounds
            )
        _report(mode, m, runs, panels)
    finally:
        await asyncio.to_thread(c.stop)
        shutil.rmtree(DATA / name, ignore_errors=True)


async def _measure(
    conn: asyncpg.Connection,
    datadir: Path,
    edition: Edition,
    mode: str,
    app: apps.NewApp,
    session: aiohttp.ClientSession,
    port: int,
    sizes: list[int],
    rounds: int,
) -> tuple[dict[int, list[tuple[float, float]]], dict[str, dict[int, list[tuple[float, float]]]]]:
    app_id = await conn.fetchval("SELECT id FROM apps WHERE public_id=$1", app.app_id)
    now_hour = int(time.time()) // HOUR * HOUR
    headers = {"X-Auth-User": app.app_id, "X-Auth-Key": app.read_key or ""}
    base = f"http://127.0.0.1:{port}/1/timeseries/{now_hour - 30 * 86400}/{now_hour}/?"
    # Community: every aggregate gets an invalidation threshold at the current hour (a
    # refresh of the empty last days), so the hours below are refreshed by the
    # materializer as any back-dated stretch is.
    await rebuild.rebuild(conn, edition, now_hour - 2 * 86400, now_hour)
    stored = await stored_relation(conn, mode, "events_1h_app")
    maker = EventMaker(seed=5)
    runs: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
    panels: dict[str, dict[int, list[tuple[float, float]]]] = {
        q: {n: [] for n in sizes} for q in PANELS
    }
    hour = now_hour - 3 * HOUR
    for r in range(rounds):
        for n in sizes:
            hour -= HOUR
            ts = [hour + i * (HOUR - 1) / n for i in range(n)]
            rows = [as_row(e, app_id) for e in maker.events(ts)]
            await conn.copy_records_to_table("events", records=rows, columns=decode.COLUMNS)
            await conn.execute(
                'INSERT INTO rollup_pending (app_id, start, "end") '
                "VALUES ($1, to_timestamp($2), to_timestamp($3))",
                app_id,
                hour,
                hour + HOUR,
            )
            await conn.execute("ANALYZE events")
            pending_s = {q: (await _get(session, base + q, headers))[0] for q in PANELS}
            before = database_cpu_s(datadir)
            t = time.perf_counter()
            run = await materializer.catch_up_once(conn, edition)
            elapsed = time.perf_counter() - t
            db_cpu = database_cpu_s(datadir) - before
            if run.rows != 1 or await conn.fetchval("SELECT count(*) FROM rollup_pending"):
                raise RuntimeError(f"the run did not catch up: {run}")
            # The stored rows (the materialization, in the Community edition), not the
            # view: real-time aggregation would answer without a refresh.
            calls = await conn.fetchval(
                f"SELECT sum(calls) FROM {stored} WHERE app_id=$1 AND bucket=to_timestamp($2)",
                app_id,
                hour,
            )
            if calls != n:
                raise RuntimeError(f"events_1h_app holds {calls} calls for the hour, not {n}")
            runs[n].append((elapsed, db_cpu))
            for q in PANELS:
                after_s, _, sources = await _get(session, base + q, headers)
                if "events" in sources.split(","):
                    raise RuntimeError(f"{q} still reads raw events: {sources}")
                panels[q][n].append((pending_s[q], after_s))
            print(
                f"[{mode}] round {r + 1}: {n:>9,} events in the hour: run {elapsed:.2f} s, "
                f"database CPU {db_cpu:.2f} s; panels pending / caught up: "
                + ", ".join(
                    f"{panels[q][n][-1][0] * 1000:.0f} / {panels[q][n][-1][1] * 1000:.0f} ms"
                    for q in PANELS
                )
                + f"; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    return runs, panels


def _report(
    mode: str,
    m: dict[str, str],
    runs: dict[int, list[tuple[float, float]]],
    panels: dict[str, dict[int, list[tuple[float, float]]]],
) -> None:
    lines = [
        f"### {mode} mode: one materializer run over one app's hour",
        "",
        f"Machine: {machine_line(m)}. Load average after: {os.getloadavg()[0]:.2f}.",
        "",
        "| events in the hour | run, median (min to max) | µs per event | "
        "database CPU per event (median) | runs |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, values in runs.items():
        wall = [v[0] for v in values]
        cpu = [v[1] for v in values]
        lines.append(
            f"| {n:,} | {median(wall):.2f} s ({min(wall):.2f} to {max(wall):.2f}) | "
            f"{median(wall) / n * 1e6:.1f} | {median(cpu) / n * 1e6:.1f} µs | {len(values)} |"
        )
    lines += [
        "",
        "A 30-day panel while the hour is pending (read from raw events) and after the "
        "run (from the rollups), median (min to max):",
        "",
        "| panel | events in the hour | pending | caught up |",
        "|---|---:|---:|---:|",
    ]
    for q, by_n in panels.items():
        for n, values in by_n.items():
            before = [v[0] * 1000 for v in values]
            after = [v[1] * 1000 for v in values]
            lines.append(
                f"| `{q}` | {n:,} | {median(before):,.1f} ms ({min(before):,.1f} to "
                f"{max(before):,.1f}) | {median(after):,.1f} ms ({min(after):,.1f} to "
                f"{max(after):,.1f}) |"
            )
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    out = DATA / f"materializer-cost-{mode}"
    out.with_suffix(".json").write_text(
        json.dumps({"machine": m, "runs": runs, "panels": panels}, indent=1)
    )
    out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
