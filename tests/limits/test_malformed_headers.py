"""A key never reaches a log line or an error body, even in a header aiohttp cannot
parse; aiohttp's own 400s are JSON errors like every other.

Each shape below once answered a plain-text 400 that echoed the header, and logged it.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp.test_utils import TestClient

KEY = b"wk_SECRETKEY0123456789"

SHAPES: list[tuple[str, bytes]] = [
    ("control_character", b"X-Auth-Key: " + KEY + b"\x01z\r\n"),
    ("nul", b"X-Auth-Key: " + KEY + b"\x00\r\n"),
    ("delete_character", b"X-Auth-Key: " + KEY + b"\x7f\r\n"),
    ("bare_carriage_return", b"X-Auth-Key: " + KEY + b"\rz\r\n"),
    ("no_colon", b"X-Auth-Key" + KEY + b"\r\n"),
    ("space_in_name", b"X-Auth Key: " + KEY + b"\r\n"),
    ("folded_line", b"X-Auth-Key: a\r\n " + KEY + b"\r\n"),
    ("value_over_the_line_limit", b"X-Auth-Key: " + KEY + b"a" * 9000 + b"\r\n"),
    ("name_over_the_line_limit", KEY + b"a" * 9000 + b": v\r\n"),
    ("in_the_request_line", b""),
]


async def raw(client: TestClient, head: bytes) -> bytes:
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()


@pytest.mark.parametrize("header", [s[1] for s in SHAPES], ids=[s[0] for s in SHAPES])
async def test_a_malformed_key_header_is_a_json_400_and_never_logged(
    client: TestClient, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    target = b"/1/events/?" + KEY + b"\x01" if not header else b"/1/events/"
    head = b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nX-Auth-User: app\r\n" + header + b"\r\n"
    with caplog.at_level(logging.DEBUG):
        answer = await raw(client, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split(b" ")[1] == b"400", answer[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"application/json" in headers.lower(), answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "malformed_request" and error["message"], error
    assert KEY not in answer
    for record in caplog.records:
        line = json.dumps(vars(record), default=str)
        assert KEY.decode() not in line, line[:300]
        assert KEY.decode() not in record.getMessage()
