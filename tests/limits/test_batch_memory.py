"""An invalid batch costs memory and time in proportion to its size, never to the
number of problems it holds (issue: 100,000 empty objects, a 300 KB body, grew the
process by about 741 MB before its 400).

- More events than ``max_batch_events`` is a 413, whatever the elements are: counted
  before any element is validated.
- At most ``MAX_DETAILS`` problems are kept; the message counts them all.
- Measured from outside, through the served process's peak RSS.
"""

from __future__ import annotations

import io
import json

import aiohttp
import asyncpg

from apinalytics import apps
from apinalytics.ingest.decode import MAX_DETAILS
from apinalytics.settings import Settings

from ..helpers import assert_error, event, write_headers
from .conftest import ServeFactory

DEFAULTS = Settings()
# Growth of the process's peak RSS allowed for all the bodies below together (about
# 55 MB measured, the count of a million elements). Before errors were bounded, the
# first body alone grew it by about 800 MB; validating a million {} into dicts before
# counting them, by about 115 MB.
ALLOWED_GROWTH_MB = 80


def empty_objects(n: int) -> bytes:
    return b"[" + b",".join([b"{}"] * n) + b"]"


def one_event_with_unknown_fields(n: int) -> bytes:
    fields = b",".join(b'"f%d":0' % i for i in range(n))
    return b'[{"timestamp":1,' + fields + b"}]"


def data_with_numbers(n: int) -> bytes:
    ev = event()
    ev["data"] = {f"k{i}": i for i in range(n)}
    return json.dumps([ev]).encode()


async def test_hopeless_batches_leave_memory_flat(
    serve: ServeFactory, db: asyncpg.Connection
) -> None:
    keys = await apps.create(db, "bombs")
    served = await serve()
    bodies: list[tuple[str, bytes, int, str]] = [
        ("100,000 empty objects", empty_objects(100_000), 413, "payload_too_large"),
        # Valid to pydantic (a missing field is decode's to find): counted before.
        ("1,000,000 empty objects", empty_objects(1_000_000), 413, "payload_too_large"),
        (
            "max_batch_events empty objects",
            empty_objects(DEFAULTS.max_batch_events),
            400,
            "invalid_events",
        ),
        (
            "one event, 200,000 unknown fields",
            one_event_with_unknown_fields(200_000),
            400,
            "invalid_events",
        ),
        ("data of 200,000 numbers", data_with_numbers(200_000), 400, "invalid_events"),
    ]
    headers = {**write_headers(keys), "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        # One valid batch first: what a first request loads is not counted.
        async with http.post(f"{served.base}/1/events/", json=[event()], headers=headers) as r:
            assert r.status == 200, await r.text()
        before = served.peak_rss_mb()
        for what, body, status, code in bodies:
            async with http.post(
                f"{served.base}/1/events/", data=io.BytesIO(body), headers=headers
            ) as r:
                grown = served.peak_rss_mb() - before
                assert grown < ALLOWED_GROWTH_MB, f"after {what}: {grown:.0f} MB"
                err = await assert_error(r, status, code)
                if status == 400:
                    assert len(err["details"]) <= MAX_DETAILS, what
