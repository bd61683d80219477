"""The Python client's cost to the API it instruments, and its sender's throughput.

1. Middleware latency: a hello-world ASGI app (Starlette, one route ``/hello/{name}``)
   and a hello-world Flask app, each built twice — bare, and with the client's
   middleware — and called in this process directly through ASGI / WSGI (no network,
   no server: what is measured is the app and the middleware, not a socket). Requests
   go in alternating blocks of ``--block`` to the bare and the instrumented app, so
   both see the same machine load; p50 and p99 of each, and the difference ("added").
   Twice: with the service up (a real ``apinalytics serve`` on a fresh non-durable
   cluster, the ``Sender``'s thread sending batches meanwhile) and down (nothing
   listening on the sender's port: it retries with backoff, its queue fills, then new
   events are dropped).
2. Sender throughput: one thread records ``--events`` events as fast as it can, then
   ``flush()``; events per second from the first ``record()`` to the service's last
   200, and the cost of one ``record()`` call.

    .venv/bin/python bench/client.py [--requests 20000] [--rounds 3] [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import EnvironBuilder

from apinalytics import apps, localdb, migrate
from apinalytics_client import Sender
from apinalytics_client.asgi import ApinalyticsMiddleware
from apinalytics_client.wsgi import init_flask
from common import (
    DATA,
    cluster,
    machine,
    machine_line,
    median,
    percentile,
    start_service,
    stop_service,
)

PATH, QUERY = "/hello/world", "lang=en&token=not-recorded"


# -- the two hello-world apps, bare and instrumented --------------------------------


def asgi_app(sender: Sender | None) -> Any:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello " + request.path_params["name"])

    middleware = [Middleware(ApinalyticsMiddleware, sender=sender)] if sender else []  # type: ignore[arg-type]
    return Starlette(routes=[Route("/hello/{name}", hello)], middleware=middleware)


def flask_app(sender: Sender | None) -> Any:
    app = Flask("hello")

    @app.route("/hello/<name>")
    def hello(name: str) -> str:
        return "hello " + name

    if sender is not None:
        init_flask(app, sender)
    return app


async def asgi_timer(app: Any) -> Callable[[], Any]:
    headers = [(b"host", b"bench"), (b"user-agent", b"bench")]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def one() -> tuple[int, int]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": QUERY.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        c, t = time.thread_time_ns(), time.perf_counter_ns()
        await app(scope, receive, send)
        return time.perf_counter_ns() - t, time.thread_time_ns() - c

    return one


def wsgi_timer(app: Any) -> Callable[[], tuple[int, int]]:
    template = EnvironBuilder(path=PATH, query_string=QUERY).get_environ()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        pass

    def one() -> tuple[int, int]:
        environ = dict(template)
        c, t = time.thread_time_ns(), time.perf_counter_ns()
        body = app(environ, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return time.perf_counter_ns() - t, time.thread_time_ns() - c

    return one


async def side_by_side(
    bare: Callable[[], Any],
    instrumented: Callable[[], Any],
    requests: int,
    block: int,
    is_async: bool,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(wall, CPU) nanoseconds per request of each, in alternating blocks, after a
    warm-up."""
    out: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])

    async def run(fn: Callable[[], Any], n: int, into: list[tuple[int, int]] | None) -> None:
        for _ in range(n):
            ns = (await fn()) if is_async else fn()
            if into is not None:
                into.append(ns)

    for fn in (bare, instrumented):
        await run(fn, min(1000, requests), None)
    for _ in range(0, requests, block):
        await run(bare, block, out[0])
        await run(instrumented, block, out[1])
    return out


def summary(bare: list[tuple[int, int]], inst: list[tuple[int, int]]) -> dict[str, float]:
    """p50 and p99 in µs of wall-clock and thread CPU time, bare, instrumented, added."""
    out = {}
    for i, clock in enumerate(("wall", "cpu")):
        for p in (50, 99):
            b = percentile([x[i] for x in bare], p) / 1000
            w = percentile([x[i] for x in inst], p) / 1000
            out[f"{clock}_bare_p{p}"] = b
            out[f"{clock}_p{p}"] = w
            out[f"{clock}_added_p{p}"] = w - b
    return out


async def middleware_round(
    senders: dict[str, Sender], requests: int, block: int
) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for state, sender in senders.items():
        bare = await asgi_timer(asgi_app(None))
        inst = await asgi_timer(asgi_app(sender))
        out[("ASGI (Starlette)", state)] = summary(
            *await side_by_side(bare, inst, requests, block, True)
        )
        wbare, winst = wsgi_timer(flask_app(None)), wsgi_timer(flask_app(sender))
        out[("WSGI (Flask)", state)] = summary(
            *await side_by_side(wbare, winst, requests, block, False)
        )
    return out


# -- the sender's throughput ---------------------------------------------------------


def throughput(
    app: apps.NewApp, base: str, events: int, batch_size: int, gzip_level: int
) -> dict[str, float]:
    assert app.write_key
    sender = Sender(
        app.app_id,
        app.write_key,
        base,
        batch_size=batch_size,
        gzip_level=gzip_level,
        queue_size=events,
        flush_at_exit=False,
    )
    now = time.time()
    t0 = time.perf_counter()
    for i in range(events):
        sender.record(
            method="GET",
            url=f"/v1/orders/{i % 1000}?page=2",
            function="/v1/orders/{id}",
            response_us=1000 + i % 5000,
            status_code=200,
            consumer_id=f"c{i % 50}",
            timestamp=now,
        )
    recorded = time.perf_counter() - t0
    assert sender.flush(300), sender.stats
    total = time.perf_counter() - t0
    stats = sender.stats
    sender.close(5)
    assert stats.sent == events and stats.dropped == 0, stats
    return {
        "batch_size": batch_size,
        "gzip_level": gzip_level,
        "events": events,
        "record_us": recorded / events * 1e6,
        "events_per_s": events / total,
        "seconds": total,
        "retries": stats.retries,
    }


# -- the run ---------------------------------------------------------------------------


def table(rows: Iterable[list[str]], head: list[str]) -> str:
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="per app and state and round")
    p.add_argument("--block", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=100_000, help="for the sender's throughput")
    args = p.parse_args()

    c = await asyncio.to_thread(cluster, "client", "apache", fresh=True)
    server = None
    try:
        await migrate.migrate(c.dsn)
        conn = await asyncpg.connect(c.dsn)
        try:
            m = await machine(conn)
            app = await apps.create(conn, "bench-client")
        finally:
            await conn.close()
        assert app.write_key
        port = localdb.free_port()
        server = await start_service(c.dsn, port)
        base = f"http://127.0.0.1:{port}"
        senders = {
            "up": Sender(app.app_id, app.write_key, base, flush_at_exit=False),
            "down": Sender(
                app.app_id,
                app.write_key,
                f"http://127.0.0.1:{localdb.free_port()}",
                flush_at_exit=False,
            ),
        }
        rounds = []
        for r in range(args.rounds):
            rounds.append(await middleware_round(senders, args.requests, args.block))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        up, down = senders["up"].stats, senders["down"].stats
        await asyncio.to_thread(senders["up"].close, 30)
        senders["down"].close(0.1)

        tp = [
            await asyncio.to_thread(throughput, app, base, args.events, batch, level)
            for batch, level in ((500, 6), (2000, 6), (2000, 1), (5000, 6))
        ]
    finally:
        if server is not None:
            await stop_service(server)
        await asyncio.to_thread(c.stop)

    keys = list(rounds[0])
    med = {k: {f: median([r[k][f] for r in rounds]) for f in rounds[0][k]} for k in keys}
    head = ["app", "service", "bare p50", "with middleware p50", "added p50"]
    head += ["bare p99", "with middleware p99", "added p99"]
    tables = {}
    for clock in ("wall", "cpu"):
        rows = []
        for (fw, state), v in med.items():
            row = [fw, state]
            for p in (50, 99):
                row += [f"{v[f'{clock}_bare_p{p}']:.1f}", f"{v[f'{clock}_p{p}']:.1f}"]
                row += [f"**{v[f'{clock}_added_p{p}']:.1f}**"]
            rows.append(row)
        tables[clock] = table(rows, head)
    tps = table(
        [
            [
                f"{t['batch_size']:,}",
                f"{t['gzip_level']}",
                f"{t['events']:,}",
                f"{t['record_us']:.2f}",
                f"{t['events_per_s']:,.0f}",
                f"{t['retries']:.0f}",
            ]
            for t in tp
        ],
        ["batch_size", "gzip_level", "events", "record() µs", "events/s to the service", "retries"],
    )
    print(f"\nMachine: {machine_line(m)}\n")
    print(
        f"Middleware, {args.rounds} rounds x {args.requests:,} requests per app and state "
        f"(medians of the rounds' percentiles):\n"
    )
    print("Wall-clock µs per request:\n")
    print(tables["wall"])
    print("\nCPU time of the request's thread, µs per request:\n")
    print(tables["cpu"])
    print(f"\nLoad average at the end: {os.getloadavg()}")
    print(f"\nSender up: {up}\nSender down: {down}\n")
    print(tps)
    DATA.mkdir(exist_ok=True)
    (DATA / "client.json").write_text(
        json.dumps(
            {
                "machine": m,
                "rounds": [{f"{k[0]}|{k[1]}": v for k, v in r.items()} for r in rounds],
                "throughput": tp,
                "up": str(up),
                "down": str(down),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
