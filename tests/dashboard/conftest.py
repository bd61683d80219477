"""Fixtures of the dashboard's browser tests: Debian's Chromium driven by Playwright,
against the real service of tests/conftest.py, and a seeded app."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from ..helpers import event, post_accepted

CHROMIUM = Path("/usr/bin/chromium")
CHARTS = ("c-requests", "c-latency", "c-errors")
TABLES = ("t-endpoints", "t-consumers", "t-status")
CARDS = ("requests", "errorRate", "p50", "p95", "p99", "consumers")


@dataclass
class Browser:
    """A page, and every error its scripts or console reported."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def assert_no_errors(self) -> None:
        assert not self.errors, self.errors


async def launch(pw: Any) -> Any:
    return await pw.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ],
    )


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium package is not installed (/usr/bin/chromium missing); "
            "scripts/install-system installs it"
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await launch(pw)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Any, **context: Any) -> Browser:
    ctx = await browser.new_context(**({"viewport": {"width": 1400, "height": 900}} | context))
    page = await ctx.new_page()
    out = Browser(page)
    page.on("pageerror", lambda e: out.errors.append(f"pageerror: {e}"))

    def console(msg: Any) -> None:
        # A refused request (401, 410) is logged by Chromium itself; scripts log nothing.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            out.errors.append(f"console: {msg.text}")

    page.on("console", console)
    return out


@pytest.fixture
async def tab(browser: Any) -> Browser:
    return await new_page(browser)


async def open_dashboard(
    tab: Browser, client: TestClient, app: NewApp, key: str | None, range_: str = "86400"
) -> None:
    """Open /dashboard/ as a new visitor would: type the app ID and key, pick a range."""
    page = tab.page
    await page.goto(str(client.make_url("/dashboard/")))
    await page.fill("#app", app.app_id)
    await page.fill("#key", key or "")
    await page.select_option("#range", range_)  # submits the form
    await wait_loaded(tab)


async def wait_loaded(tab: Browser) -> str:
    """Waits until a load has finished; returns the page's state."""
    page = tab.page
    await page.wait_for_function(
        "() => !['loading', 'idle'].includes(document.body.dataset.state)", timeout=20_000
    )
    state: str = await page.evaluate("() => document.body.dataset.state")
    return state


FUNCTIONS = [
    ("list_orders", "GET", 0.30, 18_000),
    ("get_order", "GET", 0.25, 6_000),
    ("create_order", "POST", 0.12, 45_000),
    ("update_order_status_with_a_rather_long_function_name", "PUT", 0.05, 30_000),
    ("search_catalogue", "GET", 0.10, 120_000),
    ("login", "POST", 0.06, 90_000),
    ("get_user", "GET", 0.04, 4_000),
    ("list_invoices", "GET", 0.03, 25_000),
    ("download_invoice_pdf", "GET", 0.02, 400_000),
    ("webhook_stripe", "POST", 0.01, 12_000),
    ("health", "GET", 0.01, 300),
    ("delete_order", "DELETE", 0.005, 20_000),
    ("", "GET", 0.005, 1_000),
]
CONSUMERS = [
    "acme-corp",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark-industries",
    "wayne-enterprises",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "massive-dynamic",
    "",
]


def realistic_events(n: int, span: int, seed: int = 7) -> list[dict[str, Any]]:
    """`n` events over the last `span` seconds: skewed functions and consumers, a
    latency spread per function, 4xx and a short 5xx incident."""
    rng = random.Random(seed)
    now = time.time()
    weights = [w for _, _, w, _ in FUNCTIONS]
    cweights = [1 / (i + 1) for i in range(len(CONSUMERS))]
    out = []
    for _ in range(n):
        fn, method, _, median = rng.choices(FUNCTIONS, weights)[0]
        ts = now - 120 - rng.random() * (span - 240)
        incident = 0.40 < (now - ts) / span < 0.43
        r = rng.random()
        if incident and r < 0.35:
            status = rng.choice([500, 502, 503])
        elif r < 0.006:
            status = 500
        elif r < 0.05:
            status = rng.choice([400, 401, 404, 404, 409, 422, 429])
        elif r < 0.06:
            status = rng.choice([301, 304])
        else:
            status = 201 if method == "POST" else 204 if method == "DELETE" else 200
        out.append(
            event(
                timestamp=ts,
                consumer_id=rng.choices(CONSUMERS, cweights)[0],
                method=method,
                url=f"/v1/{fn or 'misc'}",
                function=fn,
                response_us=max(
                    80, int(rng.lognormvariate(0, 0.6) * median * (3 if incident else 1))
                ),
                status_code=status,
            )
        )
    return out


async def seed(client: TestClient, app: NewApp, events: list[dict[str, Any]]) -> None:
    await post_accepted(client, app, events)
