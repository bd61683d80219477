"""A served process (``python -m apinalytics serve``) for the tests that measure it from
outside: its memory (RSS in /proc) and what it logs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from apinalytics.localdb import free_port

from ..helpers import start_serve, wait_until_ready


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base: str
    log: Path

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.log_text().splitlines() if x.startswith("{")]


ServeFactory = Callable[..., Any]


@pytest.fixture
async def serve(database_url: str, tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """Start the service with extra ``APINALYTICS_*`` settings; stopped at the end."""
    started: list[asyncio.subprocess.Process] = []

    async def start(**settings: str) -> Served:
        env = {
            **os.environ,
            "APINALYTICS_DATABASE_URL": database_url,
            "APINALYTICS_HOME": str(tmp_path / "home"),
            **{f"APINALYTICS_{k.upper()}": v for k, v in settings.items()},
        }
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        with log.open("wb") as stderr:
            proc = await start_serve(env, tmp_path, port, "--no-migrate", stderr=stderr)
        started.append(proc)
        served = Served(proc, f"http://127.0.0.1:{port}", log)
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, served.base, proc)
        return served

    try:
        yield start
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
