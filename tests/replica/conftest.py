"""A real streaming replica, built once per module and mode: a primary cluster, a
``pg_basebackup -R`` of it into a second data directory, started on another port as a
hot standby. Both load TimescaleDB (the base backup copies the configuration; the
clusters are started with the same preload and license).

Like tests/dbs.py's clusters, they run as the ``postgres`` OS user when the tests run
as root, in a temporary directory removed at the end.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from apinalytics import localauth, localdb, migrate
from apinalytics.replica_lag import PRIMARY_POSITION, REPLICA_POSITION

from ..dbs import COMMUNITY_MISSING, run

LICENSES = {"apache": "apache", "community": "timescale"}


@dataclass
class Streaming:
    """A primary and its streaming replica, one migrated database on both."""

    mode: str
    primary: localdb.LocalCluster
    replica: localdb.LocalCluster

    @property
    def primary_dsn(self) -> str:
        return self.primary.dsn

    @property
    def replica_dsn(self) -> str:
        # The replica is a copy: same database, same superuser and password.
        return self.replica.dsn

    def stop_replica(self) -> None:
        self.replica.stop()

    def start_replica(self) -> None:
        self.replica.ensure_running()

    async def replica_sql(self, sql: str) -> object:
        conn = await asyncpg.connect(self.replica_dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def caught_up(self, timeout_s: float = 15.0) -> None:
        """Wait until the replica has replayed everything the primary has written."""
        primary = await asyncpg.connect(self.primary_dsn)
        replica = await asyncpg.connect(self.replica_dsn)
        try:
            wanted = await primary.fetchval(PRIMARY_POSITION)
            deadline = time.monotonic() + timeout_s
            while await replica.fetchval(REPLICA_POSITION) < wanted:
                assert time.monotonic() < deadline, f"the replica did not catch up in {timeout_s} s"
                await asyncio.sleep(0.05)
        finally:
            await primary.close()
            await replica.close()


def build(tmp: Path, mode: str) -> Streaming:
    bindir = localdb.find_bindir()
    if mode == "community" and not localdb.has_community_build(bindir):
        pytest.skip(COMMUNITY_MISSING)
    license = LICENSES[mode]
    primary = localdb.LocalCluster(
        tmp / "primary", bindir, license=license, durable=False, background_jobs=False
    ).ensure_running()
    try:
        result = run(migrate.migrate(primary.dsn))
        assert result.mode == mode  # type: ignore[attr-defined]
        # pg_basebackup runs as the cluster's OS user and copies the whole data
        # directory, the password file (written by this process) included.
        primary._own(primary.datadir / localauth.PASSWORD_FILE)
        target = tmp / "replica"
        target.mkdir()
        primary._own(target)
        target.chmod(0o700)
        password = localauth.read_password(primary.datadir)
        conninfo = (
            f"host=127.0.0.1 port={primary.port} user={localauth.SUPERUSER} password={password}"
        )
        # -R: standby.signal and primary_conninfo; -X stream: the WAL of the backup.
        backup = ["pg_basebackup", "-D", str(target), "-R", "-X", "stream", "-c", "fast"]
        primary._run_pg([*backup, "--no-sync", "-d", conninfo])
        replica = localdb.LocalCluster(
            target,
            bindir,
            port=localdb.free_port(),
            license=license,
            durable=False,
            background_jobs=False,
        ).ensure_running()
    except BaseException:
        primary.stop()
        raise
    return Streaming(mode, primary, replica)


@pytest.fixture(scope="module", params=["apache", "community"])
def streaming(request: pytest.FixtureRequest) -> Iterator[Streaming]:
    try:
        localdb.find_bindir()
    except localdb.LocalDbError as exc:
        pytest.skip(f"no local PostgreSQL to build a primary and a replica with: {exc}")
    tmp = Path(tempfile.mkdtemp(prefix="apinalytics-replica-"))
    try:
        pair = build(tmp, request.param)
        try:
            yield pair
        finally:
            pair.replica.stop()
            pair.primary.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
