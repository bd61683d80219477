"""Query benchmark (issue "Time-series query API"): dashboard panels through HTTP,
as planned and forced to raw events, on the data of ``bench/generate.py``.

What runs where, on one machine: the database is the generated cluster in
``bench/data/query-<mode>`` (non-durable); the service is ``create_app(settings)``
behind an aiohttp AppRunner on 127.0.0.1 in this process; the client is an aiohttp
ClientSession in the same process, sending one request at a time (a latency
benchmark: nothing queues behind anything else). The process runs on the event loop
``serve`` would (``APINALYTICS_EVENT_LOOP``, uvloop unless set).

Panels are those of the dashboard, for the busiest app, over ranges that end at the
data's end (a whole minute, as the dashboard asks). Each panel runs ``--requests``
times as planned and ``--raw-requests`` times with ``X-Apinalytics-Planner: raw``,
interleaved so both see the same load, after two warm-up requests each; every panel
stops early at ``--panel-seconds``. The planned and raw answers are compared: they
must be equal (means within 1e-9 relative).

The percentile panels (``HISTOGRAM_PANELS``: p50/p95/p99 per function hourly over 7
days, p95 daily over 30 days, Apdex and error rate per function over 7 days) run
three ways in the same run, interleaved: ``precision=approximate`` (the histogram
rollups), exact as planned, and exact forced to raw events; the approximate answers
are compared with the exact ones and the largest relative error reported (for
Apdex, the largest absolute difference of the score).

Also measured: the size of ``events`` and of every rollup (total relation size with
indexes, rows, bytes per raw event).

    .venv/bin/python bench/query.py [--mode apache|community|all] [--events 10000000]
        [--requests 30] [--raw-requests 10] [--panel-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

import generate
from apinalytics import localdb
from apinalytics.app import create_app, event_loop_name
from apinalytics.rollups import RAW, ROLLUPS
from apinalytics.serve_cli import new_event_loop
from apinalytics.settings import Settings
from common import (
    DATA,
    cluster,
    machine,
    machine_line,
    median,
    modes_available,
    percentile,
    stored_relation,
)

HOUR = 3600
DAY = 86400


@dataclass(frozen=True)
class Panel:
    name: str
    range_s: int
    params: dict[str, str]
    # "rollup" panels have the 50 ms / 20x goals, "percentile" ones the 1 s goal.
    kind: str


PANELS = (
    Panel(
        "hourly count by function, 7 days",
        7 * DAY,
        {"granularity": "hour", "aggregation": "count", "group": "function"},
        "rollup",
    ),
    Panel(
        "hourly mean by consumer, 7 days",
        7 * DAY,
        {"granularity": "hour", "aggregation": "mean", "group": "consumer_id"},
        "rollup",
    ),
    Panel(
        "daily count, 30 days", 30 * DAY, {"granularity": "day", "aggregation": "count"}, "rollup"
    ),
    Panel(
        "minute mean, last hour", HOUR, {"granularity": "minute", "aggregation": "mean"}, "rollup"
    ),
    Panel(
        "hourly p95, 24 hours",
        DAY,
        {"granularity": "hour", "aggregation": "percentile_95"},
        "percentile",
    ),
)


# Percentile panels: the same query approximate, exact and exact forced to raw events.
HISTOGRAM_PANELS = (
    *(
        Panel(
            f"hourly p{p} by function, 7 days",
            7 * DAY,
            {"granularity": "hour", "aggregation": f"percentile_{p}", "group": "function"},
            "histogram",
        )
        for p in (50, 95, 99)
    ),
    Panel(
        "daily p95, 30 days",
        30 * DAY,
        {"granularity": "day", "aggregation": "percentile_95"},
        "histogram",
    ),
    Panel(
        "Apdex 300 ms by function, 7 days",
        7 * DAY,
        {"aggregation": "apdex_300", "group": "function"},
        "histogram",
    ),
    Panel(
        "error rate by function, 7 days",
        7 * DAY,
        {"aggregation": "error_rate", "group": "function"},
        "histogram",
    ),
)


async def main() -> None:
    # Slow statements are what raw reads on 10M events are made of: not worth a warning.
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    generate.data_arguments(p)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--raw-requests", type=int, default=10)
    p.add_argument("--panel-seconds", type=float, default=120)
    args = p.parse_args()
    for mode in modes_available(args.mode):
        data = await generate.ensure(mode, events=args.events, days=args.days, n_apps=args.apps)
        try:
            await bench_mode(mode, data, args)
        finally:
            # The data stays for the next run; the server (and its job scheduler) stops.
            await asyncio.to_thread(cluster(f"query-{mode}", mode, fresh=False).stop)


async def bench_mode(mode: str, data: dict[str, Any], args: argparse.Namespace) -> None:
    dsn = data["dsn"]
    conn = await asyncpg.connect(dsn)
    try:
        m = await machine(conn)
        sizes = await _sizes(conn, mode)
    finally:
        await conn.close()
    app = max(data["app_list"], key=lambda a: a["events"])
    settings = Settings(
        database_url=dsn,
        home=DATA / "home",
        log_level="WARNING",
        # The raw baseline of a 30-day panel may run long; it must finish to be measured.
        statement_timeout_s=300,
    )
    runner = web.AppRunner(create_app(settings, run_migrations=False), access_log=None)
    await runner.setup()
    port = localdb.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    results = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            base = f"http://127.0.0.1:{port}/1/timeseries"
            headers = {"X-Auth-User": app["app_id"], "X-Auth-Key": app["read_key"]}
            for panel in PANELS:
                results.append(await _panel(session, base, headers, data["end"], panel, args))
            histograms = [
                await _histogram_panel(session, base, headers, data["end"], panel, args)
                for panel in HISTOGRAM_PANELS
            ]
    finally:
        await runner.cleanup()
    _report(mode, m, data, app, sizes, results, args, histograms)


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[float, dict[str, Any], str]:
    t = time.perf_counter()
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        elapsed = time.perf_counter() - t
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} for {url}: {body[:300]!r}")
        return elapsed, json.loads(body), resp.headers.get("X-Apinalytics-Sources", "")


async def _panel(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    end: int,
    panel: Panel,
    args: argparse.Namespace,
) -> dict[str, Any]:
    query = "&".join(f"{k}={v}" for k, v in panel.params.items())
    url = f"{base}/{end - panel.range_s}/{end}/?{query}"
    raw_headers = {**headers, "X-Apinalytics-Planner": "raw"}
    planned: list[float] = []
    raw: list[float] = []
    _, answer, sources = await _get(session, url, headers)
    _, raw_answer, raw_sources = await _get(session, url, raw_headers)
    equal = _same(answer, raw_answer)
    deadline = time.monotonic() + args.panel_seconds
    for i in range(args.requests):
        if time.monotonic() > deadline:
            break
        planned.append((await _get(session, url, headers))[0])
        if i < args.raw_requests:
            raw.append((await _get(session, url, raw_headers))[0])
    out = {
        "panel": panel.name,
        "kind": panel.kind,
        "url": url.removeprefix(base),
        "sources": sources,
        "raw_sources": raw_sources,
        "equal": equal,
        "planned": planned,
        "raw": raw,
        "points": sum(len(s) for s in answer["groups"].values()),
    }
    print(
        f"  {panel.name:<36} planned p50 {median(planned) * 1000:8.1f} ms ({sources}), "
        f"raw p50 {median(raw) * 1000:8.1f} ms, equal={equal}",
        flush=True,
    )
    return out


async def _histogram_panel(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    end: int,
    panel: Panel,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Approximate, exact (planned) and exact forced to raw events, interleaved, and
    the largest error of the approximate answer against the exact one."""
    query = "&".join(f"{k}={v}" for k, v in panel.params.items())
    url = f"{base}/{end - panel.range_s}/{end}/?{query}"
    ways = {
        "approximate": (f"{url}&precision=approximate", headers),
        "exact": (url, headers),
        "raw": (url, {**headers, "X-Apinalytics-Planner": "raw"}),
    }
    answers = {}
    sources = {}
    for way, (u, h) in ways.items():
        _, answers[way], sources[way] = await _get(session, u, h)
    times: dict[str, list[float]] = {way: [] for way in ways}
    deadline = time.monotonic() + args.panel_seconds
    for i in range(args.requests):
        if time.monotonic() > deadline:
            break
        times["approximate"].append((await _get(session, *ways["approximate"]))[0])
        if i < args.raw_requests:
            times["exact"].append((await _get(session, *ways["exact"]))[0])
            times["raw"].append((await _get(session, *ways["raw"]))[0])
    error = _largest_error(answers["approximate"], answers["exact"], relative="apdex" not in query)
    out = {
        "panel": panel.name,
        "url": url.removeprefix(base),
        "sources": sources,
        "precision": answers["approximate"].get("precision"),
        "largest_error": error,
        "times": times,
        "points": sum(len(s) for s in answers["exact"]["groups"].values()),
    }
    print(
        f"  {panel.name:<36} approximate p50 {median(times['approximate']) * 1000:8.1f} ms "
        f"({sources['approximate']}), exact {median(times['exact']) * 1000:8.1f} ms, "
        f"raw {median(times['raw']) * 1000:8.1f} ms, largest error {error:.5f}",
        flush=True,
    )
    return out


def _largest_error(approx: dict[str, Any], exact: dict[str, Any], *, relative: bool) -> float:
    """The largest difference between matching points (relative to the exact value,
    or absolute); the two answers must have the same groups and buckets."""
    if approx["groups"].keys() != exact["groups"].keys():
        raise RuntimeError("the approximate answer's groups differ from the exact one's")
    worst = 0.0
    for g, series in exact["groups"].items():
        other = approx["groups"][g]
        if [t for t, _ in series] != [t for t, _ in other]:
            raise RuntimeError(f"the approximate answer's buckets differ in group {g!r}")
        for (_, e), (_, a) in zip(series, other, strict=True):
            diff = abs(a - e)
            worst = max(worst, diff / abs(e) if relative and e else diff)
    return worst


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys() or a["groups"].keys() != b["groups"].keys():
        return False
    for g, series in a["groups"].items():
        other = b["groups"][g]
        if len(series) != len(other):
            return False
        for (t1, v1), (t2, v2) in zip(series, other, strict=True):
            if t1 != t2 or not math.isclose(v1, v2, rel_tol=1e-9):
                return False
    return True


async def _sizes(conn: asyncpg.Connection, mode: str) -> list[dict[str, Any]]:
    """Total size (heap, indexes, TOAST) and rows of the raw table and each rollup."""
    events = int(await conn.fetchval("SELECT count(*) FROM events"))
    out = []
    for relation in (RAW, *(r.relation for r in ROLLUPS)):
        stored = await stored_relation(conn, mode, relation)
        size = int(await conn.fetchval("SELECT hypertable_size($1::regclass)", stored))
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {stored}"))
        out.append(
            {
                "relation": relation,
                "bytes": size,
                "rows": rows,
                "rows_per_event": rows / events,
                "bytes_per_event": size / events,
            }
        )
    return out


def _report(
    mode: str,
    m: dict[str, str],
    data: dict[str, Any],
    app: dict[str, Any],
    sizes: list[dict[str, Any]],
    results: list[dict[str, Any]],
    args: argparse.Namespace,
    histograms: list[dict[str, Any]],
) -> None:
    lines = [
        f"### {mode} mode — {data['stored']:,} events over {data['days']} days, "
        f"{data['apps']} apps; panels for the busiest app ({app['events']:,} events)",
        "",
        f"Machine: {machine_line(m)}. Event loop: {event_loop_name()}.",
        "",
        "| panel | sources (planned) | planned p50 / p95 | raw p50 / p95 | raw ÷ planned (p50) | equal | n (planned/raw) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        p50, p95 = percentile(r["planned"], 50) * 1000, percentile(r["planned"], 95) * 1000
        r50, r95 = percentile(r["raw"], 50) * 1000, percentile(r["raw"], 95) * 1000
        lines.append(
            f"| {r['panel']} | {r['sources']} | {p50:.1f} / {p95:.1f} ms | "
            f"{r50:.1f} / {r95:.1f} ms | {r50 / p50:.1f}x | {'yes' if r['equal'] else 'NO'} | "
            f"{len(r['planned'])}/{len(r['raw'])} |"
        )
    lines += [
        "",
        "| percentile panel | approximate p50 / p95 (sources) | exact p50 | exact forced raw p50 | raw ÷ approximate | largest error | n |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in histograms:
        t = r["times"]
        a50, a95 = percentile(t["approximate"], 50) * 1000, percentile(t["approximate"], 95) * 1000
        e50, r50 = percentile(t["exact"], 50) * 1000, percentile(t["raw"], 50) * 1000
        lines.append(
            f"| {r['panel']} | {a50:.1f} / {a95:.1f} ms ({r['sources']['approximate']}) | "
            f"{e50:.1f} ms ({r['sources']['exact']}) | {r50:.1f} ms | {r50 / a50:.1f}x | "
            f"{r['largest_error']:.5f} | {len(t['approximate'])}/{len(t['exact'])}/{len(t['raw'])} |"
        )
    lines += [
        "",
        "| relation | total size | rows | rows per event | bytes per event |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in sizes:
        lines.append(
            f"| {s['relation']} | {s['bytes'] / 2**20:,.0f} MiB | {s['rows']:,} | "
            f"{s['rows_per_event']:.3f} | {s['bytes_per_event']:.1f} |"
        )
    lines += [
        "",
        f"Generation: COPY {data['copy_s']} s, rollup rebuild {data['rebuild_s']} s.",
    ]
    if data.get("migrations"):
        lines[-1] += (
            f" Migrations applied to the data since: {', '.join(data['migrations'])} "
            f"({data['migrate_s']} s, then {data['fill_s']} s filling new rollups and "
            "VACUUM ANALYZE)."
        )
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    out: Path = DATA / f"query-results-{mode}"
    out.with_suffix(".json").write_text(
        json.dumps(
            {"machine": m, "sizes": sizes, "panels": results, "histograms": histograms}, indent=1
        )
    )
    out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=lambda: new_event_loop(Settings())) as runner:
        runner.run(main())
