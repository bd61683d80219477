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
    # A crosshair tooltip with the exact values on the chart under the pointer, the
    # crosshair on all three.
    for chart, labels in (
        ("c-requests", ("2xx", "3xx", "4xx", "5xx")),
        ("c-latency", ("p50", "p95", "p99")),
    ):
        box = await page.locator(f"#{chart} .u-over").bounding_box()
        await page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] / 2)
        tips = await page.locator(".tip:visible").all_inner_texts()
        assert len(tips) == 1 and all(k in tips[0] for k in labels), tips
        assert await page.locator(".u-cursor-x:visible").count() == 3
    shots = os.environ.get("APINALYTICS_SCREENSHOTS")
    path = Path(shots) if shots else None
    if path:
        # Hide the app ID (random per test run) from the picture.
        await page.fill("#app", "my-api")
        if width > 600:  # the error rate at the incident, with its tooltip
            box = await page.locator("#c-errors .u-over").bounding_box()
            await page.mouse.move(box["x"] + box["width"] * 0.58, box["y"] + box["height"] / 2)
        else:
            await page.mouse.move(1, 1)
        await page.screenshot(path=str(path / f"dashboard-{name}.png"), full_page=True)
    tab.assert_no_errors()


async def test_the_dashboard_runs_under_a_strict_content_security_policy(
    client: TestClient, app_keys: NewApp, browser: Any
) -> None:
    """No inline script or event handler, no style attribute written as HTML, no eval:
    the page works under a CSP that allows only its own files."""
    await seed(client, app_keys, realistic_events(200, 86400))
    tab = await new_page(browser)
    page = tab.page
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'"
    )

    async def with_csp(route: Any) -> None:
        response = await route.fetch()
        await route.fulfill(
            response=response, headers={**response.headers, "content-security-policy": csp}
        )

    await page.route("**/dashboard/", with_csp)
    await page.add_init_script(
        """window.__violations = [];
        document.addEventListener('securitypolicyviolation',
            (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"""
    )
    await open_dashboard(tab, client, app_keys, app_keys.read_key)
    assert await page.evaluate("() => document.body.dataset.state") == "ready"
    over = await page.locator("#c-requests .u-over").bounding_box()
    await page.mouse.move(over["x"] + over["width"] / 2, over["y"] + 20)
    await page.click("#t-endpoints tbody tr:first-child button.pick")
    await page.wait_for_function("() => document.body.dataset.state === 'ready'")
    assert await page.evaluate("() => window.__violations") == []
    tab.assert_no_errors()
