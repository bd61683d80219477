"""SPEC "Sending events": what ``POST /1/events/`` stores, and when it answers 200.

- Success is 200 with ``{"accepted": N}``, sent after the batch is committed; a batch
  is stored whole or not at all; an empty array is a valid batch (``{"accepted": 0}``).
- Fields are stored as sent, except ``method`` (upper-case) and ``timestamp`` (kept to
  the microsecond, UTC).
- The trailing slash is optional and ``/1/event/`` is an alias.
- ``Idempotency-Key``: a retry with the same key and the same body (compared after
  gunzip) for the same app within 24 h is answered 200 with the original count and
  stores nothing twice; the same key with another body is a 422
  ``idempotency_key_reused`` that stores nothing and never quotes the key (a key
  claimed before bodies were compared answers any body, as it did); another app's key
  of the same text is its own; concurrent retries store once, and of concurrent
  requests with one key and different bodies one is stored, the others refused.
- ``/metrics`` counts events accepted: only events newly stored, not replays.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from apinalytics import apps
from apinalytics.apps import NewApp
from apinalytics.settings import Settings

from ..helpers import assert_error, event, exact_us, wait_for_lock_waiter, write_headers


async def count(db: asyncpg.Connection) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM events")
    return n


async def accepted_metric(client: TestClient) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        if family.name == "apinalytics_events_accepted":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("apinalytics_events_accepted not exported")


async def test_event_is_stored_as_sent(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    ts = int(time.time()) - 100 + 0.123456
    sent = event(
        timestamp=ts,
        consumer_id="acme",
        method="patch",
        url="/v2/orders/17?expand=lines&x=%20",
        function="update_order",
        response_us=123_456_789,
        status_code=418,
        data={"plan": "gold", "region": "eu"},
    )
    resp = await client.post("/1/events/", json=[sent], headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 1}
    row = await db.fetchrow("SELECT * FROM events")
    assert row is not None
    internal = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app_keys.app_id)
    assert dict(row) == {
        "time": datetime.fromtimestamp(int(ts), UTC).replace(microsecond=123456),
        "app_id": internal,
        "consumer_id": "acme",
        "method": "PATCH",
        "url": "/v2/orders/17?expand=lines&x=%20",
        "function": "update_order",
        "response_us": 123_456_789,
        "status_code": 418,
        "data": json.dumps({"plan": "gold", "region": "eu"}),
    }


async def test_timestamps_are_kept_to_the_nearest_microsecond(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    # Fractional timestamps with more digits than a microsecond, near now: those where
    # scaling the float by 10^6 rounds to the wrong microsecond (1795646414.6548934 ->
    # .654894) are the cases that matter; a few ordinary ones come along.
    base = int(time.time()) - 100
    tricky = [
        t
        for i in range(20_000)
        if round((t := base + i * 0.0000123 + 0.65489341) * 1_000_000) != exact_us(t)
    ][:20]
    assert tricky, "no timestamp here is one that float scaling rounds wrongly"
    sent = [*tricky, base + 0.5, base + 0.0000005, base + 0.9999996]
    resp = await client.post(
        "/1/events/", json=[event(timestamp=t) for t in sent], headers=write_headers(app_keys)
    )
    assert resp.status == 200, await resp.text()
    stored = await db.fetch(
        "SELECT (extract(epoch FROM time) * 1000000)::bigint AS us FROM events ORDER BY time"
    )
    assert [r["us"] for r in stored] == sorted(exact_us(t) for t in sent)


METHODS = [
    ("lower", "get", "GET"),
    ("mixed", "Delete", "DELETE"),
    ("extension", "m-search", "M-SEARCH"),
]


@pytest.mark.parametrize(("sent", "stored"), [m[1:] for m in METHODS], ids=[m[0] for m in METHODS])
async def test_method_is_stored_upper_case(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, sent: str, stored: str
) -> None:
    resp = await client.post(
        "/1/events/", json=[event(method=sent)], headers=write_headers(app_keys)
    )
    assert resp.status == 200, await resp.text()
    assert await db.fetchval("SELECT method FROM events") == stored


async def test_empty_batch(client: TestClient, app_keys: NewApp, db: asyncpg.Connection) -> None:
    resp = await client.post("/1/events/", json=[], headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 0}
    assert await count(db) == 0


async def test_a_batch_is_stored_whole(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    batch = [event(consumer_id=f"c{i}") for i in range(250)]
    resp = await client.post("/1/events/", json=batch, headers=write_headers(app_keys))
    assert await resp.json() == {"accepted": 250}
    assert await count(db) == 250
    consumers = await db.fetchval("SELECT count(DISTINCT consumer_id) FROM events")
    assert consumers == 250


async def test_one_bad_event_stores_nothing(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    batch = [event() for _ in range(10)]
    batch[9]["status_code"] = 600
    resp = await client.post("/1/events/", json=batch, headers=write_headers(app_keys))
    await assert_error(resp, 400, "invalid_events", "status_code")
    assert await count(db) == 0


PATHS = ["/1/events/", "/1/events", "/1/event/", "/1/event"]


@pytest.mark.parametrize("path", PATHS, ids=["events_slash", "events", "event_slash", "event"])
async def test_paths(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, path: str
) -> None:
    resp = await client.post(path, json=[event()], headers=write_headers(app_keys))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 1}
    assert await count(db) == 1


# -- Idempotency-Key ---------------------------------------------------------------------


async def post_with_key(
    client: TestClient, app: NewApp, batch: list[dict[str, Any]], key: str
) -> Any:
    headers = {**write_headers(app), "Idempotency-Key": key}
    return await client.post("/1/events/", json=batch, headers=headers)


async def test_retry_with_same_key_stores_once(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    batch = [event(), event()]
    first = await post_with_key(client, app_keys, batch, "batch-1")
    assert await first.json() == {"accepted": 2}
    before = await accepted_metric(client)
    retry = await post_with_key(client, app_keys, batch, "batch-1")
    assert retry.status == 200
    assert await retry.json() == {"accepted": 2}
    assert await count(db) == 2
    assert await accepted_metric(client) == before, "a replay counted as accepted events"


async def test_same_key_with_another_body_is_422(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    key = "reused-key-7f3a"
    first = await post_with_key(client, app_keys, [event(), event()], key)
    assert await first.json() == {"accepted": 2}
    for other in ([event()], [event(), event()], []):
        resp = await post_with_key(client, app_keys, other, key)
        err = await assert_error(resp, 422, "idempotency_key_reused", "different body")
        assert key not in json.dumps(err) and key not in str(resp.headers)
    assert await count(db) == 2
    keys = await db.fetch("SELECT key, accepted FROM idempotency_keys")
    assert [tuple(k) for k in keys] == [(key, 2)]


async def test_gzip_and_plain_bodies_of_the_same_bytes_are_one_request(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    body = json.dumps([event(), event(), event()]).encode()
    headers = {
        **write_headers(app_keys),
        "Idempotency-Key": "gz",
        "Content-Type": "application/json",
    }
    plain = await client.post("/1/events/", data=body, headers=headers)
    assert await plain.json() == {"accepted": 3}
    zipped = await client.post(
        "/1/events/", data=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"}
    )
    assert zipped.status == 200, await zipped.text()
    assert await zipped.json() == {"accepted": 3}
    # The same events spelled otherwise are other bytes: another request.
    respaced = await client.post("/1/events/", data=body.replace(b", ", b","), headers=headers)
    await assert_error(respaced, 422, "idempotency_key_reused")
    assert await count(db) == 3


async def test_a_key_claimed_before_bodies_were_compared_answers_any_body(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """A key recorded before migration 0010 has no digest: any body is a retry."""
    await db.execute(
        "INSERT INTO idempotency_keys (app_id, key, accepted) "
        "SELECT id, 'old-key', 4 FROM apps WHERE public_id = $1",
        app_keys.app_id,
    )
    resp = await post_with_key(client, app_keys, [event()], "old-key")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 4}
    assert await count(db) == 0


@pytest.mark.parametrize("writers", [1, 4], ids=["one_writer_groups", "racing_writers"])
async def test_concurrent_requests_with_one_key_and_different_bodies(
    make_client: Callable[[Settings], Any],
    settings: Settings,
    app_keys: NewApp,
    db: asyncpg.Connection,
    writers: int,
) -> None:
    """One body wins the key; every request with it hears its count, every other 422.
    With one writer they meet in one group transaction, with several each waits on
    the other's claim."""
    client: TestClient = await make_client(settings.model_copy(update={"ingest_writers": writers}))
    bodies = {3: [event(url="/a")] * 3, 5: [event(url="/b")] * 5}
    sizes = [3, 5] * 4
    responses = await asyncio.gather(
        *(post_with_key(client, app_keys, bodies[n], "racing") for n in sizes)
    )
    stored = await count(db)
    assert stored in bodies
    for n, resp in zip(sizes, responses, strict=True):
        if n == stored:
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {"accepted": n}
        else:
            await assert_error(resp, 422, "idempotency_key_reused")
    assert await accepted_metric(client) == stored


async def test_other_key_stores_again(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    for key in ("batch-1", "batch-2"):
        resp = await post_with_key(client, app_keys, [event()], key)
        assert await resp.json() == {"accepted": 1}
    assert await count(db) == 2


async def test_same_key_from_another_app_is_independent(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    other = await apps.create(db, "other-app")
    a = await post_with_key(client, app_keys, [event()], "shared-key")
    b = await post_with_key(client, other, [event(), event(), event()], "shared-key")
    assert await a.json() == {"accepted": 1}
    assert await b.json() == {"accepted": 3}
    assert await count(db) == 4


async def test_concurrent_retries_store_once(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    batch = [event(consumer_id=f"c{i}") for i in range(50)]
    responses = await asyncio.gather(
        *(post_with_key(client, app_keys, batch, "racing") for _ in range(6))
    )
    assert [r.status for r in responses] == [200] * 6
    assert [await r.json() for r in responses] == [{"accepted": 50}] * 6
    assert await count(db) == 50
    assert await accepted_metric(client) == 50


async def test_key_of_a_refused_batch_is_not_spent(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    bad = await post_with_key(client, app_keys, [event(status_code=99)], "k")
    await assert_error(bad, 400, "invalid_events")
    good = await post_with_key(client, app_keys, [event()], "k")
    assert await good.json() == {"accepted": 1}
    assert await count(db) == 1


async def test_expired_key_stores_again(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    await post_with_key(client, app_keys, [event()], "old")
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second'"
    )
    resp = await post_with_key(client, app_keys, [event(), event()], "old")
    assert await resp.json() == {"accepted": 2}
    assert await count(db) == 3


KEYS = [("empty", "", 400), ("just_over_limit", "k" * 256, 400), ("at_limit", "k" * 255, 200)]


@pytest.mark.parametrize(("key", "status"), [k[1:] for k in KEYS], ids=[k[0] for k in KEYS])
async def test_idempotency_key_length(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, key: str, status: int
) -> None:
    resp = await post_with_key(client, app_keys, [event()], key)
    if status == 200:
        assert resp.status == 200, await resp.text()
    else:
        await assert_error(resp, 400, "invalid_idempotency_key", "Idempotency-Key")
        assert await count(db) == 0


async def test_idempotency_key_not_utf8_is_400(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    assert app_keys.write_key
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /1/events/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n"
        b"X-Auth-User: " + app_keys.app_id.encode() + b"\r\n"
        b"X-Auth-Key: " + app_keys.write_key.encode() + b"\r\n"
        b"Idempotency-Key: \xff\xfe\r\n\r\n[]"
    )  # fmt: skip
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", response
    assert json.loads(payload)["error"]["code"] == "invalid_idempotency_key"
    assert await count(db) == 0


async def test_a_batch_racing_the_apps_deletion_leaves_no_orphans(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """Deleting an app waits for its in-flight batches, or they wait for it and fail."""
    deletion = db.transaction()
    await deletion.start()
    assert await apps.delete(db, app_keys.app_id)
    post = asyncio.create_task(
        client.post("/1/events/", json=[event()], headers=write_headers(app_keys))
    )
    # The batch authenticated before the deletion commits, then waits on the app's row.
    await wait_for_lock_waiter(db)
    await deletion.commit()
    resp = await post
    await assert_error(resp, 401, "unauthorized")
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_a_commit_whose_answer_is_lost_says_the_outcome_is_unknown(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """The backend dies during COMMIT (here: while a deferred trigger runs at COMMIT):
    the service cannot know whether the batch was stored, and must not say "nothing was
    stored"; the same Idempotency-Key then makes the resend safe."""
    await db.execute(
        """
        CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON idempotency_keys
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
        """
    )
    headers = {**write_headers(app_keys), "Idempotency-Key": "lost-commit"}
    batch = [event()]
    post = asyncio.create_task(client.post("/1/events/", json=batch, headers=headers))
    pid = None
    for _ in range(200):
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND pid <> pg_backend_pid()"
        )
        if pid:
            break
        await asyncio.sleep(0.05)
    assert pid, "the batch's COMMIT never reached the deferred trigger"
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
    resp = await post
    await assert_error(resp, 503, "database_unavailable", "may or may not be stored")
    assert "Retry-After" in resp.headers

    await db.execute("DROP TRIGGER slow_commit ON idempotency_keys")
    again = await client.post("/1/events/", json=batch, headers=headers)
    assert again.status == 200, await again.text()
    assert await count(db) == 1


async def test_a_field_given_twice_counts_with_its_last_value(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    body = json.dumps([event(consumer_id="first")])[:-2] + ', "consumer_id": "last"}]'
    resp = await client.post(
        "/1/events/",
        data=body.encode(),
        headers={**write_headers(app_keys), "Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()
    assert await db.fetchval("SELECT consumer_id FROM events") == "last"
