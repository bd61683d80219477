"""Shared by the benchmarks: a throwaway TimescaleDB, realistic events, the machine, stats.

Every benchmark starts its own PostgreSQL cluster under ``bench/data/`` (gitignored),
listening on 127.0.0.1 only. The clusters are *not durable* (``fsync=off``,
``synchronous_commit=off``): the numbers measure the service and the database's
CPU work, not this machine's disk, and both sides of every comparison run on the
same cluster.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import platform
import random
import shutil
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from apinalytics import localdb

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
# The ten status codes of a typical API, weighted like a healthy one.
STATUSES = (
    (200, 800),
    (201, 60),
    (204, 30),
    (304, 40),
    (400, 25),
    (401, 10),
    (404, 20),
    (429, 5),
    (500, 6),
    (503, 4),
)
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")


@dataclass(frozen=True)
class Function:
    name: str
    method: str
    path: str
    median_us: float
    weight: float


def _zipf(n: int, s: float = 1.0) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


class EventMaker:
    """Events with the cardinalities of a real API: ~50 consumers, ~30 functions, 10
    status codes, skewed (a few consumers and functions carry most calls), response
    times log-normal per function, one URL per call (ids in the path and query)."""

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
                method=method,
                path=f"/v1/{res}" + ("/{id}" if verb in ("get", "update") else ""),
                median_us=rng.lognormvariate(math.log(20_000), 1.0),
                weight=w,
            )
            for (res, (method, verb, w)) in pairs[:functions]
        ]
        self.function_cum = list(
            itertools.accumulate(
                f.weight * z for f, z in zip(self.functions, _zipf(functions, 0.8), strict=True)
            )
        )
        self.status_codes = [s for s, _ in STATUSES]
        self.status_cum = list(itertools.accumulate(w for _, w in STATUSES))

    def events(self, timestamps: Sequence[float]) -> Iterator[tuple[Any, ...]]:
        """(timestamp, consumer_id, method, url, function, response_us, status_code, data)."""
        rng = self.rng
        n = len(timestamps)
        consumers = rng.choices(self.consumers, cum_weights=self.consumer_cum, k=n)
        functions = rng.choices(self.functions, cum_weights=self.function_cum, k=n)
        statuses = rng.choices(self.status_codes, cum_weights=self.status_cum, k=n)
        gauss = rng.gauss
        randrange = rng.randrange
        random_ = rng.random
        for ts, consumer, f, status in zip(timestamps, consumers, functions, statuses, strict=True):
            slow = 3.0 if status >= 500 else 1.0
            response_us = int(f.median_us * slow * math.exp(0.6 * gauss(0.0, 1.0)))
            url = "https://api.example.com" + f.path.replace("{id}", str(randrange(100_000)))
            if f.method == "GET":
                url += f"?page={randrange(20)}&fields=id,name"
            data = {"region": REGIONS[randrange(3)]} if random_() < 0.1 else None
            yield (ts, consumer, f.method, url, f.name, response_us, status, data)


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
