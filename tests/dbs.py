"""Test database servers, one per rollup mode, and a fresh database per test.

Where the servers come from, in order:

1. ``APINALYTICS_TEST_DATABASE_URL``: an existing server (its license decides the one
   mode it can test);
2. a Docker engine that answers: ``timescale/timescaledb`` containers through
   testcontainers, one with the Community license and one forced to Apache;
3. otherwise local clusters under a temporary directory: Apache mode always (any build
   forced with ``timescaledb.license=apache``), Community mode when the TSL module is
   installed.

Each test database is a clone of a migrated template, so tests never see each
other's rows and migrations run once per server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from apinalytics import localdb, migrate

MODES = ("apache", "community")
TEMPLATE = "apinalytics_template"
COMMUNITY_MISSING = (
    "TimescaleDB Community (TSL) build not installed: no timescaledb-tsl-*.so in "
    "PostgreSQL's pkglibdir, so continuous aggregates cannot be tested here"
)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def run(coro: object) -> object:
    """Run a coroutine to completion from sync code, whatever loop pytest has running."""
    out: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    import threading

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


@dataclass
class Server:
    """A PostgreSQL+TimescaleDB server in one rollup mode."""

    mode: str
    admin_dsn: str  # any database on the server, as a superuser
    cluster: localdb.LocalCluster | None = None
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def prepare(self) -> None:
        run(self._prepare())

    async def _prepare(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await _drop(conn, TEMPLATE)
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        result = await migrate.migrate(with_database(self.admin_dsn, TEMPLATE))
        if result.mode != self.mode:
            raise RuntimeError(f"server meant for {self.mode} mode migrated as {result.mode}")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            # TimescaleDB's scheduler keeps a connection to every database that allows
            # them, and a template with a connection cannot be cloned.
            await conn.execute(f"ALTER DATABASE {TEMPLATE} WITH ALLOW_CONNECTIONS false")
            await _kick(conn, TEMPLATE)
        finally:
            await conn.close()

    def new_database(self) -> str:
        name = f"t_{os.getpid()}_{next(self._counter)}"
        run(self._create(name))
        return name

    async def _create(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for attempt in range(50):
                try:
                    await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
                    return
                except asyncpg.ObjectInUseError:
                    await _kick(conn, TEMPLATE)
                    await asyncio.sleep(0.05 * (attempt + 1))
            raise RuntimeError("template database stayed busy")
        finally:
            await conn.close()

    def drop_database(self, name: str) -> None:
        run(self._drop(name))

    async def _drop(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await _drop(conn, name)
        finally:
            await conn.close()

    def dsn(self, database: str) -> str:
        return with_database(self.admin_dsn, database)

    @contextlib.asynccontextmanager
    async def older_schema(
        self, name: str, directory: Path, keep: Callable[[int], bool]
    ) -> AsyncIterator[str]:
        """A new database ``name`` migrated with only the migrations whose number
        ``keep`` accepts (copied into ``directory``): the schema an upgrade starts
        from. Yields its DSN; dropped at the end."""
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await _drop(admin, name)
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        directory.mkdir()
        for path in migrate.migrations_dir().glob("*.sql"):
            if keep(int(path.name[:4])):
                shutil.copy(path, directory / path.name)
        try:
            await migrate.migrate(self.dsn(name), directory)
            yield self.dsn(name)
        finally:
            await self._drop(name)


async def _kick(conn: asyncpg.Connection, database: str) -> None:
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _license(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return str(await conn.fetchval("SHOW timescaledb.license"))
    finally:
        await conn.close()


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        out = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


class Servers:
    """The servers available to this test run, keyed by mode; missing modes say why."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {}
        self.missing: dict[str, str] = {}
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None

    def start(self) -> Servers:
        url = os.environ.get("APINALYTICS_TEST_DATABASE_URL")
        if url:
            mode = migrate.mode_for_license(str(run(_license(url))))
            self.servers[mode] = Server(mode, url)
            other = "community" if mode == "apache" else "apache"
            self.missing[other] = (
                f"APINALYTICS_TEST_DATABASE_URL points at one server, in {mode} mode; "
                f"{other} mode needs a second server"
            )
        elif docker_answers():
            self._start_containers()
        else:
            self._start_local()
        for server in self.servers.values():
            server.prepare()
        return self

    def _start_containers(self) -> None:
        from testcontainers.postgres import PostgresContainer

        for mode, license in (("community", "timescale"), ("apache", "apache")):
            container = PostgresContainer(
                "timescale/timescaledb:latest-pg15", username="apinalytics", password="test"
            ).with_command(f"postgres -c timescaledb.license={license} -c fsync=off")
            self._stack.enter_context(container)
            url = container.get_connection_url(driver=None)
            self.servers[mode] = Server(mode, url)

    def _start_local(self) -> None:
        bindir = localdb.find_bindir()
        self._tmp = Path(tempfile.mkdtemp(prefix="apinalytics-test-"))
        licenses = {"apache": "apache"}
        if localdb.has_community_build(bindir):
            licenses["community"] = "timescale"
        else:
            self.missing["community"] = COMMUNITY_MISSING
        for mode, license in licenses.items():
            cluster = localdb.LocalCluster(
                self._tmp / mode, bindir, license=license, durable=False, background_jobs=False
            ).ensure_running()
            self._stack.callback(cluster.stop)
            self.servers[mode] = Server(mode, cluster.dsn_for("postgres"), cluster)

    def stop(self) -> None:
        self._stack.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
