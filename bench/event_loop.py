"""The service's event loop side by side: uvloop and asyncio's own, in the same run.

What runs where: as in ``query.py`` (the generated data of ``bench/generate.py``, the
service as ``create_app`` in this process, an aiohttp client in the same process
sending one request at a time). Each round runs the whole service and client once on
each loop, in alternating order, and asks every panel of ``query.py`` as planned
(``--requests`` times), the minute panel forced to raw events too, and ``/healthz``.
The report gives the medians per loop and, per round, asyncio ÷ uvloop: the machine's
load changes between rounds, a ratio within one round much less.

    .venv/bin/python bench/event_loop.py [--mode apache|community|all] [--rounds 5]
        [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop
from aiohttp import web

import generate
from apinalytics import localdb
from apinalytics.app import create_app
from apinalytics.settings import Settings
from common import DATA, cluster, machine, machine_line, median, modes_available
from query import HOUR, PANELS

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
WARM_UP = 3


async def one_round(data: dict[str, Any], app: dict[str, Any], requests: int) -> dict[str, float]:
    """Median seconds per request, per probe, with a service started on this loop."""
    settings = Settings(
        database_url=data["dsn"], home=DATA / "home", log_level="WARNING", statement_timeout_s=300
    )
    runner = web.AppRunner(create_app(settings, run_migrations=False), access_log=None)
    await runner.setup()
    port = localdb.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Auth-User": app["app_id"], "X-Auth-Key": app["read_key"]}
    raw = {**headers, "X-Apinalytics-Planner": "raw"}
    probes: list[tuple[str, str, dict[str, str], int]] = [("/healthz", "/healthz", {}, requests)]
    for panel in PANELS:
        query = "&".join(f"{k}={v}" for k, v in panel.params.items())
        path = f"/1/timeseries/{data['end'] - panel.range_s}/{data['end']}/?{query}"
        if panel.kind == "rollup":
            probes.append((panel.name, path, headers, requests))
        if panel.range_s == HOUR:
            probes.append((f"{panel.name}, raw", path, raw, max(requests // 5, 5)))
    out: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for name, path, hdrs, n in probes:
                times = []
                for i in range(n + WARM_UP):
                    t = time.perf_counter()
                    async with session.get(base + path, headers=hdrs) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"HTTP {resp.status} for {path}")
                    if i >= WARM_UP:
                        times.append(time.perf_counter() - t)
                out[name] = median(times)
    finally:
        await runner.cleanup()
    return out


def bench_mode(mode: str, args: argparse.Namespace) -> str:
    data = asyncio.run(generate.ensure(mode, events=args.events, days=args.days, n_apps=args.apps))
    app = max(data["app_list"], key=lambda a: a["events"])
    results: dict[str, list[dict[str, float]]] = {name: [] for name in LOOPS}
    try:
        m = asyncio.run(_machine(data["dsn"]))
        for r in range(args.rounds):
            order = list(LOOPS) if r % 2 == 0 else list(reversed(LOOPS))
            for name in order:
                with asyncio.Runner(loop_factory=LOOPS[name]) as runner:
                    results[name].append(runner.run(one_round(data, app, args.requests)))
                shown = ", ".join(f"{k} {v * 1000:.2f}" for k, v in results[name][-1].items())
                print(f"[{mode}] round {r} {name}: {shown} ms", flush=True)
    finally:
        cluster(f"query-{mode}", mode, fresh=False).stop()
    lines = [
        f"### {mode} mode: uvloop and asyncio side by side ({args.rounds} rounds, "
        f"{args.requests} requests per probe and loop, one at a time)",
        "",
        f"Machine: {machine_line(m)}.",
        "",
        "| probe | uvloop p50 | asyncio p50 | asyncio ÷ uvloop, per round |",
        "|---|---:|---:|---|",
    ]
    for probe in results["uvloop"][0]:
        uv = [r[probe] for r in results["uvloop"]]
        aio = [r[probe] for r in results["asyncio"]]
        ratios = ", ".join(f"{a / u:.2f}" for a, u in zip(aio, uv, strict=True))
        lines.append(
            f"| {probe} | {median(uv) * 1000:.2f} ms | {median(aio) * 1000:.2f} ms | {ratios} |"
        )
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    out: Path = DATA / f"event-loop-{mode}.md"
    out.write_text(text + "\n")
    return text


async def _machine(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await machine(conn)
    finally:
        await conn.close()


def main() -> None:
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    generate.data_arguments(p)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    for mode in modes_available(args.mode):
        bench_mode(mode, args)


if __name__ == "__main__":
    main()
