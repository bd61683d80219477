"""Shared by the benchmarks: a throwaway TimescaleDB, realistic events, the machine, stats.

Every benchmark starts its own PostgreSQL cluster under ``bench/data/`` (gitignored),
listening on 127.0.0.1 only. The clusters are *not durable* (``fsync=off``,
``synchronous_commit=off``): the numbers measure the service and the database's
CPU work, not this machine's disk, and both sides of every comparison run on the
same cluster.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from apinalytics import localdb
from apinalytics.ingest.decode import COLUMNS

DATA = Path(__file__).resolve().parent / "data"
# SPEC's two rollup modes and the timescaledb.license that selects each.
LICENSES = {"apache": "apache", "community": "timescale"}


def modes_available(wanted: str) -> list[str]:
    """``apache``, ``community`` or ``all`` (every mode this machine's build supports)."""
    if wanted != "all":
        if wanted == "community" and not localdb.has_community_build(localdb.find_bindir()):
            raise SystemExit("the TimescaleDB Community (TSL) build is not installed here")
        return [wanted]
    modes = ["apache"]
    if localdb.has_community_build(localdb.find_bindir()):
        modes.append("community")
    return modes


def cluster(name: str, mode: str, *, fresh: bool) -> localdb.LocalCluster:
    """A non-durable local cluster in ``bench/data/<name>``, forced to the mode's license."""
    datadir = DATA / name
    c = localdb.LocalCluster(datadir, localdb.find_bindir(), license=LICENSES[mode], durable=False)
    if fresh and datadir.exists():
        c.datadir = datadir.resolve()
        c.stop()
        shutil.rmtree(datadir)
    return c.ensure_running()


async def stored_relation(conn: asyncpg.Connection, mode: str, relation: str) -> str:
    """Where a relation's rows live: itself, or a continuous aggregate's (Community
    mode) materialization hypertable."""
    if mode != "community" or relation == "events":
        return relation
    stored = await conn.fetchval(
        """
        SELECT format('%I.%I', materialization_hypertable_schema,
                      materialization_hypertable_name)
        FROM timescaledb_information.continuous_aggregates WHERE view_name = $1
        """,
        relation,
    )
    if stored is None:
        raise LookupError(f"{relation} is not a continuous aggregate")
    return str(stored)


# -- the machine ------------------------------------------------------------------


async def machine(conn: asyncpg.Connection) -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "postgresql": str(await conn.fetchval("SHOW server_version")).split()[0],
        "timescaledb": str(
            await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname='timescaledb'")
        ),
        "license": str(await conn.fetchval("SHOW timescaledb.license")),
    }


def machine_line(m: dict[str, str]) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram']} RAM; {m['os']}; Python {m['python']}; "
        f"PostgreSQL {m['postgresql']}, TimescaleDB {m['timescaledb']} "
        f"(license `{m['license']}`), non-durable cluster (fsync=off)"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and of its children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """A process and all its descendants (the service's workers, the database's
    backends)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def database_cpu_s(datadir: Path) -> float:
    """CPU seconds so far of a local cluster's postmaster and all its backends."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    return sum(cpu_seconds(p) for p in process_tree(postmaster))


# -- statistics -------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (like PostgreSQL's percentile_cont)."""
    s = sorted(values)
    if not s:
        return math.nan
    k = (len(s) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# -- realistic events -------------------------------------------------------------

RESOURCES = [
    "users",
    "orders",
    "invoices",
    "products",
    "carts",
    "payments",
    "shipments",
    "reviews",
    "sessions",
    "tokens",
    "search",
    "reports",
    "webhooks",
    "files",
    "images",
]
VERBS = (("GET", "get", 6), ("GET", "list", 4), ("POST", "create", 2), ("PUT", "update", 1))
# The ten status codes of a typical API, distributed per kind of call: creates answer
# 201 or a validation error, updates 204, reads 200 with some 304 and 404.
STATUSES = {
    "get": ((200, 850), (304, 60), (404, 50), (401, 10), (429, 10), (500, 15), (503, 5)),
    "list": ((200, 930), (304, 30), (401, 10), (429, 15), (500, 10), (503, 5)),
    "create": ((201, 850), (400, 80), (401, 20), (429, 20), (500, 20), (503, 10)),
    "update": ((204, 700), (200, 150), (400, 80), (404, 30), (500, 30), (503, 10)),
}
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")


@dataclass(frozen=True)
class Function:
    name: str
    verb: str
    method: str
    path: str
    median_us: float
    weight: float


def _zipf(n: int, s: float = 1.0) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


class EventMaker:
    """Events with the cardinalities of a real API: ~50 consumers, ~30 functions, 10
    status codes. Skewed like real traffic: a few consumers and functions carry most
    calls, and each consumer (an app, an integration) calls only its own 3 to 12
    functions; the status code depends on the kind of call. Response times are
    log-normal per function (slower on 5xx); every call has its own URL (ids in the
    path and query); one event in ten carries a ``data`` dimension."""

    def __init__(self, seed: int = 1, consumers: int = 50, functions: int = 30) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.consumers = [f"consumer-{i:02d}" for i in range(consumers - 1)] + [""]
        self.consumer_cum = list(itertools.accumulate(_zipf(consumers, 0.9)))
        pairs = [(r, v) for r in RESOURCES for v in VERBS]
        rng.shuffle(pairs)
        self.functions = [
            Function(
                name=f"{verb}_{res}",
                verb=verb,
                method=method,
                path=f"/v1/{res}" + ("/{id}" if verb in ("get", "update") else ""),
                median_us=rng.lognormvariate(math.log(20_000), 1.0),
                weight=w * z,
            )
            for (res, (method, verb, w)), z in zip(
                pairs[:functions], _zipf(functions, 0.8), strict=True
            )
        ]
        # Each consumer's functions, drawn by global popularity, in its own preference.
        self.calls: list[tuple[list[Function], list[float]]] = []
        for _ in self.consumers:
            k = rng.randint(3, 12)
            mine: list[Function] = []
            while len(mine) < k:
                f = rng.choices(self.functions, weights=[f.weight for f in self.functions])[0]
                if f not in mine:
                    mine.append(f)
            self.calls.append((mine, list(itertools.accumulate(_zipf(k, 1.0)))))
        self.statuses = {
            verb: ([c for c, _ in dist], list(itertools.accumulate(w for _, w in dist)))
            for verb, dist in STATUSES.items()
        }

    def events(self, timestamps: Sequence[float]) -> Iterator[tuple[Any, ...]]:
        """(timestamp, consumer_id, method, url, function, response_us, status_code, data)."""
        rng = self.rng
        n = len(timestamps)
        who = rng.choices(range(len(self.consumers)), cum_weights=self.consumer_cum, k=n)
        # Drawn in bulk per consumer and per kind of call: a draw per event is slow.
        by_consumer: dict[int, list[int]] = {}
        for i, c in enumerate(who):
            by_consumer.setdefault(c, []).append(i)
        functions: list[Function] = [self.functions[0]] * n
        for c, positions in by_consumer.items():
            mine, cum = self.calls[c]
            for i, f in zip(
                positions, rng.choices(mine, cum_weights=cum, k=len(positions)), strict=True
            ):
                functions[i] = f
        by_verb: dict[str, list[int]] = {}
        for i, f in enumerate(functions):
            by_verb.setdefault(f.verb, []).append(i)
        statuses = [0] * n
        for verb, positions in by_verb.items():
            codes, cum = self.statuses[verb]
            for i, code in zip(
                positions, rng.choices(codes, cum_weights=cum, k=len(positions)), strict=True
            ):
                statuses[i] = code
        gauss = rng.gauss
        randrange = rng.randrange
        random_ = rng.random
        consumers = self.consumers
        for ts, c, f, status in zip(timestamps, who, functions, statuses, strict=True):
            slow = 3.0 if status >= 500 else 1.0
            response_us = int(f.median_us * slow * math.exp(0.6 * gauss(0.0, 1.0)))
            url = "https://api.example.com" + f.path.replace("{id}", str(randrange(100_000)))
            if f.method == "GET":
                url += f"?page={randrange(20)}&fields=id,name"
            data = {"region": REGIONS[randrange(3)]} if random_() < 0.1 else None
            yield (ts, consumers[c], f.method, url, f.name, response_us, status, data)


def as_json(event: tuple[Any, ...]) -> dict[str, Any]:
    ts, consumer, method, url, function, response_us, status, data = event
    return {
        "timestamp": ts,
        "consumer_id": consumer,
        "method": method,
        "url": url,
        "function": function,
        "response_us": response_us,
        "status_code": status,
        "data": data,
    }


def as_row(event: tuple[Any, ...], app: int) -> tuple[Any, ...]:
    """The row the service stores for an event (see apinalytics.ingest.decode)."""
    ts, consumer, method, url, function, response_us, status, data = event
    return (
        datetime.fromtimestamp(round(ts, 6), UTC),
        app,
        consumer,
        method,
        url,
        function,
        response_us,
        status,
        json.dumps(data, separators=(",", ":")) if data else None,
    )


def diurnal_minutes(start: int, minutes: int) -> list[float]:
    """Cumulative weights of each minute from ``start``: busy afternoons (UTC), quiet
    nights, weekends at half traffic."""
    weights = []
    for m in range(minutes):
        t = datetime.fromtimestamp(start + 60 * m, UTC)
        hour = t.hour + t.minute / 60
        day = 1.0 + 0.8 * math.sin((hour - 9) / 24 * 2 * math.pi)
        weekend = 0.5 if t.weekday() >= 5 else 1.0
        weights.append(day * weekend)
    return list(itertools.accumulate(weights))


def timestamps(rng: random.Random, start: int, cum: Sequence[float], n: int) -> list[float]:
    """``n`` sorted timestamps from ``start`` on, spread over minutes by ``cum``."""
    total = cum[-1]
    out = []
    for _ in range(n):
        m = bisect.bisect(cum, rng.random() * total)
        out.append(round(start + 60 * min(m, len(cum) - 1) + 60 * rng.random(), 6))
    out.sort()
    return out


COPY_ROWS = 50_000


async def copy_diurnal(
    conn: asyncpg.Connection, app: int, start: int, minutes: int, n: int, seed: int
) -> None:
    """COPY ``n`` events of the benchmark mix into ``events`` for app ``app`` (its
    internal id), spread over ``minutes`` minutes from ``start`` by the diurnal curve."""
    maker = EventMaker(seed=seed)
    stamps = timestamps(random.Random(seed), start, diurnal_minutes(start, minutes), n)
    for i in range(0, n, COPY_ROWS):
        rows = [as_row(e, app) for e in maker.events(stamps[i : i + COPY_ROWS])]
        await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)


# -- the service in a child process --------------------------------------------

ROOT = DATA.parent.parent
START_TIMEOUT_S = 60


async def start_service(
    dsn: str, port: int, argv_prefix: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m apinalytics serve`` on ``dsn`` in a child process, once it is ready
    (``/readyz``); ``argv_prefix`` goes before ``-m`` (a profiler), ``env`` adds settings."""
    environ = {
        **os.environ,
        "APINALYTICS_DATABASE_URL": dsn,
        "APINALYTICS_PORT": str(port),
        "APINALYTICS_HOST": "127.0.0.1",
        "APINALYTICS_LOG_LEVEL": "WARNING",
        "APINALYTICS_HOME": str(DATA / "home"),
        **(env or {}),
    }
    argv = [sys.executable, *argv_prefix, "-m", "apinalytics", "serve", "--no-migrate"]
    proc = subprocess.Popen(argv, env=environ, cwd=ROOT)
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return proc
            await asyncio.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not become ready")


async def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a graceful stop), then SIGKILL after a minute."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
