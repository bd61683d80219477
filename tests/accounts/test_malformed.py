"""Malformed requests to the pages get a 4xx, never a 500 (SPEC: bad input never
produces a 500): a session cookie that is not UTF-8, a form body that cannot be
decoded, a NUL in an Application ID of a page's path, a Host header that is no host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from .fake_github import FakeGitHub
from .flow import csrf_token, log_in

Browser = aiohttp.ClientSession


async def raw_request(client: TestClient, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (clients refuse to send such bytes);
    the status and the response's head and start of its body."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 15)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.parametrize("path", [b"/", b"/apps", b"/dashboard/"])
async def test_a_session_cookie_that_is_not_utf8_is_no_session(
    client: TestClient, path: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    head = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nCookie: apinalytics_session=\xff\r\n"
    with caplog.at_level(logging.ERROR):
        status, _ = await raw_request(client, head)
    assert status in (200, 303), status  # the page, or the redirect to log in
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_api_read_with_a_cookie_that_is_not_utf8_is_401(client: TestClient) -> None:
    head = (
        b"GET /1/timeseries/0/60/ HTTP/1.1\r\nHost: x\r\nX-Auth-User: someapp\r\n"
        b"Cookie: apinalytics_session=\xff\r\n"
    )
    status, answer = await raw_request(client, head)
    assert status == 401, answer


FORMS = [
    pytest.param("application/x-www-form-urlencoded", b"csrf_token=\xff", id="not_utf8"),
    pytest.param(
        "application/x-www-form-urlencoded; charset=bogus", b"csrf_token=x", id="unknown_charset"
    ),
    pytest.param("multipart/form-data", b"x", id="multipart_without_boundary"),
    pytest.param("multipart/form-data; boundary=zz", b"garbage", id="multipart_without_parts"),
]


@pytest.mark.parametrize(("ctype", "body"), FORMS)
async def test_an_unreadable_form_is_400(
    new_browser: Callable[[], Browser], github: FakeGitHub, ctype: str, body: bytes
) -> None:
    for logged_in in (False, True):
        browser = new_browser()
        if logged_in:
            await log_in(browser, github, "alice")
            await csrf_token(browser)
        for path in ("/logout", "/apps"):
            if path == "/apps" and not logged_in:
                continue
            resp = await browser.post(
                path, data=body, headers={"Content-Type": ctype}, allow_redirects=False
            )
            assert resp.status == 400, (path, logged_in, resp.status, await resp.text())
            assert "form could not be read" in await resp.text()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/apps/%00"), ("GET", "/apps/%00/delete"), ("GET", "/apps/a%00b")],
)
async def test_a_nul_in_a_pages_app_id_is_404(
    new_browser: Callable[[], Browser], github: FakeGitHub, method: str, path: str
) -> None:
    browser = new_browser()
    await log_in(browser, github, "alice")
    resp = await browser.request(method, path, allow_redirects=False)
    assert resp.status == 404, await resp.text()


@pytest.mark.parametrize("host", [b"x:abc", b"[::1]:99999"])
async def test_a_host_that_is_no_host_is_ignored_on_login(client: TestClient, host: bytes) -> None:
    # The callback URL comes from configuration or the listening socket, never Host.
    status, answer = await raw_request(client, b"GET /login HTTP/1.1\r\nHost: " + host + b"\r\n")
    assert status == 302, answer  # to GitHub, with the callback of the listening socket
    assert host not in answer
