"""Group commit on ``POST /1/events/``: batches that arrive while the database is busy
are written together in one transaction, and every request still gets its own answer.

- Concurrent batches are all stored, each exactly once, and some share a transaction
  (``apinalytics_ingest_group_batches`` on ``/metrics``).
- In one group, a batch whose app was deleted meanwhile (401), one with events older
  than the raw retention (400), an Idempotency-Key replay (the original count), the
  same key twice with one body (the second is a retry of the first), the same key
  again with another body (422) and a batch the database refuses are each answered as
  they would be alone; the other batches are stored.
- Apache mode: after concurrent grouped ingest (several group transactions at once,
  several apps, overlapping keys) every rollup table equals what ``rebuild``
  recomputes from the raw events, and no group transaction failed.
- The database going down under a group: every batch gets its 503 with Retry-After,
  nothing is stored, and their Idempotency-Keys are not spent.

Groups are made deterministic by holding the one writer (``ingest_writers=1``) on a
lock while the next batches queue behind it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from apinalytics import apps
from apinalytics.apps import NewApp
from apinalytics.edition import Edition
from apinalytics.ingest.group import GroupWriter
from apinalytics.keys import INGEST
from apinalytics.localdb import LocalCluster
from apinalytics.rollups import ROLLUPS, rebuild
from apinalytics.settings import Settings

from ..conftest import ALL_MODES
from ..helpers import assert_error, catch_up, event, post, wait_for_lock_waiter
from ..test_outage import cluster  # noqa: F401 (a fixture: a cluster of the test's own)

all_modes = pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
DAY = 86400


async def group_sizes(client: TestClient) -> tuple[float, float]:
    """(group transactions, batches written in them) from /metrics."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        if family.name == "apinalytics_ingest_group_batches":
            samples = {s.name: s.value for s in family.samples if not s.labels}
            return (
                samples["apinalytics_ingest_group_batches_count"],
                samples["apinalytics_ingest_group_batches_sum"],
            )
    raise AssertionError("apinalytics_ingest_group_batches not exported")


def writer(client: TestClient) -> GroupWriter:
    return client.server.app[INGEST]


async def wait_queued(client: TestClient, n: int) -> None:
    """Until ``n`` batches wait for the writer (bounded: 10 s)."""
    for _ in range(1000):
        if writer(client).queued >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{writer(client).queued} batches queued, expected {n}")


async def internal_id(db: asyncpg.Connection, app: NewApp) -> int:
    value: int = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
    return value


async def stored(db: asyncpg.Connection) -> dict[int, int]:
    rows = await db.fetch("SELECT app_id, count(*) AS n FROM events GROUP BY app_id")
    return {r["app_id"]: r["n"] for r in rows}


@asynccontextmanager
async def writer_held(
    dsn: str, client: TestClient, app: NewApp, app_internal: int, *, commit: bool = False
) -> AsyncIterator[asyncio.Task[ClientResponse]]:
    """A one-event batch of ``app`` with the key "plug" holds the writer: its group
    waits on another transaction's claim of that key until the block ends. That
    transaction is then rolled back (the batch is stored) or committed (the batch is a
    replay of a one-event batch: nothing is stored). Batches posted inside the block
    queue behind it."""
    blocker = await asyncpg.connect(dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "INSERT INTO idempotency_keys (app_id, key, accepted) VALUES ($1, 'plug', 1)",
            app_internal,
        )
        plug = asyncio.create_task(post(client, app, [event(url="/plug")], key="plug"))
        await wait_for_lock_waiter(blocker)
        try:
            yield plug
        finally:
            await (tx.commit() if commit else tx.rollback())
    finally:
        await blocker.close()


async def queue(
    client: TestClient, posts: list[tuple[NewApp, list[dict[str, Any]], str | None]]
) -> list[asyncio.Task[ClientResponse]]:
    """Post each batch in turn, each once the one before it is queued (keeps their order)."""
    tasks = []
    for i, (app, events, key) in enumerate(posts, 1):
        tasks.append(asyncio.create_task(post(client, app, events, key=key)))
        await wait_queued(client, i)
    return tasks


# -- concurrent batches ---------------------------------------------------------------


@all_modes
async def test_concurrent_batches_are_stored_once_and_grouped(
    mode: str, client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    batches = [[event(url=f"/b{b}/e{e}") for e in range(5)] for b in range(20)]
    responses = await asyncio.wait_for(
        asyncio.gather(*(post(client, app_keys, b) for b in batches)), 60
    )
    for resp in responses:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"accepted": 5}
    assert await db.fetchval("SELECT count(*) FROM events") == 100
    assert await db.fetchval("SELECT count(DISTINCT url) FROM events") == 100
    groups, batches_written = await group_sizes(client)
    assert batches_written == 20
    assert groups < 20, "no group transaction held more than one batch"


# -- failures inside a group ----------------------------------------------------------


@all_modes
async def test_each_batch_of_a_group_gets_its_own_answer(
    mode: str,
    settings: Settings,
    make_client: Callable[[Settings], Any],
    database_url: str,
    app_keys: NewApp,
    db: asyncpg.Connection,
) -> None:
    client: TestClient = await make_client(settings.model_copy(update={"ingest_writers": 1}))
    doomed, other = await apps.create(db, "doomed"), await apps.create(db, "other")
    a, c = await internal_id(db, app_keys), await internal_id(db, other)
    now = time.time()
    old = [event(), event()]
    first = await post(client, app_keys, old, key="k-old")
    assert await first.json() == {"accepted": 2}
    dup = [event(), event()]
    await db.execute("UPDATE retention SET keep_s = 2 * 86400 WHERE relation = 'events'")

    async with writer_held(database_url, client, app_keys, a) as plug:
        good_a, gone, too_old, replay, dup_1, dup_2, reused, good_c = await queue(
            client,
            [
                (app_keys, [event(), event(), event()], None),
                (doomed, [event(), event()], None),
                (app_keys, [event(), event(timestamp=now - 3 * DAY)], None),
                (app_keys, old, "k-old"),
                (other, dup, "k-dup"),
                (other, dup, "k-dup"),
                (other, [event()] * 4, "k-dup"),
                (other, [event()], None),
            ],
        )
        # Deleted after its request authenticated, before its group locks the app.
        async with db.transaction():
            assert await apps.delete(db, doomed.app_id)

    assert await (await plug).json() == {"accepted": 1}
    assert await (await good_a).json() == {"accepted": 3}
    await assert_error(await gone, 401, "unauthorized")
    err = await assert_error(await too_old, 400, "invalid_events", "retention")
    assert [d["index"] for d in err["details"]] == [1]
    assert await (await replay).json() == {"accepted": 2}
    assert await (await dup_1).json() == {"accepted": 2}
    assert await (await dup_2).json() == {"accepted": 2}
    await assert_error(await reused, 422, "idempotency_key_reused")
    assert await (await good_c).json() == {"accepted": 1}

    assert await stored(db) == {a: 2 + 1 + 3, c: 2 + 1}
    keys = await db.fetch("SELECT app_id, key, accepted FROM idempotency_keys ORDER BY key")
    assert [tuple(k) for k in keys] == [(c, "k-dup", 2), (a, "k-old", 2), (a, "plug", 1)]
    # One batch, the plug alone, then the eight that queued behind it.
    assert await group_sizes(client) == (3, 10)


async def test_a_batch_the_database_refuses_fails_alone(
    settings: Settings,
    make_client: Callable[[Settings], Any],
    database_url: str,
    app_keys: NewApp,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The group's transaction fails; its batches are written again one by one."""
    client: TestClient = await make_client(settings.model_copy(update={"ingest_writers": 1}))
    a = await internal_id(db, app_keys)
    await db.execute(
        """
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.consumer_id = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON events
            FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        """
    )
    async with writer_held(database_url, client, app_keys, a) as plug:
        before, poison, after = await queue(
            client,
            [
                (app_keys, [event(), event()], "before"),
                (app_keys, [event(), event(consumer_id="poison")], None),
                (app_keys, [event()] * 3, None),
            ],
        )
    assert await (await plug).json() == {"accepted": 1}
    assert await (await before).json() == {"accepted": 2}
    await assert_error(await poison, 500, "internal_error")
    assert await (await after).json() == {"accepted": 3}
    assert await stored(db) == {a: 1 + 2 + 3}
    assert "writing its batches alone" in caplog.text
    assert await group_sizes(client) == (2, 4)
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 2


# -- Apache rollups after concurrent groups -------------------------------------------


def mixed(rng: random.Random, n: int, start: float, span_s: float) -> list[dict[str, Any]]:
    return [
        event(
            timestamp=round(start + rng.random() * span_s, 6),
            consumer_id=rng.choice(["", "alice", "bob", "Carol", "dave"]),
            method=rng.choice(["GET", "post", "Delete"]),
            function=rng.choice(["", "list", "show", "Zeta"]),
            status_code=rng.choice([200, 201, 404, 500]),
            response_us=rng.randrange(0, 5_000_000),
            url=f"/v1/things/{rng.randrange(10**6)}",
        )
        for _ in range(n)
    ]


async def rollup_tables(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for rollup in ROLLUPS:
        rows = await db.fetch(
            f"SELECT * FROM {rollup.relation} ORDER BY {', '.join(rollup.key_columns)}"
        )
        out[rollup.relation] = [tuple(r) for r in rows]
    return out


async def test_apache_rollups_after_concurrent_groups_equal_a_rebuild(
    settings: Settings,
    make_client: Callable[[Settings], Any],
    app_keys: NewApp,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    # Four group transactions at once, all on the same hot rows.
    client: TestClient = await make_client(settings.model_copy(update={"ingest_writers": 4}))
    keys = [app_keys, await apps.create(db, "second"), await apps.create(db, "third")]
    rng = random.Random(17)
    now = time.time()
    posts = []
    for i in range(48):
        events = mixed(rng, 40, now - 3 * 3600, 3 * 3600 - 5)
        if i % 6 == 0:
            events += mixed(rng, 10, now - 2 * DAY, 7200)
        rng.shuffle(events)
        posts.append((keys[i % 3], events))
    responses = await asyncio.wait_for(
        asyncio.gather(*(post(client, app, events) for app, events in posts)), 120
    )
    for resp, (_, events) in zip(responses, posts, strict=True):
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"accepted": len(events)}
    assert await db.fetchval("SELECT count(*) FROM events") == sum(len(e) for _, e in posts)
    groups, batches_written = await group_sizes(client)
    assert batches_written == len(posts)
    assert groups < len(posts), "no group transaction held more than one batch"
    assert "group transaction failed" not in caplog.text

    await catch_up(db)
    kept = await rollup_tables(db)
    assert all(kept.values())
    await rebuild.rebuild(db, Edition.APACHE, now - 3 * DAY, now + 60)
    assert await rollup_tables(db) == kept


# -- the database going down under a group --------------------------------------------


async def test_outage_under_a_group_is_503_for_each_batch_and_stores_nothing(
    cluster: LocalCluster,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    make_client: Callable[[Settings], Any],
) -> None:
    conn = await asyncpg.connect(cluster.dsn)
    try:
        app = await apps.create(conn, "outage")
        a = await internal_id(conn, app)
    finally:
        await conn.close()
    settings = Settings(
        database_url=cluster.dsn,
        home=tmp_path / "home",
        db_connect_timeout_s=2.0,
        ingest_writers=1,
    )
    client: TestClient = await make_client(settings)
    batches = [([event(url=f"/{k}/{i}") for i in range(n)], k) for n, k in ((2, "x"), (3, "y"))]

    # The plug's group waits on another transaction's claim of its key while the two
    # batches queue and the events table gets locked; then that claim commits, the
    # plug is a replay, and the two batches' group waits on the lock at its COPY.
    tables = await asyncpg.connect(cluster.dsn)
    async with writer_held(cluster.dsn, client, app, a, commit=True) as plug:
        queued = await queue(client, [(app, events, key) for events, key in batches])
        await tables.execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    assert await (await plug).json() == {"accepted": 1}
    await wait_for_lock_waiter(tables)
    await asyncio.to_thread(cluster.stop)
    tables.terminate()
    for task in queued:
        resp = await task
        await assert_error(resp, 503, "database_unavailable", "nothing was stored")
        assert int(resp.headers["Retry-After"]) > 0
    await asyncio.to_thread(cluster.ensure_running)

    conn = await asyncpg.connect(cluster.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
        assert await conn.fetchval("SELECT key FROM idempotency_keys") == "plug"
        for events, key in batches:
            again = await post(client, app, events, key=key)
            assert await again.json() == {"accepted": len(events)}
        assert await conn.fetchval("SELECT count(*) FROM events") == 5
    finally:
        await conn.close()
