"""Steps a browser takes through the service and the fake GitHub."""

from __future__ import annotations

import re

import aiohttp
from yarl import URL

from .fake_github import FakeGitHub

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def start_login(browser: aiohttp.ClientSession) -> URL:
    """GET /login; returns where the service sends the browser (GitHub's authorize URL)."""
    resp = await browser.get("/login", allow_redirects=False)
    assert resp.status == 302, await resp.text()
    return URL(resp.headers["Location"])


async def authorize(browser: aiohttp.ClientSession, authorize_url: URL) -> URL:
    """The user approves on GitHub; returns the callback URL GitHub sends them back to."""
    resp = await browser.get(authorize_url, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    return URL(resp.headers["Location"])


async def log_in(browser: aiohttp.ClientSession, github: FakeGitHub, login: str) -> None:
    github.login_as = login
    back = await authorize(browser, await start_login(browser))
    resp = await browser.get(back.path_qs, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/apps"


async def csrf_token(browser: aiohttp.ClientSession, path: str = "/apps") -> str:
    resp = await browser.get(path)
    assert resp.status == 200, await resp.text()
    m = _CSRF.search(await resp.text())
    assert m, "no CSRF token on the page"
    return m[1]


_KEY = re.compile(r'<code id="(app-id|write-key|read-key)">([^<]+)</code>')


def shown_keys(html: str) -> dict[str, str]:
    """The Application ID and keys a keys page shows, by element id."""
    return dict(_KEY.findall(html))


async def add_app(browser: aiohttp.ClientSession, name: str) -> dict[str, str]:
    token = await csrf_token(browser)
    resp = await browser.post("/apps", data={"name": name, "csrf_token": token})
    assert resp.status == 200, await resp.text()
    return shown_keys(await resp.text())
