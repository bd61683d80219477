"""The client across the service's outages, counted through the query API:

- the service (a real ``apinalytics serve`` process) stopped, events recorded
  meanwhile, the service started again on the same port: every event within the
  queue is stored, none twice;
- an answer lost after the service committed the batch (a proxy that forwards the
  request and drops the first answer): the retry carries the same Idempotency-Key, and
  the batch is stored once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from apinalytics import apps
from apinalytics.apps import NewApp
from apinalytics.localdb import free_port
from apinalytics_client import Sender

from ..helpers import read_headers, start_serve, wait_until_ready


class Service:
    """``apinalytics serve`` on a fixed port, which can be stopped and started again."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.env = {
            **os.environ,
            "APINALYTICS_DATABASE_URL": database_url,
            "APINALYTICS_HOME": str(tmp_path / "home"),
        }
        self.cwd = tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as stderr:
            self.proc = await start_serve(
                self.env, self.cwd, self.port, "--no-migrate", stderr=stderr
            )
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, self.base, self.proc)

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), 35)

    async def count(self, app: NewApp) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.base}/1/timeseries/0/4000000000/", headers=read_headers(app)) as resp,
        ):
            assert resp.status == 200, await resp.text()
            groups = (await resp.json())["groups"]
            return sum(pairs[0][1] for pairs in groups.values() if pairs)


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    s = Service(database_url, tmp_path)
    await s.start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.returncode is None:
            s.proc.kill()
            await s.proc.wait()


def record(sender: Sender, n: int) -> None:
    for i in range(n):
        assert sender.record(method="GET", url=f"/x/{i}", status_code=200, response_us=i)


async def test_service_stopped_then_restarted_loses_nothing_and_stores_nothing_twice(
    service: Service, db: asyncpg.Connection
) -> None:
    app = await apps.create(db, "restart")
    assert app.write_key
    sender = Sender(
        app.app_id,
        app.write_key,
        service.base,
        batch_size=25,
        max_age_s=0.05,
        backoff_base_s=0.05,
        backoff_max_s=0.5,
        flush_at_exit=False,
    )
    record(sender, 60)
    assert await asyncio.to_thread(sender.flush, 15)
    await service.stop()

    record(sender, 140)  # within the queue (10,000): kept while the service is away
    await asyncio.sleep(1.5)
    assert sender.stats.retries > 0 and sender.stats.sent == 60

    await service.start()
    assert await asyncio.to_thread(sender.close, 30)
    s = sender.stats
    assert (s.sent, s.dropped, s.failed_batches) == (200, 0, 0)
    assert await service.count(app) == 200


async def test_an_answer_lost_after_commit_is_retried_with_its_key_and_stored_once(
    service: Service, db: asyncpg.Connection
) -> None:
    app = await apps.create(db, "lost-answer")
    assert app.write_key
    upstream = ("127.0.0.1", service.port)
    dropped: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection, forwarded; the first answer is read and dropped."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            up_reader, up_writer = await asyncio.open_connection(*upstream)
            up_writer.write(head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1) + body)
            answer = await up_reader.read()
            up_writer.close()
            if not dropped:
                dropped.append(answer)  # the service stored the batch; the client never hears
            else:
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sender = Sender(
            app.app_id,
            app.write_key,
            f"http://127.0.0.1:{port}",
            max_age_s=0.05,
            backoff_base_s=0.05,
            flush_at_exit=False,
        )
        record(sender, 30)
        assert await asyncio.to_thread(sender.close, 15)
    finally:
        server.close()
        await server.wait_closed()
    assert dropped and dropped[0].startswith(b"HTTP/1.1 200")
    assert sender.stats.sent == 30 and sender.stats.retries == 1
    assert await service.count(app) == 30
