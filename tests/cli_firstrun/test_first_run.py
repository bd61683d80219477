"""A first run without surprises: what a new user sees from the README and the CLI.

- The README's curl examples work as pasted, on any day: the event they send is
  accepted and the query that follows finds it.
- ``apinalytics`` alone, or a command group alone (``apinalytics db``), prints help
  and exits 0; no help text shows reStructuredText markup (backticks).
- ``serve`` says it is listening only once the port is bound, then names the
  dashboard's URL and a way to run the CLI that works from the user's shell; a busy
  port is one line naming the port, not a traceback.
- On Ctrl-C with the embedded cluster, ``serve`` says the cluster keeps running and
  how to stop it; ``db stop`` stops it, and a second ``db stop`` says it was not running.
- ``apps list`` has a header line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.__main__ import build_parser
from apinalytics.localdb import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


async def run(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli(*argv: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "apinalytics", *argv)


def readme_curls() -> list[str]:
    """The README's shell blocks that call curl, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if b.lstrip().startswith("curl")]


async def test_the_readme_curl_examples_work_today(
    client: TestClient, app_keys: apps.NewApp
) -> None:
    send, query = readme_curls()[:2]
    base = str(client.make_url("")).rstrip("/")
    env = {
        "PATH": os.environ["PATH"],
        "APP_ID": app_keys.app_id,
        "WRITE_KEY": app_keys.write_key or "",
        "READ_KEY": app_keys.read_key or "",
    }

    def local(block: str) -> str:
        assert "http://127.0.0.1:8080" in block
        quiet = 'curl() { command curl --silent --show-error "$@"; }\n'
        return quiet + block.replace("http://127.0.0.1:8080", base)

    code, out, err = await run("bash", "-c", local(send.split("\n#")[0]), env=env)
    assert code == 0, err
    assert json.loads(out) == {"accepted": 1}
    code, out, err = await run("bash", "-c", local(query), env=env)
    assert code == 0, err
    groups = json.loads(out)["groups"]
    assert list(groups) == ["get_order"], out
    assert [value for _, value in groups["get_order"]] == [1830]


@pytest.mark.parametrize("argv", [(), ("db",), ("apps",), ("rollups",)], ids=" ".join)
async def test_a_command_group_alone_prints_its_help(argv: tuple[str, ...]) -> None:
    code, out, err = await run(*cli(*argv))
    assert code == 0, err
    assert out.startswith(f"usage: {' '.join(('apinalytics', *argv))} ")
    assert "error" not in out + err


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(
        name: str, p: argparse.ArgumentParser
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield name, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from walk(f"{name} {sub}", child)

    return walk("apinalytics", build_parser())


@pytest.mark.parametrize("name,parser", list(parsers()), ids=[n for n, _ in parsers()])
def test_help_texts_have_no_markup(name: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "`" not in text, [line for line in text.splitlines() if "`" in line]


def serve_env(tmp: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APINALYTICS_")}
    env["APINALYTICS_HOME"] = str(tmp / "home")
    env["APINALYTICS_LOG_JSON"] = "true"
    if database_url:
        env["APINALYTICS_DATABASE_URL"] = database_url
    return env


async def read_banner(proc: asyncio.subprocess.Process) -> list[str]:
    """stderr lines up to the banner's last line; the port must be bound at its first."""
    assert proc.stderr is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert raw, f"serve ended before its banner: {lines}"
        line = raw.decode().rstrip("\n")
        lines.append(line)
        if line.startswith("Create an app with:"):
            return lines


async def started(proc: asyncio.subprocess.Process, lines: list[str], processes: int) -> None:
    """Until every process logged its start: from then on each has its signal handlers
    (a worker that has not would lose a SIGTERM: see helpers.wait_until_started)."""
    assert proc.stderr is not None
    while sum('"msg": "event loop"' in line for line in lines) < processes:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, lines
        lines.append(line.decode())


def bound(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_says_listening_once_bound_with_the_dashboard_and_cli(
    database_url: str, tmp_path: Path, workers: str
) -> None:
    port = free_port()
    env = serve_env(tmp_path, database_url)
    proc = await asyncio.create_subprocess_exec(
        *cli("serve", "--port", str(port), "--workers", workers),
        env=env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines = await read_banner(proc)
        listening = next(i for i, line in enumerate(lines) if "listening" in line)
        assert bound(port)
        assert lines[listening] == f"APInalytics listening on http://127.0.0.1:{port}/"
        assert lines[listening + 1] == f"Dashboard: http://127.0.0.1:{port}/dashboard/"
        hint = lines[-1].removeprefix("Create an app with: ").split(" apps create")[0]
        # Runnable from the user's shell as printed: on PATH, or a path to it.
        runnable = shutil.which(hint, path=env["PATH"]) or (tmp_path / hint)
        assert Path(runnable).is_file() and os.access(runnable, os.X_OK), hint
        await started(proc, lines, int(workers))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0


async def test_a_busy_port_is_one_line(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await run(
            *cli("serve", "--port", str(port)),
            env=serve_env(tmp_path, database_url),
            cwd=tmp_path,
        )
    assert code == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"apinalytics: cannot listen on 127.0.0.1:{port}: the port is in use")
    assert "listening" not in err


@pytest.fixture
async def project() -> AsyncIterator[Path]:
    """A project directory for an embedded cluster; not under tmp_path, whose parents
    the postgres OS user (the cluster's, when run as root) may not enter."""
    root = Path(tempfile.mkdtemp(prefix="apinalytics-firstrun-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        # Whatever the test reached, the cluster does not outlive it.
        await run(*cli("db", "stop"), env=serve_env(root, None), cwd=root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_ctrl_c_says_the_embedded_cluster_runs_on_and_db_stop_says_what_it_did(
    project: Path, workers: str
) -> None:
    env = serve_env(project, None)
    proc = await asyncio.create_subprocess_exec(
        *cli("serve", "--port", str(free_port()), "--workers", workers),
        env=env,
        cwd=project,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines = await read_banner(proc)
        await started(proc, lines, int(workers))
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    said = [line for line in err.decode().splitlines() if "keeps running" in line]
    assert len(said) == 1, said
    assert said[0].startswith("The embedded TimescaleDB keeps running")
    assert said[0].endswith(" db stop")

    code, out, _ = await run(*cli("db", "stop"), env=env, cwd=project)
    assert (code, out.strip()) == (0, "stopped")
    code, out, _ = await run(*cli("db", "stop"), env=env, cwd=project)
    assert code == 0
    assert out.startswith("not running")


async def test_apps_list_has_a_header(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    env = serve_env(tmp_path, database_url)
    code, out, err = await run(*cli("apps", "list"), env=env)
    assert code == 0, err
    assert out.splitlines() == ["APP ID\tNAME\tCREATED (UTC)"]
    assert "apps create" in err
    app = await apps.create(db, "listed")
    code, out, err = await run(*cli("apps", "list"), env=env)
    header, row = out.splitlines()
    assert header.split("\t") == ["APP ID", "NAME", "CREATED (UTC)"]
    assert row.split("\t")[:2] == [app.app_id, "listed"]
