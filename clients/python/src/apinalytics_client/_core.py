"""What the thread sender and the asyncio sender share: the event, the batch's body,
which answers are retried and after how long, the counters and the rate-limited log."""

from __future__ import annotations

import email.utils
import gzip
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("apinalytics_client")

Event = dict[str, Any]

USER_AGENT = "apinalytics-client-python/0.1.0"
EVENTS_PATH = "/1/events/"


def make_event(
    *,
    method: str,
    url: str,
    status_code: int,
    response_us: int,
    function: str = "",
    consumer_id: str = "",
    timestamp: float | None = None,
    data: Mapping[str, str] | None = None,
) -> Event:
    """One event as SPEC's ``POST /1/events/`` takes it."""
    return {
        "timestamp": time.time() if timestamp is None else timestamp,
        "consumer_id": consumer_id,
        "method": method,
        "url": url,
        "function": function,
        "response_us": response_us,
        "status_code": status_code,
        "data": dict(data) if data else None,
    }


def encode(events: Any, level: int) -> bytes:
    """The batch's body: compact JSON, gzip-compressed."""
    raw = json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return gzip.compress(raw, compresslevel=level)


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Target:
    """Where batches go: scheme, host, port and the events path of the service."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http:// or https:// with a host, not {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        base = parts.path.rstrip("/")
        return cls(parts.scheme, parts.hostname, port, base + EVENTS_PATH)

    def headers(self, app_id: str, write_key: str, key: str, length: int) -> dict[str, str]:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        default = 443 if self.scheme == "https" else 80
        return {
            "Host": host if self.port == default else f"{host}:{self.port}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Content-Length": str(length),
            "Idempotency-Key": key,
            "User-Agent": USER_AGENT,
            "X-Auth-User": app_id,
            "X-Auth-Key": write_key,
        }


RETRIED_4XX = frozenset({408, 429})


def retried(status: int) -> bool:
    """Whether a batch answered ``status`` is sent again: 5xx, 408 and 429."""
    return status >= 500 or status in RETRIED_4XX


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP date; None when absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base * 2^attempt))."""
    return random.uniform(0.0, min(max_s, base_s * (2.0 ** min(attempt, 30))))


def error_message(status: int, body: bytes) -> str:
    """The service's error (code and message) from an error body, else its first bytes."""
    try:
        err = json.loads(body)["error"]
        return f"{err.get('code', '')}: {err.get('message', '')}".strip(": ")
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace") or f"HTTP {status}"


@dataclass(frozen=True)
class Stats:
    """A snapshot of a sender's counters.

    queued: events waiting in the queue or in the batch being sent;
    sent: events the service accepted;
    dropped: events not queued because the queue was full (or the sender closed);
    failed_batches / failed_events: batches given up (refused with a 4xx, or retried
    for longer than ``give_up_after_s``) and the events in them;
    retries: requests sent again after a failure.
    """

    queued: int
    sent: int
    dropped: int
    failed_batches: int
    failed_events: int
    retries: int


class Counters:
    """The mutable counters behind ``Stats`` (changed under one lock, off the hot path
    except ``dropped``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.dropped = 0
        self.failed_batches = 0
        self.failed_events = 0
        self.retries = 0
        self.in_flight = 0

    def snapshot(self, waiting: int) -> Stats:
        with self.lock:
            return Stats(
                queued=waiting + self.in_flight,
                sent=self.sent,
                dropped=self.dropped,
                failed_batches=self.failed_batches,
                failed_events=self.failed_events,
                retries=self.retries,
            )


class RateLimitedLog:
    """Warnings at most once per ``every_s`` per kind; the rest are counted and the
    count is told with the next one."""

    def __init__(self, every_s: float, log: logging.Logger = logger) -> None:
        self.every_s = every_s
        self.log = log
        self.lock = threading.Lock()
        self.last: dict[str, tuple[float, int]] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self.lock:
            last, suppressed = self.last.get(kind, (-1e18, 0))
            if now - last < self.every_s:
                self.last[kind] = (last, suppressed + 1)
                return
            self.last[kind] = (now, 0)
        if suppressed:
            message += " (%d similar warnings suppressed)"
            args = (*args, suppressed)
        self.log.warning(message, *args)
