"""Fixtures: real TimescaleDB servers (see tests/dbs.py), a fresh database per test,
the real aiohttp application behind a real HTTP test server, and an app with keys.

Tests that should hold in every rollup mode take the ``mode`` fixture through
``@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)`` (or ``all_modes``
below); every other test runs in the Apache mode, which is always available.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import settings as hypothesis_settings

from apinalytics import apps
from apinalytics.app import create_app
from apinalytics.settings import Settings

from .dbs import MODES, Servers

ALL_MODES = MODES

# CI replays the same generated examples on every run, so a red run is reproducible
# (HYPOTHESIS_PROFILE=ci locally); developers' runs keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    s = Servers().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(params=["apache"])
def mode(request: pytest.FixtureRequest, servers: Servers) -> str:
    wanted: str = request.param
    if wanted not in servers.servers:
        pytest.skip(servers.missing.get(wanted, f"no server in {wanted} mode"))
    return wanted


@pytest.fixture
def database_url(servers: Servers, mode: str) -> Iterator[str]:
    """A fresh, migrated database of its own for this test."""
    server = servers.servers[mode]
    name = server.new_database()
    try:
        yield server.dsn(name)
    finally:
        server.drop_database(name)


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> MakeSettings:
    """Settings for this test's database and home; keyword arguments set other fields
    (``make_settings(max_buckets=1000)``), validated as the environment's would be."""

    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = {
            "database_url": database_url,
            "home": tmp_path / "home",
            "log_json": True,
            "db_connect_timeout_s": 2.0,
        }
        return Settings(**(fields | overrides))

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., object],
) -> Callable[[Settings], object]:
    async def make(settings: Settings) -> TestClient:
        client: TestClient = await aiohttp_client(create_app(settings, run_migrations=False))  # type: ignore[operator]
        return client

    return make


@pytest.fixture
async def client(make_client: Callable[[Settings], object], settings: Settings) -> TestClient:
    c: TestClient = await make_client(settings)  # type: ignore[misc]
    return c


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, for arranging and inspecting rows."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def app_keys(db: asyncpg.Connection) -> apps.NewApp:
    return await apps.create(db, "test-app")


def pytest_report_header(config: pytest.Config) -> str:
    url = os.environ.get("APINALYTICS_TEST_DATABASE_URL")
    return f"test database: {url or 'testcontainers if Docker answers, else local clusters'}"
