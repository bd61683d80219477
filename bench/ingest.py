"""Ingest benchmark (issue "Foundation"): events/s through HTTP against the COPY ceiling.

What runs where, on one machine:

* the database: a fresh, non-durable local cluster in ``bench/data/ingest-<mode>``;
* the service: ``python -m apinalytics serve`` in a child process (its own event
  loop), default settings, logs at WARNING so no access log line is written;
* the client: this process, an aiohttp ClientSession with ``--concurrency`` tasks
  posting bodies serialized before the clock starts;
* the ceilings: this process, asyncpg on one connection, the very rows the service
  would store (``decode.parse`` of the same bodies, done before the clock starts).

Every round runs each variant once on the same events, into an emptied ``events``
table (and emptied rollup tables in the Apache mode), and checks the row count; the
report is the median over rounds, because the machine is shared and noisy, and the
median of each round's ratio to that round's ceiling.

    .venv/bin/python bench/ingest.py [--mode apache|community|all] [--events 100000]
        [--rounds 3] [--concurrency 16] [--profile] [--server-env NAME=VALUE ...]
        [--compare NAME=VALUE[,NAME=VALUE...] ...]

``--compare`` measures the service with other settings side by side: each such
configuration runs as a service process of its own, started next to the default one,
and every round posts the same bodies to each of them in turn (the order alternates
from round to round). The report adds their HTTP rows and the median of each round's
events/s ÷ the default service's in that round: a comparison that the machine's
noise, which moves whole rounds, does not decide.

Rollup upkeep happens in the service's background materializer, never in the
request: while each HTTP run goes on, the oldest pending stretch's age is sampled
every 0.2 s (its maximum is reported), and after it the time until nothing is
pending; the service's and the database's CPU are counted once more when nothing
is pending, so each HTTP run also reports its sustained cost per event (stored and
rolled up) and the events per second one core sustains at it. After the rounds,
``--scattered`` batches of 1,000 events spread over the last 30 days and as many
live ones are posted one at a time, on top of what the last run stored (``--background`` more events of another app, spread over the same 30
days, are loaded first): their request latencies side by side.

``--profile`` also runs the service once under pyinstrument (batches of 1,000, with
decoding kept on the event loop thread so the sampler sees it) and writes the report
to ``bench/data/ingest-profile-<mode>.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import asyncpg

from apinalytics import apps, localdb, migrate
from apinalytics.db import Database, unix_us_timestamps
from apinalytics.ingest import decode, write
from apinalytics.rollups import ROLLUPS, materializer, rebuild
from apinalytics.settings import Settings
from common import (
    DATA,
    ROOT,
    EventMaker,
    as_json,
    cpu_seconds,
    database_cpu_s,
    machine,
    machine_line,
    median,
    modes_available,
    process_tree,
    start_service,
    stop_service,
)
from common import cluster as start_cluster
from common import percentile as pct

# Bound on any single measured run; a stuck run fails loudly instead of hanging.
RUN_TIMEOUT_S = 600


async def main() -> None:
    # write.store's statements on 16 busy connections are slow by design here: no
    # slow-statement warning per statement.
    logging.getLogger("apinalytics.db").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="all", choices=["apache", "community", "all"])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--scattered", type=int, default=10, help="scattered and live batches timed")
    p.add_argument(
        "--background", type=int, default=200_000, help="another app's events over 30 days"
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an APINALYTICS_* setting for the service, e.g. APINALYTICS_DB_POOL_MAX=16",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=VALUE[,NAME=VALUE...]",
        help="another service configuration measured in the same rounds, "
        "e.g. APINALYTICS_WORKERS=2",
    )
    args = p.parse_args()
    for mode in modes_available(args.mode):
        await bench_mode(mode, args)


async def bench_mode(mode: str, args: argparse.Namespace) -> None:
    c = await asyncio.to_thread(start_cluster, f"ingest-{mode}", mode, fresh=True)
    try:
        result = await migrate.migrate(c.dsn)
        assert result.mode == mode, result
        conn = await asyncpg.connect(c.dsn)
        try:
            m = await machine(conn)
            app = await apps.create(conn, "bench")
            app_internal = await conn.fetchval("SELECT id FROM apps WHERE public_id=$1", app.app_id)
        finally:
            await conn.close()

        # A live stream: events of the last 5 minutes, in time order, so concurrent
        # batches land in the same minute and hour buckets as they would in production.
        # (Older events are back-dated for the Community mode: past the minute
        # aggregate's 15-minute end_offset, each batch refreshes its buckets.)
        n = args.events
        now = time.time()
        start = now - 300
        ts = [round(start + i * (290 / n), 6) for i in range(n)]
        events = [as_json(e) for e in EventMaker(seed=7).events(ts)]
        bodies = {
            size: [
                json.dumps(events[i : i + size], separators=(",", ":")).encode()
                for i in range(0, n, size)
            ]
            for size in (1000, 100)
        }
        settings = Settings()
        batches = [decode.parse(b, app_internal, now, settings) for b in bodies[1000]]
        rows = [r for b in batches for r in b]
        decode_us = _decode_cost(bodies[1000][0], app_internal, settings)

        runs: dict[str, list[float]] = {}
        latencies: dict[str, list[float]] = {}
        # Per HTTP run: the oldest pending stretch's greatest age during it, and the
        # seconds until nothing was pending after it.
        upkeep: dict[str, list[tuple[float, float]]] = {}

        cpu: dict[str, list[tuple[float, float, float]]] = {}
        # Per HTTP run: service and database CPU µs per event from the run's start until
        # nothing was pending (the materializer's catch-up included).
        sustained: dict[str, list[tuple[float, ...]]] = {}

        async def record(
            name: str,
            fn: Callable[[], Awaitable[float | tuple[float, list[float]]]],
            server: subprocess.Popen[bytes] | None = None,
        ) -> None:
            await _reset(c.dsn)
            before = _cpu_now(server, c.datadir)
            worst = [0.0]
            sampler = asyncio.create_task(_pending_age(c.dsn, worst)) if server else None
            out = await asyncio.wait_for(fn(), RUN_TIMEOUT_S)
            after = _cpu_now(server, c.datadir)
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                drained = await _drain(c.dsn)
                upkeep.setdefault(name, []).append((worst[0], drained))
                # The same CPU, counted until the materializer caught up: the sustained
                # cost of an event (stored and rolled up).
                settled = _cpu_now(server, c.datadir)
                sustained.setdefault(name, []).append(
                    tuple((a - b) / n * 1e6 for a, b in zip(settled[:2], before[:2], strict=True))
                )
            elapsed, lat = out if isinstance(out, tuple) else (out, [])
            got = await _count(c.dsn)
            if got != n:
                raise RuntimeError(f"{name}: {got} rows stored, expected {n}")
            runs.setdefault(name, []).append(n / elapsed)
            latencies.setdefault(name, []).extend(lat)
            used = tuple((a - b) / n * 1e6 for a, b in zip(after, before, strict=True))
            cpu.setdefault(name, []).append(used)
            print(
                f"  {name:<28} {n / elapsed:>10,.0f} events/s   CPU µs/event: "
                f"service {used[0]:.1f}, database {used[1]:.1f}, this process {used[2]:.1f}",
                flush=True,
            )

        base_env = dict(kv.split("=", 1) for kv in args.server_env)
        # The default service ("") first, then each --compare configuration.
        services: list[tuple[str, subprocess.Popen[bytes], str]] = []
        headers = {
            "X-Auth-User": app.app_id,
            "X-Auth-Key": app.write_key or "",
            "Content-Type": "application/json",
        }
        try:
            for spec in ["", *args.compare]:
                port = localdb.free_port()
                env = {**base_env, **dict(kv.split("=", 1) for kv in spec.split(",") if kv)}
                server = await start_service(c.dsn, port, env=env)
                services.append((spec, server, f"http://127.0.0.1:{port}/1/events/"))
            for r in range(args.rounds):
                print(f"[{mode}] round {r + 1}/{args.rounds}", flush=True)
                await record("copy_all", lambda: _copy_all(c.dsn, rows))
                await record("store_1000_seq", lambda: _store(c.dsn, batches, 1))
                await record("store_1000_c16", lambda: _store(c.dsn, batches, args.concurrency))
                # Every other round the other way round: no configuration always goes first.
                in_turn = services if r % 2 == 0 else services[::-1]
                for spec, server, url in in_turn:
                    for size in (1000, 100):
                        await record(
                            _http_name(size, args.concurrency, spec),
                            lambda size=size, url=url: _http(  # type: ignore[misc]
                                url, headers, bodies[size], args.concurrency
                            ),
                            server,
                        )
            scattered = await _scattered(c.dsn, services[0][2], headers, args, app_internal)
        finally:
            for _, server, _ in services:
                await stop_service(server)

        profile = None
        if args.profile:
            profile = await _profile(
                c.dsn, mode, url_headers=headers, bodies=bodies[1000], args=args
            )
        _report(
            mode, m, args, runs, latencies, cpu, decode_us, profile, upkeep, scattered, sustained
        )
    finally:
        await asyncio.to_thread(c.stop)


def _cpu_now(server: subprocess.Popen[bytes] | None, datadir: Path) -> tuple[float, float, float]:
    """CPU seconds so far of the service (all its processes), the database (postmaster
    and backends) and this benchmark process (the HTTP client, or the COPY client)."""
    service = sum(cpu_seconds(p) for p in process_tree(server.pid)) if server else 0.0
    return service, database_cpu_s(datadir), time.process_time()


def _decode_cost(body: bytes, app: int, settings: Settings) -> float:
    """Microseconds per event to validate a 1,000-event body (median of 20 runs)."""
    times = []
    for _ in range(20):
        t = time.perf_counter()
        rows = decode.parse(body, app, time.time(), settings)
        times.append((time.perf_counter() - t) / len(rows) * 1e6)
    return median(times)


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        tables = ["events", "idempotency_keys", "rollup_pending"]
        for r in ROLLUPS:
            kind = await conn.fetchval(
                "SELECT relkind FROM pg_class WHERE oid = to_regclass($1)", r.relation
            )
            # Plain tables in the Apache mode; continuous aggregates are left alone.
            if kind in (b"r", "r"):
                tables.append(r.relation)
        # The services' materializers may be catching up on the last run's pending
        # stretches: hold their lock, so that no run is midway through the tables.
        await conn.execute("SELECT pg_advisory_lock($1)", materializer.LOCK_ID)
        await conn.execute(f"TRUNCATE {', '.join(tables)}")
        await conn.execute("SELECT pg_advisory_unlock($1)", materializer.LOCK_ID)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _oldest_pending(conn: asyncpg.Connection) -> float:
    age = await conn.fetchval(
        "SELECT extract(epoch FROM now() - min(created_at))::float8 FROM rollup_pending"
    )
    return float(age or 0.0)


async def _pending_age(dsn: str, worst: list[float]) -> None:
    """Until cancelled, every 0.2 s: ``worst[0]`` = the greatest age of the oldest
    pending stretch seen so far."""
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            worst[0] = max(worst[0], await _oldest_pending(conn))
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _drain(dsn: str) -> float:
    """Seconds until the service's materializer has left nothing pending."""
    conn = await asyncpg.connect(dsn)
    try:
        t = time.perf_counter()
        while await conn.fetchval("SELECT count(*) FROM rollup_pending"):
            if time.perf_counter() - t > RUN_TIMEOUT_S:
                raise RuntimeError("the materializer did not catch up")
            await asyncio.sleep(0.05)
        return time.perf_counter() - t
    finally:
        await conn.close()


async def _scattered(
    dsn: str, url: str, headers: dict[str, str], args: argparse.Namespace, app: int
) -> dict[str, list[float]]:
    """Request latencies of batches of 1,000 events spread over the last 30 days and
    of live ones, posted one at a time in turn, after another app's ``--background``
    events over the same days were loaded (COPY, then rebuilt into the rollups)."""
    if not args.scattered:
        return {}
    conn = await asyncpg.connect(dsn)
    try:
        other = await apps.create(conn, "background")
        other_id = await conn.fetchval("SELECT id FROM apps WHERE public_id=$1", other.app_id)
        now = time.time()
        span = 30 * 86400
        back = EventMaker(seed=11).events(
            [now - span + i * (span - 60) / args.background for i in range(args.background)]
        )
        settings = Settings(max_event_age_s=366 * 86400)
        body = json.dumps([as_json(e) for e in back], separators=(",", ":")).encode()
        rows = decode.parse(
            body, other_id, now, settings.model_copy(update={"max_batch_events": args.background})
        )
        await unix_us_timestamps(conn)
        await conn.copy_records_to_table("events", records=rows, columns=decode.COLUMNS)
        await conn.reset_type_codec("timestamptz", schema="pg_catalog")
        mode = await migrate.rollup_mode(conn)
        assert mode is not None
        await conn.execute("SET statement_timeout = 0")
        await rebuild.rebuild(conn, mode, now - span - 3600, now)
    finally:
        await conn.close()
    out: dict[str, list[float]] = {"scattered": [], "live": []}
    maker = EventMaker(seed=13)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for i in range(args.scattered):
            t0 = time.time()
            spread = [t0 - 60 - ((j * 7919 + i * 104729) % (span - 120)) for j in range(1000)]
            live = [t0 - 1 + j / 1000 for j in range(1000)]
            for name, ts in (("scattered", spread), ("live", live)):
                batch = json.dumps([as_json(e) for e in maker.events(ts)]).encode()
                t = time.perf_counter()
                async with session.post(url, data=batch, headers=headers) as resp:
                    answer = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {answer[:300]!r}")
                out[name].append(time.perf_counter() - t)
        drained = await _drain(dsn)
    print(
        f"  scattered p50 {pct(out['scattered'], 50) * 1000:.0f} ms, live p50 "
        f"{pct(out['live'], 50) * 1000:.0f} ms, caught up {drained:.1f} s after",
        flush=True,
    )
    out["drained"] = [drained]
    return out


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


async def _copy_all(dsn: str, rows: Sequence[decode.Row]) -> float:
    """The ceiling: one COPY of every row, one statement, one connection (with the
    service's ingest codec: times as ints of UNIX microseconds)."""
    conn = await asyncpg.connect(dsn)
    try:
        await unix_us_timestamps(conn)
        t = time.perf_counter()
        await conn.copy_records_to_table("events", records=rows, columns=decode.COLUMNS)
        return time.perf_counter() - t
    finally:
        await conn.close()


async def _store(dsn: str, batches: Sequence[Sequence[decode.Row]], conc: int) -> float:
    """The service's write path without HTTP: ``write.store`` per batch (one transaction
    each: COPY plus its pending stretches), on ``conc`` connections."""
    pool = await asyncpg.create_pool(dsn, min_size=conc, max_size=conc, init=unix_us_timestamps)
    db = Database(pool, 60, 60)
    it = iter(batches)

    async def worker() -> None:
        for b in it:
            # The rows carry their app's internal id; store share-locks that app's row.
            await write.store(db, b[0][1], b, idempotency_key=None, idempotency_ttl_s=60)

    try:
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return time.perf_counter() - t
    finally:
        await pool.close()


async def _http(
    url: str, headers: dict[str, str], bodies: Sequence[bytes], conc: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    it = iter(bodies)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=conc), timeout=timeout
    ) as session:

        async def worker() -> None:
            for body in it:
                t = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    answer = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {answer[:300]!r}")
                latencies.append(time.perf_counter() - t)

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return time.perf_counter() - t, latencies


async def _profile(
    dsn: str,
    mode: str,
    *,
    url_headers: dict[str, str],
    bodies: Sequence[bytes],
    args: argparse.Namespace,
) -> Path:
    out = DATA / f"ingest-profile-{mode}.txt"
    port = localdb.free_port()
    prefix = ["-m", "pyinstrument", "-r", "text", "-o", str(out), "--show-all", "-i", "0.0005"]
    # The sampler sees only the main thread: keep decoding there for the profile.
    server = await start_service(
        dsn, port, prefix, env={"APINALYTICS_OFFLOAD_BODY_BYTES": str(1 << 40)}
    )
    try:
        await _reset(dsn)
        url = f"http://127.0.0.1:{port}/1/events/"
        for _ in range(max(1, args.rounds)):
            elapsed, _lat = await asyncio.wait_for(
                _http(url, url_headers, bodies, args.concurrency), RUN_TIMEOUT_S
            )
            print(f"  profiled http_1000: {args.events / elapsed:,.0f} events/s", flush=True)
    finally:
        await stop_service(server)
    return out


LABELS = {
    "copy_all": "COPY ceiling: one `copy_records_to_table` of all rows, 1 connection",
    "store_1000_seq": "`write.store` per 1,000 rows (txn, COPY, pending stretches), 1 connection",
    "store_1000_c16": "`write.store` per 1,000 rows, 16 connections",
    "http_1000_c16": "HTTP `POST /1/events/`, batches of 1,000, 16 concurrent",
    "http_100_c16": "HTTP `POST /1/events/`, batches of 100, 16 concurrent",
}


def _http_name(size: int, concurrency: int, spec: str) -> str:
    """The run's name: the default service's, or a --compare configuration's."""
    name = f"http_{size}_c{concurrency}"
    return f"{name} [{spec}]" if spec else name


def _label(name: str) -> str:
    base, _, spec = name.partition(" [")
    label = LABELS.get(base, base)
    return f"{label}, service with {spec.removesuffix(']')}" if spec else label


def _report(
    mode: str,
    m: dict[str, str],
    args: argparse.Namespace,
    runs: dict[str, list[float]],
    latencies: dict[str, list[float]],
    cpu: dict[str, list[tuple[float, float, float]]],
    decode_us: float,
    profile: Path | None,
    upkeep: dict[str, list[tuple[float, float]]],
    scattered: dict[str, list[float]],
    sustained: dict[str, list[tuple[float, ...]]],
) -> None:
    ceiling = median(runs["copy_all"])
    lines = [
        f"### {mode} mode — {args.events:,} events, median of {args.rounds} rounds"
        + (f" (service with {', '.join(args.server_env)})" if args.server_env else ""),
        "",
        f"Machine: {machine_line(m)}.",
        "",
        "| variant | events/s (median) | rounds | vs COPY ceiling | ÷ ceiling per round "
        "(median) | request p50 / p95 | CPU µs/event: service / database / benchmark process |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for name, values in runs.items():
        # The same round's ceiling, measured minutes apart on the same machine state.
        per_round = median([v / c for v, c in zip(values, runs["copy_all"], strict=True)])
        lat = latencies.get(name) or []
        lat_s = f"{pct(lat, 50) * 1000:.0f} / {pct(lat, 95) * 1000:.0f} ms" if lat else ""
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        used = cpu.get(name) or []
        cpu_s = " / ".join(f"{median([u[i] for u in used]):.1f}" for i in range(3)) if used else ""
        lines.append(
            f"| {_label(name)} | {median(values):,.0f} | {rounds} | "
            f"{median(values) / ceiling:.2f} | {per_round:.2f} | {lat_s} | {cpu_s} |"
        )
    if args.compare:
        lines += [
            "",
            "HTTP events/s of each compared service ÷ the first one's, round by round:",
            "",
        ]
    for spec in args.compare:
        for size in (1000, 100):
            first = runs[_http_name(size, args.concurrency, "")]
            other = runs[_http_name(size, args.concurrency, spec)]
            ratios = [o / f for o, f in zip(other, first, strict=True)]
            lines.append(
                f"- {spec}, batches of {size:,}: "
                + ", ".join(f"{x:.2f}" for x in ratios)
                + f" (median {median(ratios):.2f})"
            )
    if upkeep:
        lines += [
            "",
            "Rollup upkeep in the background, per HTTP run: the oldest pending stretch's "
            "greatest age during the run / seconds until nothing was pending after it:",
            "",
        ]
        for name, values in upkeep.items():
            lines.append(
                f"- {_label(name)}: " + ", ".join(f"{a:.1f} s / {d:.1f} s" for a, d in values)
            )
    if sustained:
        lines += [
            "",
            "Sustained cost per HTTP run, CPU counted from the run's start until nothing "
            "was pending (the materializer's catch-up included): service / database µs per "
            "event, round by round, and the events per second one core sustains "
            "(10⁶ ÷ their sum; median of rounds):",
            "",
        ]
        for name, values in sustained.items():
            per_core = [1e6 / (sv + db) for sv, db in values]
            lines.append(
                f"- {_label(name)}: "
                + ", ".join(f"{sv:.1f} / {db:.1f}" for sv, db in values)
                + f"; {median(per_core):,.0f} events/s per core"
                + f" ({min(per_core):,.0f} to {max(per_core):,.0f})"
            )
    if scattered:
        s, live = scattered["scattered"], scattered["live"]
        lines += [
            "",
            f"Batches of 1,000 posted one at a time after another app's {args.background:,} "
            f"events over 30 days were loaded ({len(s)} each): spread over 30 days, "
            f"p50 {pct(s, 50) * 1000:.0f} ms / max {max(s) * 1000:.0f} ms; live, "
            f"p50 {pct(live, 50) * 1000:.0f} ms / max {max(live) * 1000:.0f} ms "
            f"(ratio of p50s {pct(s, 50) / pct(live, 50):.2f}); nothing pending "
            f"{scattered['drained'][0]:.1f} s after the last.",
        ]
    lines += ["", f"Validation (`decode.parse`, 1,000-event body): {decode_us:.1f} µs per event."]
    if profile:
        lines.append(f"Profile: {profile.relative_to(ROOT)}")
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    # Runs with service settings changed keep their own files.
    settings = [*args.server_env, *(kv for spec in args.compare for kv in spec.split(",") if kv)]
    tag = "".join(f"-{kv.split('=', 1)[0].removeprefix('APINALYTICS_')}" for kv in settings)
    out = DATA / f"ingest-results-{mode}{tag.lower()}"
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "machine": m,
                "runs": runs,
                "cpu": cpu,
                "decode_us": decode_us,
                "upkeep": upkeep,
                "sustained": sustained,
                "scattered": scattered,
            },
            indent=1,
        )
    )
    out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
