"""SPEC "CLI": with no database URL, ``serve`` starts a local TimescaleDB of its own
(data kept under a project-local directory), so one command gives a working service.

- ``ensure_running`` initialises, starts, or reuses: a second call on the same data
  directory, from a fresh object, returns the same port without restarting.
- A stopped cluster starts again on the port it had, and its data directory stays
  private (PostgreSQL refuses to start otherwise).
- PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres``
  OS user.
- The service without ``database_url`` runs on the cluster under ``<home>/pgdata``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from apinalytics.app import create_app
from apinalytics.localdb import LocalCluster, find_bindir
from apinalytics.settings import Settings


@pytest.fixture(scope="module")
async def home() -> AsyncIterator[Path]:
    """A project home whose ``pgdata`` cluster is running.

    Not under tmp_path: every pytest run makes /tmp/pytest-of-<user> private again,
    which would lock the postgres OS user out of a cluster kept there.
    """
    root = Path(tempfile.mkdtemp(prefix="apinalytics-localdb-"))
    cluster = LocalCluster(root / "pgdata", find_bindir(), license="apache", durable=False)
    try:
        await asyncio.to_thread(cluster.ensure_running)
        yield root
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(root, ignore_errors=True)


def fresh(home: Path) -> LocalCluster:
    """A new object for the same data directory, as a second process would make it."""
    return LocalCluster(home / "pgdata", find_bindir())


def postmaster_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().splitlines()[0])


async def test_second_ensure_running_reuses_the_cluster(home: Path) -> None:
    first = await asyncio.to_thread(fresh(home).ensure_running)
    pid = postmaster_pid(first.datadir)
    second = await asyncio.to_thread(fresh(home).ensure_running)
    assert second.port == first.port != 0
    assert postmaster_pid(second.datadir) == pid, "the cluster was restarted"
    assert second.license == "apache"  # remembered from the start that made it


async def test_stopped_cluster_starts_again_on_its_port(home: Path) -> None:
    cluster = await asyncio.to_thread(fresh(home).ensure_running)
    port = cluster.port
    # A client connected while the cluster stops is disconnected by the server, which
    # leaves the port in TIME_WAIT: the restart must take the port all the same (a
    # service started on this cluster keeps connecting to it).
    held = await asyncpg.connect(cluster.dsn)
    await asyncio.to_thread(cluster.stop)
    await held.close()
    assert not (cluster.datadir / "postmaster.pid").exists()
    again = await asyncio.to_thread(fresh(home).ensure_running)
    assert again.port == port
    assert (again.datadir.stat().st_mode & 0o777) == 0o700
    conn = await asyncpg.connect(again.dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "apinalytics"
        assert await conn.fetchval("SHOW timescaledb.license") == "apache"
    finally:
        await conn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="not running as root: nothing to hand over")
async def test_runs_as_the_postgres_user_when_root(home: Path) -> None:
    cluster = await asyncio.to_thread(fresh(home).ensure_running)
    postgres = pwd.getpwnam("postgres")
    assert cluster.datadir.stat().st_uid == postgres.pw_uid
    status = Path(f"/proc/{postmaster_pid(cluster.datadir)}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert {int(u) for u in uids} == {postgres.pw_uid}


async def test_service_without_database_url_runs_on_the_home_cluster(
    home: Path, aiohttp_client: Callable[[web.Application], Any]
) -> None:
    settings = Settings(database_url=None, home=home, db_connect_timeout_s=2.0)
    # As `serve` does: migrations applied at start.
    client: TestClient = await aiohttp_client(create_app(settings, run_migrations=True))
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    conn = await asyncpg.connect(fresh(home).ensure_running().dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") > 0
    finally:
        await conn.close()


def test_find_bindir_finds_the_server_binaries() -> None:
    bindir = find_bindir()
    assert (bindir / "initdb").exists()
    assert (bindir / "pg_ctl").exists()
