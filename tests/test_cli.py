"""SPEC "CLI" and "Identity": apps from the command line, through the real entry point
(``python -m apinalytics`` in a subprocess, configured by ``APINALYTICS_DATABASE_URL``).

- ``apps create --name NAME --json`` prints one JSON object with ``app_id``,
  ``write_key`` and ``read_key``, and those keys work over HTTP at once.
- ``apps rotate-keys APP [--write|--read]``: the old key stops working at once, the
  new one works, the other kind is unchanged.
- ``apps delete APP --yes`` deletes the app together with all of its data; without
  ``--yes`` away from a terminal it refuses.
- ``serve`` runs the service (structured logs, no keys in them) until SIGTERM, and
  lets in-flight requests finish first (SPEC "Operations");
  ``apps list`` shows apps without keys; ``migrate`` on a migrated database applies
  nothing. Failures exit non-zero with a one-line message, not a traceback.

Only creation goes through the CLI twice; the other tests arrange their apps directly,
since every CLI run is a new Python process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.apps import NewApp
from apinalytics.localdb import free_port

from .helpers import (
    assert_error,
    event,
    read_headers,
    start_serve,
    wait_for_lock_waiter,
    wait_until_not_listening,
    wait_until_ready,
    wait_until_started,
    write_headers,
)

NOW = int(time.time())
QUERY = f"/1/timeseries/{NOW - 3600}/{NOW + 60}/"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "APINALYTICS_DATABASE_URL": database_url,
        "APINALYTICS_HOME": str(tmp_path / "home"),
    }


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> Any:
    env = cli_env

    async def run(*argv: str) -> Run:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "apinalytics",
            *argv,
            env=env,
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())

    return run


async def create(cli: Any, name: str) -> NewApp:
    r = await cli("apps", "create", "--name", name, "--json")
    assert r.code == 0, r.err
    keys = r.json()
    assert set(keys) == {"app_id", "write_key", "read_key"}
    return NewApp(keys["app_id"], name, keys["write_key"], keys["read_key"])


async def ingest(client: TestClient, app: NewApp, n: int = 1) -> int:
    resp = await client.post("/1/events/", json=[event()] * n, headers=write_headers(app))
    return resp.status


async def test_create_json_keys_work_over_http(
    cli: Any, client: TestClient, db: asyncpg.Connection
) -> None:
    app = await create(cli, "shop")
    assert app.write_key and app.read_key
    assert app.write_key != app.read_key
    assert await ingest(client, app, 2) == 200
    resp = await client.get(QUERY, headers=read_headers(app))
    assert resp.status == 200, await resp.text()
    assert await db.fetchval("SELECT name FROM apps WHERE public_id = $1", app.app_id) == "shop"


async def test_create_plain_prints_id_and_both_keys(cli: Any, client: TestClient) -> None:
    r = await cli("apps", "create", "--name", "plain")
    assert r.code == 0, r.err
    fields = dict(line.split(":", 1) for line in r.out.strip().splitlines())
    app = NewApp(
        fields["Application ID"].strip(),
        "plain",
        fields["Write key"].strip(),
        fields["Read key"].strip(),
    )
    assert await ingest(client, app) == 200
    assert "only now" in r.err


async def test_list_shows_apps_without_keys(cli: Any, db: asyncpg.Connection) -> None:
    a = await apps.create(db, "first")
    b = await apps.create(db, "second")
    text = await cli("apps", "list")
    assert text.code == 0, text.err
    header, *rows = text.out.strip().splitlines()
    assert header == "APP ID\tNAME\tCREATED (UTC)"
    assert [row.split("\t")[:2] for row in rows] == [[a.app_id, "first"], [b.app_id, "second"]]
    as_json = await cli("apps", "list", "--json")
    assert [(x["app_id"], x["name"]) for x in as_json.json()] == [
        (a.app_id, "first"),
        (b.app_id, "second"),
    ]
    for key in (a.write_key, a.read_key, b.write_key, b.read_key):
        assert key and key not in text.out + text.err + as_json.out + as_json.err


ROTATIONS: list[tuple[str, list[str], set[str]]] = [
    ("write_only", ["--write"], {"write_key"}),
    ("read_only", ["--read"], {"read_key"}),
    ("both", [], {"write_key", "read_key"}),
]


@pytest.mark.parametrize(("flags", "rotated"), [r[1:] for r in ROTATIONS],
                         ids=[r[0] for r in ROTATIONS])  # fmt: skip
async def test_rotate_keys(
    cli: Any, client: TestClient, db: asyncpg.Connection, flags: list[str], rotated: set[str]
) -> None:
    old = await apps.create(db, "rotating")
    r = await cli("apps", "rotate-keys", old.app_id, *flags, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert set(out) == {"app_id", *rotated}
    new = NewApp(
        old.app_id,
        old.name,
        out.get("write_key", old.write_key),
        out.get("read_key", old.read_key),
    )
    assert (new.write_key != old.write_key) == ("write_key" in rotated)
    assert (new.read_key != old.read_key) == ("read_key" in rotated)

    # The new (or unchanged) keys work ...
    assert await ingest(client, new) == 200
    assert (await client.get(QUERY, headers=read_headers(new))).status == 200
    # ... and a replaced key is refused at once.
    if "write_key" in rotated:
        resp = await client.post("/1/events/", json=[event()], headers=write_headers(old))
        await assert_error(resp, 401, "unauthorized")
    if "read_key" in rotated:
        resp = await client.get(QUERY, headers=read_headers(old))
        await assert_error(resp, 401, "unauthorized")


async def test_delete_removes_the_app_and_its_events(
    cli: Any, client: TestClient, db: asyncpg.Connection
) -> None:
    doomed = await apps.create(db, "doomed")
    kept = await apps.create(db, "kept")
    assert await ingest(client, doomed, 3) == 200
    assert await ingest(client, kept, 2) == 200
    internal = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", doomed.app_id)

    r = await cli("apps", "delete", doomed.app_id, "--yes")
    assert r.code == 0, r.err
    assert await db.fetchval("SELECT count(*) FROM apps WHERE public_id = $1", doomed.app_id) == 0
    assert await db.fetchval("SELECT count(*) FROM events WHERE app_id = $1", internal) == 0
    assert await db.fetchval("SELECT count(*) FROM events") == 2
    resp = await client.post("/1/events/", json=[event()], headers=write_headers(doomed))
    await assert_error(resp, 401, "unauthorized")


async def test_delete_without_yes_away_from_a_terminal_refuses(
    cli: Any, db: asyncpg.Connection
) -> None:
    app = await apps.create(db, "kept")
    r = await cli("apps", "delete", app.app_id)
    assert r.code == 2
    assert "--yes" in r.err
    assert await db.fetchval("SELECT count(*) FROM apps WHERE public_id = $1", app.app_id) == 1


UNKNOWN_APP = [
    ("rotate", ["apps", "rotate-keys", "no-such-app"]),
    ("delete", ["apps", "delete", "no-such-app", "--yes"]),
]


@pytest.mark.parametrize("argv", [u[1] for u in UNKNOWN_APP], ids=[u[0] for u in UNKNOWN_APP])
async def test_unknown_app(cli: Any, argv: list[str]) -> None:
    r = await cli(*argv)
    assert r.code == 2
    assert "no application no-such-app" in r.err


async def test_migrate_on_a_migrated_database_applies_nothing(cli: Any) -> None:
    r = await cli("migrate")
    assert r.code == 0, r.err
    assert "schema is up to date" in r.out
    assert "rollup mode: apache" in r.out


async def test_unreachable_database_is_a_one_line_error(cli: Any) -> None:
    r = await cli("apps", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert r.code == 1
    assert r.err.startswith("apinalytics: ")
    assert "Traceback" not in r.err


@pytest.mark.parametrize("event_loop", [None, "asyncio"], ids=["default", "asyncio"])
async def test_serve_answers_then_stops_on_sigterm(
    cli_env: dict[str, str], tmp_path: Path, db: asyncpg.Connection, event_loop: str | None
) -> None:
    """`serve` is the whole service: ready, ingests, logs JSON lines without keys, and
    exits 0 on SIGTERM; on uvloop unless APINALYTICS_EVENT_LOOP says asyncio."""
    app = await apps.create(db, "served")
    port = free_port()
    env = {**cli_env, "APINALYTICS_EVENT_LOOP": event_loop} if event_loop else cli_env
    proc = await start_serve(env, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, base, proc)
            resp = await http.post(f"{base}/1/events/", json=[event()], headers=write_headers(app))
            assert resp.status == 200, await resp.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    requests = [r for r in lines if r.get("msg") == "request" and r.get("path") == "/1/events/"]
    assert requests and requests[0]["status"] == 200 and requests[0]["app_id"] == app.app_id
    assert app.write_key and app.write_key not in err.decode() + out.decode()
    loops = [r["event_loop"] for r in lines if r.get("msg") == "event loop"]
    assert loops == [event_loop or "uvloop"]


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
async def test_sigterm_lets_an_in_flight_request_finish(
    cli_env: dict[str, str],
    tmp_path: Path,
    db: asyncpg.Connection,
    database_url: str,
    workers: str,
) -> None:
    """SPEC "Operations": graceful shutdown finishes in-flight requests, in one process
    as with several workers. The request is held at its write by a lock until the
    server has stopped listening."""
    app = await apps.create(db, "draining")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        proc = await start_serve(
            cli_env, tmp_path, port, "--no-migrate", "--workers", workers, stderr=stderr
        )
    base = f"http://127.0.0.1:{port}"
    blocker = await asyncpg.connect(database_url)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, base, proc)
            # Every worker, not just the one that answered: see wait_until_started.
            await wait_until_started(log, int(workers))
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            in_flight = asyncio.create_task(
                http.post(f"{base}/1/events/", json=[event()] * 3, headers=write_headers(app))
            )
            await wait_for_lock_waiter(blocker)
            proc.send_signal(signal.SIGTERM)
            await wait_until_not_listening(port)
            await tx.rollback()
            resp = await in_flight
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {"accepted": 3}
        await asyncio.wait_for(proc.wait(), timeout=30)
        assert proc.returncode == 0, log.read_text()
        assert await db.fetchval("SELECT count(*) FROM events") == 3
    finally:
        await blocker.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_app_ids_never_read_as_options() -> None:
    """An ID starting with "-" would be parsed as a flag by `apps rotate-keys ID`."""
    ids = [apps.new_public_id() for _ in range(2000)]
    assert all(i.isascii() and i.isalnum() and len(i) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "1 to 100"), ("   ", "1 to 100"), ("x" * 101, "1 to 100"), ("a\tb", "control")],
    ids=["empty", "blank", "too_long", "control_character"],
)
async def test_create_refuses_an_unfit_name(
    cli: Any, db: asyncpg.Connection, name: str, why: str
) -> None:
    r = await cli("apps", "create", "--name", name)
    assert r.code == 2, r
    assert why in r.err and not r.out
    assert await db.fetchval("SELECT count(*) FROM apps") == 0


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        ("2026-11-02", "2026-11-01", "END must be after START"),
        ("yesterday", "0", "ISO 8601"),
        ("0", "inf", "ISO 8601"),
    ],
    ids=["end_before_start", "not_a_time", "infinity"],
)
async def test_rollups_rebuild_refuses_a_bad_range(
    cli: Any, start: str, end: str, why: str
) -> None:
    r = await cli("rollups", "rebuild", start, end)
    assert r.code == 2, r
    assert why in r.err
