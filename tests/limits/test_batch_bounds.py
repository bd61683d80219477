"""The 413 for a batch of more than ``max_batch_events`` comes before any element is
validated, whatever the elements are; the problems of an invalid batch are kept up to
``MAX_DETAILS`` and all counted in the message."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics.ingest.decode import MAX_DETAILS
from apinalytics.settings import Settings

from ..conftest import MakeSettings
from ..helpers import assert_error, event, post

LIMIT = 50


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(max_batch_events=LIMIT)


ELEMENTS: list[tuple[str, bytes]] = [
    ("empty_objects", b"{}"),
    ("numbers", b"1"),
    ("arrays", b"[]"),
    ("nulls", b"null"),
    ("unknown_fields", b'{"x":1}'),
    ("valid_events", json.dumps(event()).encode()),
]


@pytest.mark.parametrize("element", [e[1] for e in ELEMENTS], ids=[e[0] for e in ELEMENTS])
async def test_one_element_over_the_limit_is_413_whatever_the_elements(
    client: TestClient, app_keys: NewApp, element: bytes
) -> None:
    body = b"[" + b",".join([element] * (LIMIT + 1)) + b"]"
    await assert_error(await post(client, app_keys, body), 413, "payload_too_large", str(LIMIT))


async def test_a_bad_element_after_the_limit_is_still_413(
    client: TestClient, app_keys: NewApp
) -> None:
    batch = [event()] * LIMIT + [{}]
    body = json.dumps(batch).encode()
    await assert_error(await post(client, app_keys, body), 413, "payload_too_large")


async def test_problems_are_kept_up_to_the_cap_and_all_counted(
    client: TestClient, app_keys: NewApp
) -> None:
    # Seven required fields missing in each of LIMIT events.
    body = b"[" + b",".join([b"{}"] * LIMIT) + b"]"
    err = await assert_error(await post(client, app_keys, body), 400, "invalid_events")
    assert len(err["details"]) == MAX_DETAILS
    assert f"and {7 * LIMIT - 1} more problems" in err["message"], err


async def test_unknown_fields_of_one_event_are_counted_not_all_kept(
    client: TestClient, app_keys: NewApp
) -> None:
    ev = event()
    ev.update({f"f{i}": 0 for i in range(5000)})
    err = await assert_error(
        await post(client, app_keys, json.dumps([ev]).encode()), 400, "invalid_events"
    )
    assert len(err["details"]) == MAX_DETAILS
    assert {"index": 0, "field": "f0", "message": "is not a known field"} in err["details"]
    assert "and 4999 more problems" in err["message"], err


async def test_data_of_too_many_keys_is_one_problem(client: TestClient, app_keys: NewApp) -> None:
    ev = event(data={f"k{i}": i for i in range(5000)})
    err = await assert_error(
        await post(client, app_keys, json.dumps([ev]).encode()), 400, "invalid_events", "5000 keys"
    )
    assert len(err["details"]) == 1, err
