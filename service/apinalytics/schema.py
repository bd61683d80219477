"""The event, declared once: its fields, their SQL types and what each may be used for.

Everything else that lists the event's fields derives from ``EVENT``: the COPY columns
(``ingest/decode.py``), the fields a query may group and filter by and their SQL
(``query/model.py``, ``query/sql.py``, ``query/params.py``), the dimensions rollups
may cover (``rollups/declared.py``) and the export's SELECT and encoders
(``export.py``). The ingest model (``ingest/model.py``, a pydantic TypedDict) and the
decode fast path stay hand-written for speed; ``tests/test_schema.py`` holds them to
this table.

Adding a field: one entry here (in the ``events`` table's column order), a migration
adding the column, the field in ``ingest/model.py`` and in decode's row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Encoding(Enum):
    """How the export writes a field (``export.py``)."""

    # UNIX microseconds (selected as such), written as seconds with six decimals.
    TIME = "time"
    TEXT = "text"
    INTEGER = "integer"
    # jsonb, handed over by asyncpg as its JSON text; SQL NULL is JSON null.
    JSON = "json"


def _upper(value: str) -> str:
    return value.upper()


# A status class in a filter: ``5xx`` stands for 500 to 599 (``status_codes``).
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _status_code(value: str) -> str:
    if value.lower() in STATUS_CLASSES:
        return value.lower()
    if not (value.isascii() and value.isdigit() and len(value) <= 12 and 100 <= int(value) <= 599):
        raise ValueError(
            f"status_code must be an integer from 100 to 599 or a class 1xx to 5xx, not {value!r}"
        )
    return str(int(value))


def status_codes(value: str) -> list[int]:
    """The codes a normalised status_code filter value stands for."""
    if value in STATUS_CLASSES:
        first = int(value[0]) * 100
        return list(range(first, first + 100))
    return [int(value)]


@dataclass(frozen=True)
class Field:
    """One column of ``events``.

    ``name`` is the column; ``api_name`` what clients send and exports write (None:
    internal, like ``app_id``). ``queryable``: a query may group and filter by it.
    ``dimension``: rollups may cover it (url and data are too high-cardinality).
    ``value``: a query's ``value`` may name it (the measures aggregate it).
    ``normalise`` turns a filter's text into the stored text (methods are stored
    upper-case), or raises ValueError with the message a 400 carries.
    """

    name: str
    sql_type: str
    api_name: str | None
    encoding: Encoding
    queryable: bool = False
    dimension: bool = False
    value: bool = False
    normalise: Callable[[str], str] | None = None


# In the column order of the events table (migration 0001), which is also COPY's.
EVENT: tuple[Field, ...] = (
    Field("time", "timestamptz", "timestamp", Encoding.TIME),
    Field("app_id", "integer", None, Encoding.INTEGER),
    Field("consumer_id", "text", "consumer_id", Encoding.TEXT, queryable=True, dimension=True),
    Field(
        "method",
        "text",
        "method",
        Encoding.TEXT,
        queryable=True,
        dimension=True,
        normalise=_upper,
    ),
    Field("url", "text", "url", Encoding.TEXT, queryable=True),
    Field("function", "text", "function", Encoding.TEXT, queryable=True, dimension=True),
    Field("response_us", "bigint", "response_us", Encoding.INTEGER, value=True),
    Field(
        "status_code",
        "smallint",
        "status_code",
        Encoding.INTEGER,
        queryable=True,
        dimension=True,
        normalise=_status_code,
    ),
    Field("data", "jsonb", "data", Encoding.JSON),
)

BY_NAME = {f.name: f for f in EVENT}
# The columns of a stored event, in COPY order.
COLUMNS = tuple(f.name for f in EVENT)
# The fields of an event as clients send and exports write them, in order.
API_FIELDS = tuple(f for f in EVENT if f.api_name is not None)
# Fields a query may group or filter by (``data.<key>`` is accepted too).
QUERY_FIELDS = tuple(f.name for f in EVENT if f.queryable)
# Fields rollups may cover, and their PostgreSQL types.
DIMENSIONS = tuple(f.name for f in EVENT if f.dimension)
DIMENSION_TYPES = {f.name: f.sql_type for f in EVENT if f.dimension}
# Fields a query's ``value`` may name.
VALUES = tuple(f.name for f in EVENT if f.value)


@dataclass(frozen=True)
class DerivedField:
    """A field a query may group by, computed from a stored one: the rollups that
    hold ``source`` answer it. ``sql``: its text (group keys are strings)."""

    name: str
    source: str
    sql: str


DERIVED_FIELDS = {
    # 1xx to 5xx (ingest accepts 100 to 599).
    "status_class": DerivedField(
        "status_class", "status_code", "(status_code / 100)::text || 'xx'"
    ),
}
