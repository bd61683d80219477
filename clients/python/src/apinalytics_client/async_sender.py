"""``AsyncSender``: the same batching, retries and counters as ``Sender``, for an
asyncio application, without a thread: one task on the application's event loop.

It speaks HTTP/1.1 itself over ``asyncio`` streams (standard library only, ``ssl`` for
https), one connection per batch attempt (``Connection: close``): a batch leaves at
most every ``max_age_s`` seconds, so a kept-alive connection would save little, and a
fresh one is never found closed by the server. Building the gzip body runs on the loop
(about 1 ms for 500 events).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
import weakref
from collections import deque
from collections.abc import Mapping

from ._core import (
    Counters,
    Event,
    RateLimitedLog,
    Stats,
    Target,
    backoff_s,
    encode,
    error_message,
    logger,
    make_event,
    new_idempotency_key,
    retried,
    retry_after_s,
)

MAX_ANSWER_BYTES = 1 << 20


class AsyncSender:
    """Queue events and send them from a task on the running event loop.

    Options as ``Sender``'s. ``record``/``enqueue`` are plain (not async) methods that
    never wait; they must be called from the loop's thread. Call ``await close()`` when
    the application stops (aiohttp ``on_cleanup``, ASGI lifespan shutdown): unlike the
    thread sender, an asyncio sender cannot flush at interpreter exit, when no loop runs.
    """

    def __init__(
        self,
        app_id: str,
        write_key: str,
        url: str = "http://127.0.0.1:8080",
        *,
        batch_size: int = 500,
        max_age_s: float = 2.0,
        queue_size: int = 10_000,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        give_up_after_s: float = 600.0,
        gzip_level: int = 6,
        warn_every_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not app_id or not write_key:
            raise ValueError("app_id and write_key are required")
        if batch_size < 1 or queue_size < 1 or max_age_s <= 0:
            raise ValueError("batch_size and queue_size must be at least 1, max_age_s above 0")
        self.app_id = app_id
        self._write_key = write_key
        self._target = Target.parse(url)
        self.batch_size = batch_size
        self.max_age_s = max_age_s
        self.queue_size = queue_size
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.give_up_after_s = give_up_after_s
        self.gzip_level = gzip_level
        self.warn_every_s = warn_every_s
        self._ssl_context = ssl_context
        self._closed = False
        self._fresh_state()
        _SENDERS.add(self)

    def _fresh_state(self) -> None:
        self._queue: deque[Event] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._idle: asyncio.Condition | None = None
        self._flushing = 0
        self._stopping = False
        self._counters = Counters()
        self._warn = RateLimitedLog(self.warn_every_s)

    def record(
        self,
        *,
        method: str,
        url: str,
        status_code: int,
        response_us: int,
        function: str = "",
        consumer_id: str = "",
        timestamp: float | None = None,
        data: Mapping[str, str] | None = None,
    ) -> bool:
        """Queue one event; False when it was dropped (queue full, or closed)."""
        return self.enqueue(
            make_event(
                method=method,
                url=url,
                status_code=status_code,
                response_us=response_us,
                function=function,
                consumer_id=consumer_id,
                timestamp=timestamp,
                data=data,
            )
        )

    def enqueue(self, event: Event) -> bool:
        queue = self._queue
        if len(queue) >= self.queue_size or self._closed:
            with self._counters.lock:
                self._counters.dropped += 1
            self._warn.warning(
                "full", "apinalytics: queue full or sender closed, dropping new events"
            )
            return False
        if self._task is None:
            try:
                self._start()
            except RuntimeError:  # no running loop in this thread: a Sender's place
                with self._counters.lock:
                    self._counters.dropped += 1
                self._warn.warning(
                    "no loop", "apinalytics: AsyncSender used outside its event loop; use Sender"
                )
                return False
        queue.append(event)
        wake = self._wake
        if len(queue) >= self.batch_size and wake is not None and not wake.is_set():
            wake.set()
        return True

    @property
    def stats(self) -> Stats:
        return self._counters.snapshot(len(self._queue))

    def _start(self) -> None:
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._idle = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued; True once sent, False if ``timeout`` passed first."""
        if self._task is None or self._idle is None or self._wake is None:
            return not self._queue
        idle = self._idle
        self._flushing += 1
        self._wake.set()

        async def drained() -> None:
            async with idle:
                await idle.wait_for(
                    lambda: (
                        (not self._queue and not self._counters.in_flight)
                        or self._task is None
                        or self._task.done()
                    )
                )

        try:
            await asyncio.wait_for(drained(), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            self._flushing -= 1
        return not self._queue and not self._counters.in_flight

    async def close(self, timeout: float | None = 5.0) -> bool:
        """Stop taking events, send what is queued (at most ``timeout`` seconds), end
        the task; what is still unsent then is counted as dropped."""
        if self._closed:
            return not self._queue
        self._closed = True
        sent_all = await self.flush(timeout)
        self._stopping = True
        if self._stop is not None and self._wake is not None:
            self._stop.set()
            self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 0.5)
            except asyncio.TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        unsent = len(self._queue)
        self._queue.clear()
        if unsent:
            with self._counters.lock:
                self._counters.dropped += unsent
            logger.warning("apinalytics: closed with %d events unsent", unsent)
        return sent_all and not unsent

    async def __aenter__(self) -> AsyncSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        wake, idle = self._wake, self._idle
        while True:
            n = len(self._queue)
            if not (n >= self.batch_size or (n and self._flushing) or self._stopping):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.max_age_s)
            wake.clear()
            n = min(len(self._queue), self.batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            self._counters.in_flight = n
            if batch:
                try:
                    await self._send(batch)
                except asyncio.CancelledError:
                    self._failed(batch)
                    raise
                except Exception:
                    logger.exception("apinalytics: unexpected error sending a batch")
                    self._failed(batch)
                self._counters.in_flight = 0
            elif self._stopping:
                async with idle:
                    idle.notify_all()
                return
            async with idle:
                idle.notify_all()

    def _failed(self, batch: list[Event]) -> None:
        with self._counters.lock:
            self._counters.failed_batches += 1
            self._counters.failed_events += len(batch)

    async def _send(self, batch: list[Event]) -> None:
        assert self._stop is not None
        key = new_idempotency_key()
        body = encode(batch, self.gzip_level)
        started = time.monotonic()
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                status, headers, answer = await self._post(body, key)
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    with self._counters.lock:
                        self._counters.sent += len(batch)
                    return
                if not retried(status):
                    self._failed(batch)
                    self._warn.warning(
                        f"rejected {status}",
                        "apinalytics: the service refused a batch of %d events (%d %s); not retried",
                        len(batch),
                        status,
                        error_message(status, answer),
                    )
                    return
                retry_after = retry_after_s(headers.get("retry-after"))
                reason = f"HTTP {status} {error_message(status, answer)}"
            delay = retry_after
            if delay is None:
                delay = backoff_s(attempt, self.backoff_base_s, self.backoff_max_s)
            if self._stopping or time.monotonic() - started + delay > self.give_up_after_s:
                self._failed(batch)
                self._warn.warning(
                    "gave up",
                    "apinalytics: gave up a batch of %d events after %d attempts (%s)",
                    len(batch),
                    attempt + 1,
                    reason,
                )
                return
            self._warn.warning(
                "retrying", "apinalytics: sending failed (%s); retrying in %.1f s", reason, delay
            )
            attempt += 1
            with self._counters.lock:
                self._counters.retries += 1
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except asyncio.TimeoutError:
                continue
            self._failed(batch)
            return

    async def _post(self, body: bytes, key: str) -> tuple[int, dict[str, str], bytes]:
        t = self._target
        context: ssl.SSLContext | None = None
        if t.scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                t.host, t.port, ssl=context, server_hostname=t.host if context else None
            ),
            self.connect_timeout_s,
        )
        try:
            headers = t.headers(self.app_id, self._write_key, key, len(body))
            headers["Connection"] = "close"
            head = f"POST {t.path} HTTP/1.1\r\n" + "".join(
                f"{name}: {value}\r\n" for name, value in headers.items()
            )
            writer.write(head.encode("latin-1") + b"\r\n" + body)
            return await asyncio.wait_for(_read_response(reader), self.read_timeout_s)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _after_fork_in_child(self) -> None:
        self._fresh_state()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of an HTTP/1.1 response."""
    status_line = await reader.readline()
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while len(body) <= MAX_ANSWER_BYTES:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readline()
    elif "content-length" in headers:
        body = await reader.readexactly(min(int(headers["content-length"]), MAX_ANSWER_BYTES))
    else:
        body = await reader.read(MAX_ANSWER_BYTES)
    return status, headers, body


_SENDERS: weakref.WeakSet[AsyncSender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_SENDERS):
        sender._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
