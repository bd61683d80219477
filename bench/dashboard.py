"""Dashboard benchmark (issue 21): the time from navigation until every panel has
drawn, for the last 24 hours, 7 days and 30 days, and the API requests per load.

The data is ``bench/generate.py``'s (``--events`` events over 30 days up to when it
was generated; by default 1.5 million events in one app). The service runs as
``apinalytics serve`` in a child process on 127.0.0.1; the browser is Debian's
Chromium, headless, driven by Playwright, on the same two cores. Each range is
loaded ``--loads`` times, each a fresh navigation (the read key is already in the
browser's storage, as for a returning owner); the first is reported apart (the
database's caches are cold for that range's raw events), then the median and
maximum of the others. "Drawn" is the moment the page's load finished drawing every
chart, table and headline number (``Apx.stats.lastLoad.readyAt``, milliseconds since
navigation began). Also reported: the slowest API request of the load (Resource
Timing) and the number of requests.

    .venv/bin/python bench/dashboard.py [--events 1500000] [--apps 1] [--loads 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any

import generate
from common import machine, machine_line, median, start_service, stop_service

RANGES = {"24 h": "86400", "7 d": "604800", "30 d": "2592000"}


async def measure(base: str, app_id: str, key: str, loads: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    out: dict[str, Any] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            await context.add_init_script(
                f"localStorage.setItem('apinalytics.key', {json.dumps(key)})"
            )
            page = await context.new_page()
            for name, range_ in RANGES.items():
                runs = []
                for _ in range(loads):
                    await page.goto(f"{base}/dashboard/?app={app_id}&range={range_}")
                    await page.wait_for_function(
                        "() => Apx.stats.lastLoad || document.body.dataset.state === 'error'",
                        timeout=120_000,
                    )
                    state = await page.evaluate("() => document.body.dataset.state")
                    assert state == "ready", (name, state, await page.inner_text("#status"))
                    runs.append(
                        await page.evaluate(
                            """() => ({
                                drawn: Apx.stats.lastLoad.readyAt,
                                requests: Apx.stats.lastLoad.requests,
                                first: Apx.stats.lastLoad.firstDrawAt,
                                draw: Apx.stats.drawMs,
                                slowest: Math.max(...performance.getEntriesByType('resource')
                                    .filter((e) => e.name.includes('/1/timeseries/'))
                                    .map((e) => e.duration)),
                            })"""
                        )
                    )
                warm = runs[1:] or runs
                out[name] = {
                    "first_load_ms": round(runs[0]["drawn"]),
                    "counts_drawn_ms": round(median([r["first"] or r["drawn"] for r in warm])),
                    "median_ms": round(median([r["drawn"] for r in warm])),
                    "max_ms": round(max(r["drawn"] for r in warm)),
                    "draw_ms": round(median([r["draw"] for r in warm]), 1),
                    "slowest_request_ms": round(median([r["slowest"] for r in warm])),
                    "requests": runs[0]["requests"],
                }
                print(name, out[name], flush=True)
        finally:
            await browser.close()
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_500_000)
    p.add_argument("--apps", type=int, default=1)
    p.add_argument("--loads", type=int, default=5)
    args = p.parse_args()
    manifest = await generate.ensure("apache", events=args.events, days=30, n_apps=args.apps)
    app = manifest["app_list"][0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await start_service(manifest["dsn"], port)
    try:
        import asyncpg

        conn = await asyncpg.connect(manifest["dsn"])
        try:
            print(machine_line(await machine(conn)))
        finally:
            await conn.close()
        await measure(f"http://127.0.0.1:{port}", app["app_id"], app["read_key"], args.loads)
    finally:
        await stop_service(proc)


if __name__ == "__main__":
    asyncio.run(main())
