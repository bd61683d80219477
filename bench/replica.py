"""Read replica benchmark: query latency read from a streaming replica and from the
primary, side by side in one run, with the machine idle and while ingest runs on the
primary (docs/replicas.md).

A non-durable primary cluster (``bench/data/replica-<mode>-primary``) holding one
application's events over a week (COPY, rollups rebuilt), a ``pg_basebackup -R`` of it
started as a hot standby on another port, and one service process with
``APINALYTICS_READ_DATABASE_URL`` set. One query client alternates, request by request,
the same panel read by default (the replica, ``X-Apinalytics-Read-From`` checked) and
with ``X-Apinalytics-Consistency: strong`` (the primary): a rollup panel (calls per
function per hour over the week) and a raw one (p95 per hour over a day). First with
nothing else running, then while ``--writers`` clients send batches of 100 events as
fast as they are answered. Reported: p50/p95 per panel, server and phase, the ingest
rate, and the replica's lag as /metrics gave it during the ingest phase.

    .venv/bin/python bench/replica.py [--mode apache|community] [--events 500000]
        [--seconds 20] [--writers 4]

Everything runs on this machine's cores: the replica adds no CPU here, so the numbers
show what reading through it costs and how it holds up beside ingest, not the
capacity a replica on its own machine adds.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import asyncpg

from apinalytics import apps, localauth, localdb, migrate
from apinalytics.edition import Edition
from apinalytics.rollups.rebuild import rebuild
from common import (
    DATA,
    LICENSES,
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

STRONG = {"X-Apinalytics-Consistency": "strong"}


async def load(dsn: str, mode: str, n: int) -> tuple[apps.NewApp, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        app = await apps.create(conn, "replica-bench")
        internal = await conn.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
        end = int(time.time()) // 3600 * 3600
        start = end - 7 * DAY
        await copy_diurnal(conn, internal, start, 7 * 1440, n, SEED)
        await rebuild(conn, Edition(mode), start - 3600, end + 3600)
        await conn.execute("VACUUM ANALYZE")
        return app, start, end
    finally:
        await conn.close()


def standby(primary: localdb.LocalCluster, name: str) -> localdb.LocalCluster:
    """A hot standby of ``primary``: its base backup in ``bench/data/<name>``."""
    target = DATA / name
    if target.exists():
        localdb.LocalCluster(target, primary.bindir).stop()
        shutil.rmtree(target)
    primary._own(primary.datadir / localauth.PASSWORD_FILE)
    target.mkdir(parents=True)
    primary._own(target)
    target.chmod(0o700)
    password = localauth.read_password(primary.datadir)
    conninfo = f"host=127.0.0.1 port={primary.port} user={localauth.SUPERUSER} password={password}"
    backup = ["pg_basebackup", "-D", str(target), "-R", "-X", "stream", "-c", "fast"]
    primary._run_pg([*backup, "--no-sync", "-d", conninfo])
    return localdb.LocalCluster(
        target, primary.bindir, port=localdb.free_port(), license=primary.license, durable=False
    ).ensure_running()


@dataclass
class Phase:
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    ingested: int = 0
    seconds: float = 0.0
    lag_s: list[float] = field(default_factory=list)
    lag_bytes: list[float] = field(default_factory=list)
    read_from: dict[str, int] = field(default_factory=dict)


def headers(app: apps.NewApp, key: str | None) -> dict[str, str]:
    assert key
    return {"X-Auth-User": app.app_id, "X-Auth-Key": key}


def panels(start: int, end: int) -> dict[str, str]:
    return {
        "rollup: calls per function per hour, 7 days": (
            f"/1/timeseries/{start}/{end}/?granularity=hour&group=function"
        ),
        "raw: p95 per hour, 1 day": (
            f"/1/timeseries/{end - DAY}/{end}/?granularity=hour&aggregation=percentile_95"
        ),
    }


async def queries(
    base: str, app: apps.NewApp, start: int, end: int, seconds: float, phase: Phase
) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            for panel, path in panels(start, end).items():
                for extra in ({}, STRONG):
                    t = time.perf_counter()
                    async with http.get(
                        base + path, headers={**headers(app, app.read_key), **extra}
                    ) as r:
                        await r.read()
                        assert r.status == 200, await r.text()
                        got = r.headers["X-Apinalytics-Read-From"]
                    took = time.perf_counter() - t
                    phase.read_from[got] = phase.read_from.get(got, 0) + 1
                    # A default read the primary answered (the replica lagging) is
                    # counted where it was read.
                    phase.latencies.setdefault((panel, got), []).append(took)


async def writer(base: str, app: apps.NewApp, stop: asyncio.Event, phase: Phase, seed: int) -> None:
    maker = EventMaker(seed=seed)
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            now = time.time()
            batch = [as_json(e) for e in maker.events([now - 1] * 100)]
            async with http.post(
                f"{base}/1/events/", json=batch, headers=headers(app, app.write_key)
            ) as r:
                await r.read()
                assert r.status == 200, await r.text()
            phase.ingested += len(batch)


async def lag(base: str, stop: asyncio.Event, phase: Phase) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            for line in text.splitlines():
                if line.startswith("apinalytics_read_replica_lag_seconds "):
                    phase.lag_s.append(float(line.split()[1]))
                if line.startswith("apinalytics_read_replica_lag_bytes "):
                    phase.lag_bytes.append(float(line.split()[1]))
            await asyncio.sleep(0.5)


async def run_phase(
    base: str, app: apps.NewApp, start: int, end: int, seconds: float, writers: int
) -> Phase:
    phase = Phase()
    stop = asyncio.Event()
    background = [
        asyncio.create_task(writer(base, app, stop, phase, seed=i)) for i in range(writers)
    ]
    background.append(asyncio.create_task(lag(base, stop, phase)))
    await asyncio.sleep(1 if writers else 0)
    t = time.perf_counter()
    await queries(base, app, start, end, seconds, phase)
    phase.seconds = time.perf_counter() - t
    stop.set()
    await asyncio.gather(*background)
    return phase


def report(mode: str, m: dict[str, str], events: int, phases: dict[str, Phase], load: str) -> None:
    print(f"\n### {mode} mode, {events:,} events over 7 days\n")
    print(machine_line(m) + "; a streaming replica on the same machine")
    print(f"load before: {load}\n")
    print("| phase | panel | read from | requests | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for name, phase in phases.items():
        for (panel, source), values in sorted(phase.latencies.items()):
            ms = [v * 1000 for v in values]
            print(
                f"| {name} | {panel} | {source} | {len(ms)} | "
                f"{percentile(ms, 50):.1f} | {percentile(ms, 95):.1f} |"
            )
    for name, phase in phases.items():
        rate = phase.ingested / phase.seconds if phase.seconds else 0
        lag_s = max(phase.lag_s, default=0.0)
        lag_b = max(phase.lag_bytes, default=0.0)
        print(
            f"\n{name}: {phase.ingested:,} events ingested ({rate:,.0f}/s), answers by "
            f"server {phase.read_from}, replica lag at most {lag_s:.2f} s / {lag_b:,.0f} "
            "bytes as /metrics gave it"
        )


async def bench_mode(mode: str, args: argparse.Namespace) -> None:
    primary = cluster(f"replica-{mode}-primary", mode, fresh=True)
    replica: localdb.LocalCluster | None = None
    proc = None
    try:
        await migrate.migrate(primary.dsn)
        app, start, end = await load(primary.dsn, mode, args.events)
        replica = standby(primary, f"replica-{mode}-standby")
        conn = await asyncpg.connect(primary.dsn)
        try:
            m = await machine(conn)
        finally:
            await conn.close()
        port = localdb.free_port()
        base = f"http://127.0.0.1:{port}"
        proc = await start_service(
            primary.dsn,
            port,
            env={"APINALYTICS_READ_DATABASE_URL": replica.dsn, "APINALYTICS_LOG_LEVEL": "ERROR"},
        )
        with open("/proc/loadavg") as f:
            load_before = " ".join(f.read().split()[:3])
        await run_phase(base, app, start, end, 3, 0)  # warm-up: caches of both servers
        phases = {
            "idle": await run_phase(base, app, start, end, args.seconds, 0),
            f"ingest ({args.writers} writers)": await run_phase(
                base, app, start, end, args.seconds, args.writers
            ),
        }
        report(mode, m, args.events, phases, load_before)
    finally:
        if proc is not None:
            await stop_service(proc)
        for c in (replica, primary):
            if c is not None:
                c.stop()
                shutil.rmtree(c.datadir, ignore_errors=True)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="apache", choices=sorted(LICENSES))
    p.add_argument("--events", type=int, default=500_000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--writers", type=int, default=4)
    args = p.parse_args()
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    await bench_mode(args.mode, args)


if __name__ == "__main__":
    asyncio.run(main())
