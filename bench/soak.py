"""Soak and fault benchmark (issue 22): minutes of ingest at 80 % of the measured
capacity, the dashboard's queries running meanwhile, and faults at fixed times.

What runs where, on one machine:

* the database: a fresh local cluster in ``bench/data/soak-<mode>``, with
  ``synchronous_commit`` on (a 200 means the COMMIT's WAL reached the operating
  system, so killing a backend with SIGKILL loses no answered batch) and ``fsync``
  and ``full_page_writes`` off (the operating system does not crash here);
* the service: ``python -m apinalytics serve --no-migrate`` in a child process on
  127.0.0.1, default settings, its log in ``bench/data/soak-<mode>-serve.log``;
* the clients: ``--processes`` child processes, each with ``--senders`` of the
  Python client's ``Sender`` (``apinalytics_client``: its queue, its batches with one
  Idempotency-Key each, its retries), fed events of the benchmark's realistic mix
  (``common.EventMaker``) stamped with the current time, each with a unique URL (so
  that a duplicate or a loss can be found afterwards). A thin subclass times every
  HTTP attempt and notes its status;
* the dashboard: this process, an aiohttp session of at most 6 connections (a
  browser's), loading the dashboard's panels over and over as ``dashboard/js/load.js``
  does (phase 0, the fast panels, then the percentiles two at a time, an overloaded
  one asked again after Retry-After), alternating the ranges of ``--ranges``;
* samplers, in this process, every ``--sample-s``: the service's RSS (``/proc``), the
  materializer's backlog (``rollup_pending``: rows and the oldest one's age) and the
  machine's load average.

First the capacity: for ``--capacity-s`` seconds the senders are kept full (each
always has a batch or two queued) and the events answered 200 per second after a
warm-up are the capacity; once with ingest alone, once with the dashboard loop
running as it will during the soak. Then ``--minutes`` of ingest at ``--load`` of the
latter, paced per client process, with these faults at fixed fractions of the run:

* 0.20: ``pg_terminate_backend`` of every connection of the service;
* 0.35: SIGKILL of one of the service's backends (the postmaster then ends every
  backend and recovers: all connections are lost at once);
* 0.50: ``pg_ctl restart -m fast`` of the cluster;
* 0.70: SIGTERM to the service (it finishes the requests it has, writes the
  batches it holds and exits), then the same command started again on the same port.

At the end the senders are closed (they send what they hold), the materializer is
left to catch up, and the report compares the events the clients were answered 200
for with the rows stored (``count(*)``, distinct URLs) and with every rollup's total
(``sum(calls)``) and the API's; errors by status; per minute, the p50 / p99 of ingest
requests and of dashboard queries, the service's RSS and the materializer's backlog.
It is written to ``bench/data/soak-<mode>.md`` and ``.json``.

    .venv/bin/python bench/soak.py [--mode apache|community|all] [--minutes 10]
        [--load 0.8] [--capacity-s 30] [--processes 2] [--senders 4] [--no-faults]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from apinalytics import apps, localdb, migrate
from apinalytics.rollups import ROLLUPS
from apinalytics_client import Sender
from common import DATA, LICENSES, ROOT, EventMaker, as_json, machine, machine_line
from common import percentile as pct

START_TIMEOUT_S = 60
# The faults, at fractions of the run.
FAULTS = (
    (0.20, "terminate"),
    (0.35, "kill9"),
    (0.50, "pg_restart"),
    (0.70, "service_restart"),
)
FAULT_LABELS = {
    "terminate": "`pg_terminate_backend` of the service's connections",
    "kill9": "SIGKILL of one service backend (the postmaster restarts every backend)",
    "pg_restart": "`pg_ctl restart -m fast`",
    "service_restart": "SIGTERM to the service, then started again",
}
# This process's own connections, told apart from the service's.
BENCH_APP_NAME = "soak bench"


# -- the clients: child processes with Senders -----------------------------------


class TimedSender(Sender):
    """The client's Sender, unchanged, with every HTTP attempt timed and its outcome
    noted: (wall time it began, seconds, status or exception name), and every batch's
    delivery (wall time taken, seconds until answered or given up, events, sent)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempts: list[tuple[float, float, int | str]] = []
        self.batches: list[tuple[float, float, int, bool]] = []

    def _post(self, body: bytes, key: str) -> tuple[int, float | None, bytes]:
        began, t = time.time(), time.perf_counter()
        try:
            out = super()._post(body, key)
        except Exception as exc:
            self.attempts.append((began, time.perf_counter() - t, type(exc).__name__))
            raise
        status, _, answer = out
        label: int | str = status
        if status != 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                label = f"{status} {json.loads(answer)['error']['code']}"
        self.attempts.append((began, time.perf_counter() - t, label))
        return out

    def _send(self, batch: list[dict[str, Any]]) -> None:
        began, t = time.time(), time.perf_counter()
        sent = self.stats.sent
        super()._send(batch)
        ok = self.stats.sent > sent
        self.batches.append((began, time.perf_counter() - t, len(batch), ok))


@dataclass
class ClientPlan:
    index: int
    url: str
    app_id: str
    write_key: str
    senders: int
    batch_size: int
    queue_size: int
    # Events per second of this process; None: as fast as the senders take them.
    rate: float | None
    seconds: float
    log: str
    close_timeout_s: float = 300.0


def client_process(plan: ClientPlan, pipe: Connection) -> None:
    """One client process: wait for the start time, feed the senders, close them,
    send back what happened."""
    logging.basicConfig(
        filename=plan.log, level=logging.WARNING, format=f"%(asctime)s [{plan.index}] %(message)s"
    )
    # Templates of events, copied with the current time and a unique URL each.
    maker = EventMaker(seed=100 + plan.index)
    templates = [as_json(e) for e in maker.events([0.0] * 20_000)]
    senders = [
        TimedSender(
            plan.app_id,
            plan.write_key,
            plan.url,
            batch_size=plan.batch_size,
            queue_size=plan.queue_size,
            flush_at_exit=False,
        )
        for _ in range(plan.senders)
    ]
    pipe.send("ready")
    start_at: float = pipe.recv()
    while time.time() < start_at:
        time.sleep(min(0.05, max(0.0, start_at - time.time())))
    end_at = start_at + plan.seconds
    made = 0
    rng = random.Random(plan.index)
    # (wall time, events queued in this process's senders), every second.
    backlog: list[tuple[float, int]] = []
    next_sample = start_at
    while True:
        now = time.time()
        if now >= end_at:
            break
        if now >= next_sample:
            backlog.append((now, sum(len(s._queue) for s in senders)))
            next_sample += 1.0
        if plan.rate is None:
            # Keep every sender busy: one or two batches queued each, no more.
            for s in senders:
                room = 2 * plan.batch_size - len(s._queue)
                for _ in range(max(0, room)):
                    s.enqueue(_event(templates, made, now, plan.index))
                    made += 1
            time.sleep(0.002)
            continue
        due = int(plan.rate * (now - start_at)) - made
        for _ in range(due):
            senders[rng.randrange(len(senders))].enqueue(_event(templates, made, now, plan.index))
            made += 1
        time.sleep(0.005)
    closed_at = time.time()
    # Closing sends what is queued; the senders close in turn, the others keep sending.
    all_sent = [s.close(max(1.0, closed_at + plan.close_timeout_s - time.time())) for s in senders]
    pipe.send(
        {
            "index": plan.index,
            "offered": made,
            "closed_s": time.time() - closed_at,
            "all_sent": all(all_sent),
            "stats": [vars(s.stats) for s in senders],
            "attempts": [a for s in senders for a in s.attempts],
            "batches": [b for s in senders for b in s.batches],
            "backlog": backlog,
        }
    )
    pipe.close()


def _event(templates: list[dict[str, Any]], n: int, now: float, proc: int) -> dict[str, Any]:
    e = dict(templates[n % len(templates)])
    e["timestamp"] = now
    url = e["url"]
    e["url"] = f"{url}{'&' if '?' in url else '?'}soak={proc}.{n}"
    return e


async def run_clients(
    plans: Sequence[ClientPlan],
    started: asyncio.Future[float] | None = None,
    start_delay_s: float = 1.0,
) -> tuple[float, list[dict[str, Any]]]:
    """Start a process per plan (spawned: no inherited event loop or threads), start
    them together (``started`` hears when); (their start time, their reports) once all
    are done."""
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for plan in plans:
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=client_process, args=(plan, theirs), daemon=True)
        p.start()
        pipes.append(mine)
        procs.append(p)
    try:
        for pipe in pipes:
            assert await asyncio.to_thread(_recv, pipe, 120) == "ready"
        start_at = time.time() + start_delay_s
        for pipe in pipes:
            pipe.send(start_at)
        if started is not None:
            started.set_result(start_at)
        wait = max(p.seconds for p in plans) + start_delay_s + plans[0].close_timeout_s + 120
        reports = [await asyncio.to_thread(_recv, pipe, wait) for pipe in pipes]
        for p in procs:
            await asyncio.to_thread(p.join, 30)
        return start_at, reports
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def _recv(pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError("a client process did not answer")
    return pipe.recv()


# -- the service ------------------------------------------------------------------


class Service:
    """``python -m apinalytics serve`` on a fixed port, stopped with SIGTERM and
    started again; its stderr appended to a log file."""

    def __init__(self, dsn: str, port: int, log: Path) -> None:
        self.dsn, self.port, self.log = dsn, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{port}"

    async def start(self) -> float:
        """Seconds until ``/readyz`` answered 200."""
        env = {
            **os.environ,
            "APINALYTICS_DATABASE_URL": self.dsn,
            "APINALYTICS_PORT": str(self.port),
            "APINALYTICS_HOST": "127.0.0.1",
            "APINALYTICS_LOG_LEVEL": "WARNING",
            "APINALYTICS_HOME": str(DATA / "home"),
        }
        argv = [sys.executable, "-m", "apinalytics", "serve", "--no-migrate"]
        t = time.perf_counter()
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited with {self.proc.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return time.perf_counter() - t
                await asyncio.sleep(0.05)
        raise RuntimeError("the service did not become ready")

    async def stop(self) -> tuple[float, int | None]:
        """SIGTERM; (seconds until it exited, its exit code)."""
        assert self.proc is not None
        t = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)
            return time.perf_counter() - t, None
        return time.perf_counter() - t, code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss_mb(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except FileNotFoundError:
            return None
        return None


# -- the database ---------------------------------------------------------------


def start_cluster(mode: str) -> localdb.LocalCluster:
    """A fresh cluster in ``bench/data/soak-<mode>``: commits wait for their WAL to be
    written (synchronous_commit on), nothing waits for the disk (fsync off)."""
    datadir = DATA / f"soak-{mode}"
    c = localdb.LocalCluster(datadir, localdb.find_bindir(), license=LICENSES[mode], durable=True)
    if datadir.exists():
        c.datadir = datadir.resolve()
        c.stop()
        shutil.rmtree(datadir)
    c.ensure_running()
    return c


async def connect(dsn: str, timeout_s: float = 60) -> asyncpg.Connection:
    """A connection of this benchmark's own, retried while the database restarts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await asyncpg.connect(
                dsn, timeout=5, server_settings={"application_name": BENCH_APP_NAME}
            )
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def not_durable_disk(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        await conn.execute("ALTER SYSTEM SET fsync = off")
        await conn.execute("ALTER SYSTEM SET full_page_writes = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def wait_caught_up(dsn: str, timeout_s: float = 900) -> float:
    """Seconds until the materializer left nothing pending."""
    t = time.perf_counter()
    conn = await connect(dsn)
    try:
        while await conn.fetchval("SELECT count(*) FROM rollup_pending"):
            if time.perf_counter() - t > timeout_s:
                raise RuntimeError("the materializer did not catch up")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return time.perf_counter() - t


# -- samplers and faults --------------------------------------------------------


@dataclass
class Run:
    """What happened during the run, in wall-clock times."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    queries: list[tuple[float, float, int | str, str]] = field(default_factory=list)
    loads: int = 0


async def sample(service: Service, dsn: str, run: Run, every_s: float) -> None:
    conn: asyncpg.Connection | None = None
    while True:
        row: dict[str, Any] = {
            "t": time.time(),
            "rss_mb": service.rss_mb(),
            "pid": service.proc.pid if service.proc else None,
            "load1": os.getloadavg()[0],
        }
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(
                    dsn, timeout=2, server_settings={"application_name": BENCH_APP_NAME}
                )
            pending = await conn.fetchrow(
                "SELECT count(*) AS n, "
                "extract(epoch FROM now() - min(created_at))::float8 AS age FROM rollup_pending"
            )
            row["pending"] = pending["n"]
            row["pending_age_s"] = pending["age"] or 0.0
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn = None
        run.samples.append(row)
        await asyncio.sleep(every_s)


async def service_backends(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT pid, application_name, state FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND application_name LIKE 'apinalytics%' "
            "ORDER BY state = 'active' DESC, pid"
        )
    )


async def fault(
    name: str, c: localdb.LocalCluster, service: Service, start: float
) -> dict[str, Any]:
    t = time.time()
    out: dict[str, Any] = {"t": t, "fault": name}
    if name == "terminate":
        conn = await connect(c.dsn)
        try:
            backends = await service_backends(conn)
            out["terminated"] = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest($1::int[]) pid",
                [b["pid"] for b in backends],
            )
            out["detail"] = f"{out['terminated']} connections"
        finally:
            await conn.close()
    elif name == "kill9":
        conn = await connect(c.dsn)
        try:
            backends = [
                b for b in await service_backends(conn) if b["application_name"] == "apinalytics"
            ]
        finally:
            await conn.close()
        victim = backends[0]
        os.kill(victim["pid"], signal.SIGKILL)
        back = time.perf_counter()
        await asyncio.sleep(0.5)  # the postmaster notices and ends every backend
        conn = await connect(c.dsn)
        await conn.close()
        out["detail"] = (
            f"backend {victim['pid']} ({victim['state']}); accepting connections "
            f"again after {time.perf_counter() - back:.1f} s"
        )
    elif name == "pg_restart":
        t0 = time.perf_counter()
        log = c.datadir / "server.log"
        argv = ["pg_ctl", "-D", str(c.datadir), "-l", str(log), "-m", "fast", "-w", "-t", "60"]
        await asyncio.to_thread(c._run_pg, [*argv, "restart"])
        out["detail"] = f"restarted in {time.perf_counter() - t0:.1f} s"
    elif name == "service_restart":
        drained, code = await service.stop()
        ready = await service.start()
        out["detail"] = (
            f"exited {drained:.1f} s after SIGTERM (code {code}), ready again {ready:.1f} s later"
        )
    out["took_s"] = time.time() - t
    print(f"  fault {name} at {t - start:.0f} s: {out.get('detail', '')}", flush=True)
    return out


async def faults(
    started: asyncio.Future[float],
    seconds: float,
    c: localdb.LocalCluster,
    service: Service,
    run: Run,
) -> None:
    start = await started
    for at, name in FAULTS:
        await asyncio.sleep(max(0.0, start + at * seconds - time.time()))
        run.faults.append(await fault(name, c, service, start))


# -- the dashboard's queries ------------------------------------------------------

RANGE_BUCKETS = {3600: 60, 86400: 900, 604800: 3600, 2592000: 21600}


async def dashboard_loop(
    base: str, app_id: str, read_key: str, ranges: list[int], run: Run
) -> None:
    """The requests of ``dashboard/js/load.js``, one dashboard load after another."""
    headers = {"X-Auth-User": app_id, "X-Auth-Key": read_key}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=6), timeout=timeout, headers=headers
    ) as session:
        n = 0
        while True:
            r = ranges[n % len(ranges)]
            n += 1
            failed = await _dashboard_load(session, base, r, run)
            run.loads += 1
            if failed:
                await asyncio.sleep(1.0)


async def _dashboard_load(
    session: aiohttp.ClientSession, base: str, range_s: int, run: Run
) -> bool:
    bucket = RANGE_BUCKETS[range_s]
    end = -(-int(time.time()) // 60) * 60
    start = (end - range_s) // bucket * bucket
    cur, prev = (start, end), (2 * start - end, start)
    failed = False

    async def ask(name: str, rng: tuple[int, int], params: dict[str, Any]) -> Any:
        nonlocal failed
        query = [
            (k, str(x)) for k, v in params.items() for x in (v if isinstance(v, list) else [v])
        ]
        url = f"{base}/1/timeseries/{rng[0]}/{rng[1]}/"
        for attempt in range(6):
            t0, t = time.time(), time.perf_counter()
            status, body, retry_after = 0, None, 1.0
            try:
                async with session.get(url, params=query) as resp:
                    status = resp.status
                    body = await resp.json()
                    retry_after = float(resp.headers.get("Retry-After") or 1)
            except (TimeoutError, aiohttp.ClientError, ValueError):
                pass
            code = (body or {}).get("error", {}).get("code") if isinstance(body, dict) else None
            label = f"{status} {code}" if code else status
            run.queries.append((t0, time.perf_counter() - t, label, name))
            if status == 200:
                return body
            if code == "overloaded" and attempt < 5:
                await asyncio.sleep(retry_after)
                continue
            failed = True
            return None
        return None

    statuses = await asyncio.gather(
        ask("status", cur, {"granularity": bucket, "group": "status_code"}),
        ask("prev status", prev, {"group": "status_code"}),
    )
    if None in statuses:
        return True
    errs = [f"status_code:{c}" for c in statuses[0]["groups"] if c.startswith("5")]
    fast = [
        ask("consumers", cur, {"granularity": bucket, "group": "consumer_id"}),
        ask("functions", cur, {"group": "function"}),
        ask("prev consumers", prev, {"group": "consumer_id"}),
        ask("function mean", cur, {"group": "function", "aggregation": "mean"}),
    ]
    if errs:
        fast.append(ask("consumer errors", cur, {"group": "consumer_id", "include": errs}))
        fast.append(ask("function errors", cur, {"group": "function", "include": errs}))

    async def methods() -> None:
        body = await ask("methods", cur, {"group": "method"})
        if body:
            names = list(body["groups"])[:6]
            await asyncio.gather(
                *(
                    ask("method functions", cur, {"group": "function", "include": f"method:{m}"})
                    for m in names
                )
            )

    await asyncio.gather(*fast, methods())
    approx = {"precision": "approximate"} if range_s > 2 * 86400 else {}
    turn = asyncio.Semaphore(2)

    async def raw(name: str, rng: tuple[int, int], params: dict[str, Any]) -> None:
        async with turn:
            await ask(name, rng, {**params, **approx})

    await asyncio.gather(
        *(raw(f"p{p}", cur, {"aggregation": f"percentile_{p}"}) for p in (50, 95, 99)),
        *(
            raw(f"p{p} over time", cur, {"granularity": bucket, "aggregation": f"percentile_{p}"})
            for p in (50, 95, 99)
        ),
        raw("function p95", cur, {"group": "function", "aggregation": "percentile_95"}),
        raw("function p50", cur, {"group": "function", "aggregation": "percentile_50"}),
        raw("consumer p95", cur, {"group": "consumer_id", "aggregation": "percentile_95"}),
        *(raw(f"prev p{p}", prev, {"aggregation": f"percentile_{p}"}) for p in (50, 95, 99)),
    )
    return failed


# -- one mode ---------------------------------------------------------------------


def plans(
    args: argparse.Namespace,
    url: str,
    app: apps.NewApp,
    rate: float | None,
    seconds: float,
    log: Path,
) -> list[ClientPlan]:
    per = None if rate is None else rate / args.processes
    # Each sender's queue holds --queue-s seconds of its share of the rate.
    share = (rate or 50_000) / (args.processes * args.senders)
    queue = max(10_000, int(share * args.queue_s))
    return [
        ClientPlan(
            index=i,
            url=url,
            app_id=app.app_id,
            write_key=app.write_key or "",
            senders=args.senders,
            batch_size=args.batch_size,
            queue_size=queue,
            rate=per,
            seconds=seconds,
            log=str(log),
        )
        for i in range(args.processes)
    ]


async def measure_capacity(
    args: argparse.Namespace, service: Service, app: apps.NewApp, log: Path, dashboards: int
) -> dict[str, Any]:
    """Events/s answered 200 with every sender kept busy, after a warm-up; with
    ``dashboards`` loops of the dashboard's queries on the same app meanwhile."""
    run = Run()
    assert app.read_key
    loops = [
        asyncio.create_task(
            dashboard_loop(service.base, app.app_id, app.read_key, args.ranges, run)
        )
        for _ in range(dashboards)
    ]
    try:
        start, reports = await run_clients(
            plans(args, service.base, app, None, args.capacity_s, log)
        )
    finally:
        for t in loops:
            t.cancel()
        for t in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    warm = start + min(5.0, args.capacity_s / 4)
    end = start + args.capacity_s
    done = [b for r in reports for b in r["batches"] if b[3] and warm <= b[0] + b[1] <= end]
    events = sum(b[2] for b in done)
    rate = events / (end - warm)
    lat = [a[1] for r in reports for a in r["attempts"] if a[2] == 200]
    queries = [q[1] for q in run.queries if q[2] == 200]
    print(
        f"  capacity: {rate:,.0f} events/s (request p50 {pct(lat, 50) * 1000:.0f} ms; "
        f"{run.loads} dashboard loads meanwhile)",
        flush=True,
    )
    return {
        "events_per_s": rate,
        "seconds": end - warm,
        "request_p50_ms": pct(lat, 50) * 1000,
        "request_p99_ms": pct(lat, 99) * 1000,
        "dashboard_loads": run.loads,
        "query_p50_ms": pct(queries, 50) * 1000 if queries else None,
        "load1": os.getloadavg()[0],
    }


async def soak_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    c = await asyncio.to_thread(start_cluster, mode)
    service: Service | None = None
    finished = False
    try:
        await not_durable_disk(c.dsn)
        result = await migrate.migrate(c.dsn)
        assert result.mode == mode, result
        conn = await connect(c.dsn)
        try:
            m = await machine(conn)
            m["synchronous_commit"] = str(await conn.fetchval("SHOW synchronous_commit"))
            m["fsync"] = str(await conn.fetchval("SHOW fsync"))
            warmup_app = await apps.create(conn, "capacity")
            app = await apps.create(conn, "soak")
            app_internal = await conn.fetchval("SELECT id FROM apps WHERE public_id=$1", app.app_id)
        finally:
            await conn.close()
        log = DATA / f"soak-{mode}-serve.log"
        log.write_bytes(b"")
        client_log = DATA / f"soak-{mode}-client.log"
        client_log.write_bytes(b"")
        service = Service(c.dsn, localdb.free_port(), log)
        await service.start()
        print(f"[{mode}] {machine_line(m)}; load {os.getloadavg()}", flush=True)

        if args.capacity:
            capacity = {"events_per_s": args.capacity, "given": True}
        else:
            # Ingest alone, then with the dashboard's queries, as during the soak: the
            # soak's rate is a fraction of the latter.
            alone = await measure_capacity(args, service, warmup_app, client_log, 0)
            await wait_caught_up(c.dsn)
            capacity = await measure_capacity(
                args, service, warmup_app, client_log, args.dashboards
            )
            capacity["alone"] = alone
        caught = await wait_caught_up(c.dsn)
        print(f"  materializer caught up {caught:.1f} s after the capacity runs", flush=True)
        rate = args.load * capacity["events_per_s"]
        seconds = args.minutes * 60
        print(f"  soak: {rate:,.0f} events/s for {seconds:.0f} s", flush=True)

        run = Run()
        assert app.read_key
        load_before = os.getloadavg()
        tasks = [
            asyncio.create_task(sample(service, c.dsn, run, args.sample_s)),
            *(
                asyncio.create_task(
                    dashboard_loop(service.base, app.app_id, app.read_key, args.ranges, run)
                )
                for _ in range(args.dashboards)
            ),
        ]
        started: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        clients = asyncio.create_task(
            run_clients(plans(args, service.base, app, rate, seconds, client_log), started)
        )
        if not args.no_faults:
            tasks.append(asyncio.create_task(faults(started, seconds, c, service, run)))
        try:
            start, reports = await clients
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        ended = time.time()
        print(f"  clients done {ended - start - seconds:.1f} s after the run's end", flush=True)
        caught = await wait_caught_up(c.dsn)
        check = await verify(c.dsn, service.base, app, app_internal, start)
        summary = summarize(mode, m, args, capacity, rate, start, seconds, reports, run, check)
        summary["caught_up_s"] = caught
        summary["load_before"] = load_before
        summary["load_after"] = os.getloadavg()
        write_report(mode, summary)
        finished = True
        return summary
    finally:
        if service is not None:
            with contextlib.suppress(Exception):
                await service.stop()
            service.kill()
        await asyncio.to_thread(c.stop)
        # Kept when asked, or for a look when the run failed.
        if finished and not args.keep:
            shutil.rmtree(c.datadir, ignore_errors=True)


async def verify(
    dsn: str, base: str, app: apps.NewApp, app_internal: int, since: float
) -> dict[str, Any]:
    conn = await connect(dsn)
    try:
        await conn.execute("SET statement_timeout = 0")
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT url) AS distinct_urls FROM events "
            "WHERE app_id = $1",
            app_internal,
        )
        rollups = {}
        for r in ROLLUPS:
            rollups[r.relation] = int(
                await conn.fetchval(
                    f"SELECT coalesce(sum(calls), 0) FROM {r.relation} WHERE app_id = $1",
                    app_internal,
                )
            )
        keys = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE app_id = $1", app_internal
        )
    finally:
        await conn.close()
    # The API's count over the run's days (from the rollups, now that nothing is
    # pending); asked again if the loaded machine makes it time out.
    headers = {"X-Auth-User": app.app_id, "X-Auth-Key": app.read_key or ""}
    day = 86400
    start, end = int(since // day * day), int(time.time() // day * day) + day
    api: int | str = "not answered"
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(f"{base}/1/timeseries/{start}/{end}/", headers=headers) as resp:
                body = await resp.json()
            if resp.status == 200:
                api = sum(v for pairs in body["groups"].values() for _, v in pairs)
                break
            api = f"{resp.status} {body.get('error', {}).get('code')}"
            await asyncio.sleep(5)
    return {
        "stored": int(row["n"]),
        "distinct_urls": int(row["distinct_urls"]),
        "rollups": rollups,
        "api_total": api,
        "idempotency_keys": int(keys),
    }


# -- the report -------------------------------------------------------------------


def _status_name(s: int | str) -> str:
    return str(s) if isinstance(s, int) and s else ("no answer" if s == 0 else str(s))


def summarize(
    mode: str,
    m: dict[str, str],
    args: argparse.Namespace,
    capacity: dict[str, Any],
    rate: float,
    start: float,
    seconds: float,
    reports: list[dict[str, Any]],
    run: Run,
    check: dict[str, Any],
) -> dict[str, Any]:
    stats = [s for r in reports for s in r["stats"]]
    total = {k: sum(s[k] for s in stats) for k in stats[0]}
    offered = sum(r["offered"] for r in reports)
    attempts = [a for r in reports for a in r["attempts"]]
    batches = [b for r in reports for b in r["batches"]]
    minutes = max(1, int(-(-seconds // 60)))

    def minute(t: float) -> int:
        return min(max(0, int((t - start) // 60)), minutes)  # the last: after the run

    # Events waiting in every client's senders, second by second.
    n = min(len(r["backlog"]) for r in reports)
    backlog = [
        (reports[0]["backlog"][i][0], sum(r["backlog"][i][1] for r in reports)) for i in range(n)
    ]
    per: list[dict[str, Any]] = []
    for i in range(minutes + 1):
        a = [x for x in attempts if minute(x[0]) == i]
        q = [x for x in run.queries if minute(x[0]) == i]
        s = [x for x in run.samples if minute(x["t"]) == i]
        b = [x for x in batches if minute(x[0] + x[1]) == i and x[3]]
        ok_a = [x[1] for x in a if x[2] == 200]
        ok_q = [x[1] for x in q if x[2] == 200]
        rss = [x["rss_mb"] for x in s if x["rss_mb"] is not None]
        queued = [x[1] for x in backlog if minute(x[0]) == i]
        pend = [x for x in s if "pending" in x]
        per.append(
            {
                "minute": i,
                "accepted": sum(x[2] for x in b),
                "ingest_requests": len(a),
                "ingest_p50_ms": pct(ok_a, 50) * 1000 if ok_a else None,
                "ingest_p99_ms": pct(ok_a, 99) * 1000 if ok_a else None,
                "ingest_errors": dict(Counter(_status_name(x[2]) for x in a if x[2] != 200)),
                "queries": len(q),
                "query_p50_ms": pct(ok_q, 50) * 1000 if ok_q else None,
                "query_p99_ms": pct(ok_q, 99) * 1000 if ok_q else None,
                "query_errors": dict(Counter(_status_name(x[2]) for x in q if x[2] != 200)),
                "backlog_max": max(queued) if queued else None,
                "rss_mb_max": max(rss) if rss else None,
                "rss_mb_last": rss[-1] if rss else None,
                "pending_max": max(x["pending"] for x in pend) if pend else None,
                "pending_age_max_s": max(x["pending_age_s"] for x in pend) if pend else None,
                "load1": max(x["load1"] for x in s) if s else None,
                "faults": [f["fault"] for f in run.faults if minute(f["t"]) == i],
            }
        )
    slow = [x[1] for x in run.queries if x[2] == 200]
    ok = [x[1] for x in attempts if x[2] == 200]
    return {
        "mode": mode,
        "machine": m,
        "nproc": os.cpu_count(),
        "args": {k: v for k, v in vars(args).items()},
        "capacity": capacity,
        "target_rate": rate,
        "seconds": seconds,
        "offered": offered,
        "client": total,
        "accepted": total["sent"],
        "check": check,
        "equal": (
            total["sent"] == check["stored"] == check["distinct_urls"] == check["api_total"]
            and all(v == check["stored"] for v in check["rollups"].values())
        ),
        "ingest_statuses": dict(Counter(_status_name(a[2]) for a in attempts)),
        "query_statuses": dict(Counter(_status_name(q[2]) for q in run.queries)),
        "ingest_p50_ms": pct(ok, 50) * 1000,
        "ingest_p99_ms": pct(ok, 99) * 1000,
        "batch_delivery_p99_s": pct([b[1] for b in batches], 99),
        "batch_delivery_max_s": max((b[1] for b in batches), default=0.0),
        "query_p50_ms": pct(slow, 50) * 1000,
        "query_p99_ms": pct(slow, 99) * 1000,
        "dashboard_loads": run.loads,
        "faults": [{**f, "at_s": f["t"] - start} for f in run.faults],
        "per_minute": per,
        "samples": [{**s, "at_s": s["t"] - start} for s in run.samples],
        "backlog": [(t - start, q) for t, q in backlog],
        "closed_s": max(r["closed_s"] for r in reports),
    }


def _n(v: int | str) -> str:
    return f"{v:,}" if isinstance(v, int) else v


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:,.0f}"


def _errors(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) or "0"


def write_report(mode: str, s: dict[str, Any]) -> None:
    c = s["check"]
    cl = s["client"]
    lines = [
        f"### {mode} mode, {s['seconds'] / 60:g} minutes at {s['args']['load']:.0%} of capacity",
        "",
        f"Machine: {machine_line(s['machine'])}; this run with synchronous_commit "
        f"{s['machine']['synchronous_commit']}, fsync {s['machine']['fsync']}. "
        f"Load average (1 min) {s['load_before'][0]:.1f} before, "
        f"{s['load_after'][0]:.1f} after, "
        f"{min(x['load1'] for x in s['samples']):.1f} to {max(x['load1'] for x in s['samples']):.1f}"
        " during.",
        "",
        f"Capacity: {s['capacity']['events_per_s']:,.0f} events/s"
        + (
            ""
            if s["capacity"].get("given")
            else f" with the dashboard's queries running ({s['capacity']['dashboard_loads']} "
            f"loads in {s['capacity']['seconds']:.0f} s, every Sender kept busy, load average "
            f"{s['capacity']['load1']:.1f}), {s['capacity']['alone']['events_per_s']:,.0f} "
            f"events/s without them (load average {s['capacity']['alone']['load1']:.1f})"
        )
        + "; target "
        f"{s['target_rate']:,.0f} events/s ({s['args']['processes']} client processes x "
        f"{s['args']['senders']} Senders, batches of {s['args']['batch_size']}); "
        f"{s['dashboard_loads']} dashboard loads ({s['args']['dashboards']} at a time, ranges "
        f"{', '.join(str(r) for r in s['args']['ranges'])} s).",
        "",
        "| events | count |",
        "|---|---:|",
        f"| offered to the Senders | {s['offered']:,} |",
        f"| accepted (answered 200, `Sender.stats.sent`) | {s['accepted']:,} |",
        f"| dropped (queue full) / given up | {cl['dropped']:,} / {cl['failed_events']:,} |",
        f"| stored: `count(*)` / distinct URLs | {c['stored']:,} / {c['distinct_urls']:,} |",
        *(f"| `sum(calls)` of {k} | {v:,} |" for k, v in c["rollups"].items()),
        f"| the API's count over the run's days (`/1/timeseries/`) | {_n(c['api_total'])} |",
        "",
        f"**Accepted = stored = every rollup's total: {'yes' if s['equal'] else 'NO'}.** "
        f"Retries: {cl['retries']:,}; Idempotency-Keys stored: {c['idempotency_keys']:,}. "
        f"The materializer caught up {s['caught_up_s']:.1f} s after the senders closed "
        f"({s['closed_s']:.1f} s after the run).",
        "",
        f"Ingest attempts by status: {_errors(s['ingest_statuses'])}. "
        f"Dashboard requests by status: {_errors(s['query_statuses'])}.",
        f"Ingest request p50 / p99 {s['ingest_p50_ms']:.0f} / {s['ingest_p99_ms']:.0f} ms; "
        f"a batch's delivery (with its retries) p99 {s['batch_delivery_p99_s']:.2f} s, "
        f"max {s['batch_delivery_max_s']:.1f} s; dashboard requests p50 / p99 "
        f"{s['query_p50_ms']:.0f} / {s['query_p99_ms']:.0f} ms.",
        "",
        "Faults:",
        "",
        *(
            f"- at {f['at_s']:.0f} s: {FAULT_LABELS[f['fault']]}; {f.get('detail', '')}"
            for f in s["faults"]
        ),
        "",
        "| minute | accepted events | queued in the Senders (max) | ingest requests "
        "| ingest p50 / p99 ms | ingest not 200 | queries | query p50 / p99 ms "
        "| queries not 200 | service RSS MB (max) | pending rows / oldest s (max) | load "
        "| faults |",
        "|---:|---:|---:|---:|---|---|---:|---|---|---:|---|---:|---|",
    ]
    for p in s["per_minute"]:
        label = str(p["minute"] + 1) if p["minute"] < len(s["per_minute"]) - 1 else "after"
        lines.append(
            f"| {label} | {p['accepted']:,} | {_ms(p['backlog_max'])} | "
            f"{p['ingest_requests']:,} | "
            f"{_ms(p['ingest_p50_ms'])} / {_ms(p['ingest_p99_ms'])} | "
            f"{_errors(p['ingest_errors'])} | {p['queries']:,} | "
            f"{_ms(p['query_p50_ms'])} / {_ms(p['query_p99_ms'])} | "
            f"{_errors(p['query_errors'])} | {_ms(p['rss_mb_max'])} | "
            f"{p['pending_max'] if p['pending_max'] is not None else ''} / "
            f"{p['pending_age_max_s'] or 0:.1f} | "
            f"{p['load1'] or 0:.1f} | {', '.join(p['faults'])} |"
        )
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    out = DATA / f"soak-{mode}"
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(s, indent=1, default=str))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="apache", choices=["apache", "community", "all"])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--load", type=float, default=0.8, help="fraction of the capacity")
    p.add_argument("--capacity-s", type=float, default=30)
    p.add_argument("--capacity", type=float, default=0, help="events/s: skip measuring it")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--senders", type=int, default=4, help="per client process")
    p.add_argument("--batch-size", type=int, default=500, help="the Sender's (its default)")
    p.add_argument("--queue-s", type=float, default=60, help="seconds of events a queue holds")
    p.add_argument("--dashboards", type=int, default=1, help="dashboard loads at a time")
    p.add_argument("--ranges", type=lambda s: [int(x) for x in s.split(",")], default=[3600, 86400])
    p.add_argument("--sample-s", type=float, default=2.0)
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the cluster's data (stopped)")
    args = p.parse_args()
    from common import modes_available

    for mode in modes_available(args.mode):
        await soak_mode(mode, args)


if __name__ == "__main__":
    asyncio.run(main())
