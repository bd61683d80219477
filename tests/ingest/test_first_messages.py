"""Messages for the slips a first client makes (SPEC "Sending events").

- A timestamp in milliseconds is "in the future", and the message says it looks like
  milliseconds, with the seconds it would be.
- ``null`` for ``consumer_id`` or ``function`` is not a string, and the message says
  that an empty string is how to send none.
"""

from __future__ import annotations

import time

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from ..helpers import assert_error, event, post


async def test_milliseconds_are_named(client: TestClient, app_keys: NewApp) -> None:
    ms = int(time.time() * 1000) - 60_000
    resp = await post(client, app_keys, [event(timestamp=ms)])
    err = await assert_error(resp, 400, "invalid_events", "in the future", "milliseconds")
    assert f"{ms / 1000:.3f}" in str(err["details"])


async def test_a_time_far_in_the_future_is_not_called_milliseconds(
    client: TestClient, app_keys: NewApp
) -> None:
    resp = await post(client, app_keys, [event(timestamp=time.time() + 30 * 86400)])
    err = await assert_error(resp, 400, "invalid_events", "in the future")
    assert "milliseconds" not in str(err["details"])


@pytest.mark.parametrize("field", ["consumer_id", "function"])
async def test_null_where_a_string_may_be_empty(
    client: TestClient, app_keys: NewApp, field: str
) -> None:
    resp = await post(client, app_keys, [event(**{field: None})])
    err = await assert_error(resp, 400, "invalid_events", field, '""', "null")
    assert err["details"][0]["field"] == field


async def test_null_method_gets_no_empty_string_hint(client: TestClient, app_keys: NewApp) -> None:
    resp = await post(client, app_keys, [event(method=None)])
    err = await assert_error(resp, 400, "invalid_events", "method")
    assert '""' not in str(err["details"])
