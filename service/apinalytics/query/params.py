"""Query-string parsing: from request text to a ``Query``, or a 400 naming the parameter.

A parameter given but empty means its default (the original dashboard sends empty
parameters). Unknown parameters are ignored, so cache-busting parameters such as
``_=<timestamp>`` do no harm; a known parameter given twice with different non-empty
values is an error (an empty repeat means the default, and gives way), except
``include``, which is repeatable. Text given to filter or group by cannot hold a NUL
character: no stored string can.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .. import schema
from ..errors import InvalidQuery
from ..measures import VALUE, Kind
from .model import (
    DATA_PREFIX,
    FIELDS,
    GROUP_FIELDS,
    NAMED_GRANULARITIES,
    Aggregation,
    Granularity,
    Query,
    granularity_of,
)

# 9999-12-31T23:59:59Z: the last second PostgreSQL and Python both represent.
MAX_TIME = 253_402_300_799
_TIME = re.compile(r"^[0-9]{1,12}\Z")
_POSITIVE_INT = re.compile(r"^[0-9]{1,12}\Z")
# X in (0, 100) with at most one decimal: percentile_99.9, percentile_0.5, percentile_50.
_PERCENTILE = re.compile(r"^percentile_(0|[1-9][0-9]?)(?:\.([0-9]))?\Z")
_APDEX = re.compile(r"^apdex_([1-9][0-9]{0,7})\Z")
# Apdex's T: at most a day (response_us is at most a day).
MAX_APDEX_MS = 86_400_000
PRECISIONS = ("exact", "approximate")
# Custom dimension keys are stored strings of at most this many characters.
MAX_DATA_KEY = 256
VALUES = schema.VALUES
SINGLE = ("value", "granularity", "aggregation", "group", "precision")


def parse_time(param: str, raw: str) -> int:
    """UNIX epoch seconds, an integer from 0 to the year 9999."""
    if not _TIME.match(raw) or int(raw) > MAX_TIME:
        raise InvalidQuery(
            param, f"must be whole UNIX epoch seconds (0 to {MAX_TIME}), not {raw!r}"
        )
    return int(raw)


def parse_range(start: str, end: str) -> tuple[int, int]:
    """``[start, end)`` from the path segments; ``end`` must be after ``start``."""
    s = parse_time("start", start)
    e = parse_time("end", end)
    if e <= s:
        raise InvalidQuery("end", f"must be after start (end {e} <= start {s})")
    return s, e


def field_name(param: str, raw: str, fields: Sequence[str] = FIELDS) -> str:
    """A field a query may group or filter by: one of ``fields`` or ``data.<key>``."""
    if raw in fields:
        return raw
    if raw.startswith(DATA_PREFIX):
        key = raw[len(DATA_PREFIX) :]
        if "\x00" in key:
            raise InvalidQuery(param, "data.<key> must not contain NUL characters")
        if key and len(key) <= MAX_DATA_KEY:
            return raw
        raise InvalidQuery(
            param, f"data.<key> needs a key of 1 to {MAX_DATA_KEY} characters, not {len(key)}"
        )
    raise InvalidQuery(
        param, f"unknown field {raw!r}; use one of {', '.join(fields)}, or data.<key>"
    )


def parse_includes(values: Sequence[str]) -> dict[str, list[str]]:
    """``field:value`` filters; values of one field are OR-ed, fields AND-ed.

    The value is everything after the first ``:`` and may be empty (an empty
    consumer_id is a real value). An empty ``include=`` is no filter. Methods are
    matched upper-case, as they are stored; status codes must be integers
    (``schema.Field.normalise``).
    """
    out: dict[str, list[str]] = {}
    for raw in values:
        if raw == "":
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            raise InvalidQuery("include", f"must be field:value, not {raw!r}")
        name = field_name("include", name)
        if "\x00" in value:
            raise InvalidQuery("include", f"the value for {name} must not contain NUL characters")
        field = schema.BY_NAME.get(name)
        if field is not None and field.normalise is not None:
            try:
                value = field.normalise(value)
            except ValueError as exc:
                raise InvalidQuery("include", str(exc)) from None
        if value not in out.setdefault(name, []):
            out[name].append(value)
    return out


def parse_granularity(raw: str) -> Granularity | None:
    if raw == "":
        return None
    if raw in NAMED_GRANULARITIES:
        return granularity_of(NAMED_GRANULARITIES[raw])
    if raw.isascii() and raw.isdigit() and int(raw) > MAX_TIME:
        raise InvalidQuery("granularity", f"must be at most {MAX_TIME} seconds, not {raw}")
    if _POSITIVE_INT.match(raw) and int(raw) > 0:
        return granularity_of(int(raw))
    raise InvalidQuery(
        "granularity",
        f"must be a whole positive number of seconds or one of "
        f"{', '.join(NAMED_GRANULARITIES)}, not {raw!r}",
    )


def parse_aggregation(raw: str) -> Aggregation:
    if raw == "":
        return Aggregation(Kind.COUNT)
    m = _PERCENTILE.match(raw)
    if m:
        tenths = int(m[1]) * 10 + int(m[2] or 0)
        if tenths > 0:
            return Aggregation(Kind.PERCENTILE, percentile=tenths)
    m = _APDEX.match(raw)
    if m and int(m[1]) <= MAX_APDEX_MS:
        return Aggregation(Kind.APDEX, apdex_ms=int(m[1]))
    kinds = {k.value: k for k in Kind if k not in (Kind.PERCENTILE, Kind.APDEX)}
    if raw in kinds:
        return Aggregation(kinds[raw])
    raise InvalidQuery(
        "aggregation",
        f"must be one of {', '.join(kinds)}, percentile_X with X above 0 and below 100 "
        f"(at most one decimal, e.g. percentile_99.9), or apdex_T with T from 1 to "
        f"{MAX_APDEX_MS} milliseconds, not {raw!r}",
    )


def parse_precision(raw: str) -> bool:
    """Whether ``precision=approximate`` was asked for (the default is exact)."""
    if raw in ("", "exact"):
        return False
    if raw == "approximate":
        return True
    raise InvalidQuery("precision", f"must be {' or '.join(PRECISIONS)}, not {raw!r}")


def parse_query(
    start: str, end: str, params: Mapping[str, Sequence[str]], *, max_buckets: int
) -> Query:
    """The whole query; ``params`` maps each parameter name to all of its values."""
    s, e = parse_range(start, end)
    single: dict[str, str] = {}
    for name in SINGLE:
        given = [v for v in params.get(name, ()) if v != ""]
        if len(set(given)) > 1:
            raise InvalidQuery(name, "given more than once with different values")
        single[name] = given[0] if given else ""
    value = single["value"] or VALUE
    if value not in VALUES:
        raise InvalidQuery("value", f"must be {' or '.join(VALUES)}, not {value!r}")
    granularity = parse_granularity(single["granularity"])
    if granularity is not None:
        n = granularity.buckets(s, e)
        if n > max_buckets:
            raise InvalidQuery(
                "granularity",
                f"the range would make {n} buckets; the limit is {max_buckets}: "
                "ask for a coarser granularity or a shorter range",
            )
    group = field_name("group", single["group"], GROUP_FIELDS) if single["group"] else None
    # include[]: how jQuery's $.param (the 2014 dashboard's) writes an array of values.
    includes = parse_includes([*params.get("include", ()), *params.get("include[]", ())])
    return Query(
        start=s,
        end=e,
        granularity=granularity,
        aggregation=parse_aggregation(single["aggregation"]),
        group=group,
        includes={k: tuple(v) for k, v in includes.items()},
        value=value,
        approximate=parse_precision(single["precision"]),
    )
