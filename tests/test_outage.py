"""SPEC "Sending events": when the database is unavailable the service answers ``503``
with ``Retry-After``, never 200 for events it did not store, and recovers by itself
when the database comes back.

The test runs its own PostgreSQL cluster so that it can stop and restart it on the
same port while the service keeps running: once between requests, once in the middle
of a batch's write. Neither time is anything half-written, and an Idempotency-Key of a
failed attempt is not spent. The same holds when the server is up but refuses new
connections (connection limit reached) and its old ones were terminated, while it
shuts down (refusing new connections, its sessions ended under them) and while it
starts up (in recovery, not yet taking connections): 503 with Retry-After, never 500.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps, migrate
from apinalytics.localdb import LocalCluster, find_bindir
from apinalytics.settings import Settings

from .helpers import assert_error, event, read_headers, wait_for_lock_waiter, write_headers


@pytest.fixture
async def cluster() -> AsyncIterator[LocalCluster]:
    # Not under tmp_path: every pytest run makes /tmp/pytest-of-<user> private again,
    # which would lock the postgres OS user out of a cluster of ours kept there.
    root = Path(tempfile.mkdtemp(prefix="apinalytics-outage-"))
    c = LocalCluster(root / "pgdata", find_bindir(), license="apache", durable=False)
    try:
        await asyncio.to_thread(c.ensure_running)
        await migrate.migrate(c.dsn)
        yield c
    finally:
        await asyncio.to_thread(c.stop)
        shutil.rmtree(root, ignore_errors=True)


async def test_database_outage_is_503_then_recovers(
    cluster: LocalCluster, tmp_path: Path, make_client: Callable[[Settings], Any]
) -> None:
    conn = await asyncpg.connect(cluster.dsn)
    try:
        app = await apps.create(conn, "outage")
    finally:
        await conn.close()
    settings = Settings(database_url=cluster.dsn, home=tmp_path / "home", db_connect_timeout_s=2.0)
    client: TestClient = await make_client(settings)

    async def post(n: int, key: str) -> Any:
        headers = {**write_headers(app), "Idempotency-Key": key}
        return await client.post("/1/events/", json=[event()] * n, headers=headers)

    before = await post(2, "before")
    assert await before.json() == {"accepted": 2}  # the pool holds a live connection now

    port = cluster.port
    await asyncio.to_thread(cluster.stop)

    during = await post(3, "during")
    await assert_error(during, 503, "database_unavailable", "nothing was stored")
    assert int(during.headers["Retry-After"]) > 0
    query = await client.get("/1/timeseries/0/60/", headers=read_headers(app))
    await assert_error(query, 503, "database_unavailable")
    assert int(query.headers["Retry-After"]) > 0
    await assert_error(await client.get("/readyz"), 503, "database_unavailable")
    assert (await client.get("/healthz")).status == 200  # alive, only not ready

    await asyncio.to_thread(cluster.ensure_running)
    assert cluster.port == port

    # The same batch again: its key was not spent by the failed attempt.
    after = await post(3, "during")
    assert after.status == 200, await after.text()
    assert await after.json() == {"accepted": 3}
    assert (await client.get("/readyz")).status == 200

    # Down in the middle of a write: the batch is held at its COPY by a lock, then the
    # server shuts down under it.
    blocker = await asyncpg.connect(cluster.dsn)
    blocked = await blocker.fetchval("SELECT count(*) FROM events")
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    mid = asyncio.create_task(post(4, "mid-write"))
    await wait_for_lock_waiter(blocker)
    await asyncio.to_thread(cluster.stop)
    await assert_error(await mid, 503, "database_unavailable")
    blocker.terminate()
    await asyncio.to_thread(cluster.ensure_running)

    conn = await asyncpg.connect(cluster.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") == blocked == 5
        keys = await conn.fetch("SELECT key, accepted FROM idempotency_keys ORDER BY key")
        assert [tuple(k) for k in keys] == [("before", 2), ("during", 3)]
        again = await post(4, "mid-write")
        assert await again.json() == {"accepted": 4}
        assert await conn.fetchval("SELECT count(*) FROM events") == 9
    finally:
        await conn.close()


async def test_too_many_connections_is_503_then_recovers(
    database_url: str,
    db: asyncpg.Connection,
    app_keys: apps.NewApp,
    make_client: Callable[[Settings], Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server refusing new connections is the database being unavailable too."""
    # A role of its own: superusers are exempt from connection limits.
    role = f"limited_{os.getpid()}"
    # With a password: the embedded test clusters ask every connection for one.
    await db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}'")
    try:
        await db.execute(f"GRANT SELECT ON apps, apinalytics_meta TO {role}")
        url = urlsplit(database_url)
        dsn = urlunsplit(url._replace(netloc=f"{role}:{role}@{url.hostname}:{url.port}"))
        settings = Settings(database_url=dsn, home=tmp_path / "home", db_connect_timeout_s=2.0)
        client: TestClient = await make_client(settings)
        h = write_headers(app_keys)
        assert (await client.post("/1/events/", json=[], headers=h)).status == 200

        await db.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        # The first may still meet the terminated connection; the second must connect anew.
        for _ in range(2):
            resp = await client.post("/1/events/", json=[], headers=h)
            await assert_error(resp, 503, "database_unavailable")
            assert int(resp.headers["Retry-After"]) > 0
        assert "TooManyConnectionsError" in caplog.text

        await db.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        assert (await client.post("/1/events/", json=[], headers=h)).status == 200
    finally:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")


async def test_a_database_shutting_down_is_503(
    cluster: LocalCluster, tmp_path: Path, make_client: Callable[[Settings], Any]
) -> None:
    """While PostgreSQL shuts down it refuses new connections ("the database system is
    shutting down", asyncpg's CannotConnectNowError) and ends the sessions it has
    (AdminShutdownError): every request then is a 503 with Retry-After, never a 500."""
    conn = await asyncpg.connect(cluster.dsn)
    try:
        app = await apps.create(conn, "shutdown")
    finally:
        await conn.close()
    settings = Settings(database_url=cluster.dsn, home=tmp_path / "home", db_connect_timeout_s=2.0)
    client: TestClient = await make_client(settings)
    batch = [event()]
    ok = await client.post("/1/events/", json=batch, headers=write_headers(app))
    assert ok.status == 200, await ok.text()

    # A smart shutdown waits for the sessions it has: this one keeps it shutting down.
    holder = await asyncpg.connect(cluster.dsn)
    try:
        await asyncio.to_thread(
            cluster._run_pg, ["pg_ctl", "-D", str(cluster.datadir), "-m", "smart", "-W", "stop"]
        )
        for _ in range(100):
            try:
                await (await asyncpg.connect(cluster.dsn)).close()
            except asyncpg.CannotConnectNowError:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the cluster never began to shut down")
        await holder.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND application_name = 'apinalytics'"
        )
        answers = [
            await client.post("/1/events/", json=batch, headers=write_headers(app)),
            await client.post("/1/events/", json=batch, headers=write_headers(app)),
            await client.get("/1/timeseries/0/60/", headers=read_headers(app)),
            await client.get("/readyz"),
        ]
        for resp in answers:
            await assert_error(resp, 503, "database_unavailable")
            assert int(resp.headers["Retry-After"]) > 0
    finally:
        await holder.close()
    await asyncio.to_thread(cluster.stop)
    await asyncio.to_thread(cluster.ensure_running)
    again = await client.post("/1/events/", json=batch, headers=write_headers(app))
    assert again.status == 200, await again.text()


async def test_a_database_starting_up_is_503(
    cluster: LocalCluster, tmp_path: Path, make_client: Callable[[Settings], Any]
) -> None:
    """A server in recovery that does not take connections yet ("the database system is
    starting up", "not yet accepting connections": CannotConnectNowError) is the
    database being unavailable: 503 with Retry-After, and 200 once it takes them. Held
    in that state for the test as a standby without hot standby, then promoted."""
    conn = await asyncpg.connect(cluster.dsn)
    try:
        app = await apps.create(conn, "startup")
        await conn.execute("ALTER SYSTEM SET hot_standby = off")
    finally:
        await conn.close()
    settings = Settings(database_url=cluster.dsn, home=tmp_path / "home", db_connect_timeout_s=2.0)
    client: TestClient = await make_client(settings)
    batch = [event()]

    await asyncio.to_thread(cluster.stop)
    signal = cluster.datadir / "standby.signal"
    signal.touch()
    cluster._own(signal)
    await asyncio.to_thread(cluster._start)
    with pytest.raises(asyncpg.CannotConnectNowError):
        await asyncpg.connect(cluster.dsn)
    answers = [
        await client.post("/1/events/", json=batch, headers=write_headers(app)),
        await client.get("/1/timeseries/0/60/", headers=read_headers(app)),
        await client.get("/readyz"),
    ]
    for resp in answers:
        await assert_error(resp, 503, "database_unavailable")
        assert int(resp.headers["Retry-After"]) > 0

    await asyncio.to_thread(
        cluster._run_pg, ["pg_ctl", "-D", str(cluster.datadir), "-w", "promote"]
    )
    conn = await asyncpg.connect(cluster.dsn)
    try:
        await conn.execute("ALTER SYSTEM RESET hot_standby")
    finally:
        await conn.close()
    again = await client.post("/1/events/", json=batch, headers=write_headers(app))
    assert again.status == 200, await again.text()
