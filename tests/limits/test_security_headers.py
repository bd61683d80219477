"""HTML pages and the dashboard carry a strict Content-Security-Policy (scripts only
from the service itself, no inline script, no framing), X-Content-Type-Options,
X-Frame-Options and Referrer-Policy; no page holds an inline script."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.dashboard import DASHBOARD_DIR


@pytest.mark.parametrize("path", ["/", "/login", "/dashboard/", "/apps/x"])
async def test_pages_carry_security_headers(client: TestClient, path: str) -> None:
    resp = await client.get(path, allow_redirects=False)
    assert resp.status < 500
    csp = resp.headers.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == ["'self'"], csp
    assert directives.get("frame-ancestors") == ["'none'"], csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    assert resp.headers.get("X-Frame-Options") == "DENY"
    assert resp.headers.get("Referrer-Policy") == "no-referrer"


async def test_no_page_holds_an_inline_script(client: TestClient) -> None:
    texts = [await (await client.get(p)).text() for p in ("/", "/login", "/dashboard/")]
    texts.append((DASHBOARD_DIR / "index.html").read_text())
    for text in texts:
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, tag
        assert not re.search(r"\son[a-z]+\s*=", text)
