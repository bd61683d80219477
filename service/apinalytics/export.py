"""``GET /1/events/<start>/<end>/``: the raw events of ``[start, end)``, streamed.

NDJSON by default, CSV with ``?format=csv`` or ``Accept: text/csv``; in time order;
the same ``include`` filters as queries. Each event has the fields ingest takes, so
an NDJSON export, wrapped in a JSON array, can be sent back to ``POST /1/events/``.

Memory stays flat whatever the range: a server-side cursor inside one transaction
(one consistent snapshot) is read ``BATCH_ROWS`` at a time, and each batch is
written before the next is fetched; ``StreamResponse.write`` waits while the
client is slower than the database. Each fetch is its own statement, so the
statement timeout bounds one batch, not the whole export.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from . import auth, limits, replica, retention
from .apps import KeyKind
from .db import Database, timed
from .errors import ApiError, Gone, InvalidQuery
from .keys import LIMITS, READS, SETTINGS
from .query import params
from .query.sql import Params, filters
from .replica import Source
from .rollups.declared import RAW
from .schema import API_FIELDS, Encoding

log = logging.getLogger(__name__)

# Rows per fetch and per write: ~100 kB of output for typical events, big enough
# that per-batch overhead vanishes, small enough that memory does not grow.
BATCH_ROWS = 1000
# The fields of an exported event are those of an ingested one, in the same order
# (schema.API_FIELDS); the SELECT, the encoders and the CSV header derive from them.
FIELDS = tuple(f.api_name or f.name for f in API_FIELDS)
NDJSON = "application/x-ndjson"
CSV = "text/csv"
FORMATS = {"ndjson": NDJSON, "csv": CSV}


def negotiate(request: web.Request) -> str:
    """``?format=`` wins; else ``Accept: text/csv`` (without NDJSON) picks CSV."""
    given = {v.lower() for v in request.query.getall("format", []) if v != ""}
    if len(given) > 1:
        raise InvalidQuery("format", "given more than once with different values")
    if given:
        fmt = given.pop()
        if fmt not in FORMATS:
            raise InvalidQuery("format", f"must be ndjson or csv, not {fmt!r}")
        return fmt
    accept = request.headers.get("Accept", "")
    return "csv" if CSV in accept and NDJSON not in accept else "ndjson"


def timestamp(us: int) -> str:
    """UNIX seconds with exactly six decimals, as a JSON number: no float rounding."""
    sign = "-" if us < 0 else ""
    whole, frac = divmod(abs(us), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


# The C string encoder behind json.dumps, without building an encoder per call (which
# dominated the export's CPU time); non-ASCII text stays UTF-8, as ingest takes it.
_str: Callable[[str], str] = json.encoder.encode_basestring


# Each encoding as a Python expression of the value ``{}``: in a JSON line (NDJSON)
# and as a CSV field. jsonb comes from asyncpg as its JSON text, spliced in as is.
_AS_JSON = {
    Encoding.TIME: "timestamp({})",
    Encoding.TEXT: "_str({})",
    Encoding.INTEGER: "{}",
    Encoding.JSON: '{} or "null"',
}
_AS_CSV = {
    Encoding.TIME: "timestamp({})",
    Encoding.TEXT: "{}",
    Encoding.INTEGER: "{}",
    Encoding.JSON: '{} or ""',
}


def _compiled(source: str) -> Any:
    """A function generated from the schema (identifiers and keys only from
    ``schema.EVENT``, never from input): one f-string or tuple per row, as fast as a
    hand-written one, where a loop over per-field encoders took three times as long."""
    namespace: dict[str, Any] = {"timestamp": timestamp, "_str": _str}
    exec(source, namespace)
    return namespace["encode"]


# The SELECT lists API_FIELDS in order: field i is r[i].
_JSON_LINE = ",".join(
    f'"{name}":{{{_AS_JSON[f.encoding].format(f"r[{i}]")}}}'
    for i, (name, f) in enumerate(zip(FIELDS, API_FIELDS, strict=True))
)
_CSV_ROW = ", ".join(_AS_CSV[f.encoding].format(f"r[{i}]") for i, f in enumerate(API_FIELDS))

ndjson_lines: Callable[[Sequence[asyncpg.Record]], str] = _compiled(
    f"def encode(rows):\n    return ''.join(f'{{{{{_JSON_LINE}}}}}\\n' for r in rows)\n"
)
_csv_rows: Callable[[Sequence[asyncpg.Record]], Any] = _compiled(
    f"def encode(rows):\n    return (({_CSV_ROW}) for r in rows)\n"
)


def csv_lines(rows: Sequence[asyncpg.Record]) -> str:
    # CRLF, as RFC 4180 has it; it also makes the writer quote a field holding a bare
    # carriage return (it quotes only the line terminator's characters), which readers
    # would otherwise take for a line break.
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerows(_csv_rows(rows))
    return out.getvalue()


def csv_header() -> str:
    return ",".join(FIELDS) + "\r\n"


ENCODERS: dict[str, Callable[[Sequence[asyncpg.Record]], str]] = {
    "ndjson": ndjson_lines,
    "csv": csv_lines,
}


def _selected(column: str, encoding: Encoding) -> str:
    # Times as UNIX microseconds: exact, and written without float rounding.
    if encoding is Encoding.TIME:
        return f"(extract(epoch FROM {column}) * 1000000)::bigint AS {column}"
    return column


_SELECT = ", ".join(_selected(f.name, f.encoding) for f in API_FIELDS)


def statement(
    app: int, start: int, end: int, includes: dict[str, list[str]]
) -> tuple[str, list[object]]:
    args = Params()
    where = [
        f"app_id = {args.add(app)}",
        f"time >= {args.add(datetime.fromtimestamp(start, UTC))}",
        f"time < {args.add(datetime.fromtimestamp(end, UTC))}",
        *filters(includes, args),
    ]
    # The (app_id, time) index returns rows in time order: no sort, and the first
    # batch arrives without reading the rest of the range.
    text = f"SELECT {_SELECT} FROM events WHERE {' AND '.join(where)} ORDER BY time"
    return text, args.values


def _check_retention(start: int, horizon: float | None) -> None:
    """An export never silently misses events: a range reaching before the raw
    events' horizon is refused, naming the earliest start that works."""
    if horizon is not None and start < horizon:
        earliest = -int(-horizon // 1)
        when = datetime.fromtimestamp(earliest, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise Gone(
            f"The raw events before {when} ({earliest}) are past retention, and the range "
            f"starts at {start}: ask for a start of {earliest} or later."
        )


async def export_events(request: web.Request) -> web.StreamResponse:
    creds = await auth.require(request, KeyKind.READ)
    async with request.app[LIMITS].query(creds.app_id):
        return await _export(request, creds.app)


async def _export(request: web.Request, app: int) -> web.StreamResponse:
    start, end = params.parse_range(request.match_info["start"], request.match_info["end"])
    includes = params.parse_includes(
        limits.check_includes(
            request.query.getall("include", []), request.app[SETTINGS].max_include_values
        )
    )
    fmt = negotiate(request)
    text, args = statement(app, start, end, includes)
    reads = request.app[READS]
    db, source = reads.choose(replica.consistency(request))
    try:
        return await _stream(request, db, source, (start, end), (text, args), fmt)
    except Exception as exc:
        # Nothing has gone out yet (``_stream`` ends the response itself once it has):
        # the primary can still answer the whole export.
        if not reads.fall_back(source, exc):
            raise
    return await _stream(request, reads.primary, Source.PRIMARY, (start, end), (text, args), fmt)


async def _stream(
    request: web.Request,
    db: Database,
    source: Source,
    span: tuple[int, int],
    select: tuple[str, list[object]],
    fmt: str,
) -> web.StreamResponse:
    """The export read on ``db``: errors before the first byte propagate (a JSON
    error, or the primary reads it instead); after it, the connection is closed."""
    encode = ENCODERS[fmt]
    start, end = span
    text, args = select
    resp = web.StreamResponse(
        headers={
            "Content-Type": f"{FORMATS[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="events-{start}-{end}.{fmt}"',
            replica.READ_FROM_HEADER: source.value,
        }
    )
    try:
        async with db.transaction() as conn:
            _check_retention(start, (await retention.horizons(conn)).get(RAW))
            cursor = await timed(conn.cursor, text, args, "export")
            # The first batch is read before the headers go out, so the errors most
            # likely to happen (timeouts, an unreachable database) still get a JSON
            # error response.
            rows = await cursor.fetch(BATCH_ROWS)
            await resp.prepare(request)
            if fmt == "csv":
                await resp.write(csv_header().encode())
            while rows:
                await resp.write(encode(rows).encode())
                if len(rows) < BATCH_ROWS:
                    break
                rows = await cursor.fetch(BATCH_ROWS)
    except Exception as exc:
        if not resp.prepared:
            raise
        if not isinstance(exc, ApiError | ConnectionError) and not replica.replica_failed(exc):
            raise
        # The status line has gone out: no error body can follow. Closing the
        # connection before the final chunk makes the client see an incomplete
        # download instead of a short export that looks whole.
        log.warning("export interrupted", extra={"start": start, "end": end})
        if request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp
