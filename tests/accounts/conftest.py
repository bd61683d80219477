"""Accounts fixtures: the fake GitHub on localhost, settings pointing at it, browsers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from apinalytics.settings import Settings

from ..conftest import MakeSettings
from .fake_github import CLIENT_ID, CLIENT_SECRET, FakeGitHub

Browser = aiohttp.ClientSession


@pytest.fixture
async def github(aiohttp_server: Callable[..., Awaitable[Any]]) -> FakeGitHub:
    fake = FakeGitHub()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def settings(make_settings: MakeSettings, github: FakeGitHub) -> Settings:
    return make_settings(
        github_client_id=CLIENT_ID,
        github_client_secret=CLIENT_SECRET,
        github_authorize_url=github.authorize_url,
        github_token_url=github.token_url,
        github_api_url=github.api_url,
    )


@pytest.fixture
async def new_browser(client: TestClient) -> AsyncIterator[Callable[[], Browser]]:
    """Independent browsers (each its own cookie jar) on the service under test."""
    opened: list[Browser] = []

    def make() -> Browser:
        browser = aiohttp.ClientSession(
            base_url=client.make_url("/"),
            # The test server listens on an IP address; accept its cookies.
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )
        opened.append(browser)
        return browser

    yield make
    for browser in opened:
        await browser.close()
