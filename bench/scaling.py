"""Scaling benchmark: the dashboard's 30-day panels, storage and rebuild time by size.

For each size in ``--sizes`` (smallest first), ``bench/generate.py`` makes the data
(``generate.ensure``: realistic events COPYed straight into ``events`` over
``--days`` days across ``--apps`` skewed apps, then every rollup rebuilt day by day
and ``VACUUM ANALYZE``), replacing the previous size's cluster; then this script

* records how long the load (generation and COPY) and the rebuild took, the rebuild
  day by day (each day's slice is one repetition: median and spread);
* measures the storage: every relation with its indexes (``hypertable_size``), rows,
  bytes per raw event, and the whole database (``pg_database_size``);
* asks the dashboard's panel shapes for its 30-day range (and two 24-hour ones) of
  the busiest app, ``--runs`` times each, round-robin over the panels so that the
  machine's load falls on all of them alike, after one warm-up request each; the
  service is ``create_app(settings)`` in this process (its materializer running, idle:
  nothing is pending after a rebuild), one request at a time, with the statement
  timeout raised to 300 s so that slow panels are measured rather than refused (the
  service's default is 10 s, docs/limits.md).

The machine's load average is recorded before and after each part. The report goes
to ``bench/data/scaling-results-<mode>.md`` and ``.json`` (one section per size,
appended to the JSON of earlier sizes of the same run). ``--drop`` removes the
generated cluster at the end.

    .venv/bin/python bench/scaling.py [--mode apache|community|all]
        [--sizes 10000000,30000000] [--runs 5] [--days 30] [--apps 10] [--drop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

import generate
from apinalytics import localdb
from apinalytics.app import create_app
from apinalytics.serve_cli import new_event_loop
from apinalytics.settings import Settings
from common import DATA, cluster, machine, machine_line, median, modes_available
from query import _get, _sizes

HOUR = 3600
DAY = 86400
# The dashboard's bucket for a 30-day range (dashboard/js/core.js): 6 hours.
SIX_HOURS = 21600


@dataclass(frozen=True)
class Panel:
    name: str
    range_s: int
    query: str


# The dashboard's requests for a 30-day range (dashboard/js/load.js), plus the
# hourly count the issue names and a raw filter over a day.
PANELS = (
    Panel("count per hour, 30 d", 30 * DAY, "granularity=hour"),
    Panel("count per 6 h by status, 30 d", 30 * DAY, f"granularity={SIX_HOURS}&group=status_code"),
    Panel(
        "count per 6 h by consumer, 30 d", 30 * DAY, f"granularity={SIX_HOURS}&group=consumer_id"
    ),
    Panel("count by function, 30 d", 30 * DAY, "group=function"),
    Panel("mean by function, 30 d", 30 * DAY, "group=function&aggregation=mean"),
    Panel("p95, 30 d, approximate", 30 * DAY, "aggregation=percentile_95&precision=approximate"),
    Panel("p95, 30 d, exact", 30 * DAY, "aggregation=percentile_95"),
    Panel(
        "p95 per 6 h, 30 d, approximate",
        30 * DAY,
        f"granularity={SIX_HOURS}&aggregation=percentile_95&precision=approximate",
    ),
    Panel(
        "p95 per 6 h, 30 d, exact", 30 * DAY, f"granularity={SIX_HOURS}&aggregation=percentile_95"
    ),
    Panel(
        "p95 by function, 30 d, approximate",
        30 * DAY,
        "group=function&aggregation=percentile_95&precision=approximate",
    ),
    Panel("p95 by function, 30 d, exact", 30 * DAY, "group=function&aggregation=percentile_95"),
    # No histogram per consumer: the dashboard's approximate request is answered exactly
    # from raw events.
    Panel(
        "p95 by consumer, 30 d (raw)",
        30 * DAY,
        "group=consumer_id&aggregation=percentile_95&precision=approximate",
    ),
    Panel(
        "raw filter data.region, count per 6 h, 30 d",
        30 * DAY,
        f"granularity={SIX_HOURS}&include=data.region:eu-west-1",
    ),
    Panel(
        "raw filter data.region, count per hour, 24 h",
        DAY,
        "granularity=hour&include=data.region:eu-west-1",
    ),
    Panel("p95 per hour, 24 h, exact", DAY, "granularity=hour&aggregation=percentile_95"),
)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def main() -> None:
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="apache", choices=["apache", "community", "all"])
    p.add_argument("--sizes", default="10000000,30000000")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--apps", type=int, default=10)
    p.add_argument("--drop", action="store_true", help="remove the generated cluster at the end")
    p.add_argument(
        "--report", action="store_true", help="only write the report again from the JSON"
    )
    args = p.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.report:
        for mode in modes_available(args.mode):
            path = DATA / f"scaling-results-{mode}.json"
            _write(mode, json.loads(path.read_text()))
            print((DATA / f"scaling-results-{mode}.md").read_text())
        return
    for mode in modes_available(args.mode):
        results: list[dict[str, Any]] = []
        try:
            for n in sizes:
                results.append(await one_size(mode, n, args))
                _write(mode, results)
        finally:
            c = await asyncio.to_thread(cluster, f"query-{mode}", mode, fresh=False)
            await asyncio.to_thread(c.stop)
            if args.drop:
                shutil.rmtree(DATA / f"query-{mode}", ignore_errors=True)


async def one_size(mode: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    before_gen = load()
    t = time.perf_counter()
    data = await generate.ensure(mode, events=n, days=args.days, n_apps=args.apps)
    gen_wall = time.perf_counter() - t
    conn = await asyncpg.connect(data["dsn"])
    try:
        m = await machine(conn)
        sizes = await _sizes(conn, mode)
        database = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    app = max(data["app_list"], key=lambda a: a["events"])
    before_q = load()
    panels = await _panels(data, app, args.runs)
    out = {
        "mode": mode,
        "events": data["stored"],
        "busiest_app_events": app["events"],
        "machine": m,
        "load_before_generation": before_gen,
        "load_before_queries": before_q,
        "load_after": load(),
        "generation_wall_s": round(gen_wall, 1),
        "copy_s": data["copy_s"],
        "rebuild_s": data["rebuild_s"],
        "rebuild_day_s": data.get("rebuild_day_s", []),
        "copy_db_cpu_s": data.get("copy_db_cpu_s"),
        "rebuild_db_cpu_s": data.get("rebuild_db_cpu_s"),
        "rebuild_day_db_cpu_s": data.get("rebuild_day_db_cpu_s", []),
        "vacuum_s": data.get("vacuum_s"),
        "sizes": sizes,
        "database_bytes": database,
        "panels": panels,
    }
    print(_section(out), flush=True)
    return out


async def _panels(data: dict[str, Any], app: dict[str, Any], runs: int) -> list[dict[str, Any]]:
    settings = Settings(
        database_url=data["dsn"],
        home=DATA / "home",
        log_level="WARNING",
        statement_timeout_s=300,
    )
    runner = web.AppRunner(create_app(settings, run_migrations=False), access_log=None)
    await runner.setup()
    port = localdb.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    end = data["end"]
    headers = {"X-Auth-User": app["app_id"], "X-Auth-Key": app["read_key"]}
    base = f"http://127.0.0.1:{port}/1/timeseries"
    times: dict[str, list[float]] = {p.name: [] for p in PANELS}
    sources: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
            urls = {p.name: f"{base}/{end - p.range_s}/{end}/?{p.query}" for p in PANELS}
            for p in PANELS:  # warm-up
                _, _, sources[p.name] = await _get(session, urls[p.name], headers)
            for r in range(runs):
                for p in PANELS if r % 2 == 0 else PANELS[::-1]:
                    elapsed, _, _ = await _get(session, urls[p.name], headers)
                    times[p.name].append(elapsed)
                print(f"  run {r + 1}/{runs} done (load {load()})", flush=True)
    finally:
        await runner.cleanup()
    return [
        {"panel": p.name, "query": p.query, "sources": sources[p.name], "seconds": times[p.name]}
        for p in PANELS
    ]


def _ms(s: float) -> str:
    return f"{s * 1000:,.0f}" if s >= 0.01 else f"{s * 1000:.1f}"


def _section(r: dict[str, Any]) -> str:
    days = r["rebuild_day_s"]
    lines = [
        f"### {r['mode']} mode — {r['events']:,} events (busiest app {r['busiest_app_events']:,})",
        "",
        f"Machine: {machine_line(r['machine'])}. Load average (1/5/15 min) before "
        f"generation {r['load_before_generation']}, before queries {r['load_before_queries']}, "
        f"after {r['load_after']}.",
        "",
        f"Load (generation and COPY) {r['copy_s']} s ({r['events'] / r['copy_s']:,.0f} events/s); "
        f"rebuild of every rollup {r['rebuild_s']} s ({r['events'] / r['rebuild_s']:,.0f} events/s"
        + (
            f"; per day slice median {median(days):.1f} s, {min(days):.1f} to {max(days):.1f} s"
            if days
            else ""
        )
        + f"); VACUUM ANALYZE {r['vacuum_s']} s."
        + (
            f" Database CPU: COPY {r['copy_db_cpu_s']} s "
            f"({r['copy_db_cpu_s'] / r['events'] * 1e6:.1f} µs per event), rebuild "
            f"{r['rebuild_db_cpu_s']} s ({r['rebuild_db_cpu_s'] / r['events'] * 1e6:.1f} µs "
            "per event)."
            if r.get("rebuild_db_cpu_s") is not None
            else ""
        ),
        "",
        "| panel | sources | median | min to max | runs |",
        "|---|---|---:|---:|---:|",
    ]
    for p in r["panels"]:
        s = p["seconds"]
        lines.append(
            f"| {p['panel']} | {p['sources']} | {_ms(median(s))} ms | "
            f"{_ms(min(s))} to {_ms(max(s))} ms | {len(s)} |"
        )
    lines += [
        "",
        "| relation | size with indexes | rows | bytes per event |",
        "|---|---:|---:|---:|",
    ]
    for s in r["sizes"]:
        lines.append(
            f"| {s['relation']} | {s['bytes'] / 2**20:,.0f} MiB | {s['rows']:,} | "
            f"{s['bytes_per_event']:.1f} |"
        )
    total = sum(s["bytes"] for s in r["sizes"])
    lines.append(f"| all of the above | {total / 2**20:,.0f} MiB | | {total / r['events']:.1f} |")
    lines.append(
        f"| the whole database | {r['database_bytes'] / 2**20:,.0f} MiB | | "
        f"{r['database_bytes'] / r['events']:.1f} |"
    )
    return "\n".join(lines) + "\n"


def _side_by_side(results: list[dict[str, Any]]) -> str:
    """Every size's panels and sizes in one table each (medians, ranges, ratios)."""
    if len(results) < 2:
        return ""
    first, last = results[0], results[-1]
    sizes = " | ".join(f"{r['events'] / 1e6:.0f} M: median (range)" for r in results)
    events = ", ".join(f"{r['events']:,}" for r in results)
    busiest = ", ".join(f"{r['busiest_app_events']:,}" for r in results)
    lines = [
        f"### side by side ({events} events; busiest app {busiest})",
        "",
        f"| panel | sources | {sizes} | {last['events'] / 1e6:.0f} M ÷ "
        f"{first['events'] / 1e6:.0f} M |",
        "|---|---|" + "---:|" * (len(results) + 1),
    ]
    for i, p in enumerate(first["panels"]):
        cells = []
        for r in results:
            s = r["panels"][i]["seconds"]
            cells.append(f"{_ms(median(s))} ms ({_ms(min(s))} to {_ms(max(s))})")
        ratio = median(last["panels"][i]["seconds"]) / median(p["seconds"])
        lines.append(f"| {p['panel']} | {p['sources']} | {' | '.join(cells)} | {ratio:.1f} |")
    lines += [
        "",
        "| relation | "
        + " | ".join(
            f"{r['events'] / 1e6:.0f} M: size, rows per event, bytes per event" for r in results
        )
        + " |",
        "|---|" + "---:|" * len(results),
    ]
    for i, s in enumerate(first["sizes"]):
        cells = []
        for r in results:
            x = r["sizes"][i]
            cells.append(
                f"{x['bytes'] / 2**20:,.0f} MiB, {x['rows_per_event']:.3f}, "
                f"{x['bytes_per_event']:.1f}"
            )
        lines.append(f"| {s['relation']} | {' | '.join(cells)} |")
    totals = [sum(x["bytes"] for x in r["sizes"]) for r in results]
    lines.append(
        "| all of the above | "
        + " | ".join(
            f"{t / 2**20:,.0f} MiB, , {t / r['events']:.1f}"
            for t, r in zip(totals, results, strict=True)
        )
        + " |"
    )
    return "\n".join(lines) + "\n"


def _write(mode: str, results: list[dict[str, Any]]) -> None:
    out = DATA / f"scaling-results-{mode}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(
        "\n".join([*(_section(r) for r in results), _side_by_side(results)])
    )


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=lambda: new_event_loop(Settings())) as runner:
        runner.run(main())
