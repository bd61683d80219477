from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from .helpers import event, write_headers


async def test_post_one_event(client: TestClient, app_keys: NewApp, db) -> None:
    resp = await client.post("/1/events/", json=[event()], headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 1}
    assert await db.fetchval("SELECT count(*) FROM events") == 1
