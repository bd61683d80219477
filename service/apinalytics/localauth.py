"""The embedded cluster's password: every connection proves it (scram-sha-256).

Generated when the cluster is made and kept in ``<datadir>/apinalytics-password``
(mode 0600, in a directory only its owner may enter): other users of the machine can
reach the port but not the data. A cluster made when every local connection was
trusted gets a password, and the same rules, the next time it is started or reused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .localdb import LocalCluster

SUPERUSER = "apinalytics"
PASSWORD_FILE = "apinalytics-password"
# Every connection, over TCP or the socket, proves the password.
PG_HBA = """# Written by apinalytics (localauth.py): the superuser's password for every connection.
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


def new_password() -> str:
    return secrets.token_urlsafe(24)


def read_password(datadir: Path) -> str:
    return (datadir / PASSWORD_FILE).read_text().strip()


@contextlib.contextmanager
def initdb_pwfile(password: str, own: Callable[[Path], None]) -> Iterator[Path]:
    """The password for ``initdb --pwfile``: a private file readable by the user initdb
    runs as (``own``), outside the data directory (initdb wants it empty), removed
    right after."""
    with tempfile.TemporaryDirectory(prefix="apinalytics-initdb-") as tmp:
        pwfile = Path(tmp) / "pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        own(pwfile)
        yield pwfile


def keep(datadir: Path, password: str, own: Callable[[Path], None]) -> None:
    """Write the password file (0600) and the pg_hba.conf that asks for it."""
    path = datadir / PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    path.chmod(0o600)
    hba = datadir / "pg_hba.conf"
    hba.write_text(PG_HBA)
    own(hba)
    hba.chmod(0o600)


def initdb(cluster: LocalCluster) -> None:
    """``initdb`` of ``cluster.datadir`` with a new password, then the files keeping it."""
    password = new_password()
    with initdb_pwfile(password, cluster._own) as pwfile:
        argv = ["initdb", "-D", str(cluster.datadir), "-U", SUPERUSER]
        argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        argv += ["--encoding=UTF8", "--locale=C.UTF-8"]
        if not cluster.durable:
            argv.append("--no-sync")
        cluster._run_pg(argv)
    keep(cluster.datadir, password, cluster._own)


def require(cluster: LocalCluster) -> None:
    """A running cluster made by an earlier version trusts every local connection:
    give its superuser a password and require it from then on (a reload, no
    restart). Nothing to do once the password file exists."""
    datadir = cluster.datadir
    if (datadir / PASSWORD_FILE).exists():
        return
    password = new_password()
    psql = str(cluster.bindir / "psql")
    argv = [psql, "-h", "127.0.0.1", "-p", str(cluster.port), "-U", SUPERUSER]
    sql = f"ALTER ROLE {SUPERUSER} PASSWORD '{password}'"
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    out = subprocess.run(
        [*argv, "-d", "postgres", "-tAc", sql], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"setting the superuser's password failed: {out.stderr.strip()}")
    keep(datadir, password, cluster._own)
    cluster._run_pg(["pg_ctl", "-D", str(datadir), "reload"])
