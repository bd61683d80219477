"""``POST /1/events/``: authenticate, decode, validate, store (group commit), answer."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from .. import auth
from ..apps import KeyKind
from ..errors import BodyTimeout, CommitOutcomeUnknown, DatabaseUnavailable, UserError
from ..keys import DECODER, INGEST, LIMITS, METRICS, SETTINGS
from . import decode

MAX_IDEMPOTENCY_KEY = 255


async def post_events(request: web.Request) -> web.Response:
    try:
        return await _post_events(request)
    except UserError as exc:
        request.app[METRICS].batches_rejected.labels(reason=exc.code).inc()
        raise
    except CommitOutcomeUnknown:
        raise
    except DatabaseUnavailable as exc:
        # Before the batch's transaction, or a transaction that did not commit.
        raise DatabaseUnavailable(exc.retry_after, stored_nothing=True) from exc


async def _post_events(request: web.Request) -> web.Response:
    creds = await auth.require(request, KeyKind.WRITE)
    request.app[LIMITS].ingest(creds.app_id)
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    idem = request.headers.get("Idempotency-Key")
    if idem is not None and not (0 < len(idem) <= MAX_IDEMPOTENCY_KEY and _is_text(idem)):
        raise UserError(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters of UTF-8 text.",
            code="invalid_idempotency_key",
        )
    try:
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await decode.read_body(request, settings)
        except TimeoutError:
            # A body that never comes holds a connection and its buffers: not forever.
            raise BodyTimeout(settings.body_timeout_s) from None
        now = time.time()
        if len(body) >= settings.offload_body_bytes:
            # Big batches are validated off the event loop so other requests keep flowing.
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(
                request.app[DECODER], decode.parse, body, creds.app, now, settings
            )
        else:
            rows = decode.parse(body, creds.app, now, settings)
        result = await request.app[INGEST].submit(creds.app, rows, idem)
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
