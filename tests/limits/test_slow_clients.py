"""Slow or idle clients do not hold connections for good.

- A body announced and never sent: 408 ``body_timeout`` after ``body_timeout_s``.
- A connection without a whole request head ``header_timeout_s`` after it opened
  (half a head, or nothing): closed.
- Past ``max_connections`` open in the process: a new one gets 503 overloaded.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics.settings import Settings

from ..conftest import MakeSettings


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(body_timeout_s=0.5, header_timeout_s=1.0, max_connections=3)


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /1/events/ HTTP/1.1\r\nHost: x\r\n", b"GET /healthz HT"],
    ids=["nothing", "half_a_head", "half_a_request_line"],
)
async def test_a_connection_without_a_request_is_closed(client: TestClient, sent: bytes) -> None:
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(sent)
        await writer.drain()
        # EOF: the service closed it (it would wait 75 s, the keep-alive timeout, or for
        # ever for the rest of a head).
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_connections_past_the_cap_get_503(client: TestClient) -> None:
    assert client.port is not None
    opened = [await asyncio.open_connection("127.0.0.1", client.port) for _ in range(3)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"503", answer
        assert json.loads(body)["error"]["code"] == "overloaded"
    finally:
        for _, w in opened:
            w.close()


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
