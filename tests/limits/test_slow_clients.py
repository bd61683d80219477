"""A client that announces a body and never sends it does not hold its connection
forever: 408 ``body_timeout`` after ``body_timeout_s``, and the connection closed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics.settings import Settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, home=tmp_path / "home", body_timeout_s=0.5)


async def test_a_body_that_never_comes_is_408(client: TestClient, app_keys: NewApp) -> None:
    assert client.port is not None and app_keys.write_key
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(
            b"POST /1/events/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-Auth-User: {app_keys.app_id}\r\nX-Auth-Key: {app_keys.write_key}\r\n".encode()
            + b"Content-Length: 1000000\r\n\r\n[{"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer += await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"408", answer[:300]
    assert json.loads(body)["error"]["code"] == "body_timeout"
