"""An invalid batch, explained at a cost bounded by its size, not by its problems.

The fast path (``decode.parse``) validates with ``model.BATCH``, which stops at the
first invalid event. Only then does this module look again, in two passes that never
hold more than one event at a time: ``count`` the elements (a batch over the limit is
a 413 whatever its elements are), then name the first ``limit`` problems, counting
the rest. pydantic's own collection of every error of every event was the issue: a
300 KB body of 100,000 ``{}`` held 700,000 errors, about 800 MB, before its 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import PlainValidator, TypeAdapter, ValidationError, ValidationInfo

from .model import EVENT, FIELDS, REQUIRED

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "float_type": "must be a number (UNIX seconds)",
    "int_type": "must be an integer",
    "dict_type": "must be an object of string to string, or null",
    "string_too_short": "must not be empty",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}
KNOWN = frozenset(FIELDS)


@dataclass
class Found:
    """The problems named so far (at most ``limit``), and how many there are in all."""

    limit: int
    max_data_keys: int
    shown: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    index: int = 0

    def add(self, index: int, name: str | None, message: str) -> None:
        self.total += 1
        if len(self.shown) < self.limit:
            self.shown.append({"index": index, "field": name, "message": message})


def _discard(value: Any) -> None:
    return None


def _explain(value: Any, info: ValidationInfo) -> None:
    found = info.context
    assert isinstance(found, Found)
    i = found.index
    found.index += 1
    if not isinstance(value, dict):
        found.add(i, None, "must be an object")
        return
    for name in value:
        if name not in KNOWN:
            found.add(i, name, "is not a known field")
    for name in REQUIRED:
        if name not in value:
            found.add(i, name, "is required")
    known = {k: value[k] for k in FIELDS if k in value}
    data = known.get("data")
    if isinstance(data, dict) and len(data) > found.max_data_keys:
        # One problem, not one per key: the keys' own problems can wait.
        found.add(i, "data", f"has {len(data)} keys; the limit is {found.max_data_keys}")
        known["data"] = data = None
    try:
        EVENT.validate_python(known)
    except ValidationError as exc:
        for e in exc.errors(include_url=False, include_input=False):
            template = _MESSAGES.get(e["type"])
            message = (
                template.format(**e.get("ctx", {}))
                if template
                else e["msg"][:1].lower() + e["msg"][1:]
            )
            found.add(i, ".".join(str(p) for p in e["loc"]) or None, message)
    if isinstance(data, dict):
        for k, v in data.items():
            if type(v) is not str:
                found.add(i, f"data.{k}", "must be a string")


# Each element is handed over as a Python value, looked at and dropped.
_COUNT = TypeAdapter(list[Annotated[Any, PlainValidator(_discard)]])
_EXPLAIN = TypeAdapter(list[Annotated[Any, PlainValidator(_explain)]])


def count(body: bytes) -> int:
    """How many elements the JSON array ``body`` holds."""
    return len(_COUNT.validate_json(body))


def over(body: bytes, limit: int) -> int | None:
    """How many elements ``body`` holds if it may hold more than ``limit`` events that
    pydantic would take (objects: a missing field is decode's to find), else None.

    An event holds at most two objects (itself and its data), so a body of at most
    ``2 * limit`` braces has at most that many object elements, and is validated as
    usual (and refused after, with a bounded cost). Above that, the elements are
    counted first, one at a time: 5.5 million ``{}`` (16.5 MB) would otherwise be
    validated into as many dicts, about 600 MB, before their 413.
    """
    if body.count(b"{") <= 2 * limit:
        return None
    try:
        n = count(body)
    except ValidationError:
        return None  # not a JSON array: validation says what it is
    return n if n > limit else None


def problems(body: bytes, limit: int, max_data_keys: int) -> Found:
    """The first ``limit`` problems of the events of the JSON array ``body``, and
    their number."""
    found = Found(limit, max_data_keys)
    _EXPLAIN.validate_json(body, context=found)
    return found
