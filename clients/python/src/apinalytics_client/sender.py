"""``Sender``: events queued in memory and sent by one background thread, in batches.

The host's threads only append to a bounded queue (a ``collections.deque``; appending is
atomic under the GIL and takes no lock). One daemon thread takes batches from it and
POSTs them with ``http.client``, gzip-compressed, retrying with backoff. A full queue
drops the newest events and counts them: the host is never blocked or slowed down by
the service being slow, down, or unreachable.
"""

from __future__ import annotations

import atexit
import http.client
import os
import ssl
import threading
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

# A kept-alive connection idle for longer than this is closed and opened again before
# the next batch, rather than found closed by the server (aiohttp closes at 75 s).
IDLE_CONNECTION_S = 15.0


class Sender:
    """Queue events and send them to APInalytics from one background thread.

    ``batch_size`` events make a batch at once; otherwise whatever is queued is sent
    every ``max_age_s`` seconds. At most ``queue_size`` events wait; more are dropped
    (``stats.dropped``). A batch is retried on connection errors, timeouts, 5xx, 408
    and 429, after ``Retry-After`` when the answer has one, otherwise after an
    exponential backoff with full jitter (``backoff_base_s`` doubling up to
    ``backoff_max_s``), for at most ``give_up_after_s``; every attempt carries the
    batch's one ``Idempotency-Key``, so the service stores it once. Another 4xx is not
    retried: its error is logged (once per status and ``warn_every_s``).
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
        flush_at_exit: bool = True,
        exit_timeout_s: float = 5.0,
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
        self.exit_timeout_s = exit_timeout_s
        self._ssl_context = ssl_context
        self._closed = False
        self._fresh_state()
        _SENDERS.add(self)
        if flush_at_exit:
            atexit.register(_close_at_exit, weakref.ref(self))

    def __repr__(self) -> str:
        t = self._target
        return f"<Sender app_id={self.app_id!r} url={t.scheme}://{t.host}:{t.port}>"

    def _fresh_state(self) -> None:
        """Queue, thread, locks and counters of their own (at start, and in a forked
        child, which must not share or inherit them)."""
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._state = threading.Condition()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._flushing = 0
        self._stopping = False
        self._counters = Counters()
        self._warn = RateLimitedLog(self.warn_every_s)
        self._conn: http.client.HTTPConnection | None = None
        self._conn_used = 0.0

    # -- the host's side: never blocks -------------------------------------------------

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
        """Queue one event (SPEC's fields; ``timestamp`` defaults to now). False when
        it was dropped: the queue was full or the sender closed."""
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
        """Queue an event dict as ``POST /1/events/`` takes it (no copy, no check)."""
        queue = self._queue
        if len(queue) >= self.queue_size or self._closed:
            self._dropped()
            return False
        if self._thread is None:
            self._start()
        queue.append(event)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def _dropped(self) -> None:
        with self._counters.lock:
            self._counters.dropped += 1
        if self._closed:
            self._warn.warning("closed", "apinalytics: sender closed, event dropped")
        else:
            self._warn.warning(
                "full",
                "apinalytics: queue full (%d events), dropping new events until it drains",
                self.queue_size,
            )

    @property
    def stats(self) -> Stats:
        return self._counters.snapshot(len(self._queue))

    # -- flush and close --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now; True once the queue is empty and no batch is in
        flight, False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            if self._thread is None:
                return not self._queue
            self._flushing += 1
            self._wake.set()
            try:
                while self._queue or self._counters.in_flight:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    if not self._thread.is_alive():
                        return False
                    self._state.wait(0.5 if remaining is None else min(remaining, 0.5))
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop taking events, send what is queued (for at most ``timeout`` seconds),
        stop the thread. Events still unsent then are counted as dropped. True if
        everything was sent."""
        if self._closed:
            return not self._queue
        self._closed = True
        started = time.monotonic()
        sent_all = self.flush(timeout)
        self._stopping = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            left = 0.1 if timeout is None else max(0.1, timeout - (time.monotonic() - started))
            thread.join(left)
        unsent = len(self._queue)
        self._queue.clear()
        if unsent:
            with self._counters.lock:
                self._counters.dropped += unsent
            logger.warning("apinalytics: closed with %d events unsent", unsent)
        self._close_connection()
        return sent_all and not unsent

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread -------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="apinalytics-sender", daemon=True)
            thread.start()
            self._thread = thread

    def _ready(self) -> bool:
        n = len(self._queue)
        return n >= self.batch_size or (n > 0 and self._flushing > 0) or self._stopping

    def _run(self) -> None:
        while True:
            if not self._ready():
                self._wake.wait(self.max_age_s)
            self._wake.clear()
            batch = self._take()
            if batch:
                try:
                    self._send(batch)
                except Exception:  # never let the thread die: the host keeps recording
                    logger.exception("apinalytics: unexpected error sending a batch")
                    self._failed(batch)
                with self._state:
                    self._counters.in_flight = 0
                    self._state.notify_all()
            elif self._stopping:
                return
            else:
                with self._state:
                    self._state.notify_all()

    def _take(self) -> list[Event]:
        queue = self._queue
        with self._state:
            n = min(len(queue), self.batch_size)
            batch = [queue.popleft() for _ in range(n)]
            self._counters.in_flight = n
        return batch

    def _failed(self, batch: list[Event]) -> None:
        with self._counters.lock:
            self._counters.failed_batches += 1
            self._counters.failed_events += len(batch)

    def _send(self, batch: list[Event]) -> None:
        key = new_idempotency_key()
        body = encode(batch, self.gzip_level)
        started = time.monotonic()
        attempt = 0
        while True:
            status: int | None = None
            retry_after: float | None = None
            try:
                status, retry_after, answer = self._post(body, key)
            except (OSError, http.client.HTTPException) as exc:
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
                reason = f"HTTP {status} {error_message(status, answer)}"
            if retry_after is not None:
                delay = retry_after
            else:
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
            if self._stop.wait(delay):
                self._failed(batch)
                return

    def _post(self, body: bytes, key: str) -> tuple[int, float | None, bytes]:
        t = self._target
        headers = t.headers(self.app_id, self._write_key, key, len(body))
        for reuse in (True, False):
            conn, reused = self._connection(reuse)
            try:
                conn.request("POST", t.path, body=body, headers=headers)
                resp = conn.getresponse()
                answer = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._close_connection()
                if reused:
                    continue  # a kept-alive connection the server had closed: once more
                raise
            except BaseException:
                self._close_connection()
                raise
            self._conn_used = time.monotonic()
            if resp.will_close:
                self._close_connection()
            status = resp.status
            wait = retry_after_s(resp.getheader("Retry-After")) if retried(status) else None
            return status, wait, answer
        raise http.client.HTTPException("unreachable")  # pragma: no cover

    def _connection(self, reuse: bool) -> tuple[http.client.HTTPConnection, bool]:
        if self._conn is not None:
            if reuse and time.monotonic() - self._conn_used < IDLE_CONNECTION_S:
                return self._conn, True
            self._close_connection()
        t = self._target
        conn: http.client.HTTPConnection
        if t.scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                t.host, t.port, timeout=self.connect_timeout_s, context=context
            )
        else:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=self.connect_timeout_s)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(self.read_timeout_s)
        self._conn = conn
        return conn, False

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _after_fork_in_child(self) -> None:
        # The parent's queued events stay with the parent (which sends them); the
        # child starts empty, with a thread of its own on its first event. Its
        # inherited socket is dropped, not shut down: it is still the parent's.
        self._conn = None
        self._fresh_state()


_SENDERS: weakref.WeakSet[Sender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_SENDERS):
        sender._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_at_exit(ref: weakref.ReferenceType[Sender]) -> None:
    sender = ref()
    if sender is not None and not sender._closed:
        sender.close(sender.exit_timeout_s)
