"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from apinalytics import migrate
from apinalytics.apps import NewApp
from apinalytics.rollups import materializer


def write_headers(app: NewApp) -> dict[str, str]:
    assert app.write_key
    return {"X-Auth-User": app.app_id, "X-Auth-Key": app.write_key}


def read_headers(app: NewApp) -> dict[str, str]:
    assert app.read_key
    return {"X-Auth-User": app.app_id, "X-Auth-Key": app.read_key}


INGEST = "/1/events/"
# Events per request of post_accepted: well inside the default max_batch_events.
POST_BATCH = 5000


async def post(
    client: TestClient,
    app: NewApp,
    body: list[dict[str, Any]] | bytes,
    *,
    key: str | None = None,
    **headers: str,
) -> ClientResponse:
    """One ingest request with the app's write key, its answer unchecked: a list is
    sent as JSON, bytes as they are, as application/json unless ``headers`` say
    otherwise; ``key`` is its Idempotency-Key."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **write_headers(app), **headers}
    if key is not None:
        sent["Idempotency-Key"] = key
    return await client.post(INGEST, data=data, headers=sent)


async def post_accepted(client: TestClient, app: NewApp, events: list[dict[str, Any]]) -> None:
    """Send ``events`` (``POST_BATCH`` a request at most), each request accepted whole."""
    for i in range(0, len(events), POST_BATCH):
        batch = events[i : i + POST_BATCH]
        resp = await post(client, app, batch)
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"accepted": len(batch)}


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "timestamp": time.time() - 60,
        "consumer_id": "consumer-1",
        "method": "GET",
        "url": "/v1/things?id=7",
        "function": "get_thing",
        "response_us": 1500,
        "status_code": 200,
        "data": None,
    }
    base.update(overrides)
    return base


async def assert_error(
    resp: ClientResponse, status: int, code: str | None = None, *mentions: str
) -> dict[str, Any]:
    """The error shape of SPEC "Errors": status, JSON body, code, a message naming things."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert set(err) <= {"code", "message", "details"}
    if code is not None:
        assert err["code"] == code, err
    text = err["message"] + " " + str(err.get("details", ""))
    for m in mentions:
        assert m in text, f"{m!r} not in {text!r}"
    return err


async def wait_for_lock_waiter(conn: asyncpg.Connection, expected: int = 1) -> None:
    """Until ``expected`` backends of the service wait for a lock (bounded: 10 s)."""
    for _ in range(200):
        # Inside a transaction, pg_stat_activity is a snapshot taken at its first read.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'apinalytics' AND wait_event_type = 'Lock'"
        )
        if waiting >= expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no request of the service reached the lock it should wait on")


async def start_serve(
    env: dict[str, str],
    cwd: Path,
    port: int,
    *flags: str,
    stderr: int | IO[Any] = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """`python -m apinalytics serve` in a child process, its output captured (stderr,
    the log, to a file instead when it may outgrow a pipe nobody reads meanwhile)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "apinalytics", "serve", "--port", str(port), *flags),
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


async def wait_until_ready(
    http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process
) -> None:
    for _ in range(300):
        if proc.returncode is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            async with http.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("serve never became ready")


async def wait_until_started(log: Path, processes: int) -> None:
    """Until ``processes`` applications logged their start (the "event loop" line) to
    ``log``, the service's stderr. A gunicorn worker has its signal handlers from then
    on; before, a SIGTERM reaches the handler it inherited from the arbiter and is lost,
    and the arbiter kills that worker only at the end of the graceful timeout."""
    for _ in range(300):
        text = log.read_text(errors="replace")
        if text.count('"msg": "event loop"') >= processes:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {processes} processes started: {log.read_text()}")


async def wait_until_not_listening(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
    raise AssertionError("the server kept listening after SIGTERM")


def exact_us(timestamp: float) -> int:
    """The microsecond SPEC says an event's timestamp is kept as: the float's exact
    value rounded to the nearest microsecond, ties to even (computed with fractions,
    independently of how ingest does it)."""
    return round(Fraction(timestamp) * 1_000_000)


def histogram_bin(response_us: int) -> int:
    """The latency histogram's bin of a value, computed apart from the service's SQL:
    0 for 0, else i with 1.02**(i-1) <= value < 1.02**i (migration 0009)."""
    if response_us <= 0:
        return 0
    return math.floor(math.log(response_us) / math.log(1.02)) + 1


async def catch_up(conn: asyncpg.Connection) -> int:
    """``apinalytics rollups catch-up`` on ``conn`` (a plain connection outside any
    transaction): the rollups hold every stored event once it returns (the service's
    own materializer may be running: this waits its turn). Returns the pending rows it
    materialized."""
    mode = await migrate.rollup_mode(conn)
    assert mode is not None
    return await materializer.catch_up(conn, mode, pause_s=0.05)
