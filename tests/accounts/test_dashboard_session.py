"""The dashboard served at /dashboard/ to a logged-in owner reads the owner's app with
the session alone: the Application ID in the URL, no key typed, none stored."""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from ..dashboard.conftest import CHROMIUM, launch
from ..helpers import event
from .fake_github import FakeGitHub
from .flow import add_app, log_in

pytestmark = pytest.mark.browser


async def test_a_logged_in_owner_sees_the_dashboard_without_a_key(
    new_browser: Callable[[], aiohttp.ClientSession], github: FakeGitHub, client: TestClient
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium package is not installed (/usr/bin/chromium missing)")
    from playwright.async_api import async_playwright

    owner = new_browser()
    await log_in(owner, github, "alice")
    keys = await add_app(owner, "dashboarded")
    now = time.time()
    resp = await client.post(
        "/1/events/",
        json=[event(timestamp=now - 100 * i) for i in range(7)],
        headers={"X-Auth-User": keys["app-id"], "X-Auth-Key": keys["write-key"]},
    )
    assert resp.status == 200
    url = client.make_url("/dashboard/")
    cookies = [
        {"name": c.key, "value": c.value, "url": str(client.make_url("/"))}
        for c in owner.cookie_jar
    ]
    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            context = await browser.new_context()
            await context.add_cookies(cookies)
            page = await context.new_page()
            await page.goto(str(url.with_query(app=keys["app-id"], range="3600")))
            await page.wait_for_function(
                "() => !['loading', 'idle'].includes(document.body.dataset.state)", timeout=20_000
            )
            assert await page.evaluate("() => document.body.dataset.state") == "ready"
            assert await page.get_attribute("#h-requests", "data-value") == "7"
            assert await page.is_hidden("#served")  # served: no service URL to ask for
            stored = await page.evaluate("() => Object.keys(localStorage)")
            assert "apinalytics.key" not in stored
        finally:
            await browser.close()
