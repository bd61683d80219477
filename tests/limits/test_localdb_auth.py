"""The embedded cluster does not trust local connections: every one needs the
superuser's password, generated with the cluster and kept in its data directory with
mode 0600. A data directory made when every local connection was trusted gets a
password, and keeps its data, the next time it is started or reused."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from apinalytics.localauth import PASSWORD_FILE
from apinalytics.localdb import LocalCluster, find_bindir

TRUST_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


@pytest.fixture
async def cluster() -> AsyncIterator[LocalCluster]:
    # Not under tmp_path (see test_localdb.home): the postgres OS user must reach it.
    root = Path(tempfile.mkdtemp(prefix="apinalytics-auth-"))
    c = LocalCluster(root / "pgdata", find_bindir(), license="apache", durable=False)
    try:
        await asyncio.to_thread(c.ensure_running)
        yield c
    finally:
        await asyncio.to_thread(c.stop)
        shutil.rmtree(root, ignore_errors=True)


async def refused_without_password(port: int) -> None:
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        conn = await asyncpg.connect(
            f"postgresql://apinalytics@127.0.0.1:{port}/postgres", password=""
        )
        await conn.close()


async def test_connections_need_the_password(cluster: LocalCluster) -> None:
    await refused_without_password(cluster.port)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://apinalytics:wrong@127.0.0.1:{cluster.port}/postgres")
    secret = cluster.datadir / PASSWORD_FILE
    assert secret.stat().st_mode & 0o777 == 0o600
    assert cluster.datadir.stat().st_mode & 0o077 == 0
    conn = await asyncpg.connect(cluster.dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == "apinalytics"
    finally:
        await conn.close()


async def test_a_cluster_that_trusted_everyone_gets_a_password(cluster: LocalCluster) -> None:
    # As an earlier version left it: trust, no password, no password file.
    conn = await asyncpg.connect(cluster.dsn)
    try:
        await conn.execute("CREATE TABLE kept (x int)")
        await conn.execute("INSERT INTO kept VALUES (42)")
        await conn.execute("ALTER ROLE apinalytics PASSWORD NULL")
    finally:
        await conn.close()
    (cluster.datadir / "pg_hba.conf").write_text(TRUST_HBA)
    (cluster.datadir / PASSWORD_FILE).unlink()
    cluster._run_pg(["pg_ctl", "-D", str(cluster.datadir), "reload"])
    await asyncio.sleep(0.5)
    conn = await asyncpg.connect(f"postgresql://apinalytics@127.0.0.1:{cluster.port}/apinalytics")
    await conn.close()

    again = LocalCluster(cluster.datadir, find_bindir())
    await asyncio.to_thread(again.ensure_running)
    assert (cluster.datadir / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    await asyncio.sleep(0.5)  # the reload
    await refused_without_password(again.port)
    conn = await asyncpg.connect(again.dsn)
    try:
        assert await conn.fetchval("SELECT x FROM kept") == 42
    finally:
        await conn.close()
