"""SPEC "Clients": keys sent as padded base64 by clients of the 2014 service.

Its dashboard appends ``=`` to a key until the key's length is a multiple of four
(apinalytics.js); other clients may add base64's padding (one or two ``=``) or strip
it. A key is accepted with up to two ``=`` appended, for ingest and queries, and keeps
working as issued; anything else appended is a wrong key (401). docs/compatibility.md.
"""

from __future__ import annotations

import time

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import apps
from apinalytics.apps import NewApp

from ..helpers import assert_error, event

NOW = int(time.time())
INGEST = "/1/events/"
QUERY = f"/1/timeseries/{NOW - 3600}/{NOW + 60}/"


def dashboard_2014_padding(key: str) -> str:
    """What the 2014 dashboard sends for ``key``: "=" appended up to a multiple of 4."""
    return key + "=" * (-len(key) % 4)


ACCEPTED = [
    pytest.param(lambda k: k, id="as_issued"),
    pytest.param(lambda k: k + "=", id="one_equals"),
    pytest.param(lambda k: k + "==", id="two_equals"),
    pytest.param(dashboard_2014_padding, id="dashboard_2014_padding"),
]

REFUSED = [
    pytest.param(lambda k: k + "===", id="three_equals"),
    pytest.param(lambda k: k + "x", id="letter"),
    pytest.param(lambda k: k + "=x", id="equals_then_letter"),
    pytest.param(lambda k: k + "%3D", id="percent_encoded_equals"),
    pytest.param(lambda k: k + "=\t=", id="equals_around_a_tab"),
    pytest.param(lambda k: "=" + k, id="equals_in_front"),
    pytest.param(lambda k: k[:-1] + "=", id="last_character_replaced_by_equals"),
    pytest.param(lambda k: k[:-1], id="one_character_short"),
]


@pytest.mark.parametrize("form", ACCEPTED)
async def test_padded_keys_work_for_ingest_and_queries(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, form: object
) -> None:
    assert app_keys.write_key and app_keys.read_key
    assert callable(form)
    write = {"X-Auth-User": app_keys.app_id, "X-Auth-Key": form(app_keys.write_key)}
    read = {"X-Auth-User": app_keys.app_id, "X-Auth-Key": form(app_keys.read_key)}
    resp = await client.post(INGEST, json=[event(timestamp=NOW - 60)], headers=write)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 1}
    resp = await client.get(QUERY, headers=read)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["groups"] == {app_keys.app_id: [[NOW - 3600, 1]]}
    # The kinds stay apart, padded or not.
    resp = await client.post(INGEST, json=[event()], headers=read)
    await assert_error(resp, 403, "forbidden")
    resp = await client.get(QUERY, headers=write)
    await assert_error(resp, 403, "forbidden")
    assert await db.fetchval("SELECT count(*) FROM events") == 1


@pytest.mark.parametrize("form", REFUSED)
async def test_other_characters_appended_are_a_wrong_key(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, form: object
) -> None:
    assert app_keys.write_key and app_keys.read_key
    assert callable(form)
    write = {"X-Auth-User": app_keys.app_id, "X-Auth-Key": form(app_keys.write_key)}
    read = {"X-Auth-User": app_keys.app_id, "X-Auth-Key": form(app_keys.read_key)}
    resp = await client.post(INGEST, json=[event()], headers=write)
    err = await assert_error(resp, 401, "unauthorized")
    assert write["X-Auth-Key"] not in err["message"]
    resp = await client.get(QUERY, headers=read)
    await assert_error(resp, 401, "unauthorized")
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_the_2014_dashboard_pads_issued_keys(app_keys: NewApp) -> None:
    """Issued keys are 47 characters: the 2014 dashboard appends one "=" to them, so the
    padding is not hypothetical."""
    for key in (app_keys.write_key, app_keys.read_key):
        assert key is not None
        assert "=" not in key
        assert dashboard_2014_padding(key) == key + "="


def test_unpadded() -> None:
    assert apps.unpadded("abc") == "abc"
    assert apps.unpadded("abc=") == "abc"
    assert apps.unpadded("abc==") == "abc"
    assert apps.unpadded("abc===") == "abc==="
    assert apps.unpadded("a=b") == "a=b"
    assert apps.unpadded("") == ""
    assert apps.unpadded("==") == ""
