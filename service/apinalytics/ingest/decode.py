"""From an HTTP body to rows ready for COPY, or a 4xx that names what is wrong.

Order of checks: content type and encoding (415), body size before and after
gunzip (413), JSON and types per event and field (400), batch size (413), then one
pass over the events for what pydantic cannot know: configured string limits, NUL
characters (PostgreSQL text cannot hold them), the accepted time window. Every
problem of the batch is counted, the first ``MAX_DETAILS`` are named, and nothing is
stored. An invalid batch costs no more than its size (ingest/invalid.py).

Over 300 lines on purpose: the fast path (``parse``) and the slow path that names
each problem (``_check``, the messages) must state the same rules, and side by side
in one module they are checked against each other at a glance.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from math import floor, isfinite
from operator import itemgetter
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from .. import schema
from ..errors import InvalidEvents, PayloadTooLarge, UnsupportedMediaType, UserError
from ..settings import Settings
from . import invalid
from .model import BATCH, FIELDS, REQUIRED, EventIn

MAX_DETAILS = 100
# A body that is not valid UTF-8 is parsed once more, leniently, to name the events and
# fields of the bad text, if it is at most this big (that parse holds it all at once).
MAX_UNICODE_DIAGNOSIS_BYTES = 1 << 20
# Fields of an event without unknown ones: all but data, plus data if present.
_REQUIRED_FIELDS = len(FIELDS) - 1
_NUL_ESCAPE = b"\\u0000"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 9110 token characters: GET, PROPFIND, M-SEARCH, ...
_METHOD = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}\Z")

# The row of one event, in COLUMNS order (schema.EVENT). Its time is an int of UNIX
# microseconds: the ingest path's connections take timestamptz as such
# (db.unix_us_timestamps). Written out for speed in ``parse``; tests/test_schema.py
# holds it to the schema.
Row = tuple[int, int, str, str, str, str, int, int, str | None]
COLUMNS = schema.COLUMNS


class BatchRejected(InvalidEvents):
    """Invalid events; ``events`` is how many the batch held, when that is known."""

    def __init__(
        self, message: str, details: list[dict[str, Any]] | None = None, events: int = 0
    ) -> None:
        super().__init__(message, details=details)
        self.events = events


class BatchTooLarge(PayloadTooLarge):
    """More events than the batch limit; ``events`` is how many."""

    def __init__(self, message: str, events: int) -> None:
        super().__init__(message)
        self.events = events


async def read_body(
    request: web.Request, settings: Settings, content_types: tuple[str, ...] = ("application/json",)
) -> bytes:
    """The request body, gunzipped, within the size limit; its Content-Type one of
    ``content_types``."""
    ctype = request.content_type
    if ctype not in content_types:
        given = f"not {ctype}" if "Content-Type" in request.headers else "none was sent"
        raise UnsupportedMediaType(f"Content-Type must be {' or '.join(content_types)}; {given}.")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(f"Content-Encoding must be gzip or absent, not {encoding}.")
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ConnectionResetError as exc:
        # The client closed the connection before the end of its body: nothing is stored,
        # and the answer, if the client still reads one, says so.
        raise UserError(
            f"The body ended after {size} bytes: the connection was closed before its end.",
            code="incomplete_body",
        ) from exc
    body = b"".join(chunks)
    if encoding == "gzip":
        body = _gunzip(body, limit)
    return body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is over the {limit}-byte limit (after gunzip); send smaller batches."
    )


def _gunzip(body: bytes, limit: int) -> bytes:
    # max_length bounds memory: a small bomb cannot inflate past the limit.
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise _too_large(limit)
        out += d.flush()
    except zlib.error as exc:
        raise UserError(f"The body is not valid gzip: {exc}.", code="invalid_body") from exc
    if not d.eof:
        raise UserError("The gzip body is truncated.", code="invalid_body")
    return out


def parse(body: bytes, app: int, now: float, settings: Settings) -> list[Row]:
    """Validate a whole batch and build its rows; raises before anything is stored."""
    too_many = invalid.over(body, settings.max_batch_events)
    if too_many is not None:
        raise _too_many(too_many, settings.max_batch_events)
    try:
        events = BATCH.validate_json(body)
    except ValidationError as exc:
        raise _from_pydantic(exc, body, settings) from None
    if len(events) > settings.max_batch_events:
        raise _too_many(len(events), settings.max_batch_events)
    rows: list[Row] = []
    problems: list[dict[str, Any]] = []
    total = 0
    earliest = now - settings.max_event_age_s
    latest = now + settings.max_event_future_s
    # This loop is the hot path of ingest (see docs/benchmarks.md): the common case, an
    # event with no problem, is decided by one expression over locals, exactly the
    # conjunction of the rules in `_check`, and only an event that fails it goes
    # through `_check` to name its problems. Methods are few: each is matched once.
    max_string = settings.max_string_length
    max_url = settings.max_url_length
    methods: dict[str, str | None] = {}
    # A NUL character can only be in the body as the escape \u0000 (the parser refuses
    # raw control characters in strings): without one, no string needs to be searched.
    nul = _NUL_ESCAPE in body
    for i, ev in enumerate(events):
        try:
            method = ev["method"]
            consumer, url, function = ev["consumer_id"], ev["url"], ev["function"]
            timestamp, response_us, status = ev["timestamp"], ev["response_us"], ev["status_code"]
        except KeyError:
            # A required field is missing (model.EventIn): no method matches "", and the
            # event goes to _check, which names what is missing.
            method = ""
        upper = methods.get(method, "")
        if upper == "":
            upper = methods[method] = method.upper() if _METHOD.match(method) else None
        data = ev.get("data")
        if (
            upper is not None
            and earliest <= timestamp <= latest
            and len(consumer) <= max_string
            and len(url) <= max_url
            and len(function) <= max_string
            and (
                not nul or ("\x00" not in consumer and "\x00" not in url and "\x00" not in function)
            )
            and (not data or _data_ok(data, settings, nul))
            and len(ev) <= _REQUIRED_FIELDS + ("data" in ev)
        ):
            if not problems:
                rows.append(
                    (
                        timestamp_us(timestamp),
                        app,
                        consumer,
                        upper,
                        url,
                        function,
                        response_us,
                        status,
                        _encode_data(data) if data else None,
                    )
                )
            continue
        bad = _check(ev, settings, earliest, latest)
        total += len(bad)
        room = MAX_DETAILS - len(problems)
        problems.extend({"index": i, "field": f, "message": m} for f, m in bad[:room])
    if total:
        raise _rejected(problems, len(events), total)
    return rows


def _too_many(events: int, limit: int) -> BatchTooLarge:
    return BatchTooLarge(f"The batch has {events} events; the limit is {limit}.", events=events)


def timestamp_us(timestamp: float) -> int:
    """UNIX seconds as the nearest microsecond (ties to even), as SPEC promises and
    timestamptz holds.

    The whole seconds and the fraction are taken apart first: both steps are exact
    in binary floating point, and so is the fraction times 10^6 for any time after
    1978 (a fraction of at most 23 bits). ``round(timestamp * 1e6)`` rounds once more,
    to the 0.25 µs spacing of floats near 10^15, and lands on the wrong microsecond
    for about one fractional timestamp in a hundred (1795646414.6548934 became
    .654894)."""
    whole = floor(timestamp)
    return whole * 1_000_000 + round((timestamp - whole) * 1_000_000)


def _encode_data(data: dict[str, Any]) -> str:
    """``data`` as JSON text for its jsonb column (which parses it again anyway)."""
    return orjson.dumps(data).decode()


def _data_ok(data: dict[str, Any], s: Settings, nul: bool) -> bool:
    """Whether ``data`` passes every rule `_check` applies to it (``nul``: whether the
    body may hold a NUL character at all)."""
    if len(data) > s.max_data_keys:
        return False
    max_key, max_value = s.max_string_length, s.max_data_value_length
    return all(
        0 < len(k) <= max_key
        and type(v) is str
        and len(v) <= max_value
        and (not nul or ("\x00" not in k and "\x00" not in v))
        for k, v in data.items()
    )


def _check(ev: EventIn, s: Settings, earliest: float, latest: float) -> list[tuple[str, str]]:
    bad: list[tuple[str, str]] = [
        (name, "is not a known field") for name in ev if name not in invalid.KNOWN
    ]
    missing = [name for name in REQUIRED if name not in ev]
    if missing:
        # Without all of its fields, an event is not looked at further.
        return bad + [(name, "is required") for name in missing]
    if not isfinite(ev["timestamp"]):
        bad.append(("timestamp", "must be a finite number (UNIX seconds), not NaN or Infinity"))
    elif not earliest <= ev["timestamp"] <= latest:
        bad.append(("timestamp", _window_message(ev["timestamp"], earliest, latest)))
    if not _METHOD.match(ev["method"]):
        bad.append(("method", "must be an HTTP method token of at most 32 characters"))
    for field, value, limit in (
        ("consumer_id", ev["consumer_id"], s.max_string_length),
        ("url", ev["url"], s.max_url_length),
        ("function", ev["function"], s.max_string_length),
    ):
        if "\x00" in value:
            bad.append((field, "must not contain NUL characters"))
        if len(value) > limit:
            bad.append((field, f"is {len(value)} characters long; the limit is {limit}"))
    data = ev.get("data")
    if data:
        if len(data) > s.max_data_keys:
            # One problem, not one per key: the keys' own problems can wait.
            bad.append(("data", f"has {len(data)} keys; the limit is {s.max_data_keys}"))
            return bad
        for k, v in data.items():
            if type(v) is not str:
                bad.append((f"data.{k}", "must be a string"))
                continue
            if "\x00" in k or "\x00" in v:
                bad.append((f"data.{k}", "must not contain NUL characters"))
            if len(k) > s.max_string_length:
                bad.append(("data", f"has a key over {s.max_string_length} characters"))
            if not k:
                bad.append(("data", "has an empty key (queries name keys as data.<key>)"))
            if len(v) > s.max_data_value_length:
                bad.append((f"data.{k}", f"is over {s.max_data_value_length} characters"))
    return bad


def _window_message(ts: float, earliest: float, latest: float) -> str:
    def iso(x: float) -> str:
        return datetime.fromtimestamp(x, UTC).isoformat(timespec="seconds")

    when = "too old" if ts < earliest else "in the future"
    return f"is {when}: accepted from {iso(earliest)} to {iso(latest)} (UNIX seconds, UTC)"


_TIME = itemgetter(0)


def earliest_us(rows: Sequence[Row]) -> int:
    """The earliest time of a batch (not empty), in UNIX microseconds."""
    earliest: int = min(map(_TIME, rows))
    return earliest


def horizon_us(horizon: float) -> int:
    """A retention horizon in UNIX seconds (a float8 from the database, exact to well
    under a microsecond) as the microsecond it stands for: events before it are refused."""
    return round(horizon * 1_000_000)


def past_horizon(rows: Sequence[Row], horizon: float) -> BatchRejected:
    """The events of a batch older than the raw events' retention horizon."""
    cutoff = horizon_us(horizon)
    since = (EPOCH + timedelta(microseconds=cutoff)).isoformat(timespec="seconds")
    problems: list[dict[str, Any]] = [
        {
            "index": i,
            "field": "timestamp",
            "message": f"is older than the raw events' retention: accepted from {since}",
        }
        for i, row in enumerate(rows)
        if row[0] < cutoff
    ]
    return _rejected(problems, len(rows))


def _from_pydantic(exc: ValidationError, body: bytes, settings: Settings) -> UserError:
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return _not_unicode(body) or UserError(
            f"The body is not valid JSON (or not valid UTF-8): {first['msg'].removeprefix('Invalid JSON: ')}.",
            code="invalid_json",
        )
    if not first["loc"]:
        return UserError("The body must be a JSON array of event objects.", code="not_an_array")
    # An invalid event: the whole batch is looked at again, one event at a time.
    events = invalid.count(body)
    if events > settings.max_batch_events:
        return _too_many(events, settings.max_batch_events)
    found = invalid.problems(body, MAX_DETAILS, settings.max_data_keys)
    return _rejected(found.shown, events, found.total)


_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UNICODE = "must be valid UTF-8 text (it holds an invalid byte or a lone surrogate)"


def _not_unicode(body: bytes) -> BatchRejected | None:
    """Invalid UTF-8 or lone surrogate escapes in strings, named per event and field.

    The strict parser stops at the first one with only a line and column. Python's
    json is lenient exactly where we need it: with invalid bytes decoded to lone
    surrogates (surrogateescape) it parses the body and keeps lone surrogates, so a
    walk over the strings finds every one of them.
    """
    if len(body) > MAX_UNICODE_DIAGNOSIS_BYTES:
        return None
    try:
        data = json.loads(body.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):  # nesting the strict parser refused is deeper still
        return None
    if not isinstance(data, list):
        return None
    problems: list[dict[str, Any]] = []
    for i, ev in enumerate(data):
        if not isinstance(ev, dict):
            continue
        strings = [(f, f, v) for f, v in ev.items()]
        if isinstance(ev.get("data"), dict):
            strings += [("data", f"data.{k}", v) for k, v in ev["data"].items()]
        for owner, field, value in strings:
            if _SURROGATE.search(field):
                problems.append(
                    {
                        "index": i,
                        "field": None if owner == field else owner,
                        "message": "has a field name that is not valid UTF-8 text",
                    }
                )
            elif isinstance(value, str) and _SURROGATE.search(value):
                problems.append({"index": i, "field": field, "message": _NOT_UNICODE})
    return _rejected(problems, len(data)) if problems else None


def _rejected(
    problems: list[dict[str, Any]], events: int, total: int | None = None
) -> BatchRejected:
    """``problems``: the first ones named; ``total``: how many there are in all."""
    shown = problems[:MAX_DETAILS]
    p = shown[0]
    where = f"event {p['index']}" + (f", field {p['field']}" if p["field"] else "")
    n = (len(problems) if total is None else total) - 1
    more = f" (and {n} more problem{'s' if n > 1 else ''})" if n else ""
    return BatchRejected(
        f"Nothing was stored: {where} {p['message']}{more}.",
        details=shown,
        events=events,
    )
