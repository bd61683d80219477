"""Layout and theme: readable at 1400 and 390 pixels without sideways scrolling,
every chart with height, dark by prefers-color-scheme. With APINALYTICS_SCREENSHOTS
set to a directory, the full-page screenshots of docs/img are written there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from .conftest import CHARTS, new_page, open_dashboard, realistic_events, seed

pytestmark = pytest.mark.browser


async def layout(page: Any) -> dict[str, Any]:
    got: dict[str, Any] = await page.evaluate(
        """() => ({
            overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
            wide: [...document.querySelectorAll('body *')].filter((e) => {
                const r = e.getBoundingClientRect();
                return r.width > 0 && r.right > document.documentElement.clientWidth + 1
                    && !e.closest('.table');
            }).map((e) => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5),
            charts: Object.fromEntries([...document.querySelectorAll('.chart')].map((c) => {
                const canvas = c.querySelector('canvas');
                return [c.id, canvas ? canvas.getBoundingClientRect().height : 0];
            })),
            background: getComputedStyle(document.body).backgroundColor,
        })"""
    )
    return got


@pytest.mark.parametrize(
    ("name", "width", "scheme"),
    [("desktop", 1400, "light"), ("dark", 1400, "dark"), ("phone", 390, "light")],
)
async def test_the_dashboard_fits_and_follows_the_colour_scheme(
    client: TestClient, app_keys: NewApp, browser: Any, name: str, width: int, scheme: str
) -> None:
    await seed(client, app_keys, realistic_events(3000, 86400))
    tab = await new_page(
        browser,
        viewport={"width": width, "height": 900},
        color_scheme=scheme,
        device_scale_factor=1,
    )
    await open_dashboard(tab, client, app_keys, app_keys.read_key)
    page = tab.page
    got = await layout(page)
    assert got["overflow"] <= 0 and got["wide"] == [], got
    for chart in CHARTS:
        assert got["charts"][chart] >= 120, got
    # The body's background: near white in light, near black in dark.
    rgb = [int(x) for x in got["background"][got["background"].index("(") + 1 : -1].split(",")[:3]]
    assert (sum(rgb) < 150) == (scheme == "dark"), got["background"]
    # A crosshair tooltip with the exact values, on every chart at once.
    over = page.locator("#c-requests .u-over")
    box = await over.bounding_box()
    await page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] / 2)
    tips = await page.locator(".tip:visible").all_inner_texts()
    assert len(tips) == 3, tips
    assert all(k in tips[0] for k in ("2xx", "3xx", "4xx", "5xx")), tips
    assert all(k in tips[1] for k in ("p50", "p95", "p99")), tips
    shots = os.environ.get("APINALYTICS_SCREENSHOTS")
    path = Path(shots) if shots else None
    if path:
        # Hide the app ID (random per test run) from the picture.
        await page.fill("#app", "my-api")
        await page.screenshot(path=str(path / f"dashboard-{name}.png"), full_page=True)
    tab.assert_no_errors()
