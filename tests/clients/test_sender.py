"""``apinalytics_client.Sender`` and ``AsyncSender``: batching, retries and their
``Idempotency-Key``, ``Retry-After``, 4xx not retried, a full queue dropping instead of
blocking, ``close()`` flushing, a forked child sending its own events — against the real
service (the ``client`` fixture) or, for answers the service cannot be made to give on
demand, a scripted server on 127.0.0.1 (tests/clients/support.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics_client import AsyncSender, Sender

from .support import counts, error, hanging_server, ok, scripted_server, service_url, total


def quick(app: NewApp, url: str, **options: float) -> Sender:
    assert app.write_key
    defaults: dict[str, float] = {
        "max_age_s": 0.05,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "flush_at_exit": False,
    }
    return Sender(app.app_id, app.write_key, url, **{**defaults, **options})  # type: ignore[arg-type]


def wait_stopped(sender: Sender) -> None:
    """Wait for the sender's thread, which a hanging server kept busy past ``close``:
    once the server is gone it gives up its batch and ends, within the test."""
    if sender._thread is not None:
        sender._thread.join(5)
    assert sender._thread is None or not sender._thread.is_alive()


def record(sender: Sender | AsyncSender, n: int, function: str = "f", **fields: object) -> None:
    for i in range(n):
        assert sender.record(
            method="GET",
            url=f"/things/{i}",
            status_code=200,
            response_us=1000 + i,
            function=function,
            **fields,  # type: ignore[arg-type]
        )


async def test_events_arrive_in_batches_and_are_queryable(
    client: TestClient, app_keys: NewApp
) -> None:
    sender = quick(app_keys, service_url(client), batch_size=40)
    record(sender, 100, consumer_id="c1", data={"plan": "pro"})
    assert await asyncio.to_thread(sender.close, 10)
    s = sender.stats
    assert (s.sent, s.queued, s.dropped, s.failed_batches, s.retries) == (100, 0, 0, 0, 0)
    assert await counts(client, app_keys, "function") == {"f": 100}
    assert await counts(client, app_keys, "consumer_id") == {"c1": 100}
    assert await counts(client, app_keys, "data.plan") == {"pro": 100}


def test_a_batch_is_gzip_with_one_idempotency_key_kept_across_its_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "apinalytics_client")
    with scripted_server(
        error(503, "database_unavailable", "down"), error(502, "x", "bad gateway"), ok()
    ) as (url, script):
        app = NewApp(app_id="app1", name="a", write_key="wk_secret_value", read_key=None)
        sender = quick(app, url, batch_size=10)
        record(sender, 10)
        assert sender.close(10)
    assert len(script.seen) == 3
    keys = {s.headers["Idempotency-Key"] for s in script.seen}
    assert len(keys) == 1 and len(next(iter(keys))) >= 16
    for s in script.seen:
        assert s.headers["Content-Encoding"] == "gzip"
        assert s.headers["X-Auth-User"] == "app1"
        assert len(s.events) == 10
    assert (sender.stats.sent, sender.stats.retries) == (10, 2)
    assert "retrying" in caplog.text  # the retries were logged, without the key
    assert "wk_secret_value" not in caplog.text and "wk_secret_value" not in repr(sender)


def test_each_batch_has_its_own_idempotency_key() -> None:
    with scripted_server(ok()) as (url, script):
        sender = quick(NewApp("app1", "a", "wk", None), url, batch_size=5)
        record(sender, 15)
        assert sender.close(10)
    assert len(script.seen) == 3
    assert len({s.headers["Idempotency-Key"] for s in script.seen}) == 3


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status: int) -> None:
    with scripted_server(error(status, "slow_down", "wait", **{"Retry-After": "1"}), ok()) as (
        url,
        script,
    ):
        sender = quick(NewApp("app1", "a", "wk", None), url)
        record(sender, 3)
        assert sender.flush(10)
        sender.close(1)
    first, second = script.seen
    # Backoff alone would have retried within 0.05 s.
    assert second.at - first.at >= 0.95
    assert sender.stats.retries == 1 and sender.stats.sent == 3


def test_retry_after_as_an_http_date_is_honoured() -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    with scripted_server(error(429, "slow", "wait", **{"Retry-After": when}), ok()) as (
        url,
        script,
    ):
        sender = quick(NewApp("app1", "a", "wk", None), url)
        record(sender, 1)
        assert sender.flush(10)
        sender.close(1)
    first, second = script.seen
    assert second.at - first.at >= 0.9


def test_a_4xx_is_not_retried_and_its_message_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "apinalytics_client")
    message = "event 0, field status_code: must be between 100 and 599"
    with scripted_server(error(400, "invalid_events", message)) as (url, script):
        sender = quick(NewApp("app1", "a", "wk_do_not_log_me", None), url, batch_size=2)
        record(sender, 6)
        assert sender.flush(10)
        sender.close(1)
    assert len(script.seen) == 3  # three batches, none sent again
    s = sender.stats
    assert (s.sent, s.failed_batches, s.failed_events, s.retries) == (0, 3, 6, 0)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, caplog.text
    assert message in refused[0].getMessage() and "400" in refused[0].getMessage()
    assert "wk_do_not_log_me" not in caplog.text


def test_408_is_retried() -> None:
    with scripted_server(error(408, "timeout", "slow body"), ok()) as (url, script):
        sender = quick(NewApp("app1", "a", "wk", None), url)
        record(sender, 1)
        assert sender.close(10)
    assert len(script.seen) == 2


def test_a_full_queue_drops_and_counts_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "apinalytics_client")
    with hanging_server() as url:
        sender = quick(
            NewApp("app1", "a", "wk", None), url, queue_size=100, batch_size=10, read_timeout_s=30
        )
        started = time.monotonic()
        accepted = sum(
            sender.record(method="GET", url="/", status_code=200, response_us=1)
            for _ in range(1000)
        )
        took = time.monotonic() - started
        s = sender.stats
        sender.close(0.2)
    wait_stopped(sender)
    # One batch in flight (the server never answers it), the queue full behind it.
    assert accepted == s.queued + 0 and 100 <= s.queued <= 110
    assert s.dropped == 1000 - accepted
    # Never waited on the hanging service (whose answer would take 30 s to time out).
    assert took < 5
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1


def test_a_read_timeout_is_retried() -> None:
    with hanging_server() as url:
        sender = quick(NewApp("app1", "a", "wk", None), url, read_timeout_s=0.2)
        record(sender, 1)
        deadline = time.monotonic() + 10
        while sender.stats.retries < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = sender.stats
        sender.close(0.1)
    wait_stopped(sender)
    assert stats.retries >= 2 and stats.queued == 1 and stats.sent == 0


async def test_close_flushes_and_then_drops(client: TestClient, app_keys: NewApp) -> None:
    sender = quick(app_keys, service_url(client), max_age_s=60, batch_size=1000)
    record(sender, 7)
    assert sender.stats.queued == 7
    assert await asyncio.to_thread(sender.close, 10)
    assert sender.stats.sent == 7
    assert not sender.record(method="GET", url="/", status_code=200, response_us=1)
    assert sender.stats.dropped == 1
    assert await total(client, app_keys) == 7


def test_events_are_flushed_at_interpreter_exit() -> None:
    with scripted_server(ok()) as (url, script):
        program = (
            "from apinalytics_client import Sender\n"
            f"s = Sender('app1', 'wk', {url!r}, max_age_s=60)\n"
            "for i in range(5):\n"
            "    s.record(method='GET', url='/', status_code=200, response_us=i)\n"
        )
        subprocess.run([sys.executable, "-c", program], check=True, timeout=30)
    [batch] = script.seen
    assert [e["response_us"] for e in batch.events] == [0, 1, 2, 3, 4]


def test_async_sender_outside_a_loop_drops_instead_of_raising() -> None:
    sender = AsyncSender("app1", "wk", "http://127.0.0.1:9")
    assert not sender.record(method="GET", url="/", status_code=200, response_us=1)
    assert sender.stats.dropped == 1


async def test_a_forked_child_sends_its_own_events_and_none_twice(
    client: TestClient, app_keys: NewApp
) -> None:
    sender = quick(app_keys, service_url(client), max_age_s=60, batch_size=1000)
    record(sender, 5, function="parent")  # queued, not sent yet, when the process forks
    pid = os.fork()
    if pid == 0:  # the child: its own queue and thread; exits without running atexit
        code = 1
        try:
            record(sender, 3, function="child")
            ok_ = sender.flush(10) and sender.stats.sent == 3
            code = 0 if ok_ else 2
        finally:
            os._exit(code)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert await asyncio.to_thread(sender.close, 10)
    assert sender.stats.sent == 5
    assert await counts(client, app_keys, "function") == {"parent": 5, "child": 3}


async def test_async_sender_sends_retries_and_closes(client: TestClient, app_keys: NewApp) -> None:
    assert app_keys.write_key
    sender = AsyncSender(app_keys.app_id, app_keys.write_key, service_url(client), max_age_s=0.05)
    record(sender, 30, function="async")
    assert await sender.flush(10)
    record(sender, 20, function="async")
    assert await sender.close(10)
    assert sender.stats.sent == 50
    assert not sender.record(method="GET", url="/", status_code=200, response_us=1)
    assert await counts(client, app_keys, "function") == {"async": 50}


async def test_async_sender_honours_retry_after_and_keeps_its_key() -> None:
    with scripted_server(
        error(503, "database_unavailable", "down", **{"Retry-After": "1"}), ok()
    ) as (url, script):
        sender = AsyncSender("app1", "wk", url, max_age_s=0.05, backoff_base_s=0.01)
        record(sender, 4)
        assert await sender.close(10)
    first, second = script.seen
    assert second.at - first.at >= 0.95
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.headers["Content-Encoding"] == "gzip" and len(second.events) == 4


async def test_async_sender_does_not_retry_a_4xx() -> None:
    with scripted_server(error(401, "unauthorized", "wrong key")) as (url, script):
        sender = AsyncSender("app1", "wk", url, max_age_s=0.05, backoff_base_s=0.01)
        record(sender, 4)
        await sender.close(5)
    assert len(script.seen) == 1
    assert (sender.stats.failed_batches, sender.stats.retries) == (1, 0)
