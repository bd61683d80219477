"""The OAuth callback URL (and the curl examples) come from APINALYTICS_PUBLIC_URL or
the address the service listens on, never from the Host header a client writes."""

from __future__ import annotations

from aiohttp.test_utils import TestClient


async def test_the_host_header_does_not_make_the_callback_url(client: TestClient) -> None:
    resp = await client.get("/login", headers={"Host": "evil.example"})
    assert resp.status == 200, await resp.text()
    page = await resp.text()
    assert "evil.example" not in page
    assert f"http://127.0.0.1:{client.port}/login/callback" in page
