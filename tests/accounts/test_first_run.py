"""Pages a new user reaches by hand: ``/apps/`` (a typed trailing slash) is the
applications page, not a JSON 404."""

from __future__ import annotations

from aiohttp.test_utils import TestClient


async def test_apps_with_a_slash_leads_to_the_applications(client: TestClient) -> None:
    resp = await client.get("/apps/", allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == "/apps"
