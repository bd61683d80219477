"""``serve --workers N`` (``APINALYTICS_WORKERS``): N processes on one host:port.

Through the real entry point in a subprocess, over real HTTP:

- migrations run once, in the process that was started, before the workers; the
  startup message is printed once;
- events POSTed over many connections are all stored, and both workers answered some
  (every log line names its process: ``pid``);
- ``/metrics``, whichever worker answers it, counts the events and requests of all
  workers, from a private directory under ``TMPDIR`` with one file per worker;
- a worker that dies is replaced, and what it had counted stays counted;
- SIGTERM stops every process within the graceful timeout, exit status 0, and leaves
  no worker and no metrics directory behind.

Graceful shutdown of an in-flight request with two workers: test_cli.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apinalytics import apps
from apinalytics.apps import NewApp
from apinalytics.localdb import free_port

from .helpers import event, start_serve, wait_until_ready, write_headers

BATCH = 5
CONNECTIONS = 24
BOOTING = "Booting worker with pid: "


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base: str
    log: Path
    tmpdir: Path

    def lines(self) -> list[dict[str, Any]]:
        text = self.log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def workers(self) -> list[int]:
        """Pids of the workers booted so far, in order."""
        return [
            int(line["msg"].removeprefix(BOOTING))
            for line in self.lines()
            if line["msg"].startswith(BOOTING)
        ]

    def started(self) -> set[int]:
        """Pids of the workers whose application has started: from then on a SIGTERM
        reaches them (see helpers.wait_until_started)."""
        return {line["pid"] for line in self.lines() if line["msg"] == "event loop"}

    def pids_that_stored(self) -> set[int]:
        return {
            line["pid"]
            for line in self.lines()
            if line["msg"] == "request" and line["path"] == "/1/events/"
        }

    def metrics_dirs(self) -> list[Path]:
        return sorted(self.tmpdir.glob("apinalytics-metrics-*"))

    async def stop(self) -> None:
        """SIGTERM, then the whole service is gone within the graceful timeout."""
        workers = self.workers()
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), timeout=35)
        assert self.proc.returncode == 0, self.log.read_text()
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert self.metrics_dirs() == []


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {
        **os.environ,
        "APINALYTICS_DATABASE_URL": database_url,
        "APINALYTICS_HOME": str(tmp_path / "home"),
        "APINALYTICS_WORKERS": "2",
        # Where the service makes its metrics directory, to see it made and removed.
        "TMPDIR": str(tmpdir),
    }
    port = free_port()
    log = tmp_path / "serve.log"
    # The log goes to a file: a pipe would fill up (and block the service) meanwhile.
    with log.open("wb") as stderr:
        proc = await start_serve(env, tmp_path, port, stderr=stderr)
    s = Served(proc, f"http://127.0.0.1:{port}", log, tmpdir)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, s.base, proc)
        yield s
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def accepted_and_posts(text: str) -> tuple[float, float]:
    """``apinalytics_events_accepted_total`` and the count of POSTs answered 200."""
    accepted = posts = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "apinalytics_events_accepted_total":
                accepted += s.value
            if (
                s.name == "apinalytics_request_seconds_count"
                and s.labels["method"] == "POST"
                and s.labels["status"] == "200"
            ):
                posts += s.value
    return accepted, posts


async def post_until_both_workers_stored(s: Served, app: NewApp) -> int:
    """Rounds of batches posted at once, each on a connection of its own, until both
    workers have stored some (bounded); the number of batches posted."""
    batches = 0
    connector = aiohttp.TCPConnector(force_close=True, limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post() -> None:
            async with http.post(
                f"{s.base}/1/events/", json=[event()] * BATCH, headers=write_headers(app)
            ) as resp:
                assert resp.status == 200, await resp.text()

        for _ in range(20):
            await asyncio.gather(*(post() for _ in range(CONNECTIONS)))
            batches += CONNECTIONS
            if len(s.pids_that_stored()) == 2:
                return batches
    raise AssertionError(f"only {s.pids_that_stored()} stored events")


async def scrape(s: Served, times: int) -> list[tuple[float, float]]:
    """/metrics ``times`` times, each on a new connection (so from either worker)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        out = []
        for _ in range(times):
            async with http.get(f"{s.base}/metrics") as resp:
                assert resp.status == 200
                out.append(accepted_and_posts(await resp.text()))
        return out


async def test_two_workers_store_everything_and_count_it_together(
    served: Served, db: asyncpg.Connection
) -> None:
    s = served
    app = await apps.create(db, "two-workers")
    batches = await post_until_both_workers_stored(s, app)

    assert await db.fetchval("SELECT count(*) FROM events") == batches * BATCH
    workers = s.workers()
    assert len(workers) == 2 and s.proc.pid not in workers
    assert s.pids_that_stored() == set(workers)
    # Each worker keeps its values in a file of its own, in one private directory.
    [metrics_dir] = s.metrics_dirs()
    assert {f"counter_{pid}.db" for pid in workers} <= {p.name for p in metrics_dir.iterdir()}
    assert oct(metrics_dir.stat().st_mode & 0o777) == oct(0o700)
    for accepted, posts in await scrape(s, 6):
        assert (accepted, posts) == (batches * BATCH, batches)

    lines = s.lines()
    assert all("pid" in line for line in lines)
    # Once, in the process that was started, before any worker booted.
    migrations = [i for i, line in enumerate(lines) if line["msg"] == "migrations"]
    assert len(migrations) == 1 and lines[migrations[0]]["pid"] == s.proc.pid
    first_boot = next(i for i, line in enumerate(lines) if line["msg"].startswith(BOOTING))
    assert migrations[0] < first_boot
    assert s.log.read_text().count("APInalytics listening on") == 1
    # Every worker serves on uvloop (aiohttp's GunicornUVLoopWebWorker), the default.
    loops = {line["pid"]: line["event_loop"] for line in lines if line["msg"] == "event loop"}
    assert loops == {pid: "uvloop" for pid in workers}

    await s.stop()


async def test_a_worker_that_dies_is_replaced(served: Served, db: asyncpg.Connection) -> None:
    s = served
    app = await apps.create(db, "replaced")
    batches = await post_until_both_workers_stored(s, app)
    first, second = s.workers()

    os.kill(first, signal.SIGKILL)
    for _ in range(100):
        if len(s.workers()) == 3:
            break
        await asyncio.sleep(0.1)
    booted = s.workers()
    assert len(booted) == 3, "no worker replaced the one that died"
    assert booted[2] not in (first, second)
    for _ in range(300):
        if booted[2] in s.started():
            break
        await asyncio.sleep(0.1)
    assert booted[2] in s.started(), "the new worker's application never started"
    async with aiohttp.ClientSession() as http:
        await wait_until_ready(http, s.base, s.proc)
    # The dead worker's counts stay in the total; the new worker counts from there.
    for accepted, posts in await scrape(s, 4):
        assert (accepted, posts) == (batches * BATCH, batches)

    await s.stop()


def test_workers_must_be_at_least_one(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "apinalytics", "serve", "--workers", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert r.returncode == 2
    assert "--workers: '0' is not a whole number of at least 1" in r.stderr
