"""``POST /1/events/``: authenticate, decode, validate, store (group commit), answer.

``idempotency_key``, ``outcome_counted`` and ``off_loop_if_big`` are the steps every
ingest route shares (the OTLP route too: ``otlp.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from aiohttp import web

from .. import auth
from ..apps import KeyKind
from ..errors import BodyTimeout, CommitOutcomeUnknown, DatabaseUnavailable, UserError
from ..keys import DECODER, INGEST, LIMITS, METRICS, SETTINGS
from ..metrics import Metrics
from ..settings import Settings
from . import decode
from .idempotency import IdempotencyKey

MAX_IDEMPOTENCY_KEY = 255

P = ParamSpec("P")
T = TypeVar("T")


async def post_events(request: web.Request) -> web.Response:
    with outcome_counted(request.app[METRICS]):
        return await _post_events(request)


@contextmanager
def outcome_counted(metrics: Metrics) -> Iterator[None]:
    """Count a refused ingest request by its code; a database outage before COMMIT
    says that nothing was stored."""
    try:
        yield
    except UserError as exc:
        metrics.batches_rejected.labels(reason=exc.code).inc()
        raise
    except CommitOutcomeUnknown:
        raise
    except DatabaseUnavailable as exc:
        # Before the batch's transaction, or a transaction that did not commit.
        raise DatabaseUnavailable(exc.retry_after, stored_nothing=True) from exc


def idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key, if any; a 400 for one that is empty, too long or
    not UTF-8 text."""
    idem = request.headers.get("Idempotency-Key")
    if idem is not None and not (0 < len(idem) <= MAX_IDEMPOTENCY_KEY and _is_text(idem)):
        raise UserError(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters of UTF-8 text.",
            code="invalid_idempotency_key",
        )
    return idem


async def off_loop_if_big(
    request: web.Request, size: int, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``fn(*args)``; for a body of at least ``offload_body_bytes``, in the decoder thread,
    so other requests keep flowing while a big batch is validated."""
    if size < request.app[SETTINGS].offload_body_bytes:
        return fn(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[DECODER], lambda: fn(*args, **kwargs))


async def read_body(
    request: web.Request, settings: Settings, content_types: tuple[str, ...] = ("application/json",)
) -> bytes:
    """``decode.read_body`` within ``body_timeout_s``: a body that never comes holds a
    connection and its buffers, not forever."""
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            return await decode.read_body(request, settings, content_types)
    except TimeoutError:
        raise BodyTimeout(settings.body_timeout_s) from None


async def _post_events(request: web.Request) -> web.Response:
    creds = await auth.require(request, KeyKind.WRITE)
    request.app[LIMITS].ingest(creds.app_id)
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    idem = idempotency_key(request)
    try:
        body = await read_body(request, settings)
        rows = await off_loop_if_big(
            request, len(body), decode.parse, body, creds.app, time.time(), settings
        )
        claim = await off_loop_if_big(request, len(body), IdempotencyKey.of, idem, body)
        result = await request.app[INGEST].submit(creds.app, rows, claim)
    except (decode.BatchRejected, decode.BatchTooLarge) as exc:
        metrics.events_rejected.labels(reason=exc.code).inc(exc.events)
        raise
    except UserError as exc:
        metrics.events_rejected.labels(reason=exc.code).inc(0)
        raise
    metrics.events_accepted.inc(result.stored)
    return web.json_response({"accepted": result.accepted})


def _is_text(header: str) -> bool:
    """False for a header with invalid UTF-8 (kept by aiohttp as lone surrogates)."""
    try:
        header.encode()
    except UnicodeEncodeError:
        return False
    return True
