"""The embedded default: a project-local PostgreSQL cluster with TimescaleDB preloaded.

``apinalytics serve`` without ``APINALYTICS_DATABASE_URL`` runs on one of these
(data under ``<home>/pgdata``); the test suite starts throwaway ones in temporary
directories. PostgreSQL refuses to run as root, so when we are root the cluster
belongs to the unprivileged ``postgres`` OS user (created by Debian's package).

Connections need the superuser's password (localauth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import localauth
from .localauth import SUPERUSER

if TYPE_CHECKING:
    from .settings import Settings

DEFAULT_DB = "apinalytics"
_STATE_FILE = "apinalytics-local.json"


class LocalDbError(RuntimeError):
    pass


def find_bindir(explicit: Path | None = None) -> Path:
    """PostgreSQL's bin directory: the given one, pg_config's, or the newest Debian one."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(explicit)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise LocalDbError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. Run "
        "scripts/install-timescaledb, or set APINALYTICS_PG_BINDIR, or set "
        "APINALYTICS_DATABASE_URL to an existing TimescaleDB."
    )


def has_timescaledb(bindir: Path) -> bool:
    return (_extension_dir(bindir) / "timescaledb.control").exists()


def has_community_build(bindir: Path) -> bool:
    """Whether the TimescaleDB Community (TSL) module is installed next to PostgreSQL."""
    libdir = _pg_config(bindir, "--pkglibdir")
    return bool(libdir) and any(Path(libdir).glob("timescaledb-tsl-*.so"))


def _extension_dir(bindir: Path) -> Path:
    return Path(_pg_config(bindir, "--sharedir")) / "extension"


def _pg_config(bindir: Path, flag: str) -> str:
    exe = bindir / "pg_config"
    if not exe.exists():
        exe = Path("/usr/lib/postgresql") / bindir.parent.name / "bin" / "pg_config"
    if not exe.exists():
        return ""
    out = subprocess.run([str(exe), flag], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project_cluster(settings: Settings) -> LocalCluster:
    """The cluster ``serve`` and the commands run on without a database URL: the data
    under ``<home>/pgdata``, the PostgreSQL of ``settings.pg_bindir`` or found."""
    datadir = (settings.home / "pgdata").resolve()
    return LocalCluster(datadir, find_bindir(settings.pg_bindir))


async def dsn_for(settings: Settings) -> str:
    """The configured database, or the project's cluster (started if needed)."""
    if settings.database_url:
        return settings.database_url
    cluster = project_cluster(settings)
    await asyncio.to_thread(cluster.ensure_running)
    return cluster.dsn


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in ``datadir``, listening on 127.0.0.1:``port``."""

    datadir: Path
    bindir: Path
    port: int = 0
    # "timescale" (Community, where installed) or "apache": forces the rollup mode.
    license: str | None = None
    # Throwaway clusters trade durability for speed; a serve cluster keeps it.
    durable: bool = True
    # TimescaleDB's job scheduler (policies). Test clusters turn it off so that no job
    # runs between a test's steps; jobs can still be run on request (CALL run_job).
    background_jobs: bool = True

    @property
    def dsn(self) -> str:
        return self.dsn_for(DEFAULT_DB)

    def dsn_for(self, database: str) -> str:
        password = localauth.read_password(self.datadir)
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    # -- lifecycle ---------------------------------------------------------------

    def ensure_running(self) -> LocalCluster:
        """Initialise if needed, start if stopped, reuse if already running."""
        if not has_timescaledb(self.bindir):
            raise LocalDbError(
                "TimescaleDB is not installed for the PostgreSQL in "
                f"{self.bindir}; run scripts/install-timescaledb."
            )
        self.datadir = self.datadir.resolve()
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        state = self._read_state()
        if self._is_running():
            if state:
                self.port = int(state["port"])
                self.license = state.get("license")
            localauth.require(self)
            return self
        if state and self.license is None:
            # A restart keeps the license it was first started with (the rollup mode
            # recorded in its databases depends on it).
            self.license = state.get("license")
        if not self.port:
            wanted = int(state["port"]) if state else 0
            self.port = wanted if wanted and _port_free(wanted) else free_port()
        self._start()
        localauth.require(self)
        self._create_default_db()
        return self

    def stop(self) -> bool:
        """Stop the cluster; False if it was not running."""
        if not self._is_running():
            return False
        self._run_pg(["pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop"], check=False)
        return True

    # -- internals ---------------------------------------------------------------

    def _initdb(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._own(self.datadir)
        localauth.initdb(self)

    def _start(self) -> None:
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.datadir}",
            "-c shared_preload_libraries=timescaledb",
            "-c timescaledb.telemetry_level=off",
            "-c max_connections=200",
            "-c max_locks_per_transaction=256",
            "-c shared_buffers=256MB",
        ]
        if self.license:
            opts.append(f"-c timescaledb.license={self.license}")
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        if not self.background_jobs:
            opts.append("-c timescaledb.max_background_workers=0")
        log = self.datadir / "server.log"
        # Repairs data directories that earlier versions left open to others (0701),
        # which PostgreSQL refuses to start on.
        self.datadir.chmod(self.datadir.stat().st_mode & 0o750)
        argv = ["pg_ctl", "-D", str(self.datadir), "-l", str(log), "-o", " ".join(opts)]
        self._run_pg([*argv, "-w", "-t", "60", "start"])
        (self.datadir / _STATE_FILE).write_text(
            json.dumps({"port": self.port, "license": self.license})
        )
        self._own(self.datadir / _STATE_FILE)

    def _create_default_db(self) -> None:
        psql = str(self.bindir / "psql")
        base = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"]
        env = {**os.environ, "PGPASSWORD": localauth.read_password(self.datadir)}
        exists = f"SELECT 1 FROM pg_database WHERE datname = '{DEFAULT_DB}'"
        deadline = time.monotonic() + 30
        while True:
            out = subprocess.run([*base, "-tAc", exists], capture_output=True, text=True, env=env)
            if out.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LocalDbError(f"local cluster did not accept connections: {out.stderr}")
            time.sleep(0.2)
        if out.stdout.strip() != "1":
            create = [*base, "-c", f"CREATE DATABASE {DEFAULT_DB}"]
            subprocess.run(create, check=True, capture_output=True, env=env)

    def _is_running(self) -> bool:
        if not (self.datadir / "postmaster.pid").exists():
            return False
        out = self._run_pg(["pg_ctl", "-D", str(self.datadir), "status"], check=False)
        return out.returncode == 0

    def _read_state(self) -> dict[str, Any] | None:
        path = self.datadir / _STATE_FILE
        with contextlib.suppress(FileNotFoundError, ValueError):
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        return None

    def _run_pg(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = str(self.bindir / argv[0])
        user = _pg_os_user()
        out = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            cwd="/",
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        if check and out.returncode != 0:
            raise LocalDbError(
                f"{argv[0]} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
            )
        return out

    def _own(self, path: Path) -> None:
        user = _pg_os_user()
        if user:
            pw = pwd.getpwnam(user)
            os.chown(path, pw.pw_uid, pw.pw_gid)
            # Every parent must be traversable by that user, except the data directory
            # and what is inside it: PostgreSQL refuses a data directory others can enter.
            for parent in path.parents:
                if parent == self.datadir or self.datadir in parent.parents:
                    continue
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
                if parent == Path("/"):
                    break


def _pg_os_user() -> str | None:
    """The OS user PostgreSQL runs as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise LocalDbError(
            "running as root, and there is no 'postgres' OS user to run the local cluster "
            "as; install postgresql (scripts/install-timescaledb) or run as another user"
        ) from exc
    return "postgres"


def _port_free(port: int) -> bool:
    """Whether PostgreSQL can listen on ``port``. Like PostgreSQL's own listening
    socket, the probe sets SO_REUSEADDR: a port whose last connections are in TIME_WAIT
    (the server closed them as it stopped) is free to listen on again, while one with a
    listener is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
